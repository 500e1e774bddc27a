"""Fuse the shared video sequences with several methods and write docs/VIDEO.md: speed, flicker, Qabf, SSIM.

    .venv/bin/python scripts/make_video_evaluation.py [--data ../shared/data] [--max-frames 0] [--threads 1]
        [--max-side 320] [--prior bundled] [--device cpu] [--methods dig,static,average,gff] [--fps 30]
        [--out docs/VIDEO.md]

Every sequence folder under DATA/sequences/ holds ir/<stem>.* and vis/<stem>.* frames, consecutive in time when
sorted by name. Each method fuses the first --max-frames frames (0: all) in order, as a video: a method object
is made fresh per sequence and called once per frame with the frame's stamp (frame index / --fps), so a
stateful (video-mode) fuser sees the sequence as a camera would deliver it. Per method and sequence:
seconds per frame (mean, first frame included), the flicker ratio and the fused video's warping error
(dig2dig_ros/core/video/flicker.py: DIS flow from the visible frames, ratio to the sources' own warping errors), and
mean Qabf and SSIM (dig2dig_ros/core/metrics.py, infrared = A, visible = B).

Methods are rows of METHODS (name → factory); add one there. The "dig-video" row appears when
dig2dig_ros.core.video.fuser provides VideoFuser(Fuser(...))(images, stamp) -> FusionResult.
"""

from __future__ import annotations

import argparse
import datetime
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # this checkout's package, not another one installed in the environment

import dig2dig_ros  # noqa: E402
from dig2dig_ros.core import metrics  # noqa: E402
from dig2dig_ros.core.config import FusionConfig, with_overrides  # noqa: E402
from dig2dig_ros.core.diffusion.priors import Prior, load_prior  # noqa: E402
from dig2dig_ros.core.frame import imaging  # noqa: E402
from dig2dig_ros.core.frame.fusion import Fuser  # noqa: E402
from dig2dig_ros.core.video.flicker import estimate_motion, flicker  # noqa: E402

DEFAULT_DATA = REPO.parent / "shared" / "data"

FrameFn = Callable[[list[np.ndarray], float], np.ndarray]  # ([ir, vis], stamp in s) → fused (H,W[,3]) uint8


@dataclass
class Setup:
    """What every method factory may use."""

    prior: Prior
    device: str
    max_side: int
    overrides: dict = field(default_factory=dict)  # --set key=value, applied to every method's configuration


def _per_frame(method: str) -> Callable[[Setup], FrameFn]:
    """A factory for a stateless Fuser method: each frame fused on its own, the stamp ignored."""

    def make(setup: Setup) -> FrameFn:
        config = with_overrides(FusionConfig(), {**setup.overrides, "method": method, "max_side": setup.max_side})
        fuser = Fuser(config, prior=setup.prior, device=setup.device)
        return lambda images, stamp: fuser(images).fused

    return make


def _video_mode(method: str, **settings: object) -> Callable[[Setup], FrameFn]:
    """A factory for video mode: VideoFuser(Fuser(config, prior, device))(images, stamp), fresh per sequence."""
    extra = dict(settings)

    def make(setup: Setup) -> FrameFn:
        from dig2dig_ros.core.video.fuser import VideoFuser  # absent: the row is skipped (see video_mode_available)

        settings = {**setup.overrides, **extra, "method": method, "max_side": setup.max_side, "video.enabled": True}
        config = with_overrides(FusionConfig(), settings)
        return _VideoFrames(VideoFuser(Fuser(config, prior=setup.prior, device=setup.device)))

    return make


class _VideoFrames:
    """A FrameFn around a VideoFuser that keeps each frame's ``last_reason`` ("warm" when warm-started)."""

    def __init__(self, video: object) -> None:
        self.video, self.reasons = video, []

    def __call__(self, images: list[np.ndarray], stamp: float) -> np.ndarray:
        fused = self.video(images, stamp).fused
        self.reasons.append(getattr(self.video, "last_reason", "?"))
        return fused


