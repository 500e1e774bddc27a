"""Cameras as a robot runs them: driver processes that load no Fast DDS profile, feeding the graph at node defaults.

For each case the script starts the graph with ``dig2dig-ros launch`` (which gives the fusion node our profile),
then a camera process (this file, ``--role camera``) whose environment has *no* profile variable, as a stock
driver's. The camera publishes ``ir/image`` (mono8) and ``visible/image`` (bgr8) pairs at full size with the
chosen reliability: it publishes ``--warmup`` seconds first (a driver runs before anyone looks), then the
measured pairs. This process counts the fused frames whose stamps are measured pairs and watches /diagnostics
for ``ir_lost`` / ``visible_lost`` and the first WARN that says "lost". Everything runs on a ROS domain of its
own, discovery on this host only; every process is ended with SIGINT (never ``kill -9``).

    python benchmarks/stock_cameras.py                       # both cases on held-out LLVIP pairs, 1280x1024
    python benchmarks/stock_cameras.py --case reliable --pairs 10 --rate 1
    python benchmarks/stock_cameras.py --synthetic            # without ../shared: the bundled sample scene
    python benchmarks/stock_cameras.py --case reliable --sequence ../shared/data/sequences/m3svd_0117_1605 \
        --pairs 100 --rate 25 --width 640 --height 480          # a real video at camera rate
    python benchmarks/stock_cameras.py ... --set pipeline=false   # a fusion node parameter (config/fusion.yaml)

Prints one table row per case: pairs sent, pairs fused, losses reported, seconds to the first "lost" WARN.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
LLVIP = Path(os.environ.get("DIG2DIG_SHARED", REPO.parent / "shared")) / "data" / "vif" / "llvip"
PROFILE_VARIABLES = ("FASTRTPS_DEFAULT_PROFILES_FILE", "FASTDDS_DEFAULT_PROFILES_FILE")
CASES = {"reliable": (10, 1.0), "best_effort": (30, 10.0)}  # pairs, Hz


@dataclass
class Result:
    case: str
    sent: int
    fused: int = 0
    dropped_busy: int = 0  # pairs that arrived while the node was busy (newest wins): the CPU, not the transport
    ir_lost: int = 0
    visible_lost: int = 0
    first_lost_warn_s: float | None = None  # after the camera's first frame
    messages: list[str] = field(default_factory=list)
    diagnostics: dict[str, str] = field(default_factory=dict)  # the fusion node's last /diagnostics values


# --------------------------------------------------------------------------------------------- the camera role
def held_out_pairs(folder: Path, count: int, sequence: bool = False) -> list[tuple[Path, Path]]:
    """LLVIP report-split pairs (sorted stems, index % 5 == 2; data_splits/README.md), or with ``sequence`` a
    folder sequence's frames in order; repeated up to count."""
    names = sorted(p.name for p in (folder / "ir").iterdir())
    chosen = names if sequence else [n for i, n in enumerate(names) if i % 5 == 2]
    return [(folder / "ir" / n, folder / "vis" / n) for n in (chosen * count)[:count]]


def load_frames(data: str, count: int, size: tuple[int, int]) -> list[tuple[np.ndarray, np.ndarray]]:
    """count (ir mono8 (H,W), visible bgr8 (H,W,3)) pairs at size (W,H): LLVIP held-out, or the sample scene."""
    import cv2

    if data == "synthetic":
        from dig2dig_ros.core.sample_scene import make_sample_pair

        ir, vis = make_sample_pair(size=(size[1], size[0]))
        return [(ir, vis)] * count
    frames = []
    sequence = data.startswith("sequence:")
    for ir_path, vis_path in held_out_pairs(Path(data.removeprefix("sequence:")), count, sequence):
        ir = cv2.resize(cv2.imread(str(ir_path), cv2.IMREAD_GRAYSCALE), size, interpolation=cv2.INTER_AREA)
        vis = cv2.resize(cv2.imread(str(vis_path), cv2.IMREAD_COLOR), size, interpolation=cv2.INTER_AREA)
        frames.append((ir, vis))
    return frames


