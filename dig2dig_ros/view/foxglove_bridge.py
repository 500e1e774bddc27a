"""A Foxglove WebSocket server (the `foxglove-sdk` package) for the fusion graph. No ROS import here.

Foxglove (app or browser) connects to ws://localhost:8765 and sees one channel per image topic: `foxglove.RawImage`
(protobuf; the DIG weights as 32FC1 in [0, 1], which Foxglove shows black → white or with a colour map), or
`foxglove.CompressedImage` for a compressed topic (image_transport's `<base>/compressed`: the JPEG or PNG bytes go
out as received, nothing is decoded), and `/diagnostics` as JSON shaped like `diagnostic_msgs/msg/DiagnosticArray`.

`put_image` and `put_diagnostics` only store the newest item per channel (a `FrameSlot`, newest wins) and wake one
sender thread, which converts and logs what is new, and only for channels a client subscribed to. The SDK buffers
a bounded number of messages per client and drops the oldest for a slow one, so nothing here ever waits on a
viewer. A message that cannot be converted or sent costs that message only: it is counted per channel
(`failed`, `last_failure`) and logged, and the sender thread goes on.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from dig2dig_ros.view.frames import FrameSlot, encode_jpeg, to_display

DIAGNOSTICS_TOPIC = "/diagnostics"
DIAGNOSTICS_SCHEMA = {
    "type": "object",
    "properties": {
        "header": {"type": "object", "properties": {
            "stamp": {"type": "object", "properties": {"sec": {"type": "integer"}, "nsec": {"type": "integer"}}},
            "frame_id": {"type": "string"}}},
        "status": {"type": "array", "items": {"type": "object", "properties": {
            "level": {"type": "integer"}, "name": {"type": "string"}, "message": {"type": "string"},
            "hardware_id": {"type": "string"},
            "values": {"type": "array", "items": {"type": "object", "properties": {
                "key": {"type": "string"}, "value": {"type": "string"}}}}}}},
    },
}


FOXGLOVE_FORMATS = ("jpeg", "png", "webp", "avif")  # what foxglove.CompressedImage's `format` may say


@dataclass(frozen=True)
class RawFrame:
    """Image bytes as Foxglove's RawImage takes them (little-endian, rows of `step` bytes)."""

    data: bytes
    width: int
    height: int
    encoding: str
    step: int


@dataclass(frozen=True)
class CompressedFrame:
    """Compressed image bytes as Foxglove's CompressedImage takes them; `format` is one of FOXGLOVE_FORMATS."""

    data: bytes
    format: str


Converter = Callable[[Any, bool], "RawFrame | CompressedFrame"]  # (payload, compressed channel?) → frame


def foxglove_format(ros_format: str) -> str | None:
    """The image format Foxglove names for a ROS CompressedImage `format` string, or None when it cannot show it.

    ROS writes `jpeg`, `png`, or image_transport's `bgr8; jpeg compressed bgr8`; `compressedDepth` (a PNG behind
    a private header) is not an image Foxglove decodes.
    """
    words = re.split(r"[^a-z0-9]+", ros_format.lower())
    if "compresseddepth" in words:
        return None
    for word in words:
        if word in ("jpeg", "jpg"):
            return "jpeg"
        if word in FOXGLOVE_FORMATS:
            return word
    return None


def array_to_raw(payload: tuple[np.ndarray, str]) -> RawFrame:
    """`(array, encoding)` → RawFrame."""
    array, encoding = payload
    array = np.ascontiguousarray(array)
    if array.dtype.byteorder == ">":
        array = array.astype(array.dtype.newbyteorder("<"))
    height, width = array.shape[:2]
    return RawFrame(array.tobytes(), width, height, encoding, array.strides[0])


def array_to_frame(payload: tuple[np.ndarray, str], compressed: bool = False) -> RawFrame | CompressedFrame:
    """`(array, encoding)` → RawFrame, or a JPEG of its display form for a compressed channel (the default)."""
    if not compressed:
        return array_to_raw(payload)
    return CompressedFrame(encode_jpeg(to_display(*payload)), "jpeg")


