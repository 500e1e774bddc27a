"""Video: the frame stages run over a sequence, with motion-compensated stabilisation and the flicker measure."""
