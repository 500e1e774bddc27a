"""What the live-view nodes (`web_view_node`, `foxglove_node`) share: message conversions, on-demand image inputs
whose QoS follows the publishers, their losses, and the nodes' own /diagnostics.

Their callbacks only store the received message in a newest-wins slot (`dig2dig_ros.view.frames`); decoding,
JPEG encoding and sending happen in the servers' own threads. Image inputs keep depth 1 (newest only) and exist
only while someone watches: a 0.5 s timer on the node's executor adds the topics a browser asked for (or a Foxglove
client subscribed to), drops those nobody reads, and re-matches each input's reliability to its publishers
(`dig2dig_ros.ros.qos_match.MatchedInput`: reliable only when every publisher is). Messages the middleware reports
lost are counted per topic, shown in the view's status and in the node's /diagnostics, and explained in a log line
(at most one per topic every 10 s) while they are being lost.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import cv2
import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rclpy.node import Node
from rclpy.qos import ReliabilityPolicy
from sensor_msgs.msg import CompressedImage, Image

from dig2dig_ros.ros import conversions
from dig2dig_ros.ros.node_support import StartupError, descriptor, diagnostics
from dig2dig_ros.ros.params import ParamSpec, check_value
from dig2dig_ros.ros.qos_match import MatchedInput
from dig2dig_ros.view.foxglove_bridge import CompressedFrame, RawFrame, array_to_raw, foxglove_format
from dig2dig_ros.view.frames import encode_jpeg, to_display

COMPRESSED = "sensor_msgs/msg/CompressedImage"
IMAGE = "sensor_msgs/msg/Image"
DEFAULT_FOXGLOVE_TOPICS = ["fused/image", "fused/dig/overlay", "fused/dig/ir", "fused/dig/visible"]
INPUT_DEPTH = 1  # newest only: a viewer wants the current frame, never a backlog
RECENT_S = 3.0  # losses within this window make the node's status WARN
LOSS_LOG_S = 10.0  # at most one loss line per topic this often


def stamp_ns(msg: Any) -> int:
    return msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec


def is_compressed_name(topic: str) -> bool:
    """image_transport's name for a compressed stream: `<base>/compressed`."""
    return topic.rstrip("/").endswith("/compressed")


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


def compressed_to_raw(msg: CompressedImage) -> RawFrame:
    """A CompressedImage decoded to a RawImage Foxglove shows: mono8, mono16, bgr8 or bgra8."""
    decoded = conversions.compressed_to_numpy(msg)  # (H,W) or (H,W,3|4), uint8 or uint16
    if decoded.ndim == 2:
        return array_to_raw((decoded, "mono16" if decoded.dtype == np.uint16 else "mono8"))
    if decoded.dtype == np.uint16:  # Foxglove has no 16-bit colour encoding
        decoded = (decoded >> 8).astype(np.uint8)
    return array_to_raw((decoded, "bgra8" if decoded.shape[2] == 4 else "bgr8"))


def message_to_frame(msg: Image | CompressedImage, compressed: bool) -> RawFrame | CompressedFrame:
    """A message as its Foxglove channel takes it: `compressed` → foxglove.CompressedImage, else RawImage.

    A CompressedImage in a format Foxglove decodes (jpeg, png, webp, avif) goes to a compressed channel as is; on a
    RawImage channel (a topic whose type was not known when the channels were advertised) it is decoded. An Image
    on a compressed channel is sent as a JPEG of its display form.
    """
    if isinstance(msg, CompressedImage):
        fmt = foxglove_format(msg.format)
        if compressed and fmt is not None:
            return CompressedFrame(bytes(msg.data), fmt)
        if compressed:
            return CompressedFrame(encode_jpeg(message_to_bgr(msg)), "jpeg")
        return compressed_to_raw(msg)
    if compressed:
        return CompressedFrame(encode_jpeg(message_to_bgr(msg)), "jpeg")
    return message_to_raw(msg)


def diagnostics_to_dict(msg: DiagnosticArray) -> dict[str, Any]:
    return {"header": {"stamp": {"sec": msg.header.stamp.sec, "nsec": msg.header.stamp.nanosec},
                       "frame_id": msg.header.frame_id},
            "status": [{"level": level_of(s.level), "name": s.name, "message": s.message, "hardware_id": s.hardware_id,
                        "values": [{"key": kv.key, "value": kv.value} for kv in s.values]} for s in msg.status]}


def level_of(level: Any) -> int:
    return level[0] if isinstance(level, bytes | bytearray) else int(level)


def reliability_name(input_: MatchedInput) -> str:
    """reliable, best_effort, or none (no subscription yet: no publisher)."""
    if input_.reliability is None:
        return "none"
    return "reliable" if input_.reliability == ReliabilityPolicy.RELIABLE else "best_effort"