class FoxgloveBridge:
    """`start()` opens the server on host:port (port 0: a free one, see `.port`); `put_*` hand over items.

    `compressed` names the topics advertised as `foxglove.CompressedImage` (the others are RawImage); `convert`
    turns a payload into the frame its channel takes; `log` gets one line per message that failed (the node
    passes a throttled logger).
    """

    def __init__(self, topics: list[str], host: str = "127.0.0.1", port: int = 8765, name: str = "dig2dig",
                 convert: Converter = array_to_frame, diagnostics: bool = True,
                 compressed: tuple[str, ...] | list[str] | set[str] = (),
                 log: Callable[[str], None] | None = None) -> None:
        self.topics, self.host, self.requested_port, self.name = list(topics), host, port, name
        self.compressed = {t for t in compressed if t in self.topics}
        self._convert = convert
        self._log = log or logging.getLogger("dig2dig_ros.view.foxglove").warning
        self._with_diagnostics = diagnostics
        self._slots = {topic: FrameSlot(lambda payload: payload) for topic in self.topics}
        self._diag_slot = FrameSlot(lambda payload: payload)
        self._wake = threading.Condition()
        self._pending = False
        self._running = False
        self._thread: threading.Thread | None = None
        self.server: Any = None
        self._channels: dict[str, Any] = {}
        self._diag_channel: Any = None
        self.sent: dict[str, int] = dict.fromkeys(self.topics, 0)
        # channel (or "sender") → messages that could not be converted or sent, and the newest reason
        self.failed: dict[str, int] = dict.fromkeys([*self.topics, DIAGNOSTICS_TOPIC], 0)
        self.last_failure: dict[str, str] = {}
        self._subscribers: dict[str, int] = {}  # topic → subscribed clients (diagnostics included)
        self._subscribers_lock = threading.Lock()

    @property
    def port(self) -> int:
        return self.server.port if self.server is not None else self.requested_port

    @property
    def errors(self) -> int:
        """Messages that failed on any channel since start."""
        return sum(self.failed.values())

    def start(self) -> FoxgloveBridge:
        import foxglove
        from foxglove.channels import CompressedImageChannel, RawImageChannel

        self.context = foxglove.Context()  # our own, so channels never leak into another server in the process
        self._channels = {t: (CompressedImageChannel if t in self.compressed else RawImageChannel)(
            t, context=self.context) for t in self.topics}
        if self._with_diagnostics:
            self._diag_channel = foxglove.Channel(
                DIAGNOSTICS_TOPIC, message_encoding="json", context=self.context,
                schema=foxglove.Schema(name="diagnostic_msgs/msg/DiagnosticArray", encoding="jsonschema",
                                       data=json.dumps(DIAGNOSTICS_SCHEMA).encode()))
        self.server = foxglove.start_server(name=self.name, host=self.host, port=self.requested_port,
                                            context=self.context, message_backlog_size=32,
                                            server_listener=_Listener(self))
        self._running = True
        self._thread = threading.Thread(target=self._run, name="foxglove_sender", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        with self._wake:
            self._running = False
            self._wake.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self.server is not None:
            self.server.stop()
            self.server = None

    def alive(self) -> bool:
        """The sender thread runs (it only ends with `stop()`)."""
        return self._thread is not None and self._thread.is_alive()

    def watched(self) -> set[str]:
        """The topics (image topics and the diagnostics topic) that at least one client subscribes to now."""
        with self._subscribers_lock:
            return {topic for topic, count in self._subscribers.items() if count > 0}

    def _count_subscriber(self, topic: str, delta: int) -> None:
        with self._subscribers_lock:
            self._subscribers[topic] = max(0, self._subscribers.get(topic, 0) + delta)

    # -- producers: store and wake, nothing else --------------------------------------------------------------
    def put_image(self, topic: str, payload: Any, stamp_ns: int, frame_id: str = "") -> None:
        self._slots[topic].put(payload, stamp_ns, frame_id)
        self._poke()

    def put_diagnostics(self, message: dict[str, Any], stamp_ns: int = 0) -> None:
        self._diag_slot.put(message, stamp_ns)
        self._poke()

    def _poke(self) -> None:
        with self._wake:
            self._pending = True
            self._wake.notify()

    # -- the sender thread ------------------------------------------------------------------------------------
    def _run(self) -> None:
        seen = dict.fromkeys(self.topics, 0)
        diag_seen = 0
        while True:
            with self._wake:
                self._wake.wait_for(lambda: self._pending or not self._running, timeout=1.0)
                if not self._running:
                    return
                self._pending = False
            for topic, slot in self._slots.items():
                frame = slot.latest()
                if frame is None or frame.seq == seen[topic]:
                    continue
                seen[topic] = frame.seq
                try:
                    self._send_image(topic, frame)
                except Exception as exc:  # noqa: BLE001 - a frame the viewer cannot take costs that frame only
                    self._fail(topic, exc)
            frame = self._diag_slot.latest()
            if self._diag_channel is not None and frame is not None and frame.seq != diag_seen:
                diag_seen = frame.seq
                try:
                    if self._diag_channel.has_sinks():
                        self._diag_channel.log(frame.payload)
                except Exception as exc:  # noqa: BLE001 - e.g. a value JSON cannot hold: that message only
                    self._fail(DIAGNOSTICS_TOPIC, exc)

    def _send_image(self, topic: str, frame: Any) -> None:
        from foxglove.messages import CompressedImage, RawImage, Timestamp

        channel = self._channels[topic]
        if not channel.has_sinks():
            return
        compressed = topic in self.compressed
        out = self._convert(frame.payload, compressed)
        stamp = Timestamp(sec=frame.stamp_ns // 10**9, nsec=frame.stamp_ns % 10**9)
        if compressed:
            if not isinstance(out, CompressedFrame):
                raise TypeError(f"the converter gave {type(out).__name__} for a CompressedImage channel")
            channel.log(CompressedImage(timestamp=stamp, frame_id=frame.frame_id, data=out.data, format=out.format))
        else:
            if not isinstance(out, RawFrame):
                raise TypeError(f"the converter gave {type(out).__name__} for a RawImage channel")
            channel.log(RawImage(timestamp=stamp, frame_id=frame.frame_id, width=out.width, height=out.height,
                                 encoding=out.encoding, step=out.step, data=out.data))
        self.sent[topic] += 1

    def _fail(self, channel: str, exc: Exception) -> None:
        text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        self.failed[channel] = self.failed.get(channel, 0) + 1
        self.last_failure[channel] = text
        try:
            self._log(f"Foxglove channel {channel}: message not sent ({self.failed[channel]} so far): {text}")
        except Exception:  # noqa: BLE001, S110 - a failing logger must not end the sender either
            pass


class _Listener:
    """The server's callbacks we use: which channels clients subscribe to (so the node subscribes only to those)."""

    def __init__(self, bridge: FoxgloveBridge) -> None:
        self.bridge = bridge

    def on_subscribe(self, client: Any, channel: Any) -> None:
        self.bridge._count_subscriber(channel.topic, +1)

    def on_unsubscribe(self, client: Any, channel: Any) -> None:
        self.bridge._count_subscriber(channel.topic, -1)
