"""The one description of the graph that both `launch/fusion.launch.py` and `dig2dig-ros launch` start.

`build_graph(arguments)` turns launch arguments (name → string value, as `name:=value` gives them) into the
nodes to run, with their parameter files, parameter overrides and remaps. No ROS import here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

PACKAGE = "dig2dig_ros"


def package_share() -> Path:
    """The folder holding config/ and launch/: the source tree when run from it, else the installed share."""
    source_tree = Path(__file__).resolve().parents[2]
    if (source_tree / "config" / "fusion.yaml").is_file():
        return source_tree
    from ament_index_python.packages import get_package_share_directory

    return Path(get_package_share_directory(PACKAGE))


@dataclass(frozen=True)
class LaunchArgument:
    """A launch argument: its default (a string, as launch sees it) and what it does."""

    default: str
    description: str


LAUNCH_ARGUMENTS: dict[str, LaunchArgument] = {
    "params_file": LaunchArgument("", "YAML parameters for the nodes (default: config/fusion.yaml)"),
    "namespace": LaunchArgument("", "namespace for every node"),
    "use_sim_time": LaunchArgument("false", "follow /clock (bag replay with --clock)"),
    "ir_topic": LaunchArgument("ir/image", "infrared image topic"),
    "visible_topic": LaunchArgument("visible/image", "visible image topic"),
    "prior": LaunchArgument("", "override the prior (bundled, wiener, adm:PATH, diffusers:DIR)"),
    "device": LaunchArgument("", "override the device (auto, cpu, cuda)"),
    "working_size": LaunchArgument("", "override the long side fusion runs at, in pixels"),
    "ir_homography": LaunchArgument("", "override ir.homography: 'auto' (estimated from the images while running), "
                                        "nine numbers a,b,...,i, or a file holding them"),
    "detect": LaunchArgument("false", "also start the YOLOv5 detector on fused/image"),
    "detector_model": LaunchArgument("", "folder of the converted YOLOv5 model (dig2dig-convert-yolov5)"),
    "rviz": LaunchArgument("false", "start RViz with config/fusion.rviz (real ROS 2 only)"),
    "view": LaunchArgument("false", "start the live web view (dig2dig_web_view): page, MJPEG streams, snapshots"),
    "view_port": LaunchArgument("8080", "HTTP port of the live web view"),
    "view_host": LaunchArgument("127.0.0.1", "address the live web view binds (0.0.0.0: every interface, no login)"),
    "foxglove": LaunchArgument("false", "start a Foxglove WebSocket server (dig2dig_foxglove_bridge)"),
    "foxglove_port": LaunchArgument("8765", "port of the Foxglove WebSocket server"),
    "foxglove_host": LaunchArgument("127.0.0.1", "address the Foxglove server binds (0.0.0.0: every interface)"),
    "log_level": LaunchArgument("info", "logging level of the nodes"),
}


@dataclass
class NodeSpec:
    """One node to start: what `launch_ros.actions.Node` takes, and what the runner turns into a command."""

    executable: str
    name: str
    namespace: str
    params_files: list[str]
    parameters: dict[str, object] = field(default_factory=dict)
    remappings: list[tuple[str, str]] = field(default_factory=list)
    log_level: str = "info"

    def ros_arguments(self) -> list[str]:
        """The `--ros-args ...` part of a command line for this node."""
        args = ["--ros-args", "-r", f"__node:={self.name}", "--log-level", self.log_level]
        if self.namespace:
            args += ["-r", f"__ns:={self.namespace}"]
        for path in self.params_files:
            args += ["--params-file", path]
        for key, value in self.parameters.items():
            args += ["-p", f"{key}:={_yaml_value(value)}"]
        for src, dst in self.remappings:
            args += ["-r", f"{src}:={dst}"]
        return args


def _yaml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _truthy(text: str) -> bool:
    if text.lower() in ("true", "1", "yes", "on"):
        return True
    if text.lower() in ("false", "0", "no", "off", ""):
        return False
    raise ValueError(f"expected true or false, got {text!r}")


def resolve_arguments(given: dict[str, str]) -> dict[str, str]:
    """Defaults filled in; unknown names raise ValueError listing the known ones."""
    unknown = sorted(set(given) - set(LAUNCH_ARGUMENTS))
    if unknown:
        raise ValueError(f"unknown launch argument(s) {', '.join(unknown)}; known: {', '.join(LAUNCH_ARGUMENTS)}")
    args = {name: arg.default for name, arg in LAUNCH_ARGUMENTS.items()}
    args.update(given)
    if not args["params_file"]:
        args["params_file"] = str(package_share() / "config" / "fusion.yaml")
    return args


def build_graph(given: dict[str, str]) -> list[NodeSpec]:
    """The nodes for these launch arguments (values as strings, as `name:=value` gives them)."""
    args = resolve_arguments(given)
    sim = _truthy(args["use_sim_time"])
    namespace = args["namespace"].strip("/")
    fusion_params: dict[str, object] = {"use_sim_time": sim}
    if args["prior"]:
        fusion_params["prior"] = args["prior"]
    if args["device"]:
        fusion_params["device"] = args["device"]
    if args["working_size"]:
        fusion_params["working_size"] = int(args["working_size"])
    if args["ir_homography"]:
        fusion_params["ir.homography"] = args["ir_homography"]
    remaps = []
    if args["ir_topic"] != "ir/image":
        remaps.append(("ir/image", args["ir_topic"]))
    if args["visible_topic"] != "visible/image":
        remaps.append(("visible/image", args["visible_topic"]))
    nodes = [NodeSpec("dig2dig_fusion", "dig2dig_fusion", namespace, [args["params_file"]], fusion_params,
                      remaps, args["log_level"])]
    if _truthy(args["detect"]):
        detector_params: dict[str, object] = {"use_sim_time": sim}
        if args["detector_model"]:
            detector_params["model_path"] = args["detector_model"]
        if args["device"]:
            detector_params["device"] = args["device"]
        nodes.append(NodeSpec("dig2dig_detector", "dig2dig_detector", namespace, [args["params_file"]],
                              detector_params, [], args["log_level"]))
    if _truthy(args["view"]):
        view_params = {"use_sim_time": sim, "host": args["view_host"], "port": int(args["view_port"])}
        nodes.append(NodeSpec("dig2dig_web_view", "dig2dig_web_view", namespace, [args["params_file"]],
                              view_params, list(remaps), args["log_level"]))
    if _truthy(args["foxglove"]):
        foxglove_params = {"use_sim_time": sim, "host": args["foxglove_host"], "port": int(args["foxglove_port"])}
        nodes.append(NodeSpec("dig2dig_foxglove_bridge", "dig2dig_foxglove_bridge", namespace,
                              [args["params_file"]], foxglove_params, [], args["log_level"]))
    return nodes


# Fast DDS 2.x (Jazzy) reads FASTRTPS_DEFAULT_PROFILES_FILE; 3.x (Kilted and later) FASTDDS_DEFAULT_PROFILES_FILE.
PROFILE_VARIABLES = ("FASTRTPS_DEFAULT_PROFILES_FILE", "FASTDDS_DEFAULT_PROFILES_FILE")


def fastdds_profile() -> Path:
    """The Fast DDS shared-memory profile every way of starting the graph uses."""
    return package_share() / "config" / "fastdds_profile.xml"


def profile_environment(environ: dict[str, str]) -> dict[str, str]:
    """The profile variables to add to environ: the shipped profile, unless the user already chose one."""
    chosen = next((environ[v] for v in PROFILE_VARIABLES if environ.get(v)), None)
    profile = chosen or (str(fastdds_profile()) if fastdds_profile().is_file() else None)
    if profile is None:
        return {}
    return {v: profile for v in PROFILE_VARIABLES if not environ.get(v)}
