"""What a ROS 2 user does, for real: `colcon build` the package (and vision_msgs, from ../shared/ros2_msgs) into a
fresh workspace, `source install/setup.bash`, `ros2 launch dig2dig_ros fusion.launch.py` with the real Jazzy launch
library (../shared/ros2_launch, never copied here), publish held-out LLVIP night pairs (infrared + visible) and get
`fused/image` back with each pair's stamp; with `view:=true` the snapshot URL serves the fused frame; with
`detect:=true` (when ../shared/data/weights has yolov5n.pt) the detector answers on the same frames with
vision_msgs/Detection2DArray: person hypotheses, boxes inside the image, a track id on every detection.
Also: package.xml declares the ROS packages the code imports.
"""

from __future__ import annotations

import ast
import contextlib
import json
import os
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import cv2
import pytest
from colcon_support import workspace
from conftest import SHARED
from test_view_graph import PairPublisher, free_port, ros_test_env, stop_process, wait_for_snapshot

pytestmark = pytest.mark.ros
REPO = Path(__file__).resolve().parents[1]
ROS2_LAUNCH = SHARED / "ros2_launch" / "ros2_launch.py"
YOLOV5N = SHARED / "data" / "weights" / "yolov5n.pt"
LLVIP = SHARED / "data" / "vif" / "llvip"
# Held back from training the bundled prior (data_splits/prior_validation.txt): night scenes with people.
HELD_OUT_NIGHT = ("010003", "010008", "010013", "010018")
SIZE = (512, 640)  # (H,W) the pairs are published at: half of LLVIP's 1280×1024
PROBE = Path(__file__).resolve().parent / "vision_msgs_probe.py"
# Imported by no module but part of every message with a header (the stamps the nodes copy): declared on purpose.
DECLARED_WITHOUT_IMPORT = {"builtin_interfaces"}


def _ros_imports() -> set[str]:
    """Top-level ROS packages imported by the package's ROS side and the launch file."""
    files = [*REPO.glob("dig2dig_ros/ros/*.py"), *REPO.glob("dig2dig_ros/bags/*.py"),
             *REPO.glob("dig2dig_ros/view/*.py"), *REPO.glob("launch/*.py")]
    found = set()
    for path in files:
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module] if isinstance(node, ast.ImportFrom) and node.module and not node.level else [])
            found.update(name.split(".")[0] for name in names)
    return {name for name in found if name in ("rclpy", "launch", "launch_ros", "ament_index_python")
            or name.endswith(("_msgs", "_interfaces"))}


def test_package_xml_declares_the_ros_packages_the_code_imports():
    root = ET.parse(REPO / "package.xml").getroot()
    depends = {e.text for e in root if e.tag in ("depend", "exec_depend")}
    ros_depends = {d for d in depends if not d.startswith("python3-")}
    imported = _ros_imports()
    assert imported <= ros_depends, f"imported but not declared: {sorted(imported - ros_depends)}"
    assert ros_depends - imported <= DECLARED_WITHOUT_IMPORT, f"declared, never imported: {ros_depends - imported}"
    assert root.find("export/build_type").text == "ament_python"


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    """The session's colcon workspace (colcon_support): dig2dig_ros, and vision_msgs where ../shared has it."""
    if not ROS2_LAUNCH.is_file():
        pytest.skip(f"the ROS 2 launch library is not at {ROS2_LAUNCH.parent} (../shared absent)")
    return workspace(tmp_path_factory)


@pytest.fixture(scope="module")
def install(ws) -> Path:
    return ws.install


def test_colcon_installs_the_executables_where_ros2_run_and_launch_look(install):
    libexec = install / "dig2dig_ros" / "lib" / "dig2dig_ros"
    for name in ("dig2dig_fusion", "dig2dig_detector", "dig2dig_web_view", "dig2dig_foxglove_bridge"):
        assert os.access(libexec / name, os.X_OK), f"{name} not in {libexec}"
    share = install / "dig2dig_ros" / "share"
    assert (share / "ament_index" / "resource_index" / "packages" / "dig2dig_ros").is_file()
    for path in ("launch/fusion.launch.py", "config/fusion.yaml", "config/fastdds_profile.xml", "package.xml"):
        assert (share / "dig2dig_ros" / path).is_file(), path


