"""The launch file and the runner start the same graph: same nodes, parameters, files and remaps."""

import importlib.util
import sys
import types
from pathlib import Path

import pytest

from dig2dig_ros.ros.graph import LAUNCH_ARGUMENTS, PROFILE_VARIABLES, build_graph, fastdds_profile
from dig2dig_ros.ros.launcher import EXECUTABLE_MODULES, node_command, parse_launch_arguments, ros_environment

LAUNCH_FILE = Path(__file__).resolve().parents[1] / "launch" / "fusion.launch.py"


class _Recorded:
    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs


class _LaunchConfiguration:
    def __init__(self, name):
        self.name = name

    def perform(self, context):
        return context.launch_configurations[self.name]


@pytest.fixture()
def launch_module(monkeypatch):
    """fusion.launch.py imported against stand-ins for `launch` and `launch_ros` (not on PyPI)."""
    launch = types.ModuleType("launch")
    launch.LaunchDescription = lambda entities: list(entities)
    actions = types.ModuleType("launch.actions")
    for name in ("DeclareLaunchArgument", "OpaqueFunction", "SetEnvironmentVariable"):
        setattr(actions, name, type(name, (_Recorded,), {}))
    substitutions = types.ModuleType("launch.substitutions")
    substitutions.LaunchConfiguration = _LaunchConfiguration
    launch_ros = types.ModuleType("launch_ros")
    ros_actions = types.ModuleType("launch_ros.actions")
    ros_actions.Node = type("Node", (_Recorded,), {})
    for name, module in {"launch": launch, "launch.actions": actions, "launch.substitutions": substitutions,
                         "launch_ros": launch_ros, "launch_ros.actions": ros_actions}.items():
        monkeypatch.setitem(sys.modules, name, module)
    spec = importlib.util.spec_from_file_location("fusion_launch", LAUNCH_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _launched_nodes(module, given):
    entities = module.generate_launch_description()
    declared = {e.args[0]: e.kwargs["default_value"] for e in entities if type(e).__name__ == "DeclareLaunchArgument"}
    context = types.SimpleNamespace(launch_configurations={**declared, **given})
    (opaque,) = [e for e in entities if type(e).__name__ == "OpaqueFunction"]
    return declared, entities, opaque.kwargs["function"](context)


@pytest.mark.parametrize("given", [
    {},
    {"namespace": "robot1", "use_sim_time": "true", "prior": "wiener", "working_size": "160"},
    {"ir_homography": "auto", "view": "true"},
    {"detect": "true", "detector_model": "/models/yolov5n", "ir_topic": "/thermal/image_raw", "device": "cpu"},
    {"view": "true", "view_port": "9090", "foxglove": "true", "namespace": "r2", "ir_topic": "/thermal"},
])
def test_launch_file_and_runner_describe_the_same_graph(launch_module, given, monkeypatch):
    for name in PROFILE_VARIABLES:  # conftest sets them for the session; here: a user who chose no profile
        monkeypatch.delenv(name, raising=False)
    declared, entities, nodes = _launched_nodes(launch_module, given)
    assert set(declared) == set(LAUNCH_ARGUMENTS)
    env = [e.args for e in entities if type(e).__name__ == "SetEnvironmentVariable"]
    assert {name for name, _ in env} == set(PROFILE_VARIABLES)  # Fast DDS 2.x and 3.x names
    assert all(path == str(fastdds_profile()) for _, path in env)
    assert {name: ros_environment({})[name] for name in PROFILE_VARIABLES} == dict(env)  # the runner agrees
    specs = build_graph(given)
    assert all(s.executable in EXECUTABLE_MODULES for s in specs)
    assert [n.kwargs["executable"] for n in nodes] == [s.executable for s in specs]
    for node, spec in zip(nodes, specs, strict=True):
        kw = node.kwargs
        assert (kw["name"], kw["namespace"]) == (spec.name, spec.namespace)
        assert kw["parameters"] == [*spec.params_files, spec.parameters]
        assert kw["remappings"] == spec.remappings
        command = node_command(spec)
        for path in spec.params_files:
            assert path in command
        for key in spec.parameters:
            assert any(arg.startswith(f"{key}:=") for arg in command), key
        if given.get("namespace"):
            assert f"__ns:={given['namespace']}" in command


@pytest.mark.parametrize("user", [
    {"FASTDDS_DEFAULT_PROFILES_FILE": "/etc/my_profile.xml"},
    {"FASTRTPS_DEFAULT_PROFILES_FILE": "/etc/my_profile.xml"},
    {"FASTRTPS_DEFAULT_PROFILES_FILE": "/etc/a.xml", "FASTDDS_DEFAULT_PROFILES_FILE": "/etc/b.xml"},
])
def test_launch_file_and_runner_respect_the_users_fastdds_profile(launch_module, monkeypatch, user):
    for name in PROFILE_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    for name, value in user.items():
        monkeypatch.setenv(name, value)
    _, entities, _ = _launched_nodes(launch_module, {})
    launched = {**user, **{e.args[0]: e.args[1] for e in entities if type(e).__name__ == "SetEnvironmentVariable"}}
    runner = ros_environment()
    assert launched == {name: runner[name] for name in PROFILE_VARIABLES}
    assert all(value.startswith("/etc/") for value in launched.values())  # never the shipped one over the user's


def test_view_and_foxglove_nodes_follow_the_arguments():
    fusion, view, foxglove = build_graph({"view": "true", "foxglove": "true", "view_port": "8081",
                                          "ir_topic": "/thermal/image_raw", "namespace": "/robot1/"})
    assert view.executable == "dig2dig_web_view" and foxglove.executable == "dig2dig_foxglove_bridge"
    assert view.parameters == {"use_sim_time": False, "host": "127.0.0.1", "port": 8081}
    assert foxglove.parameters == {"use_sim_time": False, "host": "127.0.0.1", "port": 8765}
    assert view.remappings == fusion.remappings == [("ir/image", "/thermal/image_raw")]  # the page shows the inputs
    assert view.namespace == foxglove.namespace == "robot1"
    view_only = build_graph({"view": "true", "view_host": "0.0.0.0"})
    assert [s.executable for s in view_only] == ["dig2dig_fusion", "dig2dig_web_view"]
    assert view_only[1].parameters["host"] == "0.0.0.0"


def test_arguments_reach_the_nodes():
    specs = build_graph({"detect": "true", "use_sim_time": "true", "working_size": "200",
                         "visible_topic": "/cam/rgb/image_raw"})
    fusion, detector = specs
    assert fusion.parameters == {"use_sim_time": True, "working_size": 200}
    assert ("visible/image", "/cam/rgb/image_raw") in fusion.remappings
    assert detector.executable == "dig2dig_detector" and detector.parameters["use_sim_time"] is True
    assert len(build_graph({})) == 1  # the detector is optional
    (fusion,) = build_graph({"ir_homography": "auto"})
    assert fusion.parameters["ir.homography"] == "auto"
    assert "ir.homography:=auto" in fusion.ros_arguments()


def test_bad_launch_arguments_are_refused():
    with pytest.raises(ValueError, match="unknown launch argument"):
        build_graph({"detetc": "true"})
    with pytest.raises(ValueError, match="name:=value"):
        parse_launch_arguments(["detect=true"])
    with pytest.raises(ValueError, match="true or false"):
        build_graph({"detect": "maybe"})
