"""The detector node across processes: a tiny model made here, one Image in, JSON detections (same header, a
track id each, kept across frames) out; a missing model folder ends start-up with one error line and a non-zero
exit; and, with vision_msgs built into a colcon workspace (../shared/ros2_msgs), the real YOLOv5n on a held-out
LLVIP night frame answers with Detection2DArray and LabelInfo, read by a process with the workspace sourced.
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
from colcon_support import vision_msgs_workspace

from dig2dig_ros.core.detection import Detector, DetectorConfig, YoloV5, YoloV5Config, save_model

rclpy = pytest.importorskip("rclpy")
pytestmark = pytest.mark.ros

REPO = Path(__file__).resolve().parents[1]
PROBE = Path(__file__).resolve().parent / "vision_msgs_probe.py"
# Held back from training the bundled prior (data_splits/prior_validation.txt): night street scenes with people.
HELD_OUT_NIGHT = ("010003", "010008")


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


def start_node(env: dict[str, str], *params: str, executable: list[str] | None = None) -> subprocess.Popen:
    args = [*(executable or [sys.executable, "-m", "dig2dig_ros.ros.detector_node"]), "--ros-args"]
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
        while not (len(got_json) >= 4 and got_image) and time.monotonic() < deadline and proc.poll() is None:
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
        # The same frame again and again: every box keeps its track id, confirmed from the third frame on. (This
        # random model also finds boxes clipped to zero height at the border: no overlap, so no track continues.)
        docs = [json.loads(m.data) for m in got_json[:4]]
        assert all(d["id"].isdigit() for doc in docs for d in doc["detections"])
        assert all(len({d["id"] for d in doc["detections"]}) == len(doc["detections"]) for doc in docs)
        boxes = [[d for d in doc["detections"] if d["bbox"]["size_x"] > 0 and d["bbox"]["size_y"] > 0] for doc in docs]
        tracks = [{(d["id"], d["bbox"]["center_x"], d["bbox"]["center_y"]) for d in frame} for frame in boxes]
        assert len(tracks[0]) > 10 and tracks[0] == tracks[1] == tracks[2] == tracks[3]
        # Confirmed from the tracker's third frame on (test_tracker.py checks the count exactly). The node may have
        # tracked a frame before its JSON publisher had matched this subscriber (the likely cause of one CI-layout
        # failure that read [False, True, True, True]), so here: unconfirmed first,
        # confirmed by the third received frame, and confirmed from then on.
        flags = [all(d["confirmed"] for d in frame) for frame in boxes]
        assert not flags[0] and flags[2:] == [True, True] and flags == sorted(flags), flags
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


# -- vision_msgs, as a ROS user who sourced the workspace gets it -----------------------------------------------
@pytest.fixture(scope="module")
def yolov5n(shared_data, tmp_path_factory) -> Path:
    weights = shared_data / "weights" / "yolov5n.pt"
    if not weights.is_file():
        pytest.skip(f"no YOLOv5n weights at {weights}")
    out = tmp_path_factory.mktemp("yolo") / "yolov5n"
    convert = subprocess.run([sys.executable, "-m", "dig2dig_ros.core.detection.convert", "--pt", str(weights),
                              "--out", str(out)], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert convert.returncode == 0, convert.stderr
    return out


def test_node_publishes_detection2d_arrays_and_label_info_over_ros(ros_env, yolov5n, shared_data,
                                                                   tmp_path_factory, tmp_path):
    import cv2

    ws = vision_msgs_workspace(tmp_path_factory)
    env = ws.environment(ros_env)
    # Two held-out night frames at 640×512 (what the detector sees of a 1280×1024 frame: it letterboxes to 640).
    frames = []
    for stem in HELD_OUT_NIGHT:
        vis = cv2.imread(str(shared_data / "vif" / "llvip" / "vis" / f"{stem}.jpg"))
        frames.append(cv2.resize(vis, (640, 512), interpolation=cv2.INTER_AREA))  # (512,640,3)
        cv2.imwrite(str(tmp_path / f"{stem}.png"), frames[-1])
    executable = [str(ws.install / "dig2dig_ros" / "lib" / "dig2dig_ros" / "dig2dig_detector")]
    proc = start_node(env, f"model_path:={yolov5n}", "device:=cpu", executable=executable)
    try:
        probe = subprocess.run([sys.executable, str(PROBE), "--count", "6", "--repeat", "3", "--rate", "2",
                                "--timeout", "90",
                                "--frames", *[str(tmp_path / f"{s}.png") for s in HELD_OUT_NIGHT]],
                               cwd=REPO, env=env, capture_output=True, text=True, timeout=150)
    finally:
        code, err = stop(proc)
    assert probe.returncode == 0, probe.stderr
    assert code == 0, err
    assert "JSON on detections/json" not in err, err  # the node found vision_msgs
    got = json.loads(probe.stdout)
    sent = {(sec, nsec): index for sec, nsec, index in got["sent"]}  # stamp → which frame
    assert len(got["detections"]) >= 6, (got, err)

    # LabelInfo (transient local: the probe joined after the node had published it).
    assert got["label_info"] == {"stamp": got["label_info"]["stamp"], "threshold": pytest.approx(0.25),
                                 "class_map": [[0, "person"]]}

    # The same boxes as the detector run here on the same frames; the centre and size computed independently.
    detector = Detector(DetectorConfig(model_path=str(yolov5n), device="cpu"))
    expected = [detector(frame) for frame in frames]
    previous = None
    for msg in got["detections"]:
        stamp = tuple(msg["stamp"])
        assert stamp in sent and msg["frame_id"] == "fused_cam"
        want = expected[sent[stamp]]
        assert len(msg["detections"]) == len(want) > 0, "no person found on a night frame with people"
        for det, (x1, y1, x2, y2), score in zip(msg["detections"], want.boxes, want.scores, strict=True):
            assert tuple(det["stamp"]) == stamp
            assert det["results"] == [{"class_id": "person", "score": pytest.approx(float(score), abs=1e-4)}]
            cx, cy, w, h = (x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1
            assert det["center"] == pytest.approx([cx, cy, 0.0], abs=0.02)
            assert det["size"] == pytest.approx([w, h], abs=0.02)
            assert 0 <= cx - w / 2 and cx + w / 2 <= 640 and 0 <= cy - h / 2 and cy + h / 2 <= 512
        ids = [d["id"] for d in msg["detections"]]
        assert all(i.isdigit() for i in ids) and len(set(ids)) == len(ids), ids
        if previous is not None and previous[0] == sent[stamp]:
            assert ids == previous[1], "the same frame again: every box keeps its track id"
        previous = (sent[stamp], ids)


def test_yaml_sets_the_detector_parameters_to_their_declared_defaults():
    import yaml

    from dig2dig_ros.ros.detector_node import PARAMS

    def flat(tree: dict, prefix: str = "") -> dict:
        out = {}
        for key, value in tree.items():
            out.update(flat(value, f"{prefix}{key}.") if isinstance(value, dict) else {f"{prefix}{key}": value})
        return out

    values = flat(yaml.safe_load((REPO / "config" / "fusion.yaml").read_text())["/**/dig2dig_detector"]
                  ["ros__parameters"])
    declared = {spec.name: spec.default for spec in PARAMS}
    assert set(values) <= set(declared), set(values) - set(declared)
    assert {name for name in declared if name.startswith("tracker.")} <= set(values)
    assert {name: values[name] for name in values} == {name: declared[name] for name in values}


def test_losses_and_faults_of_ours_are_counted_and_named_in_process(ros_env, tiny_model, monkeypatch):
    """Transport losses (rmw's message_lost) and an exception while publishing turn the status WARN, counted."""
    from types import SimpleNamespace

    import rclpy
    from diagnostic_msgs.msg import DiagnosticStatus
    from rclpy.parameter import Parameter

    from dig2dig_ros.ros.conversions import numpy_to_image
    from dig2dig_ros.ros.detector_node import DetectorNode

    rclpy.init()
    node = None
    try:
        node = DetectorNode(parameter_overrides=[Parameter("model_path", value=str(tiny_model)),
                                                 Parameter("device", value="cpu")])
        sent = []
        monkeypatch.setattr(node.pub_diag, "publish", sent.append)
        node.input._on_lost(SimpleNamespace(total_count_change=4, total_count=4))
        node._publish_diagnostics()
        status = sent[-1].status[0]
        values = {kv.key: kv.value for kv in status.values}
        assert status.level == DiagnosticStatus.WARN and values["lost"] == "4"
        assert "lost 4 fused frames" in status.message and "/fused/image" in status.message

        def broken(*args, **kwargs):
            raise RuntimeError("publisher exploded")

        monkeypatch.setattr(node.pub_image, "publish", broken)
        node.worker.submit(numpy_to_image(np.zeros((64, 64, 3), np.uint8), "bgr8"))
        end = time.monotonic() + 20
        while node.counts["failed"] == 0 and time.monotonic() < end:
            time.sleep(0.05)
        assert node.counts["failed"] == 1 and node.worker._thread.is_alive()
        node._publish_diagnostics()
        assert "publisher exploded" in sent[-1].status[0].message
    finally:
        if node is not None:
            node.stop()
            node.destroy_node()
        rclpy.shutdown()