def camera(args: argparse.Namespace) -> int:
    """Publish warm-up pairs, then the measured ones; print the measured stamps (ns) as one JSON line."""
    import rclpy
    from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data

    from dig2dig_ros.ros.conversions import numpy_to_image

    frames = load_frames(args.data, args.pairs, (args.width, args.height))
    qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE) if args.case == "reliable" \
        else qos_profile_sensor_data  # rclcpp's default (most drivers), or sensor data (e.g. the FLIR Boson's)
    rclpy.init()
    node = rclpy.create_node("stock_camera")
    pubs = [node.create_publisher(type(numpy_to_image(frames[0][0], "mono8")), topic, qos)
            for topic in ("ir/image", "visible/image")]
    end = time.monotonic() + 30.0
    while time.monotonic() < end and not all(p.get_subscription_count() for p in pubs):
        time.sleep(0.05)
    measured = []
    period = 1.0 / args.rate
    warmup = int(round(args.warmup * args.rate))
    start = time.monotonic()
    for k in range(warmup + len(frames)):
        ir, vis = frames[max(0, k - warmup) % len(frames)]
        stamp = node.get_clock().now().to_msg()
        for pub, img, enc, frame_id in ((pubs[0], ir, "mono8", "ir_camera"), (pubs[1], vis, "bgr8", "camera")):
            msg = numpy_to_image(img, enc)
            msg.header.stamp, msg.header.frame_id = stamp, frame_id
            pub.publish(msg)
        if k >= warmup:
            measured.append(stamp.sec * 1_000_000_000 + stamp.nanosec)
        time.sleep(max(0.0, start + (k + 1) * period - time.monotonic()))
    time.sleep(1.0)  # let the last frames leave
    print(json.dumps({"measured": measured}), flush=True)
    node.destroy_node()
    rclpy.shutdown()
    return 0


# --------------------------------------------------------------------------------------------- the measuring side
def _stop(proc: subprocess.Popen, grace: float = 15.0) -> None:
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGKILL):
        if proc.poll() is not None:
            return
        proc.send_signal(sig)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            continue


