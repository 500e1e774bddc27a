"""A ROS 2 process for the tests, run with a colcon workspace's environment (vision_msgs importable there only):
optionally publishes frames on `fused/image`, collects `detections` (vision_msgs/Detection2DArray) and
`detections/label_info` (LabelInfo, transient local), and prints what it got as one JSON document.

    python test/vision_msgs_probe.py --count 3 [--frames a.png b.png [--repeat 3]] [--rate 2] [--timeout 60]
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import cv2
import rclpy
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import Image
from vision_msgs.msg import Detection2DArray, LabelInfo

from dig2dig_ros.ros.conversions import numpy_to_image


def detection_dict(msg: Detection2DArray) -> dict:
    return {
        "stamp": [msg.header.stamp.sec, msg.header.stamp.nanosec],
        "frame_id": msg.header.frame_id,
        "detections": [{
            "id": d.id,
            "stamp": [d.header.stamp.sec, d.header.stamp.nanosec],
            "results": [{"class_id": r.hypothesis.class_id, "score": r.hypothesis.score} for r in d.results],
            "center": [d.bbox.center.position.x, d.bbox.center.position.y, d.bbox.center.theta],
            "size": [d.bbox.size_x, d.bbox.size_y],
        } for d in msg.detections],
    }


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=1, help="Detection2DArray messages to collect")
    parser.add_argument("--frames", nargs="*", default=[], help="images to publish on fused/image, in turn")
    parser.add_argument("--repeat", type=int, default=1, help="times each frame is published before the next")
    parser.add_argument("--rate", type=float, default=2.0)
    parser.add_argument("--timeout", type=float, default=60.0)
    args = parser.parse_args()
    rclpy.init()
    node = rclpy.create_node("vision_msgs_probe")
    got: dict = {"detections": [], "label_info": None, "sent": []}

    def on_labels(msg: LabelInfo) -> None:
        got["label_info"] = {"stamp": [msg.header.stamp.sec, msg.header.stamp.nanosec], "threshold": msg.threshold,
                             "class_map": [[c.class_id, c.class_name] for c in msg.class_map]}

    reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
    node.create_subscription(Detection2DArray, "detections", lambda m: got["detections"].append(detection_dict(m)),
                             reliable)
    node.create_subscription(LabelInfo, "detections/label_info", on_labels, latched)
    pub = node.create_publisher(Image, "fused/image", qos_profile_sensor_data)
    frames = [cv2.imread(path) for path in args.frames]
    deadline = time.monotonic() + args.timeout
    next_send, i = time.monotonic(), 0
    try:
        while time.monotonic() < deadline and not (len(got["detections"]) >= args.count and got["label_info"]):
            if frames and time.monotonic() >= next_send and pub.get_subscription_count():
                index = (i // args.repeat) % len(frames)
                msg = numpy_to_image(frames[index], "bgr8")
                msg.header.stamp.sec, msg.header.stamp.nanosec, msg.header.frame_id = 3000 + i, 1000 + i, "fused_cam"
                pub.publish(msg)
                got["sent"].append([3000 + i, 1000 + i, index])
                i += 1
                next_send = time.monotonic() + 1.0 / args.rate
            rclpy.spin_once(node, timeout_sec=0.05)
    finally:
        node.destroy_node()
        rclpy.shutdown()
    print(json.dumps(got))
    return 0


if __name__ == "__main__":
    sys.exit(main())
