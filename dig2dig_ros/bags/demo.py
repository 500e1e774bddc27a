"""`dig2dig-ros demo`: the whole graph in one command, on the shipped sample or an LLVIP folder.

bag of input pairs → `dig2dig-ros launch use_sim_time:=true` → `dig2dig-ros play --clock` → `dig2dig-ros
record` of the outputs → demo_output/: fused frames, DIG overlays, a contact sheet and a summary. Ends by
itself; exits non-zero if no frame was fused.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np

from dig2dig_ros.bags.bag import bag_from_images, read_images, read_messages, typestore, write_sample_bag
from dig2dig_ros.core.frame.imaging import to_uint8
from dig2dig_ros.ros.launcher import ros_environment, stop_processes

OUTPUT_TOPICS = {
    "/fused/image": "sensor_msgs/msg/Image",
    "/fused/dig/ir": "sensor_msgs/msg/Image",
    "/fused/dig/visible": "sensor_msgs/msg/Image",
    "/fused/dig/overlay": "sensor_msgs/msg/Image",
    "/diagnostics": "diagnostic_msgs/msg/DiagnosticArray",
}
SHEET_ROWS = 8
TILE_HEIGHT = 160


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="demo_output", help="output folder (replaced)")
    parser.add_argument("--llvip", default=os.environ.get("LLVIP", ""),
                        help="folder with ir/ and vis/ (LLVIP layout); default: the shipped synthetic sample")
    parser.add_argument("--frames", type=int, default=20, help="pairs in the input bag")
    parser.add_argument("--bag-rate", type=float, default=10.0, help="camera rate of the input bag, Hz")
    parser.add_argument("--play-rate", type=float, default=0.25, help="replay speed factor")
    parser.add_argument("--settle", type=float, default=8.0, help="seconds to let the node finish after replay")
    parser.add_argument("--startup-timeout", type=float, default=180.0, help="seconds to wait for the node")
    parser.add_argument("launch_arguments", nargs="*", metavar="name:=value", help="passed to the launch")


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "dig2dig_ros.commands.ros_cli", *args]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dig2dig-ros demo", description=__doc__.split("\n")[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    out = Path(args.out)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    input_bag, output_bag = out / "input_bag", out / "output_bag"
    if args.llvip:
        source = f"LLVIP pairs from {args.llvip}"
        bag_from_images(Path(args.llvip) / "ir", Path(args.llvip) / "vis", input_bag, rate=args.bag_rate,
                        limit=args.frames)
    else:
        source = "the shipped synthetic night street"
        write_sample_bag(input_bag, frames=args.frames, rate=args.bag_rate)
    print(f"demo: wrote {input_bag} ({source}, {args.frames} pairs at {args.bag_rate} Hz)", flush=True)

    env = ros_environment()
    env.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    graph = subprocess.Popen(_cli("launch", "use_sim_time:=true", *args.launch_arguments), env=env,
                             start_new_session=True)
    recorder = subprocess.Popen(_cli("record", str(output_bag), *(f"{t}:{m}" for t, m in OUTPUT_TOPICS.items()),
                                     "--ros-args", "-p", "use_sim_time:=true"),
                                env=env, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True)
    watcher = RecorderWatcher(recorder, [t for t, m in OUTPUT_TOPICS.items() if m.endswith("Image")])
    try:
        # The fused frames are volatile: a recorder that subscribes after they are published never sees them,
        # so the replay starts only once the recorder has subscribed to every image output.
        if not watcher.wait(args.startup_timeout):
            print(f"demo: error: the recorder did not subscribe to {', '.join(watcher.missing)} within "
                  f"{args.startup_timeout:.0f} s", file=sys.stderr)
            return 1
        play = subprocess.run(_cli("play", str(input_bag), "--clock", "--rate", str(args.play_rate),
                                   "--wait-for-subscribers", str(args.startup_timeout), "--linger", "1"),
                              env=env, timeout=args.startup_timeout + 600)
        if play.returncode != 0:
            print("demo: error: the player failed", file=sys.stderr)
            return 1
        if graph.poll() is not None:
            print("demo: error: the fusion graph exited early", file=sys.stderr)
            return 1
        time.sleep(args.settle)
    finally:
        stop_processes([recorder])
        record_log = watcher.log()
        stop_processes([graph])
    if "Traceback" in record_log:
        print(record_log, file=sys.stderr)
    summary = write_outputs(input_bag, output_bag, out, source)
    print(json.dumps(summary, indent=2))
    print(f"demo: outputs in {out}/ (frames/, contact_sheet.png, summary.json, output_bag/)")
    if summary["frames_fused"] == 0:
        print("demo: error: no frame was fused", file=sys.stderr)
        return 1
    return 0


class RecorderWatcher:
    """Reads a `record` process's output on a thread; tells when it has subscribed to the given topics."""

    def __init__(self, process: subprocess.Popen, topics: list[str]) -> None:
        self.process, self.missing = process, list(topics)
        self.lines: list[str] = []
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        for line in self.process.stdout or ():
            self.lines.append(line)
            words = line.split()
            if len(words) >= 2 and words[0] == "recording" and words[1] in self.missing:
                self.missing.remove(words[1])
                if not self.missing:
                    self.ready.set()
        self.ready.set()  # the recorder ended: stop waiting

    def wait(self, timeout: float) -> bool:
        """Wait up to `timeout` s; True when every topic is subscribed and the recorder still runs."""
        self.ready.wait(timeout)
        return not self.missing and self.process.poll() is None

    def log(self) -> str:
        """Everything the recorder printed (call after it ended)."""
        self.thread.join(timeout=5)
        return "".join(self.lines)


