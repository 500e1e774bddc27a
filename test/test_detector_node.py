"""The detector node across processes: a tiny model made here, one Image in, JSON detections (same header) out;
and a missing model folder ends start-up with one error line and a non-zero exit.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from dig2dig_ros.core.detection import YoloV5, YoloV5Config, save_model

rclpy = pytest.importorskip("rclpy")
pytestmark = pytest.mark.ros

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def ros_env() -> dict[str, str]:
    """A ROS domain of our own on localhost; set before rclpy.init here and passed to the node process."""
    env = {"ROS_DOMAIN_ID": str(1 + os.getpid() % 100), "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST"}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    yield {**os.environ, **env, "PYTHONUNBUFFERED": "1"}
    for key, value in old.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    """A 2-class YOLOv5 with random small weights whose head is biased to see a "person" in every cell."""
    torch.manual_seed(0)
    model = YoloV5(YoloV5Config(nc=2, names=["person", "car"], depth_multiple=0.33, width_multiple=0.0625))
    with torch.no_grad():
        for head in model.model[-1].m:
            bias = head.bias.view(3, 7)  # (na, 5+nc)
            bias[:, :4] = 0.0
            bias[:, 4:] = torch.tensor([20.0, 20.0, -20.0])  # objectness, person, car
    return save_model(model, tmp_path_factory.mktemp("tiny") / "yolo")


def start_node(env: dict[str, str], *params: str) -> subprocess.Popen:
    args = [sys.executable, "-m", "dig2dig_ros.ros.detector_node", "--ros-args"]
    for param in params:
        args += ["-p", param]
    return subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def stop(proc: subprocess.Popen) -> tuple[int, str]:
    """SIGINT, then wait; returns (exit code, stderr)."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
    try:
        _, err = proc.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
    return proc.returncode, err


def test_node_publishes_json_detections_with_the_input_header(ros_env, tiny_model):
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import Image
    from std_msgs.msg import String

    from dig2dig_ros.ros.conversions import image_to_numpy, numpy_to_image
    from dig2dig_ros.ros.detector_node import HAVE_VISION_MSGS

    if HAVE_VISION_MSGS:
        pytest.skip("vision_msgs is installed: the node publishes Detection2DArray instead of JSON")
    proc = start_node(ros_env, f"model_path:={tiny_model}", "device:=cpu", "input_size:=64")
    rclpy.init()
    node = rclpy.create_node("detector_node_test")
    try:
        got_json, got_image, sent = [], [], {}
        node.create_subscription(String, "detections/json", got_json.append, 10)
        node.create_subscription(Image, "detections/image", got_image.append, 10)
        pub = node.create_publisher(Image, "fused/image", qos_profile_sensor_data)
        frame = np.random.default_rng(1).integers(0, 255, (48, 80, 3), dtype=np.uint8)  # (H,W,3)
        deadline = time.monotonic() + 60
        i = 0
        while not (got_json and got_image) and time.monotonic() < deadline and proc.poll() is None:
            msg = numpy_to_image(frame, "bgr8")
            msg.header.stamp.sec, msg.header.stamp.nanosec = 1000 + i, 500 + i
            msg.header.frame_id = "fused_cam"
            sent[(msg.header.stamp.sec, msg.header.stamp.nanosec)] = i
            pub.publish(msg)
            i += 1
            end = time.monotonic() + 0.25
            while time.monotonic() < end:
                rclpy.spin_once(node, timeout_sec=0.05)
        assert proc.poll() is None, stop(proc)[1]
        assert got_json, "no detections/json within 60 s"
        doc = json.loads(got_json[0].data)
        stamp = (doc["header"]["stamp"]["sec"], doc["header"]["stamp"]["nanosec"])
        assert stamp in sent and doc["header"]["frame_id"] == "fused_cam"
        assert doc["image"] == {"width": 80, "height": 48}
        assert doc["detections"] and {d["class_name"] for d in doc["detections"]} == {"person"}
        box = doc["detections"][0]
        assert box["class_id"] == 0 and 0.9 < box["score"] <= 1.0
        assert 0 <= box["bbox"]["center_x"] <= 80 and 0 <= box["bbox"]["center_y"] <= 48
        assert got_image, "no detections/image"
        img = got_image[0]
        assert img.encoding == "bgr8" and (img.header.stamp.sec, img.header.stamp.nanosec) in sent
        assert image_to_numpy(img).shape == (48, 80, 3)
    finally:
        node.destroy_node()
        rclpy.shutdown()
        code, err = stop(proc)
    assert code == 0, err


def test_missing_model_exits_nonzero_with_one_error_line(ros_env, tmp_path):
    proc = start_node(ros_env, f"model_path:={tmp_path / 'absent'}", "device:=cpu")
    try:
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            stop(proc)
    assert proc.returncode == 1
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("dig2dig_detector: error:") and "model_path" in lines[0], err
