"""`dig2dig_web_view`: the live page, MJPEG streams and snapshots of the graph's image topics (see docs/VIEW.md)."""

from __future__ import annotations

import sys
from typing import Any

from diagnostic_msgs.msg import DiagnosticArray

from dig2dig_ros.ros.node_support import StartupError, run_node, steady_timer
from dig2dig_ros.ros.params import ParamSpec
from dig2dig_ros.ros.qos_match import MatchedInput
from dig2dig_ros.view.frames import DiagnosticsBoard, FrameHub
from dig2dig_ros.view.ros_common import ViewNode, level_of, message_to_bgr, stamp_ns
from dig2dig_ros.view.web_view import WebView

RECONCILE_S = 0.5  # how often subscriptions follow what browsers read, and inputs follow their publishers
STATUS_S = 1.0  # the node's own /diagnostics period

PARAMS: list[ParamSpec] = [
    ParamSpec("host", "127.0.0.1", "address to bind (0.0.0.0: every interface; there is no login)", read_only=True),
    ParamSpec("port", 8080, "HTTP port", low=0, high=65535, read_only=True),
    ParamSpec("max_fps", 15.0, "most frames per second sent to one stream (0: no limit)", low=0.0, high=1000.0,
              read_only=True),
    ParamSpec("jpeg_quality", 80, "JPEG quality of streams and snapshots", low=1, high=100, read_only=True),
    ParamSpec("idle_unsubscribe_s", 30.0, "drop an image subscription no stream or snapshot read for this long "
              "(status.json does not count)", low=0.5, high=86400.0, read_only=True),
    ParamSpec("max_streams", 16, "most MJPEG streams open at once (every browser tab of the page opens 4); one "
              "more is answered 503", low=1, high=1000, read_only=True),
    ParamSpec("max_topics", 8, "most image topics subscribed through ?topic= besides the page's own panels; a "
              "request for one more is answered 503 until an unread one is dropped", low=0, high=1000,
              read_only=True),
]


class WebViewNode(ViewNode):
    """`dig2dig_web_view`: serves the live page, MJPEG streams and snapshots of any image topic."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__("dig2dig_web_view", **kwargs)
        values = self._declare(PARAMS)
        host, port = values["host"], values["port"]
        self.idle_s = values["idle_unsubscribe_s"]
        self.board = DiagnosticsBoard()
        self.hub = FrameHub(message_to_bgr)
        self.inputs: dict[str, MatchedInput] = {}
        self._transport: dict[str, dict[str, Any]] = {}  # replaced whole by the timer, read by HTTP threads
        self.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, 10)
        self.pub_diag = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.view = WebView(self.hub, self.board, host=host, port=port, max_fps=values["max_fps"],
                            quality=values["jpeg_quality"], resolve=self._resolve,
                            max_streams=values["max_streams"], max_topics=values["max_topics"],
                            transport=lambda: self._transport)
        try:
            self.view.start()
        except OSError as exc:
            raise StartupError(f"cannot serve on {host}:{port}: {exc}") from exc
        self._timer = steady_timer(self, RECONCILE_S, self._reconcile)
        self._status_timer = steady_timer(self, STATUS_S, self._publish_diagnostics)
        self.get_logger().info(f"live view on http://{host}:{self.view.port}/ (at most {values['max_streams']} "
                               f"streams, {values['max_topics']} topics besides the page's)")

    def _on_diagnostics(self, msg: DiagnosticArray) -> None:
        for s in msg.status:
            values = {kv.key: kv.value for kv in s.values}
            self.board.update(s.name, level_of(s.level), s.message, s.hardware_id, values)

    def _reconcile(self) -> None:
        """Subscribe to the topics browsers asked for, drop those nobody read for idle_unsubscribe_s, re-match."""
        for topic, slot in self.hub.topics().items():
            if topic not in self.inputs:
                try:
                    self.inputs[topic] = self._image_input(
                        topic, lambda msg, slot=slot: slot.put(msg, stamp_ns(msg), msg.header.frame_id))
                except Exception as exc:  # noqa: BLE001 - one bad request must not stop the view
                    self.get_logger().warning(f"cannot subscribe to {topic}: {exc}")
                    self.hub.forget(topic)
            elif slot.unread_s() > self.idle_s:
                self._drop_input(self.inputs.pop(topic))
                self.hub.forget(topic)
                self.get_logger().info(f"view input {topic}: unsubscribed (unread for {self.idle_s:g} s)")
        self._refresh_inputs(self.inputs)
        self._transport = self.transport(self.inputs)

    def _publish_diagnostics(self) -> None:
        view = self.view
        values: dict[str, Any] = {"streams": view.streams, "max_streams": view.max_streams,
                                  "topics": len(self.inputs), "max_topics": view.max_topics,
                                  "refused_streams": view.refused["streams"], "refused_topics": view.refused["topics"]}
        self._publish_status(self.pub_diag, self.inputs, values, [],
                             f"{view.streams} streams, {len(self.inputs)} topics subscribed")

    def stop(self) -> None:
        self.view.stop()


def main(argv: list[str] | None = None) -> int:
    return run_node(WebViewNode, "dig2dig_web_view", argv)


if __name__ == "__main__":
    sys.exit(main())
