"""`dig2dig-ros launch`: start the graph of `launch/fusion.launch.py` without the `launch` package.

Reads the same description (`dig2dig_ros.ros.graph.build_graph`) with the same `name:=value` arguments, starts
one process per node with the Fast DDS shared-memory profile and the environment ROS.md lists, and stops them
all (SIGINT, then SIGTERM) when one fails or on Ctrl-C / SIGTERM.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from dig2dig_ros.ros.graph import NodeSpec, build_graph, profile_environment

# executable name → module run with this interpreter (the venv's python, per ROS.md)
EXECUTABLE_MODULES = {
    "dig2dig_fusion": "dig2dig_ros.ros.fusion_node",
    "dig2dig_detector": "dig2dig_ros.ros.detector_node",
    "dig2dig_web_view": "dig2dig_ros.view.web_view_node",
    "dig2dig_foxglove_bridge": "dig2dig_ros.view.foxglove_node",
}


def parse_launch_arguments(items: list[str]) -> dict[str, str]:
    """['name:=value', ...] → {name: value}; anything else raises ValueError."""
    out = {}
    for item in items:
        name, sep, value = item.partition(":=")
        if not sep or not name:
            raise ValueError(f"launch arguments are name:=value, got {item!r}")
        out[name] = value
    return out


def ros_environment(base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment every node gets: Fast DDS profile, AMENT_PREFIX_PATH including this prefix."""
    env = dict(os.environ if base is None else base)
    env.update(profile_environment(env))
    prefix = sys.prefix
    paths = [p for p in env.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p]
    if prefix not in paths:
        env["AMENT_PREFIX_PATH"] = os.pathsep.join([prefix, *paths])
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def local_environment() -> dict[str, str]:
    """ros_environment() on a domain of its own (unless set) with discovery on this host only, adopted by this
    process too, so a benchmark's own publishers and the graph it starts see each other and nobody else."""
    env = ros_environment()
    env.setdefault("ROS_DOMAIN_ID", str(1 + os.getpid() % 99))
    env.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    os.environ.update({k: env[k] for k in ("ROS_DOMAIN_ID", "ROS_AUTOMATIC_DISCOVERY_RANGE")})
    os.environ.update({k: v for k, v in env.items() if k.endswith("_DEFAULT_PROFILES_FILE")})
    return env


def node_command(spec: NodeSpec) -> list[str]:
    """The command line that runs one node."""
    module = EXECUTABLE_MODULES[spec.executable]
    return [sys.executable, "-m", module, *spec.ros_arguments()]


def run_graph(specs: list[NodeSpec], env: dict[str, str], stop_after: float | None = None) -> int:
    """Start every node, wait until one exits (or stop_after seconds), stop the rest; the worst exit status."""
    procs = [subprocess.Popen(node_command(s), env=env, start_new_session=True) for s in specs]
    stopping = False

    def request_stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    old = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    deadline = None if stop_after is None else time.monotonic() + stop_after
    try:
        while not stopping and all(p.poll() is None for p in procs):
            if deadline is not None and time.monotonic() > deadline:
                break
            time.sleep(0.1)
    finally:
        codes = stop_processes(procs)
        for sig, handler in old.items():
            signal.signal(sig, handler)
    failed = [c for c in codes if c not in (0, -signal.SIGINT, None)]
    return failed[0] if failed else 0


def stop_processes(procs: list[subprocess.Popen], grace: float = 10.0) -> list[int | None]:
    """SIGINT each running process, then SIGTERM, then SIGKILL; returns their exit codes."""
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGKILL):
        alive = [p for p in procs if p.poll() is None]
        if not alive:
            break
        for p in alive:
            p.send_signal(sig)
        end = time.monotonic() + grace
        while time.monotonic() < end and any(p.poll() is None for p in alive):
            time.sleep(0.05)
    return [p.poll() for p in procs]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--params", help="parameters YAML (same as params_file:=FILE)")
    parser.add_argument("--print", action="store_true", help="print the node commands and exit")
    parser.add_argument("arguments", nargs="*", metavar="name:=value", help="launch arguments, as for ros2 launch")


def main(argv: list[str] | None = None) -> int:
    """`dig2dig-ros launch [--params FILE] [name:=value ...]`."""
    parser = argparse.ArgumentParser(prog="dig2dig-ros launch", description="start the fusion graph")
    add_arguments(parser)
    args = parser.parse_args(argv)
    given = parse_launch_arguments(args.arguments)
    if args.params:
        given["params_file"] = str(Path(args.params).resolve())
    if given.get("rviz", "false").lower() == "true":
        print("dig2dig-ros: rviz:=true needs a real ROS 2 install (ros2 launch); ignored here", file=sys.stderr)
    specs = build_graph(given)
    if args.print:
        for spec in specs:
            print(" ".join(node_command(spec)))
        return 0
    print("dig2dig-ros: starting " + ", ".join(s.name for s in specs), flush=True)
    return run_graph(specs, ros_environment())
