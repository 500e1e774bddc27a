"""One frame: imaging, thermal and registration on the way in; the fusion stages; the full-resolution output."""
