"""A Foxglove WebSocket server (the `foxglove-sdk` package) for the fusion graph. No ROS import here.

Foxglove (app or browser) connects to ws://localhost:8765 and sees one channel per image topic as
`foxglove.RawImage` (protobuf; the DIG weights as 32FC1 in [0, 1], which Foxglove shows black → white or with a
colour map) and `/diagnostics` as JSON shaped like `diagnostic_msgs/msg/DiagnosticArray`.

`put_image` and `put_diagnostics` only store the newest item per channel (a `FrameSlot`, newest wins) and wake one
sender thread, which converts and logs what is new, and only for channels a client subscribed to. The SDK buffers
a bounded number of messages per client and drops the oldest for a slow one, so nothing here ever waits on a
viewer.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from dig2dig_ros.view.frames import FrameSlot

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


@dataclass(frozen=True)
class RawFrame:
    """Image bytes as Foxglove's RawImage takes them (little-endian, rows of `step` bytes)."""

    data: bytes
    width: int
    height: int
    encoding: str
    step: int


def array_to_raw(payload: tuple[np.ndarray, str]) -> RawFrame:
    """`(array, encoding)` → RawFrame (the bridge's default converter)."""
    array, encoding = payload
    array = np.ascontiguousarray(array)
    if array.dtype.byteorder == ">":
        array = array.astype(array.dtype.newbyteorder("<"))
    height, width = array.shape[:2]
    return RawFrame(array.tobytes(), width, height, encoding, array.strides[0])


class FoxgloveBridge:
    """`start()` opens the server on host:port (port 0: a free one, see `.port`); `put_*` hand over items."""

    def __init__(self, topics: list[str], host: str = "127.0.0.1", port: int = 8765, name: str = "dig2dig",
                 to_raw: Callable[[Any], RawFrame] = array_to_raw, diagnostics: bool = True) -> None:
        self.topics, self.host, self.requested_port, self.name = list(topics), host, port, name
        self._to_raw = to_raw
        self._with_diagnostics = diagnostics
        self._slots = {topic: FrameSlot(lambda payload: payload) for topic in self.topics}
        self._diag_slot = FrameSlot(lambda payload: payload)
        self._wake = threading.Condition()
        self._pending = False
        self._running = False
        self._thread: threading.Thread | None = None
        self.server: Any = None
        self.sent: dict[str, int] = dict.fromkeys(self.topics, 0)
        self.errors = 0
        self._subscribers: dict[str, int] = {}  # topic → subscribed clients (diagnostics included)
        self._subscribers_lock = threading.Lock()

    @property
    def port(self) -> int:
        return self.server.port if self.server is not None else self.requested_port

    def start(self) -> FoxgloveBridge:
        import foxglove
        from foxglove.channels import RawImageChannel

        self.context = foxglove.Context()  # our own, so channels never leak into another server in the process
        self._channels = {t: RawImageChannel(t, context=self.context) for t in self.topics}
        self._diag_channel = None
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
        from foxglove.messages import RawImage, Timestamp

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
                channel = self._channels[topic]
                if not channel.has_sinks():
                    continue
                try:
                    raw = self._to_raw(frame.payload)
                    channel.log(RawImage(
                        timestamp=Timestamp(sec=frame.stamp_ns // 10**9, nsec=frame.stamp_ns % 10**9),
                        frame_id=frame.frame_id, width=raw.width, height=raw.height, encoding=raw.encoding,
                        step=raw.step, data=raw.data))
                    self.sent[topic] += 1
                except Exception:  # noqa: BLE001 - a frame the viewer cannot take costs that frame only
                    self.errors += 1
            frame = self._diag_slot.latest()
            if self._diag_channel is not None and frame is not None and frame.seq != diag_seen:
                diag_seen = frame.seq
                if self._diag_channel.has_sinks():
                    self._diag_channel.log(frame.payload)


class _Listener:
    """The server's callbacks we use: which channels clients subscribe to (so the node subscribes only to those)."""

    def __init__(self, bridge: FoxgloveBridge) -> None:
        self.bridge = bridge

    def on_subscribe(self, client: Any, channel: Any) -> None:
        self.bridge._count_subscriber(channel.topic, +1)

    def on_unsubscribe(self, client: Any, channel: Any) -> None:
        self.bridge._count_subscriber(channel.topic, -1)
