"""`dig2dig eval`: fuse a dataset folder with one or more methods and tabulate the fusion metrics (ALGORITHM.md §6).

    dig2dig eval --data DIR [--method NAME ...] [--fused [LABEL=]DIR ...] [--task vif|mef|mff] [--max-side N]
                 [--limit N] [--steps N] [--prior P] [--set name=value ...] [--threads N] [--out report.md]

Layouts: VIF folders hold DIR/ir and DIR/vis with matching stems; MEF/MFF folders hold one folder per scene with
two images (under/over, a/b, or any two names, taken in that order). Metrics are computed on gray [0, 255]
images at the sources' size, A = the first source (infrared, under-exposed, a), B = the second. A fused image
from --fused is found by stem (VIF) or scene name (MEF/MFF) and resized to the sources' size when it differs.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dig2dig_ros.commands.options import build_fuser
from dig2dig_ros.core import metrics
from dig2dig_ros.core.config import RESIZE_POLICIES, TASKS, FusionConfig
from dig2dig_ros.core.frame import imaging
from dig2dig_ros.core.frame.fusion import Fuser, FusionError

METRICS = ("MSE", "PSNR", "SSIM", "CC", "Qabf", "Nabf", "SD", "SF", "AG", "EI", "EN", "MI")
LOWER_IS_BETTER = ("MSE", "Nabf", "seconds")
FORMATS = {"MSE": ".1f", "PSNR": ".2f", "Nabf": ".4f", "SD": ".2f", "SF": ".2f", "AG": ".2f", "EI": ".2f",
           "seconds": ".3f"}
FIRST_SOURCE, SECOND_SOURCE = ("ir", "under", "a"), ("vis", "over", "b")  # names that fix A and B


@dataclass
class Sample:
    """One evaluation item: a name (stem or scene) and its source image paths, A first."""

    name: str
    sources: list[Path]


@dataclass
class Score:
    """The metrics of one fused image, with the seconds its fusion took (NaN when read from disk)."""

    name: str
    values: dict[str, float]
    seconds: float = math.nan


@dataclass
class Row:
    """Mean metrics of one method over a dataset."""

    label: str
    scores: list[Score] = field(default_factory=list)

    def mean(self, key: str) -> float:
        """Mean of one metric (or "seconds") over the images; NaN when none has it."""
        vals = [s.seconds if key == "seconds" else s.values[key] for s in self.scores]
        vals = [v for v in vals if not math.isnan(v)]
        return float(np.mean(vals)) if vals else math.nan


def _images_in(folder: Path) -> list[Path]:
    return [p for p in sorted(folder.iterdir()) if p.is_file() and p.suffix.lower() in imaging.IMAGE_SUFFIXES]


def _source_key(path: Path) -> tuple[int, str]:
    stem = path.stem.lower()
    return (0 if stem in FIRST_SOURCE else 1 if stem in SECOND_SOURCE else 2, stem)


def find_samples(data: Path, task: str | None = None) -> tuple[str, list[Sample]]:
    """(task, samples) of a VIF folder (DIR/ir, DIR/vis) or a MEF/MFF folder (DIR/<scene>/{2 images}).

    The task is `task` when given; otherwise vif for the ir/vis layout, and for scene folders mef or mff from
    the folder's name or, failing that, the file names (under/over: mef, a/b: mff).
    """
    data = Path(data)
    if not data.is_dir():
        raise FusionError(f"{data}: no such folder")
    if (data / "ir").is_dir() and (data / "vis").is_dir():
        ir = {p.stem: p for p in _images_in(data / "ir")}
        vis = {p.stem: p for p in _images_in(data / "vis")}
        stems = sorted(set(ir) & set(vis))
        if not stems:
            raise FusionError(f"no image pairs with matching names in {data}/ir and {data}/vis")
        return task or "vif", [Sample(s, [ir[s], vis[s]]) for s in stems]
    samples = []
    for scene in sorted(p for p in data.iterdir() if p.is_dir()):
        images = sorted(_images_in(scene), key=_source_key)
        if len(images) != 2:
            raise FusionError(f"{scene} must hold exactly two images, found {len(images)}")
        samples.append(Sample(scene.name, images))
    if not samples:
        raise FusionError(f"{data} holds neither ir/ and vis/ folders nor scene folders of two images")
    return task or _guess_task(data, samples), samples


def _guess_task(data: Path, samples: list[Sample]) -> str:
    for part in reversed(data.resolve().parts):
        if part.lower() in ("mef", "mff"):
            return part.lower()
    stems = {p.stem.lower() for s in samples for p in s.sources}
    if stems <= {"under", "over"}:
        return "mef"
    if stems <= {"a", "b"}:
        return "mff"
    raise FusionError(f"cannot tell whether {data} is mef or mff: pass --task")


def load_gray(sample: Sample) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """(A, B) as gray float64 on [0, 255] at the sources' size, and the source images as read."""
    images = [imaging.read_image(p) for p in sample.sources]
    size = images[0].shape[:2]
    a, b = (metrics.to_gray255(imaging.resize(img, size)) for img in images[:2])
    return a, b, images


