"""The live web view without ROS: newest-wins slots, display conversion, and the HTTP server's URLs."""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
import urllib.error
import urllib.request

import cv2
import numpy as np
import pytest

from dig2dig_ros.view.frames import DiagnosticsBoard, FrameHub, FrameSlot, to_display, weight_colormap
from dig2dig_ros.view.web_view import BOUNDARY, Panel, WebView


@pytest.fixture()
def served():
    hub, board = FrameHub(), DiagnosticsBoard()
    view = WebView(hub, board, port=0, max_fps=50).start()
    yield hub, board, view
    view.stop()


def _get(view: WebView, path: str, timeout: float = 10.0):
    return urllib.request.urlopen(f"http://127.0.0.1:{view.port}{path}", timeout=timeout)


def test_slot_keeps_only_the_newest_frame_and_readers_skip():
    slot = FrameSlot(lambda payload: payload)
    assert slot.latest() is None and slot.wait_newer(0, timeout=0.01) is None
    for i in range(5):
        slot.put(i, stamp_ns=i)
    frame = slot.wait_newer(0, timeout=0.01)
    assert (frame.payload, frame.seq) == (4, 5)  # a slow reader sees the newest, not a queue
    assert slot.wait_newer(frame.seq, timeout=0.01) is None
    got = []
    reader = threading.Thread(target=lambda: got.append(slot.wait_newer(5, timeout=5)))
    reader.start()
    time.sleep(0.05)
    slot.put("new", stamp_ns=99, frame_id="cam")
    reader.join(5)
    assert got[0].payload == "new" and got[0].frame_id == "cam" and got[0].stamp_ns == 99


def test_display_conversion_of_every_encoding():
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4)
    assert to_display(gray, "mono8").shape == (3, 4, 3)
    rgb = np.zeros((3, 4, 3), np.uint8)
    rgb[..., 0] = 255
    assert to_display(rgb, "rgb8")[0, 0].tolist() == [0, 0, 255]
    assert to_display(np.dstack([rgb, rgb[..., :1]]), "rgba8").shape == (3, 4, 3)
    thermal = np.linspace(29000, 31000, 12, dtype=np.float32).reshape(3, 4).astype(np.uint16)
    shown = to_display(thermal, "mono16")
    assert shown.min() == 0 and shown.max() == 255  # stretched, not clipped to black
    weights = np.linspace(0, 1, 12, dtype=np.float32).reshape(3, 4)
    colour = to_display(weights, "32FC1")
    assert colour.shape == (3, 4, 3)
    assert colour[0, 0, 0] > colour[0, 0, 2] and colour[-1, -1, 2] > colour[-1, -1, 0]  # JET: 0 blue, 1 red
    assert np.array_equal(weight_colormap(weights * 300 - 50), weight_colormap(weights))  # off [0,1]: stretched
    with pytest.raises(ValueError, match="yuv422"):
        to_display(gray, "yuv422")


def test_snapshot_is_a_jpeg_of_the_newest_frame_with_its_stamp(served):
    hub, _, view = served
    image = np.zeros((48, 64, 3), np.uint8)
    image[:, 32:] = 200
    hub.slot("/fused/image").put((image, "bgr8"), stamp_ns=12 * 10**9 + 345, frame_id="cam")
    with _get(view, "/snapshot?topic=/fused/image") as reply:
        assert reply.headers["Content-Type"] == "image/jpeg"
        assert reply.headers["X-Stamp"] == "12.000000345" and reply.headers["X-Frame-Id"] == "cam"
        decoded = cv2.imdecode(np.frombuffer(reply.read(), np.uint8), cv2.IMREAD_COLOR)
    assert decoded.shape == (48, 64, 3)
    assert decoded[:, :28].mean() < 10 and decoded[:, 36:].mean() > 190


def test_snapshot_errors_say_what_is_wrong(served):
    hub, _, view = served
    for path, code in [("/snapshot", 400), ("/nothing", 404), ("/snapshot?topic=/silent&timeout=0.2", 503)]:
        with pytest.raises(urllib.error.HTTPError) as err:
            _get(view, path)
        assert err.value.code == code, path
    def resolve(name):
        if " " in name:
            raise ValueError(f"invalid topic name {name!r}")
        return name

    view.resolve = resolve
    with pytest.raises(urllib.error.HTTPError) as err:
        _get(view, "/stream?topic=/a%20b")
    assert err.value.code == 400 and b"invalid topic name" in err.value.read()
    assert hub.existing("/a b") is None  # nothing subscribed for it
    hub.slot("/odd").put((np.zeros((2, 2), np.uint8), "yuv422"))
    with pytest.raises(urllib.error.HTTPError) as err:
        _get(view, "/snapshot?topic=/odd")
    assert err.value.code == 415


