"""What the live-view nodes (`web_view_node`, `foxglove_node`) share: message conversions and on-demand subscriptions.

Their callbacks only store the received message in a newest-wins slot (`dig2dig_ros.view.frames`); decoding,
JPEG encoding and sending happen in the servers' own threads. Image subscriptions are best effort with depth 1
and exist only while someone watches: a 0.5 s timer on the node's executor adds the topics a browser asked for
(or a Foxglove client subscribed to) and drops those nobody read for `idle_unsubscribe_s`.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CompressedImage, Image

from dig2dig_ros.ros import conversions
from dig2dig_ros.view.foxglove_bridge import RawFrame, array_to_raw
from dig2dig_ros.view.frames import to_display

NEWEST_ONLY = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.BEST_EFFORT,
                         durability=DurabilityPolicy.VOLATILE)
COMPRESSED = "sensor_msgs/msg/CompressedImage"
DEFAULT_FOXGLOVE_TOPICS = ["fused/image", "fused/dig/overlay", "fused/dig/ir", "fused/dig/visible"]


def stamp_ns(msg: Any) -> int:
    return msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec


def message_to_bgr(msg: Image | CompressedImage) -> np.ndarray:
    """An Image or CompressedImage as displayable BGR uint8 (runs in a server thread, never in a callback)."""
    if isinstance(msg, CompressedImage):
        decoded = conversions.compressed_to_numpy(msg)
        if decoded.ndim == 2:
            return to_display(decoded, "mono16" if decoded.dtype == np.uint16 else "mono8")
        if decoded.dtype == np.uint16:
            decoded = (decoded >> 8).astype(np.uint8)
        return decoded[..., :3] if decoded.shape[2] >= 3 else cv2.cvtColor(decoded[..., 0], cv2.COLOR_GRAY2BGR)
    return to_display(conversions.image_to_numpy(msg), msg.encoding)


def message_to_raw(msg: Image) -> RawFrame:
    """An Image as Foxglove RawImage bytes: as received unless big-endian (Foxglove reads little-endian)."""
    if msg.is_bigendian:
        return array_to_raw((conversions.image_to_numpy(msg), msg.encoding))
    return RawFrame(bytes(msg.data), msg.width, msg.height, msg.encoding, msg.step)


def diagnostics_to_dict(msg: DiagnosticArray) -> dict[str, Any]:
    return {"header": {"stamp": {"sec": msg.header.stamp.sec, "nsec": msg.header.stamp.nanosec},
                       "frame_id": msg.header.frame_id},
            "status": [{"level": level_of(s.level), "name": s.name, "message": s.message, "hardware_id": s.hardware_id,
                        "values": [{"key": kv.key, "value": kv.value} for kv in s.values]} for s in msg.status]}


def level_of(level: Any) -> int:
    return level[0] if isinstance(level, bytes | bytearray) else int(level)


class ViewNode(Node):
    """What both view nodes share: declared parameters, topic resolution, on-demand image subscriptions."""

    def _param(self, name: str, default: Any, text: str) -> Any:
        return self.declare_parameter(name, default, ParameterDescriptor(description=text, read_only=True)).value

    def _resolve(self, name: str) -> str:
        """The full topic name (namespace and remaps applied); ValueError for a name ROS refuses."""
        try:
            return self.resolve_topic_name(name)
        except RuntimeError as exc:  # rclpy's RCLError: an invalid name, e.g. from a URL
            raise ValueError(f"invalid topic name {name!r}: {str(exc).split(', at ')[0]}") from exc

    def _image_subscription(self, topic: str, callback: Any) -> Any:
        types = dict(self.get_topic_names_and_types()).get(topic, [])
        compressed = COMPRESSED in types or (not types and topic.endswith("/compressed"))
        return self.create_subscription(CompressedImage if compressed else Image, topic, callback, NEWEST_ONLY)


