"""dig2dig_ros: Dig2DIG infrared + visible image fusion, with a ROS-free core and thin ROS 2 nodes."""

__version__ = "0.1.0"
