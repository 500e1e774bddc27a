"""A small HTTP server for the live view, with web_video_server's URLs. No ROS import here.

    /                          the page: fused frame, DIG overlay, infrared and visible side by side, live, and the
                               fusion node's counters from /diagnostics (refreshed every second)
    /stream?topic=/fused/image MJPEG (multipart/x-mixed-replace) of any image topic; 32FC1 maps as a colour map
    /snapshot?topic=...        one JPEG of the newest frame (headers X-Stamp: sec.nanosec, X-Frame-Id)
    /status.json               the diagnostics and, per watched topic, stamp, rate, frames, and messages lost in
                               transport; reading it does not keep a topic subscribed

Each stream runs in its own thread, reads its topic's newest-wins `FrameSlot` and sends at most `max_fps` frames
per second; a slow browser skips frames. A browser that closes its stream ends the thread within a second, also
on a silent topic; one that stops reading ends it at the next write (socket timeout). At most `max_streams`
streams run at once and at most `max_topics` topics beyond the page's own panels are subscribed (503 beyond
either). Nothing a browser does reaches the producer of the frames.
"""

from __future__ import annotations

import html
import json
import select
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

from dig2dig_ros.view.frames import DiagnosticsBoard, FrameHub

BOUNDARY = "dig2digframe"
SEND_TIMEOUT_S = 10.0  # a browser that stops reading for this long loses its stream
IDLE_CHECK_S = 1.0  # a stream waiting for a frame checks this often whether its browser has gone


@dataclass(frozen=True)
class Panel:
    label: str
    topic: str


DEFAULT_PANELS = (Panel("fused", "fused/image"), Panel("DIG overlay (IR weight)", "fused/dig/overlay"),
                  Panel("infrared", "ir/image"), Panel("visible", "visible/image"))

# The fusion node's counters shown at the top of the page (every other value is in the table below it).
COUNTERS = (("ir_rate_hz", "IR Hz"), ("visible_rate_hz", "visible Hz"), ("pairs", "pairs"), ("fused", "fused"),
            ("dropped_busy", "dropped"), ("bad_input", "bad"), ("failed", "failed"),
            ("latency_median_ms", "latency ms"), ("latency_p95_ms", "p95 ms"))


class WebView:
    """The server: `start()` binds host:port (port 0 picks a free one, see `.port`) and serves from a thread."""

    def __init__(self, hub: FrameHub, board: DiagnosticsBoard, host: str = "127.0.0.1", port: int = 8080,
                 max_fps: float = 15.0, quality: int = 80, panels: tuple[Panel, ...] = DEFAULT_PANELS,
                 resolve: Callable[[str], str] = lambda name: name, status_match: str = "dig2dig_fusion",
                 title: str = "dig2dig live view", max_streams: int = 16, max_topics: int = 8,
                 transport: Callable[[], dict[str, dict[str, Any]]] = dict) -> None:
        """`max_streams`: concurrent MJPEG streams; `max_topics`: topics served beyond the panels' (0: none);
        `transport()`: per topic, what the node knows of its subscription (lost, reliability), for status.json."""
        self.hub, self.board = hub, board
        self.host, self.requested_port = host, port
        self.min_interval = 1.0 / max_fps if max_fps > 0 else 0.0
        self.quality = quality
        self.panels = panels
        self.resolve = resolve
        self.status_match = status_match
        self.title = title
        self.max_streams, self.max_topics = int(max_streams), int(max_topics)
        self.transport = transport
        self.streams = 0  # MJPEG streams open now
        self.refused = {"streams": 0, "topics": 0}  # requests answered 503 by a cap, since start
        self._admit_lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.running = False

    @property
    def port(self) -> int:
        return self._server.server_address[1] if self._server else self.requested_port

    def start(self) -> WebView:
        handler = type("Handler", (_Handler,), {"view": self})
        self._server = ThreadingHTTPServer((self.host, self.requested_port), handler)
        self._server.daemon_threads = True
        self.running = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="web_view", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.running = False
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    # -- admission: the caps ----------------------------------------------------------------------------------
    def panel_topics(self) -> set[str]:
        return {self.resolve(p.topic) for p in self.panels}

    def admit_topic(self, topic: str) -> str | None:
        """Make `topic`'s slot (the node then subscribes to it), or say why not: over `max_topics`."""
        with self._admit_lock:
            if self.hub.existing(topic) is None and topic not in self.panel_topics():
                extra = [t for t in self.hub.topics() if t not in self.panel_topics()]
                if len(extra) >= self.max_topics:
                    self.refused["topics"] += 1
                    return (f"too many topics: {len(extra)} subscribed besides the page's panels "
                            f"(max_topics={self.max_topics}); close a stream of another topic (its subscription "
                            "ends once unread) or raise max_topics\n")
            self.hub.slot(topic)
        return None

    def open_stream(self) -> str | None:
        """Count one more stream, or say why not: `max_streams` are open."""
        with self._admit_lock:
            if self.streams >= self.max_streams:
                self.refused["streams"] += 1
                return (f"too many streams: {self.streams} open (max_streams={self.max_streams}); close a page "
                        "or raise max_streams\n")
            self.streams += 1
        return None

    def close_stream(self) -> None:
        with self._admit_lock:
            self.streams -= 1

    # -- content ----------------------------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        """Diagnostics, panels, and per topic what status.json shows; peeks only (keeps no topic subscribed)."""
        transport = self.transport()
        topics = {}
        for topic, slot in self.hub.topics().items():
            frame = slot.peek()
            entry: dict[str, Any] = {"frames": frame.seq if frame else 0, "rate_hz": round(slot.rate_hz(), 2),
                                     **transport.get(topic, {})}
            if frame is not None:
                entry["stamp"] = f"{frame.stamp_ns // 10**9}.{frame.stamp_ns % 10**9:09d}"
                entry["frame_id"] = frame.frame_id
                entry["age_s"] = round(time.monotonic() - frame.received, 2)
            topics[topic] = entry
        return {"diagnostics": self.board.snapshot(), "topics": topics, "status_match": self.status_match,
                "streams": self.streams, "max_streams": self.max_streams, "max_topics": self.max_topics,
                "refused": dict(self.refused),
                "panels": [{"label": p.label, "topic": self.resolve(p.topic)} for p in self.panels]}

    def page(self) -> str:
        figures = "\n".join(
            f'<figure><img id="panel-{i}" alt="{html.escape(p.label)}" '
            f'src="stream?topic={quote(self.resolve(p.topic), safe="/")}">'
            f'<figcaption><b>{html.escape(p.label)}</b> <code>{html.escape(self.resolve(p.topic))}</code> '
            f'<span class="stamp" data-topic="{html.escape(self.resolve(p.topic))}"></span></figcaption></figure>'
            for i, p in enumerate(self.panels))
        counters = "\n".join(f'<div class="counter"><span class="label">{html.escape(label)}</span>'
                             f'<span class="value" id="c-{key}">–</span></div>' for key, label in COUNTERS)
        return PAGE.format(title=html.escape(self.title), figures=figures, counters=counters)


