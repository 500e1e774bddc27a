"""What every dig2dig node shares: start-up errors, parameter descriptors, and the run-until-shutdown entry."""

from __future__ import annotations

import sys
from collections.abc import Callable

import rclpy
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.node import Node

from dig2dig_ros.ros.params import ParamSpec


class StartupError(RuntimeError):
    """A configuration that cannot start (unknown prior, missing model or checkpoint, bad parameter)."""


def descriptor(spec: ParamSpec) -> ParameterDescriptor:
    """A ParameterDescriptor with the spec's description, choices, range and read-only flag."""
    text = spec.description + (f" ({', '.join(spec.choices)})" if spec.choices else "")
    desc = ParameterDescriptor(name=spec.name, description=text, read_only=spec.read_only)
    if isinstance(spec.default, list):
        desc.dynamic_typing = True  # e.g. class names (strings) or ids (integers)
    elif spec.low is not None and isinstance(spec.default, int) and not isinstance(spec.default, bool):
        desc.integer_range = [IntegerRange(from_value=int(spec.low), to_value=int(spec.high), step=1)]
    elif spec.low is not None and isinstance(spec.default, float):
        desc.floating_point_range = [FloatingPointRange(from_value=float(spec.low), to_value=float(spec.high))]
    return desc


def run_node(factory: Callable[[], Node], program: str, argv: list[str] | None = None) -> int:
    """Create the node and spin until shutdown; a StartupError prints one `program: error:` line and returns 1.

    The node may define ``stop()`` (join its worker) which runs before it is destroyed.
    """
    rclpy.init(args=argv if argv is not None else sys.argv)
    node = None
    try:
        try:
            node = factory()
        except StartupError as exc:
            print(f"{program}: error: {exc}", file=sys.stderr)
            return 1
        rclpy.spin(node)
    except (KeyboardInterrupt, rclpy.executors.ExternalShutdownException):
        pass
    finally:
        if node is not None:
            if hasattr(node, "stop"):
                node.stop()
            node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
    return 0
