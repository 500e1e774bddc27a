"""Large camera frames between two processes: best effort vs reliable, with vs without our Fast DDS profile.

For every case the script starts a subscriber process and a publisher process (the same file, ``--role``) with
their own ``ROS_DOMAIN_ID``, the publisher sends ``--frames`` bgr8 images at ``--rate`` Hz once it has matched
the subscriber, and the subscriber reports how many arrived and the latency (publish stamp to Python callback).
Both processes are ended cleanly (a line on the subscriber's stdin, never ``kill -9``: that leaves Fast DDS
shared-memory files in /dev/shm).

    python benchmarks/dds_large_frames.py                      # 4 cases, 1280x1024, 30 frames at 10 Hz
    python benchmarks/dds_large_frames.py --repeat 3 --qos best_effort --profile with
    python benchmarks/dds_large_frames.py --width 64 --height 48   # small messages
    python benchmarks/dds_large_frames.py --env ROS_AUTOMATIC_DISCOVERY_RANGE=SUBNET

The subscriber uses ``qos_profile_sensor_data`` (best effort, keep last 5) or reliable keep last 10, like
the fusion node; the publisher uses the same QoS as the subscriber.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

PROFILE = Path(__file__).resolve().parents[1] / "config" / "fastdds_profile.xml"
TOPIC = "dds_large_frames/image"
# Fast DDS 2.x (Jazzy, Humble) reads only FASTRTPS_DEFAULT_PROFILES_FILE; Fast DDS 3.x (Kilted) FASTDDS_...
PROFILE_VARIABLES = ("FASTRTPS_DEFAULT_PROFILES_FILE", "FASTDDS_DEFAULT_PROFILES_FILE")


# --------------------------------------------------------------------------------------------- child roles
def _qos(name: str):
    from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data

    if name == "best_effort":
        return qos_profile_sensor_data
    return QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)


def run_subscriber(args: argparse.Namespace) -> int:
    import rclpy
    from sensor_msgs.msg import Image

    stop = threading.Event()

    def wait_for_stop() -> None:
        sys.stdin.readline()  # a line or EOF: the parent wants the result
        stop.set()

    threading.Thread(target=wait_for_stop, daemon=True).start()
    rclpy.init()
    result = {"received": 0, "bytes_ok": 0, "latency_ms": [], "ids": []}
    try:
        node = rclpy.create_node("dds_large_frames_sub")
        expected = args.width * args.height * 3

        def on_image(msg: Image) -> None:
            now = time.time_ns()
            sent = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
            result["received"] += 1
            result["bytes_ok"] += int(len(msg.data) == expected)
            result["latency_ms"].append((now - sent) / 1e6)
            result["ids"].append(int(msg.header.frame_id or -1))

        node.create_subscription(Image, TOPIC, on_image, _qos(args.qos))
        print("ready", flush=True)
        while not stop.is_set():
            rclpy.spin_once(node, timeout_sec=0.05)
        node.destroy_node()
    finally:
        rclpy.try_shutdown()
    print("result " + json.dumps(result), flush=True)
    return 0


def run_publisher(args: argparse.Namespace) -> int:
    import rclpy
    from sensor_msgs.msg import Image

    rclpy.init()
    sent = 0
    matched = False
    try:
        node = rclpy.create_node("dds_large_frames_pub")
        pub = node.create_publisher(Image, TOPIC, _qos(args.qos))
        img = Image(height=args.height, width=args.width, encoding="bgr8", step=args.width * 3)
        img.data = bytes(args.width * args.height * 3)
        deadline = time.monotonic() + args.match_timeout
        while time.monotonic() < deadline:
            rclpy.spin_once(node, timeout_sec=0.05)
            if pub.get_subscription_count() > 0:
                matched = True
                break
        if matched:
            # The match is seen here before the subscriber has necessarily matched us back.
            end = time.monotonic() + args.settle
            while time.monotonic() < end:
                rclpy.spin_once(node, timeout_sec=0.05)
            period = 1.0 / args.rate
            start = time.monotonic()
            for i in range(args.frames):
                target = start + i * period
                while (delay := target - time.monotonic()) > 0:
                    time.sleep(min(delay, 0.05))
                now = time.time_ns()
                img.header.stamp.sec, img.header.stamp.nanosec = divmod(now, 1_000_000_000)
                img.header.frame_id = str(i)
                pub.publish(img)
                sent += 1
            end = time.monotonic() + 0.5  # let asynchronous writers flush
            while time.monotonic() < end:
                rclpy.spin_once(node, timeout_sec=0.05)
        node.destroy_node()
    finally:
        rclpy.try_shutdown()
    print("result " + json.dumps({"sent": sent, "matched": matched}), flush=True)
    return 0


# --------------------------------------------------------------------------------------------- parent
def _child_env(profile: str, domain: int, extra: list[str]) -> dict[str, str]:
    env = dict(os.environ)
    env["ROS_DOMAIN_ID"] = str(domain)
    env.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    env["PYTHONUNBUFFERED"] = "1"
    for key in PROFILE_VARIABLES:
        env.pop(key, None)
    if profile != "without":
        for key in PROFILE_VARIABLES:
            env[key] = str(PROFILE if profile == "with" else Path(profile).resolve())
    for item in extra:
        key, _, value = item.partition("=")
        if value:
            env[key] = value
        else:
            env.pop(key, None)
    return env


def _result(text: str) -> dict:
    for line in text.splitlines():
        if line.startswith("result "):
            return json.loads(line[len("result "):])
    return {}


def run_case(args: argparse.Namespace, qos: str, profile: str, domain: int) -> dict:
    # "pub_only" / "sub_only": only that process loads the profile (e.g. a camera driver started elsewhere)
    sub_env = _child_env("without" if profile == "pub_only" else "with" if profile == "sub_only" else profile,
                         domain, args.env)
    pub_env = _child_env("without" if profile == "sub_only" else "with" if profile == "pub_only" else profile,
                         domain, args.env)
    common = [sys.executable, __file__, "--qos", qos, "--width", str(args.width), "--height", str(args.height),
              "--frames", str(args.frames), "--rate", str(args.rate)]
    sub = subprocess.Popen(common + ["--role", "sub"], env=sub_env, stdin=subprocess.PIPE,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    pub = None
    try:
        sub.stdout.readline()  # "ready": the subscription exists
        pub = subprocess.Popen(common + ["--role", "pub"], env=pub_env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
        pub_out, pub_err = pub.communicate(timeout=args.match_timeout + args.frames / args.rate + 30)
        time.sleep(args.linger)
        sub_out, sub_err = sub.communicate("stop\n", timeout=30)
    finally:
        for proc in (pub, sub):  # only on errors: a process that did not end by itself
            if proc is not None and proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
    p, s = _result(pub_out), _result(sub_out)
    lat = s.get("latency_ms", [])
    row = {
        "qos": qos, "profile": profile, "sent": p.get("sent", 0), "matched": p.get("matched", False),
        "received": s.get("received", 0), "intact": s.get("bytes_ok", 0),
        "median_ms": statistics.median(lat) if lat else float("nan"),
        "max_ms": max(lat) if lat else float("nan"),
        "rc": (pub.returncode, sub.returncode), "ids": s.get("ids", []),
    }
    if args.verbose or not p or not s:
        for name, err in (("pub", pub_err), ("sub", sub_err)):
            if err.strip():
                print(f"--- {name} stderr ({qos}, {profile})\n{err.strip()[-2000:]}", file=sys.stderr)
    return row


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--role", choices=["sub", "pub"], help=argparse.SUPPRESS)
    ap.add_argument("--qos", default="both", choices=["best_effort", "reliable", "both"])
    ap.add_argument("--profile", default="both",
                    help="with (config/fastdds_profile.xml), without, both, pub_only, sub_only, "
                         "or a path to another XML profile")
    ap.add_argument("--width", type=int, default=1280)
    ap.add_argument("--height", type=int, default=1024)
    ap.add_argument("--frames", type=int, default=30)
    ap.add_argument("--rate", type=float, default=10.0)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--domain", type=int, default=100 + os.getpid() % 100,
                    help="first ROS_DOMAIN_ID; each case gets the next one")
    ap.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                    help="extra environment for both processes (KEY= removes it); "
                         "ROS_AUTOMATIC_DISCOVERY_RANGE defaults to LOCALHOST")
    ap.add_argument("--match-timeout", type=float, default=20.0)
    ap.add_argument("--settle", type=float, default=1.0, help="seconds between match and the first frame")
    ap.add_argument("--linger", type=float, default=1.0, help="seconds the subscriber waits after the publisher")
    ap.add_argument("--json", action="store_true", help="one JSON line per case as well")
    ap.add_argument("-v", "--verbose", action="store_true", help="show the children's stderr")
    args = ap.parse_args(argv)
    if args.role == "sub":
        return run_subscriber(args)
    if args.role == "pub":
        return run_publisher(args)

    qoses = ["best_effort", "reliable"] if args.qos == "both" else [args.qos]
    profiles = ["without", "with"] if args.profile == "both" else [args.profile]
    print(f"{args.width}x{args.height} bgr8 ({args.width * args.height * 3 / 1e6:.1f} MB), {args.frames} frames at "
          f"{args.rate:g} Hz; ROS_AUTOMATIC_DISCOVERY_RANGE="
          f"{_child_env('without', 0, args.env).get('ROS_AUTOMATIC_DISCOVERY_RANGE', '(unset)')}; "
          f"extra env {' '.join(args.env) or '-'}; profile {PROFILE}")
    print(f"{'qos':<12} {'profile':<8} {'received/sent':>13} {'median ms':>10} {'max ms':>8}")
    domain = itertools.count(args.domain)
    rows = []
    for _ in range(args.repeat):
        for qos in qoses:
            for profile in profiles:
                row = run_case(args, qos, profile, next(domain) % 233)
                rows.append(row)
                name = profile if profile in ("with", "without", "pub_only", "sub_only") else Path(profile).name
                print(f"{qos:<12} {name:<8} {row['received']:>6}/{row['sent']:<6} {row['median_ms']:>10.1f} "
                      f"{row['max_ms']:>8.1f}" + ("" if row["matched"] else "  (no match)"), flush=True)
                if args.verbose:
                    print("   frames received:", row["ids"], flush=True)
                if args.json:
                    print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
