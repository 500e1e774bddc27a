"""The fusion node across real processes: runner → node → subscriber, with full-size LLVIP frames.

A test publisher plays real LLVIP pairs (1280x1024) at a fixed rate, plus two bad pairs; the node runs through
`dig2dig-ros launch` with a small working size and few steps; the test receives fused/image and the DIG maps
and reads the node's counters from /diagnostics.
"""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

rclpy = pytest.importorskip("rclpy")

from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402

from dig2dig_ros.ros.conversions import image_to_numpy, numpy_to_image  # noqa: E402
from dig2dig_ros.ros.graph import PROFILE_VARIABLES  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
GOOD_PAIRS = 8


def _spin_until(node, predicate, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        rclpy.spin_once(node, timeout_sec=0.05)
        if predicate():
            return True
    return predicate()


@pytest.fixture()
def ros_env(monkeypatch):
    monkeypatch.setenv("ROS_DOMAIN_ID", str(100 + os.getpid() % 100))
    monkeypatch.setenv("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    for name in PROFILE_VARIABLES:  # the test publisher sends full-size frames best effort too
        monkeypatch.setenv(name, str(REPO / "config" / "fastdds_profile.xml"))
    return dict(os.environ)


def _params_file(tmp_path: Path) -> Path:
    config = yaml.safe_load((REPO / "config" / "fusion.yaml").read_text())
    params = config["/**/dig2dig_fusion"]["ros__parameters"]
    params.update({"prior": "wiener", "device": "cpu", "working_size": 128, "log_every": 1})
    params["sampler"]["steps"] = 4
    params["dig"]["interval"] = 2
    # Deep enough queues that a busy machine loses nothing in DDS before the node can count it.
    params["qos"]["input_depth"] = 20
    params["qos"]["output_depth"] = 20
    path = tmp_path / "fusion.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _stale_shm_segments() -> set[str]:
    """Fast DDS shared-memory segments whose owner is gone (their `_el` lock is free): what `kill -9` leaves."""
    stale = set()
    for lock in Path("/dev/shm").glob("fastrtps_*_el"):
        if lock.name.startswith("fastrtps_port"):
            continue  # per-domain port files are shared by design
        try:
            fd = os.open(lock, os.O_RDWR)
        except OSError:
            continue
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            fcntl.lockf(fd, fcntl.LOCK_UN)
            stale.add(lock.name[: -len("_el")])
        except OSError:
            pass  # held by a live participant
        finally:
            os.close(fd)
    return stale


def test_node_fuses_full_size_llvip_pairs_and_counts_everything(shared_data, ros_env, tmp_path):
    llvip = shared_data / "vif" / "llvip"
    stems = sorted(p.stem for p in (llvip / "ir").glob("*.jpg"))[:GOOD_PAIRS]
    frames = [(cv2.imread(str(llvip / "ir" / f"{s}.jpg"), cv2.IMREAD_GRAYSCALE),
               cv2.imread(str(llvip / "vis" / f"{s}.jpg"))) for s in stems]
    rclpy.init()
    node = rclpy.create_node("test_fusion_player")
    stale_before = _stale_shm_segments()
    runner = subprocess.Popen(
        [sys.executable, "-m", "dig2dig_ros.commands.ros_cli", "launch", f"params_file:={_params_file(tmp_path)}"],
        env=ros_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        pub_ir = node.create_publisher(Image, "ir/image", qos)
        pub_vis = node.create_publisher(Image, "visible/image", qos)
        fused, dig_ir, dig_vis, diagnostics = [], [], [], []
        node.create_subscription(Image, "fused/image", fused.append, qos)
        node.create_subscription(Image, "fused/dig/ir", dig_ir.append, qos)
        node.create_subscription(Image, "fused/dig/visible", dig_vis.append, qos)
        node.create_subscription(DiagnosticArray, "/diagnostics", diagnostics.append, 10)
        ready = _spin_until(node, lambda: pub_ir.get_subscription_count() and pub_vis.get_subscription_count()
                            and node.count_publishers("fused/image"), timeout=90)
        assert ready, "the fusion node did not come up"
        # Our publishers see the node's readers; give the node's readers time to see our writers too (a
        # best-effort reader drops samples from writers it has not discovered yet).
        _spin_until(node, lambda: False, timeout=2.0)
        stamps = []
        bad = [("yuv422", None), ("mismatch", None)]  # two bad pairs among the good ones
        schedule = [*frames[:3], *bad, *frames[3:]]
        for i, item in enumerate(schedule):
            stamp = rclpy.time.Time(seconds=1000 + i * 0.5).to_msg()
            kind = item[0] if isinstance(item[0], str) else "good"
            if kind == "yuv422":
                ir_msg = numpy_to_image(np.zeros((4, 4), np.uint8), "mono8")
                ir_msg.encoding = "yuv422"
                vis_msg = numpy_to_image(np.zeros((4, 4, 3), np.uint8), "bgr8")
            elif kind == "mismatch":
                ir_msg = numpy_to_image(np.zeros((64, 80), np.uint8), "mono8")
                vis_msg = numpy_to_image(np.zeros((48, 80, 3), np.uint8), "bgr8")
            else:
                ir_msg, vis_msg = numpy_to_image(item[0], "mono8"), numpy_to_image(item[1], "bgr8")
                stamps.append((stamp.sec, stamp.nanosec))
            for msg, frame in ((ir_msg, "ir_camera"), (vis_msg, "visible_camera")):
                msg.header.stamp, msg.header.frame_id = stamp, frame
            pub_ir.publish(ir_msg)
            pub_vis.publish(vis_msg)
            _spin_until(node, lambda: False, timeout=0.5)  # 2 Hz

        def counts() -> dict[str, float]:
            if not diagnostics:
                return {}
            return {kv.key: float(kv.value) for kv in diagnostics[-1].status[0].values}

        # Both images of a pair share one stamp, so every pair is provably the best set once both arrived.
        expected_pairs = len(schedule)
        done = _spin_until(node, lambda: counts().get("pairs", 0) >= expected_pairs and
                           counts()["fused"] + counts()["dropped_busy"] + counts()["bad_input"]
                           + counts()["failed"] == counts()["pairs"] and len(fused) == counts()["fused"],
                           timeout=60)
        c = counts()
        assert done, f"node counters never settled: {c}, received {len(fused)}"
        assert c["pairs"] == expected_pairs
        assert c["bad_input"] == 2 and c["failed"] == 0
        assert c["fused"] >= 1 and c["fused"] + c["dropped_busy"] == GOOD_PAIRS
        _spin_until(node, lambda: len(dig_ir) >= len(fused) and len(dig_vis) >= len(fused), timeout=10)
        received = [(m.header.stamp.sec, m.header.stamp.nanosec) for m in fused]
        assert received == sorted(received) and set(received) <= set(stamps)
        assert all(m.header.frame_id == "visible_camera" for m in fused)
        assert all((m.width, m.height, m.encoding) == (1280, 1024, "bgr8") for m in fused)
        for w_ir, w_vis in zip(dig_ir, dig_vis, strict=False):
            assert (w_ir.header.stamp.sec, w_ir.header.stamp.nanosec) in set(received)
            total = image_to_numpy(w_ir) + image_to_numpy(w_vis)
            assert w_ir.encoding == "32FC1" and np.allclose(total, 1.0, atol=1e-3)
        assert runner.poll() is None, "the node must keep running after bad input"
    finally:
        runner.send_signal(signal.SIGINT)
        try:
            output, _ = runner.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            runner.kill()
            output, _ = runner.communicate()
        node.destroy_node()
        rclpy.shutdown()
    assert runner.returncode == 0, output
    assert "skipping a pair" in output and "fused 1 frames" in output
    left = _stale_shm_segments() - stale_before
    assert not left, f"Fast DDS shared-memory segments were left behind: {sorted(left)}"