def run_case(case: str, pairs: int, rate: float, data: str, size: tuple[int, int], warmup: float = 3.0,
             settle: float = 6.0, graph_args: list[str] | None = None) -> Result:
    """Start the graph and a stock camera process; count what the graph fused and what it said."""
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image

    from dig2dig_ros.ros.launcher import local_environment

    env = local_environment()  # a domain of its own; this process loads our profile (it reads full-size output)
    graph = subprocess.Popen([sys.executable, "-m", "dig2dig_ros.commands.ros_cli", "launch", *(graph_args or [])],
                             env=env, cwd=REPO, start_new_session=True, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
    log: list[str] = []
    threading.Thread(target=lambda: log.extend(graph.stdout), daemon=True).start()
    result = Result(case, pairs)
    fused: set[int] = set()
    state = {"first_frame": None, "warn": None, "values": {}}
    rclpy.init()
    node = rclpy.create_node("stock_cameras_probe")
    lock = threading.Lock()

    def on_fused(msg: Image) -> None:
        with lock:
            fused.add(msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec)

    def on_diag(msg: DiagnosticArray) -> None:
        for status in msg.status:
            if not status.name.endswith(": fusion"):
                continue
            with lock:
                state["values"] = {kv.key: kv.value for kv in status.values}
                if status.level == DiagnosticStatus.WARN and "lost" in status.message and state["warn"] is None \
                        and state["first_frame"] is not None:
                    state["warn"] = (time.monotonic() - state["first_frame"], status.message)

    reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    node.create_subscription(Image, "fused/image", on_fused, reliable)
    node.create_subscription(DiagnosticArray, "/diagnostics", on_diag, 50)
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    spinning = True

    def spin() -> None:
        while spinning:
            executor.spin_once(timeout_sec=0.05)

    spinner = threading.Thread(target=spin, daemon=True)
    spinner.start()
    cam = None
    try:
        end = time.monotonic() + 120.0
        while time.monotonic() < end and not node.count_publishers("/fused/image"):
            if graph.poll() is not None:
                raise RuntimeError("the graph exited: " + "".join(log[-20:]))
            time.sleep(0.1)
        time.sleep(2.0)  # the node's warm-up frame
        stock = {k: v for k, v in env.items() if k not in PROFILE_VARIABLES}  # a driver loads no profile
        cam = subprocess.Popen([sys.executable, __file__, "--role", "camera", "--case", case, "--pairs", str(pairs),
                                "--rate", str(rate), "--data", data, "--width", str(size[0]), "--height",
                                str(size[1]), "--warmup", str(warmup)],
                               env=stock, cwd=REPO, stdout=subprocess.PIPE, text=True)
        with lock:
            state["first_frame"] = time.monotonic()  # within ~0.5 s of it (discovery)
        out, _ = cam.communicate(timeout=60 + warmup + pairs / rate)
        measured = json.loads(out.strip().splitlines()[-1])["measured"]
        time.sleep(settle)  # the last frames are fused, diagnostics published
        with lock:
            result.fused = len(fused & set(measured))
            values = dict(state["values"])
            if state["warn"] is not None:
                result.first_lost_warn_s = round(state["warn"][0], 1)
                result.messages.append(state["warn"][1])
        result.ir_lost = int(values.get("ir_lost", 0))
        result.visible_lost = int(values.get("visible_lost", 0))
        result.dropped_busy = int(values.get("dropped_busy", 0))
        result.diagnostics = values
    finally:
        if cam is not None and cam.poll() is None:
            _stop(cam)
        spinning = False
        spinner.join()
        node.destroy_node()
        rclpy.shutdown()
        _stop(graph)
    result.messages.extend(line.rstrip() for line in log if "input /" in line or "registration" in line)  # QoS, H
    return result


def fusion_params(settings: list[str]) -> str:
    """config/fusion.yaml with the fusion node's parameters ``name=value`` (dotted names, YAML values) set."""
    import yaml

    config = yaml.safe_load((REPO / "config" / "fusion.yaml").read_text())
    for item in settings:
        name, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--set takes NAME=VALUE, got {item!r}")
        node = config["/**/dig2dig_fusion"]["ros__parameters"]
        *groups, leaf = name.split(".")
        for group in groups:
            node = node.setdefault(group, {})
        node[leaf] = yaml.safe_load(value)
    return yaml.safe_dump(config)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--role", choices=("measure", "camera"), default="measure")
    parser.add_argument("--case", choices=(*CASES, "both"), default="both")
    parser.add_argument("--pairs", type=int, default=0, help="measured pairs (default: 10 reliable, 30 best effort)")
    parser.add_argument("--rate", type=float, default=0.0, help="Hz (default: 1 reliable, 10 best effort)")
    parser.add_argument("--data", default=str(LLVIP), help="LLVIP folder (ir/, vis/), or 'synthetic'")
    parser.add_argument("--synthetic", action="store_true", help="the sample scene instead of LLVIP")
    parser.add_argument("--sequence", help="a folder sequence (ir/, vis/) sent in order instead of LLVIP pairs")
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=1024)
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds the camera publishes before measuring")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help="a fusion node parameter (dotted name), e.g. pipeline=false; given to the graph in a "
                             "copy of config/fusion.yaml")
    args = parser.parse_args(argv)
    if args.synthetic:
        args.data = "synthetic"
    elif args.sequence:
        args.data = f"sequence:{args.sequence}"
    if args.role == "camera":
        return camera(args)
    print(f"| camera process (no profile), {args.width}x{args.height} | pairs fused | dropped while busy | ir_lost | "
          "visible_lost | first 'lost' WARN |\n|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory(prefix="stock_cameras_") as tmp:
        graph_args = []
        if args.set:
            params = Path(tmp) / "fusion.yaml"
            params.write_text(fusion_params(args.set))
            graph_args = ["--params", str(params)]
            print(f"fusion node parameters: {', '.join(args.set)}", file=sys.stderr)
        for case in CASES if args.case == "both" else (args.case,):
            pairs, rate = args.pairs or CASES[case][0], args.rate or CASES[case][1]
            r = run_case(case, pairs, rate, args.data, (args.width, args.height), args.warmup, graph_args=graph_args)
            warn = "none" if r.first_lost_warn_s is None else f"{r.first_lost_warn_s} s"
            print(f"| {case.replace('_', ' ')} at {rate:g} Hz | {r.fused} of {r.sent} | {r.dropped_busy} | "
                  f"{r.ir_lost} | {r.visible_lost} | {warn} |", flush=True)
            for message in r.messages:
                print(f"    {message}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
