"""The ROS 2 side: message conversions, input synchronisation and the nodes built on them."""
