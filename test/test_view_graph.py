"""The live views in the real graph: `dig2dig-ros launch view:=true foxglove:=true`, pairs published from here;
and each view node in-process with a test publisher (subscriptions that follow their publishers' QoS, losses
reported, idle topics dropped while the page polls status, compressed topics in Foxglove, failures reported).

* a headless Chromium (Debian's `chromium`; installed here with apt-get when we are root and it is missing,
  skipped with the reason otherwise) loads the page while frames flow: the fused panel is not blank and the
  fusion node's counters on the page change; the screenshot is kept (DIG2DIG_SCREENSHOT=path copies it there);
* `/snapshot?topic=/fused/image` is a JPEG of the fused frame's size;
* a Foxglove WebSocket client subscribes to the fused channel and decodes a frame with a sent stamp and its size.

`PairPublisher` and `free_port` are used by test_colcon_launch.py too.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import cv2
import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")
pytest.importorskip("foxglove")
websockets = pytest.importorskip("websockets")

from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import CompressedImage, Image  # noqa: E402
from test_view_foxglove import FoxgloveClient, decode_compressed_image, decode_raw_image  # noqa: E402

from dig2dig_ros.core.sample_scene import make_sample_pair  # noqa: E402
from dig2dig_ros.ros.conversions import numpy_to_image  # noqa: E402

pytestmark = pytest.mark.ros
REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def ros_test_env(offset: int) -> dict[str, str]:
    """A ROS domain of our own (per test run) on localhost only, for the graph and for PairPublisher."""
    return {**os.environ, "ROS_DOMAIN_ID": str(1 + (os.getpid() + offset) % 99),
            "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST", "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}


class PairPublisher:
    """Publishes infrared + visible pairs (the shipped synthetic scene) at `rate` Hz from its own rclpy context,
    and collects what comes back on fused/image (and any other topic asked for)."""

    def __init__(self, domain_id: int, rate: float = 4.0, size: tuple[int, int] = (96, 128),
                 pairs: list[tuple[np.ndarray, np.ndarray]] | None = None, listen: tuple[str, ...] = ()) -> None:
        self.context = rclpy.Context()
        rclpy.init(context=self.context, domain_id=domain_id)
        self.node = rclpy.create_node("pair_publisher", context=self.context)
        qos = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
        self.pub_ir = self.node.create_publisher(Image, "ir/image", qos)
        self.pub_vis = self.node.create_publisher(Image, "visible/image", qos)
        self.received: dict[str, list] = {"fused/image": [], **{t: [] for t in listen}}
        for topic, store in self.received.items():
            msg_type = Image if topic != "detections/json" else _string_type()
            self.node.create_subscription(msg_type, topic, store.append, qos)
        self.pairs = pairs or [make_sample_pair(i, size=size) for i in range(4)]
        self.period = 1.0 / rate
        self.sent: set[tuple[int, int]] = set()
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self.executor.spin, daemon=True),
                         threading.Thread(target=self._publish, daemon=True)]
        for thread in self._threads:
            thread.start()

    def _publish(self) -> None:
        i = 0
        while not self._stop.wait(self.period):
            if not (self.pub_ir.get_subscription_count() and self.pub_vis.get_subscription_count()):
                continue
            ir, vis = self.pairs[i % len(self.pairs)]
            sec, nanosec = 2000 + i // 4, (i % 4) * 250_000_000
            for pub, image, encoding, frame in ((self.pub_ir, ir, "mono8", "ir_cam"),
                                               (self.pub_vis, vis, "bgr8", "vis_cam")):
                msg = numpy_to_image(image, encoding)
                msg.header.stamp.sec, msg.header.stamp.nanosec, msg.header.frame_id = sec, nanosec, frame
                pub.publish(msg)
            self.sent.add((sec, nanosec))
            i += 1

    def wait_for(self, topic: str, count: int = 1, timeout: float = 120.0, alive=lambda: True) -> list:
        end = time.monotonic() + timeout
        while len(self.received[topic]) < count and time.monotonic() < end and alive():
            time.sleep(0.1)
        return self.received[topic]

    def close(self) -> None:
        self._stop.set()
        self._threads[1].join(5)
        self.executor.shutdown(timeout_sec=2)
        self.node.destroy_node()
        rclpy.shutdown(context=self.context)


def _string_type():
    from std_msgs.msg import String

    return String


def stop_process(proc: subprocess.Popen, timeout: float = 30) -> str:
    """SIGINT the process group (the runner or ros2_launch and its nodes), wait, return its output."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGINT)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGTERM)
        out, _ = proc.communicate(timeout=15)
    return out or ""


