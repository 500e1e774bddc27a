"""`dig2dig-ros`: run the ROS 2 graph and its bag tools from a pip install (no `ros2` CLI needed).

    dig2dig-ros launch [--params FILE] [name:=value ...]      # the graph of launch/fusion.launch.py
    dig2dig-ros bag-from-images --ir DIR --vis DIR --out BAG   # LLVIP-style folders → rosbag2
    dig2dig-ros play BAG [--rate X] [--loop] [--clock]
    dig2dig-ros record BAG TOPIC...
    dig2dig-ros demo [--frames N] [--llvip DIR]                # bag → graph → recorded outputs

Each sub-command is a module with `main(argv) -> int`; `dig2dig-ros COMMAND --help` shows its options.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

COMMANDS = {
    "launch": ("dig2dig_ros.ros.launcher", "start the fusion graph (same arguments as fusion.launch.py)"),
    "bag-from-images": ("dig2dig_ros.bags.bag", "write a rosbag2 from DIR/{ir,vis} image folders"),
    "play": ("dig2dig_ros.bags.player", "publish a bag's messages in time order (raw CDR), with /clock"),
    "record": ("dig2dig_ros.bags.recorder", "record topics to a rosbag2"),
    "demo": ("dig2dig_ros.bags.demo", "replay a sample bag through the graph and keep the outputs"),
}


def usage() -> str:
    lines = ["usage: dig2dig-ros COMMAND [options]", "", "commands:"]
    lines += [f"  {name:<16} {help_text}" for name, (_, help_text) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0 if argv else 2
    if argv[0] not in COMMANDS:
        print(f"dig2dig-ros: error: unknown command {argv[0]!r}\n{usage()}", file=sys.stderr)
        return 2
    module_name = COMMANDS[argv[0]][0]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        print(f"dig2dig-ros: error: {argv[0]} is not available ({exc})", file=sys.stderr)
        return 2
    try:
        return module.main(argv[1:])
    except (ValueError, OSError) as exc:
        print(f"dig2dig-ros: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