def video_mode_available() -> bool:
    """True when dig2dig_ros.core.video.fuser exists (an import error inside it is raised, not hidden)."""
    try:
        import dig2dig_ros.core.video.fuser  # noqa: F401
    except ModuleNotFoundError as exc:
        if exc.name == "dig2dig_ros.core.video.fuser":
            return False
        raise
    return True


# name → (factory, what the row is). Order is the table's order.
METHODS: dict[str, tuple[Callable[[Setup], FrameFn], str]] = {
    "dig-blend": (_per_frame("dig-blend"), "the node's default: closed form under DIG weights, one prior call"),
    "dig": (_per_frame("dig"), "the DIG-15 sampler, each frame from noise"),
    "dig-blend-video": (_video_mode("dig-blend"), "the default in video mode: DIG measured every `video.dig_every` "
                        "frames, its gain reused between; output stabilised against the previous one (temporal.py)"),
    "dig-blend-video-unbounded": (_video_mode("dig-blend", **{"video.source_bound": False}),
                                  "ablation: the default in video mode with the blend alone (no source bound)"),
    "dig-blend-video-unstabilised": (_video_mode("dig-blend", **{"video.temporal_strength": 0.0}),
                                     "ablation: the default in video mode without the stabilisation"),
    "dig-video": (_video_mode("dig"), "the DIG-15 sampler in video mode: warm start from the previous fused frame, "
                  "output stabilised as above"),
    "dig-video-unstabilised": (_video_mode("dig", **{"video.temporal_strength": 0.0}),
                               "ablation: the sampler's video mode (warm start only) without the stabilisation"),
    "static": (_per_frame("static"), "same sampler, fixed weights 1/K"),
    "average": (_per_frame("average"), "pixel average"),
    "gff": (_per_frame("gff"), "guided-filter fusion (classical)"),
}
DEFAULT_METHODS = ("dig-blend,dig-blend-video,dig-blend-video-unbounded,dig-blend-video-unstabilised,dig,dig-video,"
                   "dig-video-unstabilised,"
                   "static,average,gff")


@dataclass
class Row:
    """One method on one sequence."""

    sequence: str
    method: str
    frames: int
    seconds_per_frame: float
    flicker_ratio: float
    warp_error: float
    qabf: float
    ssim: float
    warm: str = "-"  # video mode: "warm-started frames/frames"; "-" for per-frame methods


def find_sequences(data: Path) -> list[Path]:
    """Sequence folders (with ir/ and vis/) under DATA/sequences, sorted by name."""
    root = data / "sequences"
    return sorted(p for p in root.iterdir() if (p / "ir").is_dir() and (p / "vis").is_dir()) if root.is_dir() else []


def read_sequence(folder: Path, max_frames: int) -> tuple[list[str], list[np.ndarray], list[np.ndarray]]:
    """Stems and the infrared and visible frames present in both ir/ and vis/, sorted by name; first max_frames."""

    def frames(sub: str) -> dict[str, Path]:
        return {p.stem: p for p in (folder / sub).iterdir() if p.suffix.lower() in imaging.IMAGE_SUFFIXES}

    ir, vis = frames("ir"), frames("vis")
    stems = sorted(set(ir) & set(vis))
    if max_frames > 0:
        stems = stems[:max_frames]
    return stems, [imaging.read_image(ir[s]) for s in stems], [imaging.read_image(vis[s]) for s in stems]