def held_out_pairs() -> list:
    """(infrared (H,W) uint8, visible (H,W,3) uint8) of the held-out night pairs, at SIZE."""
    pairs = []
    for stem in HELD_OUT_NIGHT:
        ir = cv2.imread(str(LLVIP / "ir" / f"{stem}.jpg"), cv2.IMREAD_GRAYSCALE)
        vis = cv2.imread(str(LLVIP / "vis" / f"{stem}.jpg"))
        pairs.append(tuple(cv2.resize(img, SIZE[::-1], interpolation=cv2.INTER_AREA) for img in (ir, vis)))
    return pairs


@contextlib.contextmanager
def fed_with(pairs: list, proc: subprocess.Popen, env: dict[str, str], listen: tuple[str, ...] = ()):
    """test_view_graph.fed_graph with these pairs: feed the graph until the block ends, once it has fused one;
    then stop it and check it ended cleanly."""
    feeder = PairPublisher(int(env["ROS_DOMAIN_ID"]), rate=2.0, pairs=pairs, listen=listen)
    try:
        fused = feeder.wait_for("fused/image", timeout=120, alive=lambda: proc.poll() is None)
        if not fused:
            pytest.fail(f"no fused/image from the graph:\n{stop_process(proc)}")
        yield feeder
    finally:
        feeder.close()
        time.sleep(2.0)  # let the workers finish the frame in hand
        out = stop_process(proc)
    assert "Traceback" not in out, out
    assert proc.returncode == 0, out


