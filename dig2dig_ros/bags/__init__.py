"""rosbag2 tools: write bags from image folders, play, record, and the demo that replays a bag through the graph."""
