"""Benchmark of `dig2dig calibrate --auto`: the infrared → visible homography estimated from image pairs.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/registration.py [--data ../shared/data] [--split held-out]

On LLVIP pairs (aligned by the dataset; split rule of scripts/make_evaluation.py: sorted stems, index % 5 == 2
is held out (data_splits/prior_validation.txt), index % 5 == 0 is for tuning), all pairs of the split estimated
jointly:
  - aligned: the estimate against the identity (the pairs' own alignment is good to a few px);
  - known warps G of the infrared: the estimate against (aligned estimate) ∘ G⁻¹, so the pairs' own
    misalignment cancels; error = mean and worst distance over a 5×5 grid of infrared pixels, visible px;
  - no shared structure: visible replaced by noise, by a flat image, or by other scenes; the command must refuse.
Prints a markdown table (error, quality figures, time per estimate) to stdout, then the aligned estimate's
distance from the identity at each point of the 5×5 grid. With --ablation, instead: the aligned and known-warp
errors under other settings of the estimator's last step (affine last level; perspective terms pulled to 0).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from dig2dig_ros.core.frame import imaging
from dig2dig_ros.core.frame.homography_estimate import (
    EstimateRefused,
    EstimateSettings,
    check_quality,
    estimate_from_pairs,
    grid_distances,
    grid_error,
    similarity,
)

REPO = Path(__file__).resolve().parents[1]
FULL = (1024, 1280)  # LLVIP (h, w)


def known_warps(size: tuple[int, int] = FULL) -> dict[str, tuple[np.ndarray, tuple[int, int]]]:
    """name → (G: original infrared px → warped infrared px, warped size (h, w)), the issue's cases."""
    h, w = size
    centre = np.array([[1, 0, -(w - 1) / 2], [0, 1, -(h - 1) / 2], [0, 0, 1]])
    perspective = np.array([[1.02, 0.01, 0.0], [-0.01, 0.99, 0.0], [3e-5, -2e-5, 1.0]])
    persp = np.linalg.inv(centre) @ perspective @ centre
    persp = np.array([[1, 0, 12], [0, 1, -8], [0, 0, 1]]) @ persp
    small = (512, 640)
    return {
        "same size, 2° rotation, 4% zoom, 30 px shift": (similarity(size, size, 1.04, 2.0, (24.0, -18.0)), size),
        "640×512 infrared, 60% of the visible width": (similarity(size, small, 640 / (0.6 * w), 0.0, (20.0, -12.0)),
                                                      small),
        "640×512 infrared, half the visible width, 10% offset": (similarity(size, small, 1.0, 1.0, (-64.0, 51.0)),
                                                                small),
        "mild perspective": (persp / persp[2, 2], size),
    }


def split_stems(folder: Path, split: str) -> list[str]:
    """The pair stems of a split (scripts/make_evaluation.py's rule): sorted, held-out index % 5 == 2, tuning
    index % 5 == 0."""
    stems = sorted(p.stem for p in (folder / "ir").iterdir())
    return [s for i, s in enumerate(stems) if i % 5 == (2 if split == "held-out" else 0)]


def load(folder: Path, stems: list[str]) -> list[tuple[np.ndarray, np.ndarray]]:
    return [(imaging.read_image(next((folder / "ir").glob(f"{s}.*"))),
             imaging.read_image(next((folder / "vis").glob(f"{s}.*")))) for s in stems]