@pytest.fixture(scope="module")
def launched(ws, tmp_path_factory):
    """`source install/setup.bash && ros2 launch dig2dig_ros fusion.launch.py ...` (detect:=true when we can),
    fed with held-out LLVIP night pairs."""
    if not (LLVIP / "ir" / f"{HELD_OUT_NIGHT[0]}.jpg").is_file():
        pytest.skip(f"LLVIP pairs not at {LLVIP}")
    env = ros_test_env(offset=83)
    for name in ("FASTRTPS_DEFAULT_PROFILES_FILE", "FASTDDS_DEFAULT_PROFILES_FILE"):
        env.pop(name, None)  # a user without a profile of their own: the launch file sets the shipped one
    view_port = free_port()
    arguments = ["prior:=wiener", "working_size:=64", "device:=cpu", "view:=true", f"view_port:={view_port}"]
    model = None
    if YOLOV5N.is_file():
        model = tmp_path_factory.mktemp("yolo") / "yolov5n"
        convert = subprocess.run([sys.executable, "-m", "dig2dig_ros.core.detection.convert", "--pt", str(YOLOV5N),
                                  "--out", str(model)], cwd=REPO, capture_output=True, text=True, timeout=300)
        assert convert.returncode == 0, convert.stderr
        arguments += ["detect:=true", f"detector_model:={model}"]
    command = (f"{ws.source_command()} && exec {sys.executable} {ROS2_LAUNCH} dig2dig_ros fusion.launch.py "
               + " ".join(arguments))
    proc = subprocess.Popen(["bash", "-c", command], cwd=ws.root, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    listen = ("detections/json",) if model and not ws.vision_msgs else ()
    with fed_with(held_out_pairs(), proc, env, listen=listen) as feeder:
        yield {"feeder": feeder, "view_port": view_port, "model": model, "proc": proc, "env": env, "ws": ws}


def test_launched_graph_fuses_a_pair_with_its_stamp_and_serves_the_snapshot(launched):
    feeder = launched["feeder"]
    fused = feeder.received["fused/image"][0]
    assert (fused.header.stamp.sec, fused.header.stamp.nanosec) in feeder.sent
    assert (fused.height, fused.width, fused.encoding, fused.header.frame_id) == (*SIZE, "bgr8", "vis_cam")
    headers, jpeg = wait_for_snapshot(launched["view_port"], "/fused/image", timeout=30)
    assert jpeg.shape[:2] == SIZE
    sec, _, nanosec = headers["X-Stamp"].partition(".")
    assert (int(sec), int(nanosec)) in feeder.sent


def test_launched_detector_answers_with_detection2d_arrays_and_track_ids(launched):
    """The done-when: on held-out night pairs with people, `detections` carries Detection2DArray with the input's
    stamp, person hypotheses, boxes inside the image and an id on every detection."""
    if launched["model"] is None:
        pytest.skip(f"no YOLOv5n weights at {YOLOV5N}: launched without detect:=true")
    feeder, ws = launched["feeder"], launched["ws"]
    if not ws.vision_msgs:
        got = feeder.wait_for("detections/json", timeout=60)
        assert got, "no detections/json from the launched detector (vision_msgs not built: JSON fallback)"
        doc = json.loads(got[0].data)
        stamp = (doc["header"]["stamp"]["sec"], doc["header"]["stamp"]["nanosec"])
        assert stamp in feeder.sent and doc["image"] == {"width": SIZE[1], "height": SIZE[0]}
        assert all(d["id"] for d in doc["detections"])
        return
    probe = subprocess.run(["bash", "-c", f"{ws.source_command()} && exec {sys.executable} {PROBE} --count 4 "
                            "--timeout 90"], cwd=REPO, env=launched["env"], capture_output=True, text=True,
                           timeout=150)
    assert probe.returncode == 0, probe.stderr
    got = json.loads(probe.stdout)
    assert len(got["detections"]) >= 4, got
    assert got["label_info"]["class_map"] == [[0, "person"]]
    height, width = SIZE
    for msg in got["detections"]:
        assert tuple(msg["stamp"]) in feeder.sent and msg["frame_id"] == "vis_cam"
        assert msg["detections"], "no person found on a night pair with people"
        for det in msg["detections"]:
            assert det["id"].isdigit() and tuple(det["stamp"]) == tuple(msg["stamp"])
            assert [r["class_id"] for r in det["results"]] == ["person"] and 0.25 < det["results"][0]["score"] <= 1
            (cx, cy, _), (w, h) = det["center"], det["size"]
            assert w > 0 and h > 0 and 0 <= cx - w / 2 and cx + w / 2 <= width and 0 <= cy - h / 2
            assert cy + h / 2 <= height
        assert len({d["id"] for d in msg["detections"]}) == len(msg["detections"])


def test_fix_ros_cmake_rewrites_only_missing_absolute_include_folders_and_is_idempotent(tmp_path):
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        import fix_ros_cmake
    finally:
        sys.path.pop(0)
    import sysconfig

    import numpy

    here = sysconfig.get_paths()["include"]
    cmake = tmp_path / "share" / "std_msgs" / "cmake" / "export_std_msgs__rosidl_generator_pyExport.cmake"
    cmake.parent.mkdir(parents=True)
    elsewhere = "/opt/python/cp311-cp311"
    cmake.write_text(
        f'  INTERFACE_INCLUDE_DIRECTORIES "{elsewhere}/include/python3.11;'
        f'{elsewhere}/lib/python3.11/site-packages/numpy/_core/include"\n'
        '  INTERFACE_INCLUDE_DIRECTORIES "${_IMPORT_PREFIX}/include/python3.11"\n'
        f'  INTERFACE_INCLUDE_DIRECTORIES "{here}"\n')
    assert fix_ros_cmake.fix_prefix(tmp_path) == [cmake]
    assert cmake.read_text() == (
        f'  INTERFACE_INCLUDE_DIRECTORIES "{here};{numpy.get_include()}"\n'
        '  INTERFACE_INCLUDE_DIRECTORIES "${_IMPORT_PREFIX}/include/python3.11"\n'
        f'  INTERFACE_INCLUDE_DIRECTORIES "{here}"\n')
    assert fix_ros_cmake.fix_prefix(tmp_path) == []  # a second run changes nothing