class _Handler(BaseHTTPRequestHandler):
    view: WebView
    server_version = "dig2dig-web-view/1"

    def setup(self) -> None:
        super().setup()
        self.request.settimeout(SEND_TIMEOUT_S)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        pass  # quiet: a browser polls status.json every second

    def do_GET(self) -> None:  # noqa: N802 - the base class's name
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        try:
            if url.path in ("/", "/index.html"):
                self._send(200, "text/html; charset=utf-8", self.view.page().encode())
            elif url.path == "/status.json":
                self._send(200, "application/json", json.dumps(self.view.status()).encode())
            elif url.path in ("/stream", "/snapshot"):
                topic = (query.get("topic") or [""])[0]
                try:
                    if not topic:
                        raise ValueError("missing ?topic=<image topic>")
                    topic = self.view.resolve(topic)
                    timeout = float((query.get("timeout") or ["5"])[0])
                except ValueError as exc:
                    self._send(400, "text/plain", f"{exc}\n".encode())
                    return
                if url.path == "/stream":
                    self._admitted_stream(topic)
                elif (refused := self.view.admit_topic(topic)) is not None:
                    self._send(503, "text/plain", refused.encode())
                else:
                    self._snapshot(topic, min(max(timeout, 0.0), 30.0))
            else:
                self._send(404, "text/plain", b"not found: try /, /stream?topic=..., /snapshot?topic=...\n")
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            pass  # the browser went away: its stream ends, nothing else notices

    def _send(self, code: int, content_type: str, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)

    def _snapshot(self, topic: str, timeout: float) -> None:
        slot = self.view.hub.slot(topic)
        frame = slot.latest() or slot.wait_newer(0, timeout)
        if frame is None:
            self._send(503, "text/plain", f"no frame on {topic} within {timeout:g} s\n".encode())
            return
        try:
            data, _ = slot.jpeg(frame, self.view.quality)
        except ValueError as exc:
            self._send(415, "text/plain", f"{topic}: {exc}\n".encode())
            return
        self._send(200, "image/jpeg", data, _frame_headers(frame))

    def _admitted_stream(self, topic: str) -> None:
        """The stream, or 503 with the reason when a cap (streams, then topics) is reached."""
        refused = self.view.open_stream()
        if refused is not None:
            self._send(503, "text/plain", refused.encode())
            return
        try:
            refused = self.view.admit_topic(topic)
            if refused is not None:
                self._send(503, "text/plain", refused.encode())
            else:
                self._stream(topic)
        finally:
            self.view.close_stream()

    def _stream(self, topic: str) -> None:
        slot = self.view.hub.slot(topic)
        self.send_response(200)
        self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY}")
        self.send_header("Cache-Control", "no-store")
        self.send_header("Connection", "close")
        self.end_headers()
        seq, next_time = 0, 0.0
        while self.view.running:
            frame = slot.wait_newer(seq, timeout=IDLE_CHECK_S)
            if frame is None:
                if _peer_closed(self.connection):
                    return  # the browser went away while the topic was silent
                continue
            seq = frame.seq
            try:
                data, _ = slot.jpeg(frame, self.view.quality)
            except ValueError:
                continue  # an undisplayable frame: wait for the next one
            head = [f"--{BOUNDARY}", "Content-Type: image/jpeg", f"Content-Length: {len(data)}",
                    *(f"{k}: {v}" for k, v in _frame_headers(frame).items())]
            self.wfile.write(("\r\n".join(head) + "\r\n\r\n").encode() + data + b"\r\n")
            self.wfile.flush()
            next_time = max(next_time + self.view.min_interval, time.monotonic())
            delay = next_time - time.monotonic()
            if delay > 0:
                time.sleep(delay)


