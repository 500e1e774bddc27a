"""End-to-end latency of the fusion node: input pairs at 25 Hz, fused frames out.

For each working size, starts the graph through `dig2dig-ros launch`, publishes --frames synthetic 640x512
pairs at --rate Hz (stamped with the current time), and measures, per fused frame, receive time − input stamp.
Prints median and p95 latency, output rate and drop ratio on the current device. The node keeps only the newest
pair, so a slow device shows up as drops, not as growing latency.

    .venv/bin/python benchmarks/node_latency.py [--prior bundled] [--sizes 160,320] [--frames 100] [--rate 25]
        [--modes default,per-frame,video,dig,dig-video]

Modes: `default` (config/fusion.yaml as shipped: dig-blend in video mode), `per-frame` and `video` (the shipped
method with video mode off / on), `dig` (the DIG-15 sampler, each frame from noise), `dig-video` (the sampler in
video mode: frames warm-started from the previous one).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import rclpy
import yaml
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image

from dig2dig_ros.core.sample_scene import make_sample_pair
from dig2dig_ros.ros.conversions import numpy_to_image
from dig2dig_ros.ros.launcher import local_environment, stop_processes


def spin_for(node, seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        rclpy.spin_once(node, timeout_sec=0.005)


MODES = {"default": {}, "per-frame": {"video": {"enabled": False}}, "video": {"video": {"enabled": True}},
         "dig": {"method": "dig", "video": {"enabled": False}},
         "dig-video": {"method": "dig", "video": {"enabled": True}}}
PACKAGED = Path(__file__).resolve().parents[1] / "config" / "fusion.yaml"


def params_file(mode: str) -> Path:
    """The packaged config/fusion.yaml with the mode's fusion settings on top, in a temporary file."""
    data = yaml.safe_load(PACKAGED.read_text())
    params = data["/**/dig2dig_fusion"]["ros__parameters"]
    for key, value in MODES[mode].items():
        params[key] = {**params.get(key, {}), **value} if isinstance(value, dict) else value
    path = Path(tempfile.mkdtemp()) / f"fusion_{mode}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def measure(node, size: int, mode: str, args: argparse.Namespace, env: dict[str, str]) -> dict[str, float]:
    graph = subprocess.Popen([sys.executable, "-m", "dig2dig_ros.commands.ros_cli", "launch", f"prior:={args.prior}",
                              f"working_size:={size}", f"device:={args.device}", "log_level:=warn",
                              f"params_file:={params_file(mode)}"], env=env, start_new_session=True)
    qos = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
    pub_ir, pub_vis = node.create_publisher(Image, "ir/image", qos), node.create_publisher(Image, "visible/image", qos)
    latencies: list[float] = []

    def on_fused(msg: Image) -> None:
        now = node.get_clock().now().nanoseconds
        latencies.append((now - (msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec)) / 1e6)

    sub = node.create_subscription(Image, "fused/image", on_fused, qos)
    try:
        end = time.monotonic() + 180
        while not (pub_ir.get_subscription_count() and pub_vis.get_subscription_count()):
            if time.monotonic() > end or graph.poll() is not None:
                raise RuntimeError("the fusion node did not start")
            spin_for(node, 0.1)
        spin_for(node, 3.0)  # discovery both ways, and the node's warm-up
        ir, vis = make_sample_pair(size=(512, 640))
        ir_msg, vis_msg = numpy_to_image(ir, "mono8"), numpy_to_image(vis, "bgr8")
        start = time.monotonic()
        for i in range(args.frames):
            stamp = node.get_clock().now().to_msg()
            ir_msg.header.stamp = vis_msg.header.stamp = stamp
            pub_ir.publish(ir_msg)
            pub_vis.publish(vis_msg)
            spin_for(node, max(0.0, start + (i + 1) / args.rate - time.monotonic()))
        sent_for = time.monotonic() - start
        spin_for(node, 5.0)
    finally:
        stop_processes([graph])
        node.destroy_subscription(sub)
        node.destroy_publisher(pub_ir)
        node.destroy_publisher(pub_vis)
    fused = len(latencies)
    return {"fused": fused, "median_ms": statistics.median(latencies) if latencies else float("nan"),
            "p95_ms": float(np.percentile(latencies, 95)) if latencies else float("nan"),
            "rate_hz": fused / sent_for, "drop_ratio": 1 - fused / args.frames}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--prior", default="bundled")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--sizes", default="160,320", help="working sizes (long side, pixels)")
    parser.add_argument("--frames", type=int, default=100)
    parser.add_argument("--rate", type=float, default=25.0)
    parser.add_argument("--modes", default="default", help=f"comma-separated, from {', '.join(MODES)}")
    args = parser.parse_args()
    env = local_environment()
    rclpy.init()
    node = rclpy.create_node("node_latency_benchmark")
    print(f"prior {args.prior}, device {args.device}, {args.frames} pairs of 640x512 at {args.rate} Hz\n")
    print("| mode | working size | fused | latency median ms | latency p95 ms | output Hz | drop ratio |")
    print("|---|---|---|---|---|---|---|")
    try:
        for mode in args.modes.split(","):
            for size in (int(s) for s in args.sizes.split(",")):
                r = measure(node, size, mode, args, env)
                print(f"| {mode} | {size} | {r['fused']} | {r['median_ms']:.0f} | {r['p95_ms']:.0f} | "
                      f"{r['rate_hz']:.1f} | {r['drop_ratio']:.2f} |", flush=True)
    finally:
        node.destroy_node()
        rclpy.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
