"""The ROS side makes torch's OpenMP threads wait passively (dig2dig_ros/ros/__init__.py)."""

import os
import subprocess
import sys

CHECK = """
import os, sys
import dig2dig_ros.ros
assert "torch" not in sys.modules, "torch was loaded before the wait policy could be set"
import dig2dig_ros.ros.fusion_node  # the node's entry module loads torch after it
print(os.environ.get("OMP_WAIT_POLICY"))
"""


def _run(env: dict[str, str]) -> str:
    done = subprocess.run([sys.executable, "-c", CHECK], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_nodes_make_openmp_threads_wait_passively():
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    assert _run(env) == "PASSIVE"


def test_the_environment_still_wins():
    assert _run({**os.environ, "OMP_WAIT_POLICY": "ACTIVE"}) == "ACTIVE"