def _peer_closed(sock: socket.socket) -> bool:
    """The browser closed (or reset) its end: readable with nothing to read. Never blocks."""
    try:
        poller = select.poll()  # not select.select: it fails on descriptors above 1023
        poller.register(sock, select.POLLIN)
        events = poller.poll(0)
        if not events:
            return False
        if events[0][1] & (select.POLLHUP | select.POLLERR | select.POLLNVAL):
            return True
        return sock.recv(1, socket.MSG_PEEK) == b""
    except (OSError, ValueError):
        return True


def _frame_headers(frame: Any) -> dict[str, str]:
    return {"X-Stamp": f"{frame.stamp_ns // 10**9}.{frame.stamp_ns % 10**9:09d}",
            "X-Frame-Id": frame.frame_id or "", "X-Seq": str(frame.seq)}


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body {{ margin: 0; font: 14px system-ui, sans-serif; background: #15181c; color: #e4e6ea; }}
header {{ display: flex; flex-wrap: wrap; align-items: center; gap: 6px 10px; padding: 8px 12px; background: #1f242a; }}
h1 {{ font-size: 16px; margin: 0 12px 0 0; }}
.counter {{ background: #2a3038; border-radius: 4px; padding: 3px 8px; }}
.counter .label {{ color: #9aa3ad; margin-right: 6px; }}
.counter .value {{ font-variant-numeric: tabular-nums; font-weight: 600; }}
#level {{ padding: 3px 8px; border-radius: 4px; background: #555; font-weight: 600; }}
#level.OK {{ background: #2e7d32; }} #level.WARN {{ background: #b26a00; }} #level.ERROR {{ background: #c62828; }}
main {{ display: grid; grid-template-columns: repeat(auto-fill, minmax(300px, 1fr)); gap: 8px; padding: 8px; }}
figure {{ margin: 0; background: #000; }}
figure img {{ display: block; width: 100%; height: auto; min-height: 60px; image-rendering: auto; }}
figcaption {{ padding: 3px 6px; background: #1f242a; font-size: 12px; }}
figcaption code {{ color: #9ecbff; }} .stamp {{ color: #9aa3ad; display: block; }} .stamp.lossy {{ color: #ffb74d; }}
details {{ margin: 0 8px 8px; }} table {{ border-collapse: collapse; font-size: 12px; }}
td {{ padding: 1px 8px; border-bottom: 1px solid #2a3038; }}
</style></head>
<body>
<header><h1>{title}</h1><span id="level">no diagnostics yet</span><span id="message"></span>
{counters}
</header>
<main>
{figures}
</main>
<details><summary>every diagnostics value</summary><table id="all"></table></details>
<script>
function pick(diags, match) {{
  for (const [name, st] of Object.entries(diags)) if (name.includes(match) && name.endsWith('fusion')) return st;
  for (const [name, st] of Object.entries(diags)) if (name.includes(match)) return st;
  return null;
}}
async function refresh() {{
  try {{
    const s = await (await fetch('status.json', {{cache: 'no-store'}})).json();
    const st = pick(s.diagnostics, s.status_match);
    if (st) {{
      const level = document.getElementById('level');
      level.textContent = st.level; level.className = st.level;
      document.getElementById('message').textContent = st.message;
      for (const el of document.querySelectorAll('[id^="c-"]')) {{
        const v = st.values[el.id.slice(2)]; el.textContent = v === undefined ? '–' : v;
      }}
    }}
    for (const el of document.querySelectorAll('.stamp')) {{
      const t = s.topics[el.dataset.topic];
      const lost = t && t.lost ? ` · lost ${{t.lost}} in transport` : '';
      el.textContent = (t && t.stamp ? `stamp ${{t.stamp}} · ${{t.rate_hz}} Hz` : 'waiting for frames') + lost;
      el.classList.toggle('lossy', Boolean(t && t.lost_recent));
    }}
    const rows = [];
    for (const [name, d] of Object.entries(s.diagnostics)) {{
      rows.push(`<tr><td colspan=2><b>${{name}}</b> ${{d.level}} ${{d.message}}</td></tr>`);
      for (const [k, v] of Object.entries(d.values)) rows.push(`<tr><td>${{k}}</td><td>${{v}}</td></tr>`);
    }}
    document.getElementById('all').innerHTML = rows.join('');
  }} catch (e) {{ document.getElementById('level').textContent = 'view server unreachable'; }}
}}
refresh(); setInterval(refresh, 1000);
</script>
</body></html>
"""