def http_get(url: str, timeout: float = 10.0) -> tuple[int, dict, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as reply:
            return reply.status, dict(reply.headers), reply.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()
    except OSError:
        return 0, {}, b""


def wait_for_snapshot(port: int, topic: str, timeout: float, alive=lambda: True) -> tuple[dict, np.ndarray]:
    end = time.monotonic() + timeout
    while time.monotonic() < end and alive():
        code, headers, body = http_get(f"http://127.0.0.1:{port}/snapshot?topic={topic}&timeout=2")
        if code == 200:
            return headers, cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_COLOR)
        time.sleep(0.5)
    raise AssertionError(f"no snapshot of {topic} within {timeout} s")


# -- the browser ----------------------------------------------------------------------------------------------
def chromium_path() -> str:
    """Debian's chromium; installed with apt-get when we are root and it is missing; else skip with the reason."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        pytest.skip("headless Chromium not found (Debian: apt-get install chromium) and not root to install it")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "install", "-y", "-qq", "chromium"], ["apt-get", "update", "-qq"],
                    ["apt-get", "install", "-y", "-qq", "chromium"]):
        subprocess.run(command, env=env, capture_output=True, timeout=600)
        found = shutil.which("chromium")
        if found:
            return found
    pytest.skip("chromium could not be installed with apt-get (no package source reachable?)")


class Browser:
    """Headless Chromium driven over the DevTools protocol (one page)."""

    def __init__(self, tmp_path: Path, width: int = 1280, height: int = 360) -> None:
        from websockets.sync.client import connect

        self.proc = subprocess.Popen(
            [chromium_path(), "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
             "--no-first-run", "--remote-debugging-port=0", f"--user-data-dir={tmp_path / 'chromium'}",
             f"--window-size={width},{height}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
        port = None
        end = time.monotonic() + 60
        while port is None and time.monotonic() < end:
            line = self.proc.stderr.readline()
            if not line and self.proc.poll() is not None:
                break
            match = re.search(r"DevTools listening on ws://127\.0\.0\.1:(\d+)/", line)
            port = int(match.group(1)) if match else None
        assert port, "chromium did not start its DevTools endpoint"
        threading.Thread(target=self.proc.stderr.read, daemon=True).start()  # keep its stderr pipe drained
        targets = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10).read())
        page = next(t for t in targets if t["type"] == "page")
        self._stack = contextlib.ExitStack()
        self.ws = self._stack.enter_context(connect(page["webSocketDebuggerUrl"], max_size=64 * 2**20,
                                                    open_timeout=20))
        self._id = 0
        self.call("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=False)

    def call(self, method: str, **params) -> dict:
        self._id += 1
        self.ws.send(json.dumps({"id": self._id, "method": method, "params": params}))
        while True:
            reply = json.loads(self.ws.recv(timeout=60))
            if reply.get("id") == self._id:
                assert "error" not in reply, reply
                return reply.get("result", {})

    def evaluate(self, expression: str):
        return self.call("Runtime.evaluate", expression=expression, returnByValue=True)["result"].get("value")

    def wait_until(self, expression: str, timeout: float) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.evaluate(expression):
                return True
            time.sleep(0.25)
        return False

    def screenshot(self) -> bytes:
        return base64.b64decode(self.call("Page.captureScreenshot", format="png")["data"])

    def close(self) -> None:
        try:
            self._stack.close()
        finally:
            if self.proc.poll() is None:
                os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=15)


@contextlib.contextmanager
def fed_graph(proc: subprocess.Popen, env: dict[str, str], listen: tuple[str, ...] = ()):
    """Feed the graph started as `proc` with pairs until the block ends, once it has fused one; then stop it and
    check it ended cleanly (no traceback, exit status 0)."""
    feeder = PairPublisher(int(env["ROS_DOMAIN_ID"]), rate=4.0, size=(192, 256), listen=listen)
    try:
        fused = feeder.wait_for("fused/image", timeout=120, alive=lambda: proc.poll() is None)
    except BaseException:
        feeder.close()
        stop_process(proc)
        raise
    if not fused:
        feeder.close()
        pytest.fail(f"no fused/image from the graph:\n{stop_process(proc)}")
    yield feeder
    feeder.close()
    time.sleep(2.0)  # let the workers finish the frame in hand
    out = stop_process(proc)
    assert "Traceback" not in out, out
    assert proc.returncode == 0, out


# -- the test ---------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def graph(tmp_path_factory):
    """The runner's graph with both views, fed by PairPublisher until the module's tests are done."""
    env = ros_test_env(offset=37)
    view_port, foxglove_port = free_port(), free_port()
    runner = subprocess.Popen(
        [sys.executable, "-m", "dig2dig_ros.commands.ros_cli", "launch", "prior:=wiener", "working_size:=64",
         "device:=cpu", "view:=true", f"view_port:={view_port}", "foxglove:=true", f"foxglove_port:={foxglove_port}"],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    with fed_graph(runner, env) as feeder:
        yield {"feeder": feeder, "view_port": view_port, "foxglove_port": foxglove_port, "runner": runner}


def test_snapshot_is_the_fused_frame(graph):
    headers, jpeg = wait_for_snapshot(graph["view_port"], "/fused/image", timeout=30)
    fused = graph["feeder"].received["fused/image"][-1]
    assert jpeg.shape[:2] == (fused.height, fused.width) == (192, 256)
    sec, _, nanosec = headers["X-Stamp"].partition(".")
    assert (int(sec), int(nanosec)) in graph["feeder"].sent
    code, _, body = http_get(f"http://127.0.0.1:{graph['view_port']}/snapshot?topic=1abc")
    assert code == 400 and b"invalid topic name" in body  # refused, and the view goes on:
    weights = wait_for_snapshot(graph["view_port"], "fused/dig/ir", timeout=30)[1]
    assert weights.shape[:2] == (192, 256) and weights.std() > 1  # 32FC1 weights shown as a colour map


def test_foxglove_client_decodes_a_fused_frame_with_its_stamp(graph):
    got = FoxgloveClient(graph["foxglove_port"]).collect(
        ["/fused/image", "/diagnostics"], lambda got: all(got.values()), timeout=60)
    image = decode_raw_image(got["/fused/image"][0])
    stamp = divmod(image["stamp_ns"], 10**9)
    assert stamp in graph["feeder"].sent and image["frame_id"] == "vis_cam"
    assert (image["width"], image["height"], image["encoding"]) == (256, 192, "bgr8")
    pixels = np.frombuffer(image["data"], np.uint8).reshape(192, image["step"])[:, :256 * 3]
    assert pixels.std() > 5
    diagnostics = json.loads(got["/diagnostics"][0])
    assert any("dig2dig" in s["name"] for s in diagnostics["status"])


def test_browser_shows_live_frames_and_changing_counters(graph, tmp_path):
    browser = Browser(tmp_path)
    try:
        browser.call("Page.enable")
        browser.call("Page.navigate", url=f"http://127.0.0.1:{graph['view_port']}/")
        ready = ("(() => { const i = document.getElementById('panel-0');"
                 " return i && i.complete && i.naturalWidth > 0 &&"
                 " document.getElementById('c-fused').textContent !== '–'; })()")
        assert browser.wait_until(ready, timeout=60), "the page never showed a fused frame and the counters"
        first = browser.evaluate("document.getElementById('c-fused').textContent")
        changed = f"document.getElementById('c-fused').textContent !== {json.dumps(first)}"
        assert browser.wait_until(changed, timeout=20), f"the fused counter stayed at {first}"
        browser.wait_until("[...document.querySelectorAll('main img')].every(i => i.naturalWidth > 0)", timeout=20)
        time.sleep(1.0)  # a few more frames, so every panel shows a current one
        rect = browser.evaluate("(() => { const r = document.getElementById('panel-0').getBoundingClientRect();"
                                " return [r.x, r.y, r.width, r.height]; })()")
        png = browser.screenshot()
    finally:
        browser.close()
    path = tmp_path / "live_view.png"
    path.write_bytes(png)
    if os.environ.get("DIG2DIG_SCREENSHOT"):
        shutil.copy(path, os.environ["DIG2DIG_SCREENSHOT"])
    shot = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
    x, y, w, h = (int(round(v)) for v in rect)
    panel = shot[y + 2:y + h - 2, x + 2:x + w - 2]
    assert panel.size and panel.std() > 10 and panel.mean() > 5, "the fused panel is blank"


def test_messages_become_displayable_and_foxglove_bytes():
    from sensor_msgs.msg import CompressedImage

    from dig2dig_ros.view.ros_common import message_to_bgr, message_to_raw

    thermal = (np.arange(48 * 64, dtype=np.uint16).reshape(48, 64) * 7 + 20000)
    png = CompressedImage(format="png")
    png.data = cv2.imencode(".png", thermal)[1].tobytes()
    shown = message_to_bgr(png)
    assert shown.shape == (48, 64, 3) and shown.min() == 0 and shown.max() == 255  # 16-bit PNG stretched
    jpeg = CompressedImage(format="jpeg")
    jpeg.data = cv2.imencode(".jpg", np.full((8, 8, 3), 120, np.uint8))[1].tobytes()
    assert message_to_bgr(jpeg).shape == (8, 8, 3)
    weights = np.linspace(0, 1, 12, dtype=np.float32).reshape(3, 4)
    little = numpy_to_image(weights, "32FC1")
    big = numpy_to_image(weights, "32FC1")
    big.is_bigendian = 1
    big.data = weights.astype(">f4").tobytes()
    for msg in (little, big):
        raw = message_to_raw(msg)
        assert (raw.width, raw.height, raw.encoding, raw.step) == (4, 3, "32FC1", 16)
        assert np.array_equal(np.frombuffer(raw.data, "<f4").reshape(3, 4), weights)  # Foxglove reads little-endian


# -- each view node in-process, fed by a test publisher -----------------------------------------------------------
@pytest.fixture()
def in_process(monkeypatch):
    """make(node class, **parameters) → node, spun with a peer node (returned too) on a thread of their own."""
    monkeypatch.setenv("ROS_DOMAIN_ID", str(1 + (os.getpid() + 53) % 99))
    monkeypatch.setenv("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    context = rclpy.Context()
    rclpy.init(context=context)
    executor = SingleThreadedExecutor(context=context)
    peer = rclpy.create_node("view_test_peer", context=context)
    executor.add_node(peer)
    made = []

    def make(cls, **params):
        node = cls(context=context, parameter_overrides=[Parameter(k, value=v) for k, v in params.items()])
        executor.add_node(node)
        made.append(node)
        return node

    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    yield make, peer
    executor.shutdown(timeout_sec=5)
    spinner.join(5)
    for node in made:
        node.stop()
        node.destroy_node()
    peer.destroy_node()
    rclpy.shutdown(context=context)


class Publishing:
    """Publishes `make(i)` on a topic at `rate` Hz from a thread, until closed."""

    def __init__(self, peer, msg_type, topic: str, make, reliable: bool, rate: float = 20.0) -> None:
        qos = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT)
        self.pub = peer.create_publisher(msg_type, topic, qos)
        self.sent = []
        self._stop = threading.Event()

        def run():
            i = 0
            while not self._stop.wait(1.0 / rate):
                msg = make(i)
                msg.header.stamp.sec, msg.header.stamp.nanosec, msg.header.frame_id = 3000 + i, 7, "test_cam"
                self.pub.publish(msg)
                self.sent.append(msg)
                i += 1

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)


def _until(predicate, timeout: float, every: float = 0.1):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    return predicate()


def _status(port: int) -> dict:
    return json.loads(http_get(f"http://127.0.0.1:{port}/status.json")[2])


def _own_status(received: list, node_name: str) -> dict | None:
    """The newest status a view node published about itself, as {level, message, values}."""
    for msg in reversed(received):
        for s in msg.status:
            if s.name.endswith(f"{node_name}: view"):
                return {"level": s.level[0] if isinstance(s.level, bytes) else s.level, "message": s.message,
                        "values": {kv.key: kv.value for kv in s.values}}
    return None


def test_web_view_matches_qos_reports_losses_and_drops_idle_topics_while_status_polls(in_process, capfd):
    from types import SimpleNamespace

    from dig2dig_ros.view.web_view_node import WebViewNode

    make, peer = in_process
    node = make(WebViewNode, port=0, idle_unsubscribe_s=1.5)
    port = node.view.port
    image = numpy_to_image(np.full((12, 16), 90, np.uint8), "mono8")
    feeds = [Publishing(peer, Image, "/cam/best_effort", lambda i: image, reliable=False),
             Publishing(peer, Image, "/cam/reliable", lambda i: image, reliable=True)]
    diagnostics = []
    peer.create_subscription(DiagnosticArray, "/diagnostics", diagnostics.append, 10)
    elsewhere = None
    try:
        for topic in ("/cam/best_effort", "/cam/reliable"):
            code, headers, _ = http_get(f"http://127.0.0.1:{port}/snapshot?topic={topic}&timeout=10")
            assert code == 200 and headers["X-Frame-Id"] == "test_cam"
        topics = _until(lambda: (t := _status(port)["topics"]) and all("reliability" in v for v in t.values()) and t,
                        timeout=3)
        assert topics["/cam/best_effort"]["reliability"] == "best_effort"  # a reliable reader would get nothing
        assert topics["/cam/reliable"]["reliability"] == "reliable"  # every publisher is reliable
        # what rmw's message_lost event hands the input: the count appears in status.json, the node's
        # /diagnostics (WARN, with the cause) and one log line
        node.inputs["/cam/best_effort"]._on_lost(SimpleNamespace(total_count_change=3))

        def reported():  # reading both topics meanwhile (snapshots), so neither is unsubscribed yet
            for topic in ("/cam/best_effort", "/cam/reliable"):
                http_get(f"http://127.0.0.1:{port}/snapshot?topic={topic}")
            own = _own_status(diagnostics, "dig2dig_web_view")
            entry = _status(port)["topics"]["/cam/best_effort"]
            return own and own["level"] == 1 and entry["lost"] == 3 and entry["lost_recent"] == 3 and own

        own = _until(reported, timeout=5)
        assert own, "no WARN status from the web view"
        assert "lost 3 view frames" in own["message"] and "/cam/best_effort" in own["message"]
        assert own["values"]["/cam/best_effort lost"] == "3" and own["values"]["/cam/reliable lost"] == "0"
        # nothing reads the images now, but status.json is polled like a page does: both are dropped
        dropped = _until(lambda: _status(port)["topics"] == {} and not node.inputs, timeout=5, every=0.2)
        assert dropped, f"still subscribed while only status.json was read: {sorted(node.inputs)}"
        # the same topic subscribed again (its qos_overrides parameter already declared)
        code, _, _ = http_get(f"http://127.0.0.1:{port}/snapshot?topic=/cam/best_effort&timeout=10")
        assert code == 200 and "/cam/best_effort" in node.inputs
        # a topic asked for before anyone publishes it is taken for an Image; published as CompressedImage later,
        # it is subscribed again with that type
        assert http_get(f"http://127.0.0.1:{port}/snapshot?topic=/late/image&timeout=0.6")[0] == 503
        assert node.inputs["/late/image"].msg_type is Image
        jpeg = CompressedImage(format="jpeg", data=cv2.imencode(".jpg", np.zeros((8, 8, 3), np.uint8))[1].tobytes())
        elsewhere = rclpy.Context()  # another participant, as another process would be (DDS refuses a second
        rclpy.init(context=elsewhere)  # type on one topic within a participant)
        other = rclpy.create_node("late_publisher", context=elsewhere)
        feeds.append(Publishing(other, CompressedImage, "/late/image", lambda i: jpeg, reliable=True))
        code, headers, _ = http_get(f"http://127.0.0.1:{port}/snapshot?topic=/late/image&timeout=5")
        assert code == 200 and node.inputs["/late/image"].msg_type is CompressedImage
    finally:
        for feed in feeds:
            feed.close()
        if elsewhere is not None:
            other.destroy_node()
            rclpy.shutdown(context=elsewhere)
    log = capfd.readouterr()
    assert "lost 3 view frames" in log.err + log.out
    assert "/cam/best_effort: unsubscribed" in log.err + log.out


def test_foxglove_gets_a_compressed_topic_and_reports_failed_messages(in_process):
    from dig2dig_ros.view.foxglove_node import FoxgloveNode

    make, peer = in_process
    node = make(FoxgloveNode, port=0, topics=["/cam/image/compressed", "/cam/image"])
    scene = np.random.default_rng(2).integers(0, 255, (24, 32, 3), dtype=np.uint8)
    jpeg = cv2.imencode(".jpg", scene)[1].tobytes()

    def compressed(data: bytes):
        def make_msg(i):
            msg = CompressedImage(format="bgr8; jpeg compressed bgr8")
            msg.data = data
            return msg
        return make_msg

    feeds = [Publishing(peer, CompressedImage, "/cam/image/compressed", compressed(jpeg), reliable=True),
             # advertised as RawImage (its name says nothing of compression), fed undecodable bytes
             Publishing(peer, CompressedImage, "/cam/image", compressed(b"not an image"), reliable=True)]
    diagnostics = []
    peer.create_subscription(DiagnosticArray, "/diagnostics", diagnostics.append, 10)
    try:
        topics = ["/cam/image/compressed", "/cam/image"]

        def until(got):  # the node's WARN about /cam/image, published while the client still watches
            own = _own_status(diagnostics, "dig2dig_foxglove_bridge")
            return got["/cam/image/compressed"] and own and "/cam/image failed" in own["values"] and \
                int(own["values"]["/cam/image failed"]) >= 2 and own["level"] == 1

        got = FoxgloveClient(node.bridge.port).collect(topics, until, timeout=30)
        own = _own_status(diagnostics, "dig2dig_foxglove_bridge")
    finally:
        for feed in feeds:
            feed.close()
    image = decode_compressed_image(got["/cam/image/compressed"][0])
    assert image["format"] == "jpeg" and image["data"] == jpeg and image["frame_id"] == "test_cam"
    assert divmod(image["stamp_ns"], 10**9)[1] == 7 and image["stamp_ns"] // 10**9 >= 3000
    assert not got["/cam/image"]  # undecodable: counted and reported, nothing sent
    assert own, "no WARN status from the Foxglove bridge about the failed messages"
    assert "Foxglove channel /cam/image:" in own["message"] and "could not decode" in own["message"]
    assert int(own["values"]["/cam/image failed"]) >= 2 and int(own["values"]["/cam/image/compressed sent"]) >= 1
    assert own["values"]["/cam/image/compressed reliability"] == "reliable"


def test_fusion_yaml_sets_the_view_nodes_parameters_to_their_declared_defaults():
    import yaml

    from dig2dig_ros.view import foxglove_node, web_view_node

    config = yaml.safe_load((REPO / "config" / "fusion.yaml").read_text())
    for name, specs in (("dig2dig_web_view", web_view_node.PARAMS), ("dig2dig_foxglove_bridge", foxglove_node.PARAMS)):
        values = config[f"/**/{name}"]["ros__parameters"]
        expected = {spec.name: spec.default for spec in specs if spec.name not in ("host", "port")}  # launch args
        assert values == expected, name
        assert all(spec.description for spec in specs)
