"""`dig2dig_foxglove_bridge`: a Foxglove WebSocket server fed from the graph's topics (see docs/VIEW.md)."""

from __future__ import annotations

import sys
import time
from typing import Any

from diagnostic_msgs.msg import DiagnosticArray
from sensor_msgs.msg import CompressedImage

from dig2dig_ros.ros.node_support import StartupError, run_node, steady_timer
from dig2dig_ros.ros.params import ParamSpec
from dig2dig_ros.ros.qos_match import MatchedInput
from dig2dig_ros.view.foxglove_bridge import DIAGNOSTICS_TOPIC, FoxgloveBridge
from dig2dig_ros.view.ros_common import (
    DEFAULT_FOXGLOVE_TOPICS,
    RECENT_S,
    ViewNode,
    diagnostics_to_dict,
    message_to_frame,
    stamp_ns,
)

RECONCILE_S = 0.5  # how often subscriptions follow the Foxglove clients', and inputs follow their publishers
STATUS_S = 1.0  # the node's own /diagnostics period
FAILURE_LOG_S = 10.0  # at most one line about messages Foxglove could not be sent this often

PARAMS: list[ParamSpec] = [
    ParamSpec("host", "127.0.0.1", "address to bind (0.0.0.0: every interface; there is no login)", read_only=True),
    ParamSpec("port", 8765, "WebSocket port", low=0, high=65535, read_only=True),
    ParamSpec("topics", DEFAULT_FOXGLOVE_TOPICS, "image topics offered: foxglove.RawImage, or "
              "foxglove.CompressedImage for a compressed one (image_transport's <base>/compressed)", read_only=True),
]


class FoxgloveNode(ViewNode):
    """`dig2dig_foxglove_bridge`: a Foxglove WebSocket server with the fused image, overlay, weights, diagnostics."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__("dig2dig_foxglove_bridge", **kwargs)
        values = self._declare(PARAMS)
        host, port = values["host"], values["port"]
        try:
            self.topics = [self._resolve(t) for t in values["topics"]]
        except ValueError as exc:
            raise StartupError(f"parameter topics: {exc}") from exc
        compressed = [t for t in self.topics if self._image_type(t) is CompressedImage]
        self.bridge = FoxgloveBridge(self.topics, host=host, port=port, name=self.get_fully_qualified_name(),
                                     convert=message_to_frame, compressed=compressed, log=self._log_failure)
        try:
            self.bridge.start()
        except Exception as exc:  # noqa: BLE001 - the SDK raises its own error types for a busy port
            raise StartupError(f"cannot serve Foxglove on {host}:{port}: {exc}") from exc
        self.inputs: dict[str, MatchedInput] = {}
        self.diagnostics_subscription: Any = None
        self._failures_seen: dict[str, tuple[float, int]] = {}  # channel → (when its count last grew, count)
        self.pub_diag = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._timer = steady_timer(self, RECONCILE_S, self._reconcile)
        self._status_timer = steady_timer(self, STATUS_S, self._publish_diagnostics)
        kinds = f" ({', '.join(compressed)} as CompressedImage)" if compressed else ""
        self.get_logger().info(f"Foxglove WebSocket server on ws://{host}:{self.bridge.port}{kinds}")

    def _log_failure(self, text: str) -> None:
        """The bridge's sender thread: one line per failed message, at most one every FAILURE_LOG_S."""
        self.get_logger().warning(text, throttle_duration_sec=FAILURE_LOG_S)

    def _reconcile(self) -> None:
        """Subscribe to what Foxglove clients watch, drop what they stopped watching, re-match the inputs."""
        watched = self.bridge.watched()
        if DIAGNOSTICS_TOPIC in watched and self.diagnostics_subscription is None:
            self.diagnostics_subscription = self.create_subscription(
                DiagnosticArray, DIAGNOSTICS_TOPIC, self._on_diagnostics, 10)
        elif DIAGNOSTICS_TOPIC not in watched and self.diagnostics_subscription is not None:
            self.destroy_subscription(self.diagnostics_subscription)
            self.diagnostics_subscription = None
        for topic in self.topics:
            if topic in watched and topic not in self.inputs:
                try:
                    self.inputs[topic] = self._image_input(
                        topic, lambda msg, t=topic: self.bridge.put_image(t, msg, stamp_ns(msg), msg.header.frame_id))
                except Exception as exc:  # noqa: BLE001 - one topic's trouble must not stop the bridge
                    self.get_logger().warning(f"cannot subscribe to {topic}: {exc}", throttle_duration_sec=10.0)
            elif topic not in watched and topic in self.inputs:
                self._drop_input(self.inputs.pop(topic))
        self._refresh_inputs(self.inputs)

    def _on_diagnostics(self, msg: DiagnosticArray) -> None:
        self.bridge.put_diagnostics(diagnostics_to_dict(msg), stamp_ns(msg))

    def problems(self, now: float | None = None) -> list[str]:
        """One line per channel whose messages failed within the last RECENT_S s, with the newest reason."""
        now = time.monotonic() if now is None else now
        problems = []
        if not self.bridge.alive():
            problems.append("the Foxglove sender thread has stopped: nothing reaches Foxglove")
        for channel, count in list(self.bridge.failed.items()):
            when, seen = self._failures_seen.get(channel, (0.0, 0))
            if count != seen:
                when = now
                self._failures_seen[channel] = (now, count)
            if count and now - when <= RECENT_S:
                problems.append(f"Foxglove channel {channel}: {count} messages not sent, the newest because "
                                f"{self.bridge.last_failure.get(channel, '?')}")
        return problems

    def _publish_diagnostics(self) -> None:
        bridge = self.bridge
        values: dict[str, Any] = {"failed": bridge.errors}
        for topic in self.topics:
            values[f"{topic} sent"] = bridge.sent.get(topic, 0)
            values[f"{topic} failed"] = bridge.failed.get(topic, 0)
        values[f"{DIAGNOSTICS_TOPIC} failed"] = bridge.failed.get(DIAGNOSTICS_TOPIC, 0)
        watched = bridge.watched()
        self._publish_status(self.pub_diag, self.inputs, values, self.problems(),
                             f"{len(watched)} channels watched, {sum(bridge.sent.values())} images sent")

    def stop(self) -> None:
        self.bridge.stop()


def main(argv: list[str] | None = None) -> int:
    return run_node(FoxgloveNode, "dig2dig_foxglove_bridge", argv)


if __name__ == "__main__":
    sys.exit(main())
