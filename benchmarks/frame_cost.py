"""The whole frame through Fuser at the node's defaults, next to GFF at the input size and the plain average.

    .venv/bin/python benchmarks/frame_cost.py [--before PATH] [--repeats 3] [--rounds 2] [--threads 1]
        [--data ../shared/data] [--size 1024x1280]

Input: a real 1280x1024 LLVIP pair (infrared read as 8-bit gray, visible as BGR: what the cameras publish) when
DATA/vif/llvip is present, else the synthetic night street at --size. Rows: DIG-15 at the working size of
config/fusion.yaml (`working_size`, 320), output at the input size, the bundled prior; the node's default method
(whatever each checkout's config.py says) at that working size; GFF at the input size;
`average` at the input size. Each is `Fuser(config, prior=..., device="cpu")(images)` and nothing else, so the
script runs against old and new Fusers alike.

--before PATH (a checkout, e.g. `git worktree add /tmp/before <old commit>`) times the same rows with that
checkout's package in the same run: every round runs a fresh process per checkout, alternating (after, before,
after, before, ...), and the medians over all rounds are compared, so a machine whose speed drifts affects
both alike. Prints a Markdown table: ms/frame, ratio to GFF, and with --before the before figure and the
speed-up before/after.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = Path(os.environ.get("DIG2DIG_SHARED", REPO.parent / "shared")) / "data"  # as test/conftest.py
LLVIP_STEM = "010001"
MARK = "FRAME_COST_JSON "


def node_working_size(repo: Path = REPO) -> int:
    """`working_size` of the fusion node in config/fusion.yaml (320 when the file or key is missing)."""
    path = repo / "config" / "fusion.yaml"
    found = re.search(r"^\s*working_size:\s*(\d+)", path.read_text(), re.M) if path.is_file() else None
    return int(found.group(1)) if found else 320


def rows(working_size: int) -> list[tuple[str, dict]]:
    """(label, FusionConfig settings) of each row."""
    return [
        (f"node defaults (each checkout's config.py), working size {working_size}", {"max_side": working_size}),
        (f"DIG-15, working size {working_size}", {"method": "dig", "max_side": working_size}),
        ("GFF at the input size", {"method": "gff", "max_side": 0}),
        ("average at the input size", {"method": "average", "max_side": 0}),
    ]


def load_frame(data: Path, size: tuple[int, int]) -> tuple[list, str]:
    """[infrared (H,W) uint8, visible (H,W,3) uint8] and where they came from."""
    import cv2

    ir, vis = data / "vif" / "llvip" / "ir" / f"{LLVIP_STEM}.jpg", data / "vif" / "llvip" / "vis" / f"{LLVIP_STEM}.jpg"
    if ir.is_file() and vis.is_file():
        images = [cv2.imread(str(ir), cv2.IMREAD_GRAYSCALE), cv2.imread(str(vis), cv2.IMREAD_COLOR)]
        h, w = images[0].shape
        return images, f"LLVIP {LLVIP_STEM} ({w}x{h})"
    from dig2dig_ros.core.sample_scene import make_sample_pair

    return list(make_sample_pair(size=size)), f"synthetic night street ({size[1]}x{size[0]})"


def worker(args: argparse.Namespace) -> None:
    """Time every row with the dig2dig_ros importable here; print one JSON line."""
    import torch

    torch.set_num_threads(args.threads)
    import cv2

    cv2.setNumThreads(args.threads)
    import dig2dig_ros
    from dig2dig_ros.core.config import FusionConfig
    from dig2dig_ros.core.diffusion.priors import load_prior
    from dig2dig_ros.core.frame.fusion import Fuser

    images, source = load_frame(args.data, args.size)
    prior = load_prior("bundled", torch.device("cpu"))
    times: dict[str, list[float]] = {}
    for label, settings in rows(args.working_size):
        config = FusionConfig()
        for key, value in settings.items():
            setattr(config, key, value)
        fuser = Fuser(config, prior=prior, device="cpu")
        fuser(images)  # warm-up
        times[label] = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            fuser(images)
            times[label].append(1000 * (time.perf_counter() - start))
    out = {"package": str(Path(dig2dig_ros.__file__).resolve().parent), "source": source, "ms": times}
    print(MARK + json.dumps(out), flush=True)


def run_checkout(checkout: Path, args: argparse.Namespace) -> dict:
    """One worker process with `checkout`'s dig2dig_ros first on the path."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", "--repeats", str(args.repeats)]
    cmd += ["--threads", str(args.threads), "--data", str(args.data), "--size", f"{args.size[0]}x{args.size[1]}"]
    cmd += ["--working-size", str(args.working_size)]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(checkout), os.environ.get("PYTHONPATH", "")]).rstrip(":"))
    proc = subprocess.run(cmd, cwd=checkout, env=env, capture_output=True, text=True)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(MARK)]
    if proc.returncode or not lines:
        raise RuntimeError(f"worker for {checkout} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    result = json.loads(lines[-1][len(MARK) :])
    if Path(result["package"]) != (checkout / "dig2dig_ros").resolve():
        raise RuntimeError(f"worker for {checkout} imported dig2dig_ros from {result['package']}")
    return result


def main() -> int:
    """Print the table."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--before", type=Path, help="another checkout to time in the same run")
    p.add_argument("--repeats", type=int, default=3, help="timed frames per row per round (after one warm-up)")
    p.add_argument("--rounds", type=int, default=2, help="alternating rounds per checkout")
    p.add_argument("--threads", type=int, default=1, help="torch and OpenCV threads")
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--size", default="1024x1280", help="HxW of the synthetic frame when LLVIP is absent")
    p.add_argument("--working-size", type=int, default=node_working_size())
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    args.size = tuple(int(v) for v in args.size.lower().split("x"))
    if args.worker:
        worker(args)
        return 0

    checkouts = {"after": REPO} | ({"before": args.before.resolve()} if args.before else {})
    ms: dict[str, dict[str, list[float]]] = {name: {} for name in checkouts}
    source = ""
    for _ in range(args.rounds):
        for name, checkout in checkouts.items():
            result = run_checkout(checkout, args)
            source = result["source"]
            for label, values in result["ms"].items():
                ms[name].setdefault(label, []).extend(values)
    med = {name: {label: statistics.median(v) for label, v in table.items()} for name, table in ms.items()}

    print(f"input: {source}; working size {args.working_size}; {args.threads} thread(s); prior bundled; cpu")
    print(f"medians of {args.rounds} round(s) x {args.repeats} frames, one fresh process per checkout per round")
    if args.before:
        print(f"after: {REPO}   before: {args.before}\n")
        print("| row | ms/frame | x GFF | before ms/frame | before x GFF | speed-up before/after |")
        print("|---|---|---|---|---|---|")
    else:
        print("\n| row | ms/frame | x GFF |\n|---|---|---|")
    gff = "GFF at the input size"
    for label in med["after"]:
        cells = [f"{med['after'][label]:.0f}", f"{med['after'][label] / med['after'][gff]:.2f}"]
        if args.before:
            before = med["before"].get(label)
            if before is None:
                cells += ["-", "-", "-"]
            else:
                cells += [f"{before:.0f}", f"{before / med['before'][gff]:.2f}", f"{before / med['after'][label]:.2f}"]
        print(f"| {label} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