def evaluate_sequence(
    name: str, ir: list[np.ndarray], vis: list[np.ndarray], methods: list[str], setup: Setup, fps: float
) -> list[Row]:
    """Fuse one sequence with every method (each a fresh object) and score it."""
    motion = estimate_motion(vis)
    a = [metrics.to_gray255(f) for f in ir]  # each (H,W)
    b = [metrics.to_gray255(f) for f in vis]
    rows = []
    for method in methods:
        fuse = METHODS[method][0](setup)
        fused, seconds = [], 0.0
        for i, pair in enumerate(zip(ir, vis, strict=True)):
            start = time.perf_counter()
            fused.append(fuse(list(pair), i / fps))
            seconds += time.perf_counter() - start
        gray = [metrics.to_gray255(f) for f in fused]
        reasons = getattr(fuse, "reasons", None)
        warm = f"{reasons.count('warm')}/{len(reasons)}" if reasons is not None else "-"
        result = flicker(fused, [ir, vis], motion=motion)
        rows.append(
            Row(
                sequence=name,
                method=method,
                frames=len(fused),
                seconds_per_frame=seconds / len(fused),
                flicker_ratio=result.ratio,
                warp_error=result.fused,
                qabf=float(np.mean([metrics.qabf(f, x, y) for f, x, y in zip(gray, a, b, strict=True)])),
                ssim=float(np.mean([metrics.ssim(f, x, y) for f, x, y in zip(gray, a, b, strict=True)])),
                warm=warm,
            )
        )
        print(f"  {name} {method}: {rows[-1].seconds_per_frame:.3f} s/frame, flicker {result.ratio:.3f}", flush=True)
        if reasons is not None:
            print(f"    full runs: {[(i, r) for i, r in enumerate(reasons) if r != 'warm']}", flush=True)
    return rows


def warm_up(methods: list[str], setup: Setup) -> None:
    """One throwaway frame per method, so the first sequence's timings carry no first-call costs."""
    yy, xx = np.mgrid[0:96, 0:128]
    pair = [(128 + 60 * np.sin(xx / 7.0)).astype(np.uint8), (128 + 60 * np.cos(yy / 5.0)).astype(np.uint8)]
    for method in methods:
        METHODS[method][0](setup)(pair, 0.0)


def markdown(rows: list[Row], header: str) -> str:
    """The document: header, one table per sequence, and the per-method mean over sequences."""
    out = [header]
    cols = "| method | frames | warm | s/frame | flicker ratio | warping error | Qabf | SSIM |\n" + "|---" * 8 + "|"
    for seq in dict.fromkeys(r.sequence for r in rows):
        out += [f"\n### {seq}\n", cols]
        out += [
            f"| {r.method} | {r.frames} | {r.warm} | {r.seconds_per_frame:.3f} | {r.flicker_ratio:.3f} "
            f"| {r.warp_error:.2f} | {r.qabf:.3f} | {r.ssim:.3f} |"
            for r in rows
            if r.sequence == seq
        ]
    out += [
        "\n### Mean over sequences\n",
        "| method | s/frame | flicker ratio | Qabf | SSIM |",
        "|---|---|---|---|---|",
    ]
    for method in dict.fromkeys(r.method for r in rows):
        rs = [r for r in rows if r.method == method]
        mean = {
            k: float(np.mean([getattr(r, k) for r in rs]))
            for k in ("seconds_per_frame", "flicker_ratio", "qabf", "ssim")
        }
        out.append(
            f"| {method} | {mean['seconds_per_frame']:.3f} | {mean['flicker_ratio']:.3f} | {mean['qabf']:.3f} "
            f"| {mean['ssim']:.3f} |"
        )
    return "\n".join(out) + "\n"


