"""Live views of the fusion graph for people without RViz.

* `frames`: newest-wins frame slots, images to displayable BGR and JPEG, the latest diagnostics (no ROS);
* `web_view`: an HTTP server with a live page, MJPEG streams and snapshots (web_video_server's URLs; no ROS);
* `foxglove_bridge`: a Foxglove WebSocket server fed newest-wins from a sender thread (no ROS);
* `nodes`: the thin ROS nodes `dig2dig_web_view` and `dig2dig_foxglove_bridge` that feed them.
"""