def score_fused(name: str, fused: np.ndarray, a: np.ndarray, b: np.ndarray, seconds: float = math.nan,
                score_side: int = 0) -> Score:
    """Metrics of a fused image (any dtype/colour; resized to A's size when it differs) against A and B.

    With score_side > 0, F, A and B are first area-resized so their long side is at most score_side.
    """
    f = metrics.to_gray255(fused)
    if f.shape != a.shape:
        f = imaging.resize(f, a.shape)
    size = imaging.working_size(a.shape, score_side)
    if size != a.shape:
        f, a, b = (imaging.resize(x.astype(np.float32), size).astype(np.float64) for x in (f, a, b))
    return Score(name, metrics.compute_all(f, a, b), seconds)


def add_noise(images: Sequence[np.ndarray], sigma: float, seed: int) -> list[np.ndarray]:
    """The images as float32 in [0,1] with Gaussian noise of std sigma (on [0,1]) added, clipped; seeded."""
    rng = np.random.default_rng(seed)
    return [np.clip(imaging.to_unit(img) + rng.normal(0, sigma, img.shape).astype(np.float32), 0, 1) for img in images]


def evaluate_fuser(
    fuser: Fuser, samples: Sequence[Sample], progress: Callable[[str], None] | None = None, score_side: int = 0,
    noise: float = 0.0,
) -> list[Score]:
    """Fuse every sample with `fuser` and score it; seconds are the Fuser's own timing (no file reading).

    With noise > 0 the sources get Gaussian noise of that std (seeded per sample) and the fused image is scored
    against the clean sources.
    """
    scores = []
    for i, sample in enumerate(samples):
        a, b, images = load_gray(sample)
        if noise > 0:
            images = add_noise(images, noise, seed=i)
        result = fuser(images)
        scores.append(score_fused(sample.name, result.fused, a, b, result.seconds, score_side))
        if progress:
            progress(sample.name)
    return scores


def find_fused(folder: Path, name: str) -> Path:
    """The image in `folder` whose stem is `name`; FusionError when there is none."""
    for suffix in imaging.IMAGE_SUFFIXES:
        for candidate in (folder / f"{name}{suffix}", folder / f"{name}{suffix.upper()}"):
            if candidate.is_file():
                return candidate
    raise FusionError(f"no fused image named {name}.* in {folder}")


def evaluate_folder(folder: Path, samples: Sequence[Sample]) -> list[Score]:
    """Score the fused images already in `folder`, found by sample name."""
    scores = []
    for sample in samples:
        fused = imaging.read_image(find_fused(Path(folder), sample.name))
        a, b, _ = load_gray(sample)
        scores.append(score_fused(sample.name, fused, a, b))
    return scores


def _fmt(value: float, key: str) -> str:
    if math.isnan(value):
        return "n/a"
    return format(value, FORMATS.get(key, ".3f"))


