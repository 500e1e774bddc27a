"""The fusion core. Nothing in this package imports rclpy or any ROS message type."""
