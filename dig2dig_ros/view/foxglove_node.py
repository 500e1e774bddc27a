"""`dig2dig_foxglove_bridge`: a Foxglove WebSocket server fed from the graph's topics (see docs/VIEW.md)."""

from __future__ import annotations

import sys
from typing import Any

from diagnostic_msgs.msg import DiagnosticArray

from dig2dig_ros.ros.node_support import StartupError, run_node, steady_timer
from dig2dig_ros.view.foxglove_bridge import DIAGNOSTICS_TOPIC, FoxgloveBridge
from dig2dig_ros.view.ros_common import DEFAULT_FOXGLOVE_TOPICS, ViewNode, diagnostics_to_dict, message_to_raw, stamp_ns


class FoxgloveNode(ViewNode):
    """`dig2dig_foxglove_bridge`: a Foxglove WebSocket server with the fused image, overlay, weights, diagnostics."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__("dig2dig_foxglove_bridge", **kwargs)
        host = self._param("host", "127.0.0.1", "address to bind (0.0.0.0: every interface; there is no login)")
        port = self._param("port", 8765, "WebSocket port")
        topics = self._param("topics", DEFAULT_FOXGLOVE_TOPICS, "image topics offered as foxglove.RawImage")
        try:
            self.topics = [self._resolve(t) for t in topics]
        except ValueError as exc:
            raise StartupError(f"parameter topics: {exc}") from exc
        self.bridge = FoxgloveBridge(self.topics, host=host, port=port, name=self.get_fully_qualified_name(),
                                     to_raw=message_to_raw)
        try:
            self.bridge.start()
        except Exception as exc:  # noqa: BLE001 - the SDK raises its own error types for a busy port
            raise StartupError(f"cannot serve Foxglove on {host}:{port}: {exc}") from exc
        self.subscriptions_by_topic: dict[str, Any] = {}
        self._timer = steady_timer(self, 0.5, self._reconcile)
        self.get_logger().info(f"Foxglove WebSocket server on ws://{host}:{self.bridge.port}")

    def _reconcile(self) -> None:
        watched = self.bridge.watched()
        for topic in [*self.topics, DIAGNOSTICS_TOPIC]:
            subscribed = topic in self.subscriptions_by_topic
            if topic in watched and not subscribed:
                if topic == DIAGNOSTICS_TOPIC:
                    sub = self.create_subscription(DiagnosticArray, topic, self._on_diagnostics, 10)
                else:
                    sub = self._image_subscription(
                        topic, lambda msg, t=topic: self.bridge.put_image(t, msg, stamp_ns(msg), msg.header.frame_id))
                self.subscriptions_by_topic[topic] = sub
            elif topic not in watched and subscribed:
                self.destroy_subscription(self.subscriptions_by_topic.pop(topic))

    def _on_diagnostics(self, msg: DiagnosticArray) -> None:
        self.bridge.put_diagnostics(diagnostics_to_dict(msg), stamp_ns(msg))

    def stop(self) -> None:
        self.bridge.stop()



def main(argv: list[str] | None = None) -> int:
    return run_node(FoxgloveNode, "dig2dig_foxglove_bridge", argv)


if __name__ == "__main__":
    sys.exit(main())