def no_structure(pairs: list[tuple[np.ndarray, np.ndarray]], data: Path) -> dict[str, list]:
    """Pairs whose visible shares nothing with the infrared: noise, flat, other scenes (RoadScene/MSRS)."""
    rng = np.random.default_rng(0)
    vis_shape = pairs[0][1].shape
    others = [p for name in ("roadscene", "msrs") for p in sorted((data / "vif" / name / "vis").iterdir())]
    step = max(1, len(others) // len(pairs))
    other = [cv2.resize(imaging.read_image(p), (vis_shape[1], vis_shape[0])) for p in others[::step]]
    return {
        "visible = noise": [(ir, rng.integers(0, 256, vis_shape, dtype=np.uint8)) for ir, _ in pairs],
        "visible = flat": [(ir, np.full(vis_shape, 90, np.uint8)) for ir, _ in pairs],
        "visible from other scenes": [(ir, o) for (ir, _), o in zip(pairs, other, strict=False)],
    }


def warp_all(pairs: list, g: np.ndarray, size: tuple[int, int]) -> list:
    """The pairs with their infrared warped by G into a (h, w) frame."""
    return [(cv2.warpPerspective(ir, g, (size[1], size[0]), flags=cv2.INTER_LINEAR,
                                 borderMode=cv2.BORDER_REPLICATE), vis) for ir, vis in pairs]


def run(label: str, pairs: list, names: list[str], reference: Callable[[np.ndarray], tuple[float, float]] | None,
        rows: list[str]) -> np.ndarray | None:
    started = time.perf_counter()
    est = estimate_from_pairs(pairs, names)
    seconds = time.perf_counter() - started
    try:
        check_quality(est)
        verdict = "accepted"
    except EstimateRefused as exc:
        verdict = f"refused ({str(exc).split(':')[0]})"
    err = reference(est.h) if reference else None
    error = f"{err[0]:.2f} / {err[1]:.2f}" if err else "—"
    rows.append(f"| {label} | {len(pairs)} | {error} | {est.residual_px:.2f} | {est.correlation:.3f} | "
                f"{est.inliers}/{len(pairs)} | {est.overlap:.0%} | {verdict} | {seconds:.1f} |")
    print(rows[-1], file=sys.stderr, flush=True)
    return est.h


def grid_table(h: np.ndarray, size: tuple[int, int] = FULL) -> str:
    """h's distance from the identity at each point of the 5×5 infrared grid (markdown), and the means of the
    inner 3×3 and the 16 border points."""
    d = grid_distances(h, np.eye(3), size).reshape(5, 5)
    inner = d[1:4, 1:4].mean()
    lines = ["| y \\ x | " + " | ".join(f"{round(x)}" for x in np.linspace(0, size[1] - 1, 5)) + " |",
             "|---" * 6 + "|"]
    lines += [f"| {round(y)} | " + " | ".join(f"{v:.1f}" for v in row) + " |"
              for y, row in zip(np.linspace(0, size[0] - 1, 5), d, strict=True)]
    lines.append(f"\nmean {d.mean():.2f} px: inner 3×3 {inner:.2f}, border 16 {(d.sum() - 9 * inner) / 16:.2f}, "
                 f"corners {d[[0, 0, 4, 4], [0, 4, 0, 4]].mean():.2f}")
    return "\n".join(lines)


def _pair_text(err: tuple[float, float]) -> str:
    return f"{err[0]:.2f} / {err[1]:.2f}"


ABLATION = {  # label → settings of the estimator's last step
    "default (homography last level)": EstimateSettings(),
    "affine last level": EstimateSettings(final_motion="affine"),
    "perspective ridge 0.01": EstimateSettings(perspective_ridge=0.01),
    "perspective ridge 0.1": EstimateSettings(perspective_ridge=0.1),
    "perspective ridge 1": EstimateSettings(perspective_ridge=1.0),
}


def ablation(pairs: list, stems: list[str]) -> list[str]:
    """One row per ABLATION setting: aligned vs identity and each known warp vs (its aligned estimate) ∘ G⁻¹,
    mean / worst px, the aligned inliers' median correlation and the aligned estimate's time."""
    rows = []
    for label, st in ABLATION.items():
        started = time.perf_counter()
        aligned = estimate_from_pairs(pairs, stems, settings=st)
        seconds = time.perf_counter() - started
        cells = [_pair_text(grid_error(aligned.h, np.eye(3), FULL))]
        for g, size in known_warps().values():
            ref = aligned.h @ np.linalg.inv(g)
            est = estimate_from_pairs(warp_all(pairs, g, size), stems, settings=st)
            cells.append(_pair_text(grid_error(est.h, ref / ref[2, 2], size)))
        rows.append(f"| {label} | " + " | ".join(cells) + f" | {aligned.correlation:.3f} | {seconds:.1f} |")
        print(rows[-1], file=sys.stderr, flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data"))
    parser.add_argument("--split", choices=("held-out", "tuning"), default="held-out")
    parser.add_argument("--ablation", action="store_true", help="compare settings of the last step instead")
    args = parser.parse_args(argv)
    folder = Path(args.data) / "vif" / "llvip"
    if not folder.is_dir():
        print(f"no LLVIP pairs under {folder}", file=sys.stderr)
        return 1
    stems = split_stems(folder, args.split)
    pairs = load(folder, stems)
    if args.ablation:
        rows = ablation(pairs, stems)
        print(f"LLVIP {args.split} pairs ({len(pairs)}), error mean / worst (px)\n")
        print("| last step | aligned vs identity | " + " | ".join(known_warps()) + " | correlation | time (s) |")
        print("|---" * (4 + len(known_warps())) + "|")
        print("\n".join(rows))
        return 0
    rows: list[str] = []
    h_aligned = run("aligned (against the identity)", pairs, stems,
                    lambda h: grid_error(h, np.eye(3), FULL), rows)
    for name, (g, size) in known_warps().items():
        ref = h_aligned @ np.linalg.inv(g)
        run(name, warp_all(pairs, g, size), stems,
            lambda h, ref=ref, size=size: grid_error(h, ref / ref[2, 2], size), rows)
    for name, bad in no_structure(pairs, Path(args.data)).items():
        run(name, bad, stems[: len(bad)], None, rows)
    print(f"LLVIP {args.split} pairs ({len(pairs)}: {stems[0]}…{stems[-1]}), {FULL[1]}×{FULL[0]} visible\n")
    print("| case | pairs | error mean / worst (px) | residual (px) | correlation | inliers | overlap | "
          "verdict | time (s) |")
    print("|---|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))
    print("\nThe aligned estimate's distance from the identity per grid point (infrared px; visible px):\n")
    print(grid_table(h_aligned))
    return 0


if __name__ == "__main__":
    sys.exit(main())