def test_stream_is_mjpeg_and_a_weight_map_comes_as_a_colour_map(served):
    hub, _, view = served
    slot = hub.slot("/fused/dig/ir")
    weights = np.tile(np.linspace(0, 1, 40, dtype=np.float32), (30, 1))

    def produce():
        for i in range(40):
            slot.put((weights, "32FC1"), stamp_ns=i)
            time.sleep(0.02)

    producer = threading.Thread(target=produce)
    producer.start()
    conn = http.client.HTTPConnection("127.0.0.1", view.port, timeout=10)
    conn.request("GET", "/stream?topic=/fused/dig/ir")
    reply = conn.getresponse()
    assert reply.headers["Content-Type"] == f"multipart/x-mixed-replace; boundary={BOUNDARY}"
    parts = []
    for _ in range(2):
        assert reply.fp.readline().strip() == f"--{BOUNDARY}".encode()
        headers = {}
        while (line := reply.fp.readline().strip()):
            key, _, value = line.decode().partition(": ")
            headers[key] = value
        parts.append((headers, reply.fp.read(int(headers["Content-Length"]))))
        reply.fp.readline()
    conn.close()
    producer.join()
    assert int(parts[1][0]["X-Seq"]) > int(parts[0][0]["X-Seq"])
    colour = cv2.imdecode(np.frombuffer(parts[1][1], np.uint8), cv2.IMREAD_COLOR)
    assert colour.shape == (30, 40, 3)
    assert colour[:, :5, 0].mean() > colour[:, :5, 2].mean() + 50  # 0 → blue
    assert colour[:, -5:, 2].mean() > colour[:, -5:, 0].mean() + 50  # 1 → red


def test_a_stalled_browser_never_slows_the_producer(served):
    hub, _, view = served
    slot = hub.slot("/fused/image")
    big = np.random.default_rng(0).integers(0, 255, (512, 640, 3), dtype=np.uint8)
    slot.put((big, "bgr8"))
    stalled = []
    for _ in range(3):  # streams that never read: their sockets fill up and their threads block on send
        sock = socket.create_connection(("127.0.0.1", view.port))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.sendall(b"GET /stream?topic=/fused/image HTTP/1.0\r\n\r\n")
        stalled.append(sock)
    time.sleep(0.3)
    start = time.perf_counter()
    for i in range(300):
        slot.put((big, "bgr8"), stamp_ns=i)
    per_put = (time.perf_counter() - start) / 300
    assert per_put < 0.01, f"{per_put * 1e3:.2f} ms per put with stalled streams"  # blocking would take seconds
    with _get(view, "/snapshot?topic=/fused/image") as reply:  # and other clients are still served
        assert reply.status == 200
    for sock in stalled:
        sock.close()


def test_page_and_status_show_panels_and_counters(served):
    hub, board, view = served
    hub.slot("fused/image").put((np.zeros((4, 4), np.uint8), "mono8"), stamp_ns=5 * 10**9)
    board.update("/dig2dig_fusion: fusion", 0, "3 fused, 1 dropped", "dig2dig_fusion",
                 {"fused": "3", "dropped_busy": "1", "ir_rate_hz": "9.50"})
    with _get(view, "/") as reply:
        page = reply.read().decode()
    for topic in ("fused/image", "fused/dig/overlay", "ir/image", "visible/image"):
        assert f'src="stream?topic={topic}"' in page
    for key in ("fused", "dropped_busy", "bad_input", "latency_median_ms", "ir_rate_hz", "visible_rate_hz"):
        assert f'id="c-{key}"' in page
    with _get(view, "/status.json") as reply:
        status = json.load(reply)
    fusion = status["diagnostics"]["/dig2dig_fusion: fusion"]
    assert fusion["level"] == "OK" and fusion["values"]["fused"] == "3"
    assert status["topics"]["fused/image"]["stamp"] == "5.000000000"