def write_outputs(input_bag: Path, output_bag: Path, out: Path, source: str) -> dict:
    """Fused frames and overlays as PNG, a contact sheet, and summary.json; returns the summary."""
    inputs: dict[int, dict[str, np.ndarray]] = {}
    for rec in read_images(input_bag):
        inputs.setdefault(rec.stamp_ns, {})[rec.topic] = rec.image
    outputs: dict[int, dict[str, np.ndarray]] = {}
    if output_bag.exists():
        for rec in read_images(output_bag, [t for t, m in OUTPUT_TOPICS.items() if m.endswith("Image")]):
            outputs.setdefault(rec.stamp_ns, {})[rec.topic] = rec.image
    frames = out / "frames"
    frames.mkdir(exist_ok=True)
    rows = []
    for i, stamp in enumerate(sorted(outputs)):
        got = outputs[stamp]
        if "/fused/image" in got:
            cv2.imwrite(str(frames / f"{i:03d}_fused.png"), got["/fused/image"])
        if "/fused/dig/overlay" in got:
            cv2.imwrite(str(frames / f"{i:03d}_dig_overlay.png"), got["/fused/dig/overlay"])
        if len(rows) < SHEET_ROWS and stamp in inputs and "/fused/image" in got:
            rows.append(_sheet_row(inputs[stamp], got))
    if rows:
        cv2.imwrite(str(out / "contact_sheet.png"), np.vstack(rows))
    diag = _last_diagnostics(output_bag)
    fused = sum("/fused/image" in o for o in outputs.values())
    summary = {
        "source": source, "frames_in": len(inputs), "frames_fused": fused, "dropped": len(inputs) - fused,
        "latency_median_ms": diag.get("latency_median_ms"), "latency_p95_ms": diag.get("latency_p95_ms"),
        "node_counters": {k: diag[k] for k in ("pairs", "fused", "dropped_busy", "bad_input", "failed") if k in diag},
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def _tile(img: np.ndarray) -> np.ndarray:
    if img.dtype != np.uint8:  # a 32FC1 weight map in [0,1]
        img = cv2.applyColorMap(to_uint8(np.clip(img, 0, 1)), cv2.COLORMAP_JET)
    if img.ndim == 2:
        img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    width = round(img.shape[1] * TILE_HEIGHT / img.shape[0])
    return cv2.resize(img, (width, TILE_HEIGHT), interpolation=cv2.INTER_AREA)


def _sheet_row(inputs: dict[str, np.ndarray], outputs: dict[str, np.ndarray]) -> np.ndarray:
    """inputs | fused | DIG weight maps, one row per frame."""
    tiles = [inputs.get("/ir/image"), inputs.get("/visible/image"), outputs.get("/fused/image"),
             outputs.get("/fused/dig/ir"), outputs.get("/fused/dig/visible")]
    return np.hstack([_tile(t) for t in tiles if t is not None])


def _last_diagnostics(output_bag: Path) -> dict[str, float]:
    if not output_bag.exists():
        return {}
    store = typestore()
    last: dict[str, float] = {}
    for msg in read_messages(output_bag, ["/diagnostics"]):
        decoded = store.deserialize_cdr(bytes(msg.raw), msg.msgtype)
        for status in decoded.status:
            if "fusion" in status.name:
                last = {kv.key: float(kv.value) for kv in status.values}
    return {k: (None if v != v else v) for k, v in last.items()}  # NaN (no sample yet) → null
