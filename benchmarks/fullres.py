"""The full-resolution step's cost against the DIG-15 sampler at the working size, in one run.

    .venv/bin/python benchmarks/fullres.py [--size 1280x1024] [--working-size 320] [--repeats 5] [--threads 2]
    .venv/bin/python benchmarks/fullres.py --stages [--size 1280x960] [--threads 1] [--registered]


Budget (issue "Fusion that earns its cost"): the full-resolution step at 1280x1024 costs at most half of the
DIG-15 sampler at 320 px. Prints the median of each and their ratio; the frame is a real LLVIP pair when
../shared/data is there, else the shipped synthetic scene resized. Both come from the fuser's per-stage profile
(Fuser.profile): working-size fusion is the `sample` stage (dig) or the `dig_weights` stage (dig-blend); the step
is `to_solve_size` + `solve` + `detail` (for dig-blend the weights brought up to `fullres.solve_side`, the blend
solved there, then the detail up to the input size).

--stages: the CPU milliseconds per frame of every stage of video-mode dig-blend (VideoFuser.front then .back on
one thread, default settings, working size 320) over the M3SVD sequence in ../shared/data (else the synthetic
scene, moved a pixel a frame) at --size: the stages a frame runs at the input size are detail, to_solve_size,
prepare, noise and compose (issue #23). With --registered, each infrared frame is first warped by a fixed
homography (1 % zoom, a 6 / 4 px shift: core.frame.registration.register_pair, as ir.homography does) and fused
with its validity mask.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import torch

from dig2dig_ros.core.config import FusionConfig, with_overrides
from dig2dig_ros.core.frame import imaging, stages
from dig2dig_ros.core.frame.fusion import Fuser
from dig2dig_ros.core.frame.registration import register_pair
from dig2dig_ros.core.sample_scene import make_sample_pair
from dig2dig_ros.core.video.fuser import VideoFuser

LLVIP = Path(__file__).resolve().parents[2] / "shared" / "data" / "vif" / "llvip"
M3SVD = Path(__file__).resolve().parents[2] / "shared" / "data" / "sequences" / "m3svd_0117_1605"
FULL_SIZE = ("detail", "to_solve_size", "prepare", "noise", "compose")  # the stages at the input size


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


def sequence(size: tuple[int, int], count: int = 40) -> list[list[np.ndarray]]:
    """``count`` infrared + visible pairs at (W, H): M3SVD frames, or the synthetic scene shifted a pixel a frame."""
    names = sorted((M3SVD / "ir").glob("*.png"))[:count]
    if names:
        return [[cv2.resize(imaging.read_image(M3SVD / sub / name.name), size, interpolation=cv2.INTER_AREA)
                 for sub in ("ir", "vis")] for name in names]
    pair = [cv2.resize(img, size, interpolation=cv2.INTER_AREA) for img in make_sample_pair()]
    return [[np.roll(img, i, axis=1) for img in pair] for i in range(count)]


REGISTRATION = np.array([[1.01, 0.0, 6.0], [0.0, 1.01, -4.0], [0.0, 0.0, 1.0]])  # --registered: H, ir → visible


def stage_cpu_ms(frames: list[list[np.ndarray]], working_size: int, warmup: int = 4, registered: bool = False
                 ) -> dict[str, float]:
    """CPU ms per frame of each stage of video-mode dig-blend on one thread (the stage timer on the thread's clock)."""
    fuser = Fuser(with_overrides(FusionConfig(), {"max_side": working_size}), device="cpu")
    video = VideoFuser(fuser)
    clock, stages.time = stages.time, SimpleNamespace(perf_counter=time.thread_time)  # the stage timer's clock
    try:
        for i, pair in enumerate(frames):
            if i == warmup:
                fuser.profile = {}
            valid = None
            if registered:
                *pair, valid = register_pair(*pair, REGISTRATION)
            video.back(video.front(list(pair), stamp=i / 25, valid=valid))
    finally:
        stages.time = clock
    return {name: seconds * 1000 / (len(frames) - warmup) for name, seconds in fuser.profile.items()}


def print_stages(size: tuple[int, int], working_size: int, registered: bool = False) -> None:
    """The --stages table."""
    ms = stage_cpu_ms(sequence(size), working_size, registered=registered)
    source = "M3SVD" if (M3SVD / "ir").is_dir() else "synthetic"
    print(f"{size[0]}x{size[1]} {source}, video-mode dig-blend, working size {working_size}, CPU ms per frame"
          + (", infrared registered by a fixed homography" if registered else ""))
    for name in (*FULL_SIZE, *sorted(set(ms) - set(FULL_SIZE), key=lambda n: -ms[n])):
        print(f"  {name:<14} {ms.get(name, 0.0):6.1f}")
    print(f"  {'input size':<14} {sum(ms.get(name, 0.0) for name in FULL_SIZE):6.1f}  ({' + '.join(FULL_SIZE)})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", default=None, help="WxH (default 1280x1024; --stages: 1280x960)")
    parser.add_argument("--working-size", type=int, default=320)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch and OpenCV threads (default 2; --stages: 1)")
    parser.add_argument("--stages", action="store_true", help="per-stage CPU of video-mode dig-blend instead")
    parser.add_argument("--registered", action="store_true", help="--stages: the infrared registered by a fixed H")
    args = parser.parse_args()
    threads = args.threads or (1 if args.stages else 2)
    torch.set_num_threads(threads)
    cv2.setNumThreads(threads)
    w, h = (int(v) for v in (args.size or ("1280x960" if args.stages else "1280x1024")).split("x"))
    if args.stages:
        print_stages((w, h), args.working_size, args.registered)
        return 0
    images = frame((w, h))
    rows = []
    for method in ("dig", "dig-blend"):
        fuser = Fuser(with_overrides(FusionConfig(), {"max_side": args.working_size, "method": method}), device="cpu")
        rows.append((method, *median_ms(fuser, images, args.repeats)))
    print(f"{w}x{h} input, working size {args.working_size}, {threads} threads, median of {args.repeats}")
    print(f"{'method':<10} {'fusion at working size ms':>26} {'full-resolution step ms':>24} "
          f"{'step / DIG-15':>14} {'whole frame ms':>15}")
    dig15 = rows[0][1]
    for method, sampler, step, whole in rows:
        print(f"{method:<10} {sampler:26.1f} {step:24.1f} {step / dig15:14.2f} {whole:15.1f}")
    print("budget: the full-resolution step at most 0.5 x the DIG-15 sampler (row dig)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