class ViewNode(Node):
    """What both view nodes share: declared parameters, topic resolution, image inputs matched to their publishers
    with their losses counted and explained, and the node's /diagnostics."""

    def __init__(self, name: str, **kwargs: Any) -> None:
        super().__init__(name, **kwargs)
        self.lost_earlier: dict[str, int] = {}  # topic → messages lost by its inputs already dropped
        self._loss_logged: dict[str, float] = {}  # topic → when its losses were last logged

    def _declare(self, specs: list[ParamSpec]) -> dict[str, Any]:
        """Declare `specs` (descriptions, ranges, read-only) and return their values; StartupError for a bad one."""
        values = {}
        for spec in specs:
            try:
                values[spec.name] = self.declare_parameter(spec.name, spec.default, descriptor(spec)).value
            except Exception as exc:  # noqa: BLE001 - rclpy refuses an out-of-range or mistyped value
                raise StartupError(f"parameter {spec.name}: {exc}") from exc
            problem = check_value(spec, values[spec.name])
            if problem:
                raise StartupError(problem)
        return values

    def _resolve(self, name: str) -> str:
        """The full topic name (namespace and remaps applied); ValueError for a name ROS refuses."""
        try:
            return self.resolve_topic_name(name)
        except RuntimeError as exc:  # rclpy's RCLError: an invalid name, e.g. from a URL
            raise ValueError(f"invalid topic name {name!r}: {str(exc).split(', at ')[0]}") from exc

    # -- image inputs -----------------------------------------------------------------------------------------
    def _image_type(self, topic: str) -> type:
        """Image or CompressedImage: as the topic's publishers say (our own subscriptions do not count), else (none
        yet, or both types) by image_transport's naming."""
        types = {info.topic_type for info in self.get_publishers_info_by_topic(topic)}
        if types & {COMPRESSED, IMAGE} == {COMPRESSED}:
            return CompressedImage
        if types & {COMPRESSED, IMAGE} == {IMAGE}:
            return Image
        return CompressedImage if is_compressed_name(topic) else Image

    def _image_input(self, topic: str, callback: Callable[[Any], None]) -> MatchedInput:
        """A depth-1 input on `topic` (a full name) whose reliability follows its publishers."""
        return MatchedInput(self, self._image_type(topic), topic, callback, INPUT_DEPTH, label="view")

    def _drop_input(self, input_: MatchedInput) -> None:
        """Destroy the input's subscription (and the one it is replacing, if a switch is under way); its losses
        stay counted."""
        self.lost_earlier[input_.topic] = self.lost_earlier.get(input_.topic, 0) + input_.lost
        input_.destroy()

    def _refresh_inputs(self, inputs: dict[str, MatchedInput]) -> None:
        """Re-match every input to its publishers (a new type re-creates it) and explain recent losses."""
        now = time.monotonic()
        for topic, input_ in list(inputs.items()):
            try:
                if self._image_type(topic) is not input_.msg_type:
                    self._drop_input(input_)
                    inputs[topic] = input_ = self._image_input(topic, input_.callback)
                    self.get_logger().info(f"view input {topic}: now {input_.msg_type.__name__} (as published)")
                else:
                    input_.refresh()
            except Exception as exc:  # noqa: BLE001 - one topic's trouble must not stop the view
                self.get_logger().warning(f"view input {topic}: {exc}", throttle_duration_sec=10.0)
            lost = input_.lost_since(now - RECENT_S)
            if lost and now - self._loss_logged.get(topic, -LOSS_LOG_S) >= LOSS_LOG_S:
                self._loss_logged[topic] = now
                self.get_logger().warning(input_.loss_cause(lost, RECENT_S))

    def lost(self, topic: str, inputs: dict[str, MatchedInput]) -> int:
        """Messages on `topic` the middleware reported lost since the node started (every subscription to it)."""
        current = inputs.get(topic)
        return self.lost_earlier.get(topic, 0) + (current.lost if current is not None else 0)

    def transport(self, inputs: dict[str, MatchedInput]) -> dict[str, dict[str, Any]]:
        """Per subscribed topic: messages lost since start and in the last RECENT_S s, and the reliability."""
        since = time.monotonic() - RECENT_S
        return {topic: {"lost": self.lost(topic, inputs), "lost_recent": i.lost_since(since),
                        "reliability": reliability_name(i)} for topic, i in inputs.items()}

    def _publish_status(self, publisher: Any, inputs: dict[str, MatchedInput], values: dict[str, Any],
                        problems: list[str], ok_message: str) -> None:
        """The node's own /diagnostics: WARN naming every recent loss and problem, else OK with `ok_message`."""
        since = time.monotonic() - RECENT_S
        causes = [i.loss_cause(i.lost_since(since), RECENT_S) for i in inputs.values() if i.lost_since(since)]
        causes += problems
        for topic in sorted({*inputs, *self.lost_earlier}):
            values[f"{topic} lost"] = self.lost(topic, inputs)
        for topic, i in inputs.items():
            values[f"{topic} reliability"] = reliability_name(i)
        level, message = (DiagnosticStatus.WARN, "; ".join(causes)) if causes else (DiagnosticStatus.OK, ok_message)
        publisher.publish(diagnostics(self, "view", level, message, values))