def _commit() -> str:
    """HEAD's short hash, marked when the package or scripts have uncommitted changes."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True)
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "dig2dig_ros", "scripts"], cwd=REPO, capture_output=True, text=True
        )
    except OSError:
        return "unknown"
    commit = head.stdout.strip() or "unknown"
    return commit + (" with uncommitted changes" if dirty.stdout.strip() else "")


def main(argv: list[str] | None = None) -> int:
    """Run the evaluation; print the tables and write --out."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--max-frames", type=int, default=0, help="first N frames of each sequence (0: all)")
    p.add_argument("--skip-frames", type=int, default=0, help="start at this frame (e.g. a tuning stretch)")
    p.add_argument("--stride", type=int, default=1,
                   help="keep every Nth frame (a node that fuses one pair in N: N times the motion per frame)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="a fusion setting for every method, e.g. video.temporal_strength=0.5 (repeatable)")
    p.add_argument("--threads", type=int, default=1, help="torch and OpenCV threads")
    p.add_argument("--max-side", type=int, default=320, help="working size (the node's default working_size)")
    p.add_argument("--prior", default="bundled")
    p.add_argument("--device", default="cpu")
    p.add_argument("--methods", default=DEFAULT_METHODS, help=f"comma-separated, from {', '.join(METHODS)}")
    p.add_argument("--fps", type=float, default=30.0, help="frame rate the stamps are made with")
    p.add_argument("--out", type=Path, default=REPO / "docs" / "VIDEO.md")
    args = p.parse_args(argv)
    package = Path(dig2dig_ros.__file__).resolve().parent
    if package != REPO / "dig2dig_ros":
        print(f"dig2dig_ros was imported from {package}, not this checkout ({REPO})", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)

    methods = [m for m in args.methods.split(",") if m]
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        print(f"unknown methods {unknown}; available: {', '.join(METHODS)}", file=sys.stderr)
        return 2
    notes = []
    if "dig-video" in methods and not video_mode_available():
        methods.remove("dig-video")
        notes.append("- `dig-video` skipped: `dig2dig_ros.core.video.fuser` (VideoFuser) is not in this checkout.")
    sequences = find_sequences(args.data)
    if not sequences:
        print(f"no sequences under {args.data / 'sequences'}", file=sys.stderr)
        return 2

    overrides = dict(item.split("=", 1) for item in args.set)
    setup = Setup(prior=load_prior(args.prior, args.device), device=args.device, max_side=args.max_side,
                  overrides=overrides)
    warm_up(methods, setup)
    rows: list[Row] = []
    for folder in sequences:
        wanted = args.skip_frames + args.max_frames * args.stride if args.max_frames else 0
        stems, ir, vis = read_sequence(folder, wanted)
        kept = slice(args.skip_frames, None, args.stride)
        stems, ir, vis = stems[kept], ir[kept], vis[kept]
        if len(stems) < 2:
            notes.append(f"- {folder.name}: fewer than two frames, skipped.")
            continue
        print(f"{folder.name}: {len(stems)} frames {stems[0]}..{stems[-1]}, {vis[0].shape[1]}x{vis[0].shape[0]}")
        rows += evaluate_sequence(folder.name, ir, vis, methods, setup, args.fps / args.stride)

    command = "scripts/make_video_evaluation.py " + " ".join(argv if argv is not None else sys.argv[1:])
    what = "\n".join(f"- `{m}`: {METHODS[m][1]}" for m in methods)
    stride = f", every {args.stride}th" if args.stride > 1 else ""
    settings = f"; settings {overrides}" if overrides else ""
    header = f"""# Video: speed, flicker and fusion quality on frame sequences

Generated by `.venv/bin/python {command.strip()}` on {datetime.date.today()} (commit {_commit()}, {platform.machine()},
torch {torch.__version__}, {args.threads} thread(s), device {args.device}, prior `{args.prior}`, working size
{args.max_side} px, DIG-15 defaults of `dig2dig_ros/core/config.py`). Sequences: `../shared/data/sequences/`
(M3SVD 0117_1605, TNO Duine, TNO Nato camp; see its README), {args.max_frames or "all"} frames of each from frame
{args.skip_frames}{stride}{settings}.

Methods:
{what}

Columns: **warm**, for video mode, how many frames were warm-started (the rest ran in full: the first frame, and
any the video mode judged a scene change or time jump); **s/frame**, wall-clock seconds per fused frame through the
method's public call (mean over the frames, the first included; a machine shared with other jobs makes these
noisy); **flicker ratio**, the fused video's warping error over the mean of the two sources' warping errors, with
optical flow from the visible frames (DIS, forward–backward occlusion check; the warping error of Lai et al., ECCV
2018; definition in `dig2dig_ros/core/video/flicker.py`): ≈ 1 moves as the scene moves, > 1 adds flicker; the plain
average of two sources with independent noise reads ≈ 0.71 (noise averages out), so compare methods on one
sequence; **warping error** on the gray [0, 255] scale; **Qabf** and **SSIM** (SSIM(F,A) + SSIM(F,B)) per frame,
averaged (`dig2dig_ros/core/metrics.py`). TNO Nato camp may have a cut between its first two frames
(`../shared/data/README.md`); it is kept.
"""
    if notes:
        header += "\n" + "\n".join(notes) + "\n"
    text = markdown(rows, header)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
