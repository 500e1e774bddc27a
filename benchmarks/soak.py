"""Soak: N minutes of 640x512 pairs at 25 Hz through the real graph; the fusion node's RSS and counters per minute.

Starts the graph with `dig2dig-ros launch` (the same runner users start), publishes synthetic pairs stamped with
the current time, subscribes to every output (so every output is built), and once a minute prints the fusion
node's resident memory and its /diagnostics counters. At the end it checks the accounting: every pair the
synchroniser emitted is fused, dropped while busy, bad or failed, and every message the node received is in a
pair or dropped by the synchroniser with a reason; RSS after warm-up should stay flat within a few percent.

    .venv/bin/python benchmarks/soak.py [--minutes 10] [--prior wiener] [--working-size 320] [--torch-threads 1]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import rclpy
import yaml
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image

from dig2dig_ros.core.sample_scene import make_sample_pair
from dig2dig_ros.ros.conversions import numpy_to_image
from dig2dig_ros.ros.launcher import local_environment, stop_processes

REPO = Path(__file__).resolve().parents[1]
COUNTERS = ("pairs", "fused", "dropped_busy", "bad_input", "failed", "ir_received", "visible_received",
            "ir_sync_dropped", "visible_sync_dropped")


def descendants(pid: int) -> list[int]:
    """Every process below pid (from /proc)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def fusion_pid(runner: int) -> int | None:
    for pid in descendants(runner):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if "fusion_node" in cmd or "dig2dig_fusion" in cmd:
            return pid
    return None


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def params_file(args: argparse.Namespace, folder: Path) -> Path:
    config = yaml.safe_load((REPO / "config" / "fusion.yaml").read_text())
    params = config["/**/dig2dig_fusion"]["ros__parameters"]
    params.update({"prior": args.prior, "device": args.device, "working_size": args.working_size,
                   "torch_threads": args.torch_threads, "log_every": 1000})
    path = folder / "soak.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=25.0)
    parser.add_argument("--prior", default="bundled")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--working-size", type=int, default=320)
    parser.add_argument("--torch-threads", type=int, default=0)
    args = parser.parse_args()
    env = local_environment()
    tmp = Path(tempfile.mkdtemp(prefix="dig2dig_soak_"))
    runner = subprocess.Popen([sys.executable, "-m", "dig2dig_ros.commands.ros_cli", "launch",
                               f"params_file:={params_file(args, tmp)}", "log_level:=warn"],
                              env=env, start_new_session=True)
    rclpy.init()
    node = rclpy.create_node("soak_benchmark")
    qos = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
    pub_ir, pub_vis = node.create_publisher(Image, "ir/image", qos), node.create_publisher(Image, "visible/image", qos)
    received = {topic: 0 for topic in ("fused/image", "fused/dig/ir", "fused/dig/visible", "fused/dig/overlay")}
    for topic in received:
        node.create_subscription(Image, topic, lambda _m, t=topic: received.__setitem__(t, received[t] + 1), qos)
    diag: dict[str, str] = {}

    def on_diag(msg: DiagnosticArray) -> None:
        for status in msg.status:
            if status.name.endswith(": fusion"):
                diag.clear()
                diag.update({kv.key: kv.value for kv in status.values})
                diag["level"], diag["message"] = str(status.level[0] if isinstance(status.level, bytes)
                                                     else status.level), status.message

    node.create_subscription(DiagnosticArray, "/diagnostics", on_diag, 10)
    sent = 0
    rows = []
    try:
        end = time.monotonic() + 300
        while not (pub_ir.get_subscription_count() and pub_vis.get_subscription_count() and diag):
            if time.monotonic() > end or runner.poll() is not None:
                raise RuntimeError("the fusion node did not start")
            rclpy.spin_once(node, timeout_sec=0.1)
        pid = fusion_pid(runner.pid)
        ir, vis = make_sample_pair(size=(512, 640))
        ir_msg, vis_msg = numpy_to_image(ir, "mono8"), numpy_to_image(vis, "bgr8")
        print(f"prior {args.prior}, device {args.device}, working size {args.working_size}, torch_threads "
              f"{args.torch_threads}: 640x512 pairs at {args.rate} Hz for {args.minutes} min; fusion node pid {pid}\n")
        print("| min | RSS MB | sent | received ir/vis | pairs | fused | dropped busy | bad | failed | sync dropped "
              "ir/vis | latency median/p95 ms | age ms | status |")
        print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        start = time.monotonic()
        next_report = start + 60.0
        minute = 0
        while time.monotonic() - start < args.minutes * 60:
            stamp = node.get_clock().now().to_msg()
            ir_msg.header.stamp = vis_msg.header.stamp = stamp
            pub_ir.publish(ir_msg)
            pub_vis.publish(vis_msg)
            sent += 1
            deadline = start + sent / args.rate
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                rclpy.spin_once(node, timeout_sec=min(left, 0.01))
            if time.monotonic() >= next_report:
                minute += 1
                next_report += 60.0
                rows.append(report(minute, pid, sent, diag))
        settle = time.monotonic() + 5.0
        while time.monotonic() < settle:
            rclpy.spin_once(node, timeout_sec=0.05)
        rows.append(report("end", pid, sent, diag))
    finally:
        node.destroy_node()
        rclpy.shutdown()
        codes = stop_processes([runner])
    c = {k: int(float(diag.get(k, "nan"))) if diag.get(k, "nan") != "nan" else -1 for k in COUNTERS}
    accounted = c["fused"] + c["dropped_busy"] + c["bad_input"] + c["failed"]
    print(f"\npairs {c['pairs']} = fused {c['fused']} + dropped busy {c['dropped_busy']} + bad {c['bad_input']} + "
          f"failed {c['failed']} = {accounted} (in progress at most 1): {abs(c['pairs'] - accounted) <= 1}")
    print(f"sent {sent} per input; received by the node ir {c['ir_received']}, visible {c['visible_received']}; "
          f"dropped by the synchroniser ir {c['ir_sync_dropped']}, visible {c['visible_sync_dropped']}")
    print(f"outputs received: {received}")
    rss = [r[1] for r in rows]
    if len(rss) >= 3:
        base = rss[1]  # after the first minute's warm-up
        print(f"RSS after warm-up: {base:.0f} MB at minute 2, {rss[-1]:.0f} MB at the end "
              f"({100 * (rss[-1] - base) / base:+.1f} %), max {max(rss[1:]):.0f} MB")
    print(f"runner exit code {codes[0]}")
    return 0


def report(minute, pid: int | None, sent: int, diag: dict[str, str]) -> tuple:
    rss = rss_mb(pid) if pid else float("nan")
    g = diag.get
    print(f"| {minute} | {rss:.0f} | {sent} | {g('ir_received')}/{g('visible_received')} | {g('pairs')} | "
          f"{g('fused')} | {g('dropped_busy')} | {g('bad_input')} | {g('failed')} | "
          f"{g('ir_sync_dropped')}/{g('visible_sync_dropped')} | {g('latency_median_ms')}/{g('latency_p95_ms')} | "
          f"{g('age_median_ms')} | {'OK' if g('level') == '0' else 'WARN'}: {g('message')} |", flush=True)
    return minute, rss


if __name__ == "__main__":
    sys.exit(main())
