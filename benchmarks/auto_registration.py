"""Benchmark of the node's `ir.homography: auto` (core.frame.auto_registration) on the shared video sequences.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/auto_registration.py [--data ../shared/data] [--rate 4]
        [--pairs 8] [--spacing 1.0]

Each sequence's frames are offered in order as a camera at --rate Hz would deliver them (stamps i / rate), with
the node's default spacing and pair count, and the first accepted estimate is compared:
  - aligned (the sequences come registered): against the identity;
  - the infrared warped by a known G (2° rotation, 4 % zoom, a shift of 5 % of the width and 3 % of the
    height): against (aligned estimate) ∘ G⁻¹, so the sequence's own misalignment cancels.
Error = mean / worst distance over a 5×5 grid of infrared pixels, in visible px. A sequence too short to give
--pairs spaced pairs says so. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

from dig2dig_ros.core.frame import imaging
from dig2dig_ros.core.frame.auto_registration import AutoRegistration, AutoSettings
from dig2dig_ros.core.frame.homography_estimate import grid_error, similarity

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def known_warp(size: tuple[int, int]) -> np.ndarray:
    """G (visible → infrared pixels) of the known-warp case for a (h, w) frame."""
    return similarity(size, size, 1.04, 2.0, (0.05 * size[1], -0.03 * size[0]))


def run(frames: list[tuple[np.ndarray, np.ndarray]], g: np.ndarray, settings: AutoSettings, rate: float
        ) -> AutoRegistration:
    """The estimator after every pair (infrared warped by g) was offered at the camera's stamps."""
    auto = AutoRegistration(settings)
    size = frames[0][1].shape[:2]
    for i, (ir, vis) in enumerate(frames):
        auto.offer(cv2.warpPerspective(ir, g, size[::-1], borderMode=cv2.BORDER_REPLICATE), vis, i / rate)
        auto.wait(120)
    return auto


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--rate", type=float, default=4.0, help="camera rate the frames are stamped at, Hz")
    parser.add_argument("--pairs", type=int, default=AutoSettings().pairs)
    parser.add_argument("--spacing", type=float, default=AutoSettings().spacing_s)
    args = parser.parse_args()
    root = args.data / "sequences"
    if not root.is_dir():
        print(f"no sequences under {root}", file=sys.stderr)
        return 2
    settings = AutoSettings(pairs=args.pairs, spacing_s=args.spacing, refine_period_s=0.0)
    print(f"{args.pairs} pairs {args.spacing:g} s apart, frames stamped at {args.rate:g} Hz\n")
    print("| sequence | size | aligned vs identity, mean / worst (px) | known warp vs aligned ∘ G⁻¹ (px) | "
          "correlation | residual (px) | overlap | time per estimate (s) |")
    print("|---|---|---|---|---|---|---|---|")
    for seq in sorted(p for p in root.iterdir() if (p / "ir").is_dir()):
        names = sorted((seq / "ir").iterdir())
        frames = [(imaging.read_image(n), imaging.read_image(next((seq / "vis").glob(n.stem + ".*"))))
                  for n in names]
        size = frames[0][1].shape[:2]
        aligned = run(frames, np.eye(3), settings, args.rate)
        status = aligned.status()
        if aligned.homography is None:
            print(f"| {seq.name} | {size[1]}x{size[0]} | {status.message} | | | | | |")
            continue
        g = known_warp(size)
        warped = run(frames, g, settings, args.rate)
        ref = aligned.homography @ np.linalg.inv(g)
        ref /= ref[2, 2]
        est = status.estimate
        a = "{:.2f} / {:.2f}".format(*grid_error(aligned.homography, np.eye(3), size))
        w = ("{:.2f} / {:.2f}".format(*grid_error(warped.homography, ref, size)) if warped.homography is not None
             else warped.status().message)
        print(f"| {seq.name} | {size[1]}x{size[0]} | {a} | {w} | {est.correlation:.2f} | {est.residual_px:.1f} | "
              f"{est.overlap:.0%} | {est.seconds:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
