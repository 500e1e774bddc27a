"""One colcon workspace per test session, built as a ROS user builds it: this package, and vision_msgs from
../shared/ros2_msgs when it is there (its README: the ROS build wheels from requirements-dev.txt, their CMake
files fixed by `make setup`). test_colcon_launch.py and test_detector_node.py share it, so vision_msgs (~30 s on
2 cores) is built once.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import SHARED

REPO = Path(__file__).resolve().parents[1]
VENV = Path(sys.prefix)
COLCON = Path(sys.executable).parent / "colcon"
VISION_MSGS = SHARED / "ros2_msgs" / "vision_msgs"
FIX_SCRIPT = REPO / "scripts" / "fix_ros_cmake.py"


@dataclass
class Workspace:
    """A built workspace: its install/ folder and what it holds."""

    root: Path
    vision_msgs: bool  # vision_msgs was built into it

    @property
    def install(self) -> Path:
        return self.root / "install"

    def source_command(self) -> str:
        """Shell lines a user runs before `ros2 ...`: source the workspace, keep the venv's ROS on the path
        (sourcing drops a prefix without colcon's setup files: ../shared/ros2_msgs/README.md, step 4)."""
        return (f"source {self.install / 'setup.bash'} && "
                f"export AMENT_PREFIX_PATH=\"$AMENT_PREFIX_PATH:{VENV}\"")

    def environment(self, base: dict[str, str]) -> dict[str, str]:
        """base with the workspace sourced (as source_command does), for processes started without a shell."""
        out = subprocess.run(["bash", "-c", f"{self.source_command()} && env -0"], env=base, capture_output=True,
                             check=True, timeout=60)
        pairs = (item.partition("=") for item in out.stdout.decode().split("\0") if "=" in item)
        return {key: value for key, _, value in pairs}


_BUILT: dict[str, Workspace] = {}


def _unfixed_cmake() -> list[Path]:
    """The venv's ROS CMake files that still name a Python include folder missing here."""
    sys.path.insert(0, str(FIX_SCRIPT.parent))
    try:
        from fix_ros_cmake import fix_text, replacements
    finally:
        sys.path.pop(0)
    rules = replacements()
    files = (VENV / "share").glob("*/cmake/*rosidl_generator_py*Export.cmake")
    return [path for path in files if fix_text(path.read_text(), rules) != path.read_text()]


def workspace(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    """The session's workspace (built on first use; skips with the reason where colcon is missing)."""
    if "ws" in _BUILT:
        return _BUILT["ws"]
    if not COLCON.is_file():
        pytest.skip("colcon not installed (pip install -r requirements-dev.txt: colcon-common-extensions)")
    root = tmp_path_factory.mktemp("colcon_ws")
    (root / "src").mkdir()
    (root / "src" / "dig2dig_ros").symlink_to(REPO, target_is_directory=True)
    packages = ["dig2dig_ros"]
    if VISION_MSGS.is_dir() and (VENV / "share" / "ament_cmake").is_dir():
        unfixed = _unfixed_cmake()
        if unfixed:
            pytest.fail(f"{len(unfixed)} ROS CMake files in {VENV / 'share'} name another machine's Python "
                        f"(e.g. {unfixed[0].name}): run `make setup` (scripts/fix_ros_cmake.py)")
        (root / "src" / "vision_msgs").symlink_to(VISION_MSGS, target_is_directory=True)
        packages.append("vision_msgs")
    env = {**os.environ, "PATH": f"{COLCON.parent}{os.pathsep}{os.environ.get('PATH', '')}",
           "AMENT_PREFIX_PATH": str(VENV), "CMAKE_PREFIX_PATH": str(VENV), "MAKEFLAGS": "-j2"}
    build = subprocess.run([str(COLCON), "build", "--packages-select", *packages,
                            "--cmake-args", "-DBUILD_TESTING=OFF"],  # ament_lint_auto is not on PyPI
                           cwd=root, env=env, capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, build.stdout[-4000:] + build.stderr[-4000:]
    _BUILT["ws"] = Workspace(root, "vision_msgs" in packages)
    return _BUILT["ws"]


def vision_msgs_workspace(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    """The session's workspace, skipping (with the reason) where vision_msgs could not be built into it."""
    if not VISION_MSGS.is_dir():
        pytest.skip(f"vision_msgs source not at {VISION_MSGS} (../shared absent)")
    if not (VENV / "share" / "ament_cmake").is_dir():
        pytest.skip("the ROS build wheels (ament_cmake, rosidl generators) are not installed: make setup")
    ws = workspace(tmp_path_factory)
    assert ws.vision_msgs
    return ws