def markdown_table(rows: Sequence[Row], columns: Sequence[str] = METRICS, label: str = "method",
                   bold_best: bool = True) -> str:
    """A Markdown table of each row's means, one column per metric plus n and seconds per image.

    With `bold_best`, the best value of each column (highest; lowest for MSE, Nabf, seconds) is in bold.
    """
    keys = [*columns, "seconds"]
    means = [[row.mean(k) for k in keys] for row in rows]
    best = {}
    for j, key in enumerate(keys):
        col = [m[j] for m in means if not math.isnan(m[j])]
        if col and len(rows) > 1:
            best[j] = min(col) if key in LOWER_IS_BETTER else max(col)
    arrows = [("↓" if k in LOWER_IS_BETTER else "↑") for k in keys]
    header = [label, "n", *(f"{k} {a}" if k != "seconds" else f"s/img {a}" for k, a in zip(keys, arrows, strict=True))]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    for row, m in zip(rows, means, strict=True):
        cells = []
        for j, key in enumerate(keys):
            text = _fmt(m[j], key)
            if bold_best and j in best and _fmt(best[j], key) == text:
                text = f"**{text}**"
            cells.append(text)
        lines.append(f"| {row.label} | {len(row.scores)} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The `dig2dig eval` options."""
    defaults = FusionConfig()
    parser.add_argument("--data", required=True, help="DIR/{ir,vis} (VIF) or DIR/<scene>/{two images} (MEF/MFF)")
    parser.add_argument("--method", action="append", default=[], metavar="NAME",
                        help="dig, static, average, max, laplacian, gff (repeatable; default dig unless --fused)")
    parser.add_argument("--fused", action="append", default=[], metavar="[LABEL=]DIR",
                        help="also score fused images read from DIR by stem (repeatable)")
    parser.add_argument("--task", choices=TASKS, default=None, help="default: from the folder")
    parser.add_argument("--max-side", type=int, default=320, help="working size (default 320; 0: input size)")
    parser.add_argument("--limit", type=int, default=0, help="evaluate the first N samples only (0: all)")
    parser.add_argument("--steps", type=int, default=defaults.sampler.steps, help="sampler steps (DIG-N)")
    parser.add_argument("--prior", default="bundled", help="bundled, wiener, adm:PATH, diffusers:DIR")
    parser.add_argument("--seed", type=int, default=defaults.sampler.seed)
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    parser.add_argument("--resize", choices=RESIZE_POLICIES, default="none",
                        help="policy for sources of different sizes (default: error)")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help="any fusion setting by dotted name, e.g. dig.interval=5 (repeatable)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--score-side", type=int, default=0, help="compute metrics at this long side (0: input)")
    parser.add_argument("--noise", type=float, default=0.0,
                        help="add Gaussian noise of this std ([0,1] scale) to the sources; score against clean")
    parser.add_argument("--out", help="also write the Markdown report here")


def _fused_dirs(items: Sequence[str]) -> list[tuple[str, Path]]:
    out = []
    for item in items:
        label, sep, path = item.partition("=")
        out.append((label, Path(path)) if sep else (Path(item).name, Path(item)))
    return out


def run(args: argparse.Namespace) -> int:
    """Evaluate, print the table and write it to --out; 0 on success."""
    if args.threads > 0:
        import torch

        torch.set_num_threads(args.threads)
    task, samples = find_samples(Path(args.data), args.task)
    if args.limit > 0:
        samples = samples[: args.limit]
    methods = args.method or ([] if args.fused else ["dig"])
    rows = []
    for method in methods:
        fuser = build_fuser(argparse.Namespace(**{**vars(args), "method": method, "task": task}))
        rows.append(Row(method, evaluate_fuser(fuser, samples, score_side=args.score_side, noise=args.noise)))
    for label, folder in _fused_dirs(args.fused):
        rows.append(Row(label, evaluate_folder(folder, samples)))
    settings = ", ".join(args.set) or "defaults"
    report = (
        f"# Fusion metrics: {args.data}\n\n"
        f"task {task}, {len(samples)} samples, prior {args.prior}, {args.steps} steps, working size "
        f"{args.max_side or 'input'}, settings: {settings}. Metrics at "
        f"{f'long side {args.score_side}' if args.score_side else 'the input size'} on gray images (A = first "
        f"source){f', sources with noise σ = {args.noise}' if args.noise else ''}. s/img: fusion time only.\n\n"
        + markdown_table(rows)
    )
    print(report, end="")
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(report)
        print(f"wrote {out}")
    return 0
