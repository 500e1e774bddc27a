"""The fusion node on a real video: fused frames/s, latency, and where each frame's time goes, stage by stage.

Sends a folder sequence (`ir/` and `vis/` with shared stems, e.g. ../shared/data/sequences/m3svd_0117_1605) to
a FusionNode running in this process at --rate Hz, stamped with the current time, at its native size or scaled
to --size, and measures per fused frame the receive time − input stamp (the node keeps only the newest pair: a
slow frame shows up as drops). The sequence loops when --frames is longer. Per stage, the mean ms per fused
frame: `conversion` (the node's message → array, infrared normalisation, registration) and `publishing` timed
around the node's own calls, the fusion stages from `Fuser.profile` (dig2dig_ros/core/frame/stages.py).

    .venv/bin/python benchmarks/sequence_latency.py --sequence ../shared/data/sequences/m3svd_0117_1605 \\
        [--size 1280x960] [--frames 150] [--rate 25] [--threads 2] [--prior bundled] [--set method=dig ...]

``--set`` reaches every node parameter, e.g. ``--set pipeline=false`` (one frame at a time instead of the two
threads of the pipelined worker). With the pipeline on, the stage rows of the two halves overlap in time: their sum
is more than the time between fused frames.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import rclpy
import torch
from rclpy.executors import SingleThreadedExecutor
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image

from dig2dig_ros.core.frame import imaging
from dig2dig_ros.ros.conversions import numpy_to_image
from dig2dig_ros.ros.fusion_node import FusionNode

# What the table shows, in frame order: (label, profile keys summed).
ROWS = (("conversion", ("conversion",)), ("prepare (colour split, resize)", ("prepare",)),
        ("noise estimate", ("noise",)), ("motion (flow, gain warp)", ("flow",)), ("DIG probe", ("dig_weights",)),
        ("weight upsampling", ("to_solve_size",)), ("blend solve", ("solve",)), ("sampler", ("sample",)),
        ("detail reconstruction", ("detail",)), ("temporal stabilisation", ("stabilise",)),
        ("colour merge", ("compose",)), ("publishing", ("publishing",)))


def read_sequence(folder: Path, size: tuple[int, int] | None) -> list[tuple[np.ndarray, np.ndarray]]:
    """(infrared mono, visible BGR) uint8 pairs of a sequence folder, in stem order, resized to (W, H) if given."""
    pairs = []
    for ir_path in sorted((folder / "ir").iterdir()):
        vis_path = next((folder / "vis").glob(ir_path.stem + ".*"))
        ir, vis = imaging.read_image(ir_path), imaging.read_image(vis_path)
        if ir.ndim == 3:
            ir = cv2.cvtColor(ir, cv2.COLOR_BGR2GRAY)
        if size is not None:
            ir, vis = (cv2.resize(x, size, interpolation=cv2.INTER_LINEAR) for x in (ir, vis))
        pairs.append((ir, vis if vis.ndim == 3 else cv2.cvtColor(vis, cv2.COLOR_GRAY2BGR)))
    if not pairs:
        raise SystemExit(f"no frames in {folder}/ir")
    return pairs


def timed(profile: dict[str, float], name: str, fn: Callable) -> Callable:
    """``fn`` with its seconds added to ``profile[name]``."""
    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            profile[name] = profile.get(name, 0.0) + time.perf_counter() - start
    return wrapper


def parse_value(text: str):
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(text.lower(), text)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sequence", type=Path, required=True, help="folder with ir/ and vis/")
    parser.add_argument("--size", default="", help="WxH to scale the frames to (default: native)")
    parser.add_argument("--frames", type=int, default=150)
    parser.add_argument("--warmup", type=int, default=10, help="frames sent before measuring")
    parser.add_argument("--rate", type=float, default=25.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--prior", default="bundled")
    parser.add_argument("--set", action="append", default=[], help="node parameter override name=value")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    size = tuple(int(v) for v in args.size.split("x")) if args.size else None
    pairs = read_sequence(args.sequence, size)
    overrides = {"prior": args.prior, "device": "cpu", "torch_threads": args.threads,
                 **dict((kv.split("=", 1)[0], parse_value(kv.split("=", 1)[1])) for kv in args.set)}
    rclpy.init()
    node = FusionNode(parameter_overrides=[Parameter(k, value=v) for k, v in overrides.items()])
    peer = rclpy.create_node("sequence_latency_benchmark")
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    executor.add_node(peer)
    profile: dict[str, float] = {}
    node._prepare = timed(profile, "conversion", node._prepare)
    node._publish = timed(profile, "publishing", node._publish)
    qos = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
    pub_ir, pub_vis = peer.create_publisher(Image, "ir/image", qos), peer.create_publisher(Image, "visible/image", qos)
    latencies: list[float] = []

    def on_fused(msg: Image) -> None:
        now = peer.get_clock().now().nanoseconds
        latencies.append((now - (msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec)) / 1e6)

    peer.create_subscription(Image, "fused/image", on_fused, qos)
    messages = [(numpy_to_image(ir, "mono8"), numpy_to_image(vis, "bgr8")) for ir, vis in pairs]

    def spin_for(seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            executor.spin_once(timeout_sec=0.002)

    def send(count: int, offset: int) -> float:
        start = time.monotonic()
        for i in range(count):
            ir_msg, vis_msg = messages[(offset + i) % len(messages)]
            ir_msg.header.stamp = vis_msg.header.stamp = peer.get_clock().now().to_msg()
            pub_ir.publish(ir_msg)
            pub_vis.publish(vis_msg)
            spin_for(max(0.0, start + (i + 1) / args.rate - time.monotonic()))
        return time.monotonic() - start

    try:
        spin_for(2.0)  # discovery
        send(args.warmup, 0)
        spin_for(1.0)
        latencies.clear()
        profile.clear()
        node.fuser.profile = profile
        sent_for = send(args.frames, args.warmup)
        fused_in_time = len(latencies)
        spin_for(2.0)
    finally:
        node.stop()
        executor.shutdown()
        node.destroy_node()
        peer.destroy_node()
        rclpy.shutdown()
    fused = len(latencies)
    h, w = pairs[0][0].shape
    cfg = node.fuser.config
    print(f"{args.sequence.name} at {w}x{h}, {args.frames} pairs at {args.rate:g} Hz, prior {args.prior}, "
          f"method {cfg.method}, working size {cfg.max_side}, video {'on' if cfg.video.enabled else 'off'}, "
          f"pipeline {'on' if node.worker.pipelined else 'off'}, {args.threads} threads\n")
    print(f"fused {fused} of {args.frames}: {fused_in_time / sent_for:.1f} frames/s; latency median "
          f"{statistics.median(latencies):.0f} ms, p95 {np.percentile(latencies, 95):.0f} ms\n")
    print("| stage | ms per fused frame |\n|---|---|")
    total = 0.0
    for label, keys in ROWS:
        ms = sum(profile.get(k, 0.0) for k in keys) * 1000 / max(fused, 1)
        total += ms
        if ms > 0:
            print(f"| {label} | {ms:.1f} |")
    print(f"| **sum** | {total:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
