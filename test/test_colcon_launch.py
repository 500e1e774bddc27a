"""What a ROS 2 user does, for real: `colcon build` the package into a fresh workspace, `source install/setup.bash`,
`ros2 launch dig2dig_ros fusion.launch.py` with the real Jazzy launch library (../shared/ros2_launch, never copied
here), publish an infrared + visible pair and get `fused/image` back with the pair's stamp; with `view:=true` the
snapshot URL serves the fused frame; with `detect:=true` (when ../shared/data/weights has yolov5n.pt) the detector
answers on the same frames. Also: package.xml declares the ROS packages the code imports.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from conftest import SHARED
from test_view_graph import fed_graph, free_port, ros_test_env, wait_for_snapshot

pytestmark = pytest.mark.ros
REPO = Path(__file__).resolve().parents[1]
ROS2_LAUNCH = SHARED / "ros2_launch" / "ros2_launch.py"
YOLOV5N = SHARED / "data" / "weights" / "yolov5n.pt"
COLCON = Path(sys.executable).parent / "colcon"
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
def install(tmp_path_factory) -> Path:
    """`colcon build --packages-select dig2dig_ros` in a fresh workspace with the repository in src/."""
    if not ROS2_LAUNCH.is_file():
        pytest.skip(f"the ROS 2 launch library is not at {ROS2_LAUNCH.parent} (../shared absent)")
    if not COLCON.is_file():
        pytest.skip("colcon not installed (pip install -r requirements-dev.txt: colcon-common-extensions)")
    ws = tmp_path_factory.mktemp("colcon_ws")
    (ws / "src").mkdir()
    (ws / "src" / "dig2dig_ros").symlink_to(REPO, target_is_directory=True)
    env = {**os.environ, "PATH": f"{COLCON.parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    build = subprocess.run([str(COLCON), "build", "--packages-select", "dig2dig_ros"], cwd=ws, env=env,
                           capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stdout + build.stderr
    return ws / "install"


def test_colcon_installs_the_executables_where_ros2_run_and_launch_look(install):
    libexec = install / "dig2dig_ros" / "lib" / "dig2dig_ros"
    for name in ("dig2dig_fusion", "dig2dig_detector", "dig2dig_web_view", "dig2dig_foxglove_bridge"):
        assert os.access(libexec / name, os.X_OK), f"{name} not in {libexec}"
    share = install / "dig2dig_ros" / "share"
    assert (share / "ament_index" / "resource_index" / "packages" / "dig2dig_ros").is_file()
    for path in ("launch/fusion.launch.py", "config/fusion.yaml", "config/fastdds_profile.xml", "package.xml"):
        assert (share / "dig2dig_ros" / path).is_file(), path


@pytest.fixture(scope="module")
def launched(install, tmp_path_factory):
    """`source install/setup.bash && ros2 launch dig2dig_ros fusion.launch.py ...` (detect:=true when we can)."""
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
    command = (f"source {install / 'setup.bash'} && exec {sys.executable} {ROS2_LAUNCH} dig2dig_ros fusion.launch.py "
               + " ".join(arguments))
    proc = subprocess.Popen(["bash", "-c", command], cwd=install.parent, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    with fed_graph(proc, env, listen=("detections/json",) if model else ()) as feeder:
        yield {"feeder": feeder, "view_port": view_port, "model": model, "proc": proc}


def test_launched_graph_fuses_a_pair_with_its_stamp_and_serves_the_snapshot(launched):
    feeder = launched["feeder"]
    fused = feeder.received["fused/image"][0]
    assert (fused.header.stamp.sec, fused.header.stamp.nanosec) in feeder.sent
    assert (fused.height, fused.width, fused.encoding, fused.header.frame_id) == (192, 256, "bgr8", "vis_cam")
    headers, jpeg = wait_for_snapshot(launched["view_port"], "/fused/image", timeout=30)
    assert jpeg.shape[:2] == (192, 256)
    sec, _, nanosec = headers["X-Stamp"].partition(".")
    assert (int(sec), int(nanosec)) in feeder.sent


def test_launched_detector_answers_on_the_fused_frames(launched):
    if launched["model"] is None:
        pytest.skip(f"no YOLOv5n weights at {YOLOV5N}: launched without detect:=true")
    got = launched["feeder"].wait_for("detections/json", timeout=60)
    assert got, "no detections/json from the launched detector"
    doc = json.loads(got[0].data)
    stamp = (doc["header"]["stamp"]["sec"], doc["header"]["stamp"]["nanosec"])
    assert stamp in launched["feeder"].sent and doc["image"] == {"width": 256, "height": 192}