def _open_stream(view: WebView, topic: str) -> socket.socket:
    """A raw client that asks for a stream and reads the reply's status line and headers."""
    sock = socket.create_connection(("127.0.0.1", view.port), timeout=10)
    sock.sendall(f"GET /stream?topic={topic} HTTP/1.0\r\n\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(4096)
        assert chunk, head
        head += chunk
    assert head.startswith(b"HTTP/1.0 200"), head
    return sock


def _until(predicate, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end and not predicate():
        time.sleep(0.05)
    return predicate()


def test_polling_status_does_not_keep_a_topic_read(served):
    """idle_unsubscribe_s counts from the last stream or snapshot read; the page's status.json polls are not reads."""
    hub, _, view = served
    slot = hub.slot("/fused/image")
    slot.put((np.zeros((4, 4), np.uint8), "mono8"), stamp_ns=1)
    read = slot.last_read
    for _ in range(5):
        with _get(view, "/status.json") as reply:
            assert json.load(reply)["topics"]["/fused/image"]["frames"] == 1
        time.sleep(0.05)
    assert slot.last_read == read and slot.unread_s() >= 0.25
    with _get(view, "/snapshot?topic=/fused/image"):
        pass
    assert slot.last_read > read  # a snapshot is a read


def test_a_closed_browser_ends_its_stream_on_a_silent_topic(served):
    hub, _, view = served
    slot = hub.slot("/silent")
    sock = _open_stream(view, "/silent")
    assert _until(lambda: view.streams == 1, 2)
    sock.close()
    assert _until(lambda: view.streams == 0, 3), "the stream thread outlived its browser"
    time.sleep(1.5)
    assert time.monotonic() - slot.last_read > 1.2  # nobody reads the slot now: it can idle out


def test_caps_on_streams_and_topics_answer_503_with_the_reason():
    hub, board = FrameHub(), DiagnosticsBoard()
    view = WebView(hub, board, port=0, panels=(Panel("fused", "/fused/image"),), max_streams=2, max_topics=1).start()
    try:
        streams = [_open_stream(view, "/fused/image"), _open_stream(view, "/fused/image")]
        with pytest.raises(urllib.error.HTTPError) as err:
            _get(view, "/stream?topic=/fused/image")
        assert err.value.code == 503 and b"max_streams=2" in err.value.read()
        streams.pop().close()
        assert _until(lambda: view.streams == 1, 3)
        streams.append(_open_stream(view, "/fused/image"))  # a freed place is taken again
        for sock in streams:
            sock.close()
        assert _until(lambda: view.streams == 0, 3)

        with pytest.raises(urllib.error.HTTPError) as err:  # within the cap: subscribed, but nothing yet
            _get(view, "/snapshot?topic=/extra&timeout=0.1")
        assert err.value.code == 503 and b"no frame" in err.value.read()
        with pytest.raises(urllib.error.HTTPError) as err:
            _get(view, "/snapshot?topic=/another&timeout=0.1")
        assert err.value.code == 503 and b"max_topics=1" in err.value.read()
        assert hub.existing("/another") is None  # refused: nothing subscribed for it
        with pytest.raises(urllib.error.HTTPError) as err:  # the page's own topics never count
            _get(view, "/snapshot?topic=/fused/image&timeout=0.1")
        assert b"no frame" in err.value.read()
        hub.forget("/extra")  # what the node does once /extra is unread for idle_unsubscribe_s
        with pytest.raises(urllib.error.HTTPError) as err:
            _get(view, "/snapshot?topic=/another&timeout=0.1")
        assert b"no frame" in err.value.read()
        with _get(view, "/status.json") as reply:
            status = json.load(reply)
        assert status["refused"] == {"streams": 1, "topics": 1} and status["max_topics"] == 1
    finally:
        view.stop()


def test_status_shows_the_losses_the_node_reports(served):
    hub, _, view = served
    hub.slot("/ir/image").put((np.zeros((4, 4), np.uint8), "mono8"))
    view.transport = lambda: {"/ir/image": {"lost": 7, "lost_recent": 2, "reliability": "best_effort"}}
    with _get(view, "/status.json") as reply:
        entry = json.load(reply)["topics"]["/ir/image"]
    assert (entry["lost"], entry["lost_recent"], entry["reliability"], entry["frames"]) == (7, 2, "best_effort", 1)
    with _get(view, "/") as reply:
        assert "lost ${t.lost} in transport" in reply.read().decode()
