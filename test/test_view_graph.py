"""The live views in the real graph: `dig2dig-ros launch view:=true foxglove:=true`, pairs published from here.

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

from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402
from test_view_foxglove import FoxgloveClient, decode_raw_image  # noqa: E402

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
