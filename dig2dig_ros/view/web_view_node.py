"""`dig2dig_web_view`: the live page, MJPEG streams and snapshots of the graph's image topics (see docs/VIEW.md)."""

from __future__ import annotations

import sys
import time
from typing import Any

from diagnostic_msgs.msg import DiagnosticArray

from dig2dig_ros.ros.node_support import StartupError, run_node, steady_timer
from dig2dig_ros.view.frames import DiagnosticsBoard, FrameHub
from dig2dig_ros.view.ros_common import ViewNode, level_of, message_to_bgr, stamp_ns
from dig2dig_ros.view.web_view import WebView


class WebViewNode(ViewNode):
    """`dig2dig_web_view`: serves the live page, MJPEG streams and snapshots of any image topic."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__("dig2dig_web_view", **kwargs)
        host = self._param("host", "127.0.0.1", "address to bind (0.0.0.0: every interface; there is no login)")
        port = self._param("port", 8080, "HTTP port")
        max_fps = self._param("max_fps", 15.0, "most frames per second sent to one stream")
        quality = self._param("jpeg_quality", 80, "JPEG quality of streams and snapshots (1-100)")
        self.idle_s = self._param("idle_unsubscribe_s", 30.0, "drop an image subscription nobody read for this long")
        self.board = DiagnosticsBoard()
        self.hub = FrameHub(message_to_bgr)
        self.subscriptions_by_topic: dict[str, Any] = {}
        self.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, 10)
        self.view = WebView(self.hub, self.board, host=host, port=port, max_fps=max_fps, quality=quality,
                            resolve=self._resolve)
        try:
            self.view.start()
        except OSError as exc:
            raise StartupError(f"cannot serve on {host}:{port}: {exc}") from exc
        self._timer = steady_timer(self, 0.5, self._reconcile)
        self.get_logger().info(f"live view on http://{host}:{self.view.port}/")

    def _on_diagnostics(self, msg: DiagnosticArray) -> None:
        for s in msg.status:
            values = {kv.key: kv.value for kv in s.values}
            self.board.update(s.name, level_of(s.level), s.message, s.hardware_id, values)

    def _reconcile(self) -> None:
        now = time.monotonic()
        for topic, slot in self.hub.topics().items():
            if topic not in self.subscriptions_by_topic:
                try:
                    self.subscriptions_by_topic[topic] = self._image_subscription(
                        topic, lambda msg, slot=slot: slot.put(msg, stamp_ns(msg), msg.header.frame_id))
                except Exception as exc:  # noqa: BLE001 - one bad request must not stop the view
                    self.get_logger().warning(f"cannot subscribe to {topic}: {exc}")
                    self.hub.forget(topic)
            elif now - slot.last_read > self.idle_s:
                self.destroy_subscription(self.subscriptions_by_topic.pop(topic))
                self.hub.forget(topic)

    def stop(self) -> None:
        self.view.stop()


def main(argv: list[str] | None = None) -> int:
    return run_node(WebViewNode, "dig2dig_web_view", argv)


if __name__ == "__main__":
    sys.exit(main())
