"""The full-resolution step's cost against the DIG-15 sampler at the working size, in one run.

    .venv/bin/python benchmarks/fullres.py [--size 1280x1024] [--working-size 320] [--repeats 5] [--threads 2]

Budget (issue "Fusion that earns its cost"): the full-resolution step at 1280x1024 costs at most half of the
DIG-15 sampler at 320 px. Prints the median of each and their ratio; the frame is a real LLVIP pair when
../shared/data is there, else the shipped synthetic scene resized. Both come from the fuser's per-stage profile
(Fuser.profile): working-size fusion is the `sample` stage (dig) or the `dig_weights` stage (dig-blend); the step
is `to_solve_size` + `solve` + `detail` (for dig-blend the weights brought up to `fullres.solve_side`, the blend
solved there, then the detail up to the input size).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from dig2dig_ros.core import imaging
from dig2dig_ros.core.config import FusionConfig, with_overrides
from dig2dig_ros.core.fusion import Fuser
from dig2dig_ros.core.sample_scene import make_sample_pair

LLVIP = Path(__file__).resolve().parents[2] / "shared" / "data" / "vif" / "llvip"


def frame(size: tuple[int, int]) -> list[np.ndarray]:
    """An infrared + visible pair at (W, H)."""
    if (LLVIP / "ir" / "010001.jpg").is_file():
        pair = [imaging.read_image(LLVIP / sub / "010001.jpg") for sub in ("ir", "vis")]
    else:
        pair = list(make_sample_pair())
    return [cv2.resize(img, size, interpolation=cv2.INTER_AREA) for img in pair]


WORKING = ("sample", "dig_weights")  # the stages at the working size
STEP = ("to_solve_size", "solve", "detail")  # the full-resolution step


def median_ms(fuser: Fuser, images: list[np.ndarray], repeats: int) -> tuple[float, float, float]:
    """Median ms of working-size fusion, of the full-resolution step and of the whole frame."""
    fuser(images)  # warm-up
    rows = []
    for _ in range(repeats):
        fuser.profile = {}
        start = time.perf_counter()
        fuser(images)
        whole = (time.perf_counter() - start) * 1000
        rows.append((sum(fuser.profile.get(s, 0.0) for s in WORKING) * 1000,
                     sum(fuser.profile.get(s, 0.0) for s in STEP) * 1000, whole))
    fuser.profile = None
    return tuple(statistics.median(column) for column in zip(*rows, strict=True))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", default="1280x1024")
    parser.add_argument("--working-size", type=int, default=320)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    w, h = (int(v) for v in args.size.split("x"))
    images = frame((w, h))
    rows = []
    for method in ("dig", "dig-blend"):
        fuser = Fuser(with_overrides(FusionConfig(), {"max_side": args.working_size, "method": method}), device="cpu")
        rows.append((method, *median_ms(fuser, images, args.repeats)))
    print(f"{w}x{h} input, working size {args.working_size}, {args.threads} threads, median of {args.repeats}")
    print(f"{'method':<10} {'fusion at working size ms':>26} {'full-resolution step ms':>24} "
          f"{'step / DIG-15':>14} {'whole frame ms':>15}")
    dig15 = rows[0][1]
    for method, sampler, step, whole in rows:
        print(f"{method:<10} {sampler:26.1f} {step:24.1f} {step / dig15:14.2f} {whole:15.1f}")
    print("budget: the full-resolution step at most 0.5 x the DIG-15 sampler (row dig)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
