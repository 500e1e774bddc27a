"""The fusion node's parameters: declared with descriptions, validated on set, and start-up errors."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

rclpy = pytest.importorskip("rclpy")

from rclpy.parameter import Parameter  # noqa: E402

from dig2dig_ros.ros.fusion_node import FusionNode  # noqa: E402
from dig2dig_ros.ros.params import all_params  # noqa: E402


@pytest.fixture()
def node(monkeypatch):
    monkeypatch.setenv("ROS_DOMAIN_ID", str(1 + (os.getpid() + 50) % 99))
    monkeypatch.setenv("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    rclpy.init()
    overrides = [Parameter("prior", value="wiener"), Parameter("device", value="cpu"),
                 Parameter("working_size", value=64), Parameter("sampler.steps", value=3)]
    n = FusionNode(parameter_overrides=overrides)
    try:
        yield n
    finally:
        n.stop()
        n.destroy_node()
        rclpy.shutdown()


def test_every_parameter_is_declared_with_a_description(node):
    for spec in all_params():
        assert node.has_parameter(spec.name), spec.name
        described = node.describe_parameter(spec.name)
        assert described.description, spec.name
    steps = node.describe_parameter("sampler.steps")
    assert steps.integer_range and steps.integer_range[0].from_value == 2


def test_valid_runtime_changes_rebuild_the_fuser(node):
    result = node.set_parameters([Parameter("sampler.steps", value=5), Parameter("method", value="static")])
    assert all(r.successful for r in result)
    assert node.fuser.config.sampler.steps == 5 and node.fuser.config.method == "static"
    assert node.fuser.prior is node.prior  # the prior is not reloaded


@pytest.mark.parametrize("name,value,reason", [
    ("sampler.steps", 1, "sampler.steps"),
    ("dig.distance", "cosine", "dig.distance must be one of"),
    ("method", "nope", "unknown method"),
    ("prior", "adm:/x.pt", "read-only"),  # start-up only
])
def test_invalid_runtime_changes_are_refused(node, name, value, reason):
    before = node.fuser
    (result,) = node.set_parameters([Parameter(name, value=value)])
    assert not result.successful and reason in result.reason
    assert node.fuser is before


@pytest.mark.parametrize("args,message", [
    (["-p", "prior:=adm:/nonexistent/model.pt"], "/nonexistent/model.pt"),
    (["-p", "prior:=nope"], "unknown prior"),
    (["-p", "prior:=wiener", "-p", "reference_frame:=thermal"], "reference_frame must be one of"),
])
def test_bad_start_up_configuration_exits_with_one_line(args, message):
    env = {**os.environ, "ROS_DOMAIN_ID": str(1 + (os.getpid() + 60) % 99),
           "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST"}
    proc = subprocess.run([sys.executable, "-m", "dig2dig_ros.ros.fusion_node", "--ros-args", *args],
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("dig2dig_fusion: error:") and message in lines[0], proc.stderr
