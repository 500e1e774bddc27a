"""`dig2dig plot-dig`: cumulative DIG of a few image regions against the noise level, like the paper's Fig. 5.

    dig2dig plot-dig SRC1 SRC2 -o fig.png [--prior P] [--steps N] [--interval K] [--max-side N]
                     [--box NAME=x,y,w,h ...] [--axis timestep|sigma] [--size WxH] [--set name=value ...]

Each panel shows, for one region, the mean (line) and standard deviation (band) over the region's pixels of
each source's cumulative DIG as the denoising goes from high noise (left) to the clean end (right). Regions are
the boxes given with --box (input-image pixels) or, by default, three found automatically: where source 1 is
brightest relative to source 2 (a person, hot in infrared), where source 2 is brightest (a lit area) and where
source 2 has the most gradient (texture); the last panel is the whole image. On the timestep axis the clean
source (the end of the last stretch measured) is drawn at t = −1; the σ axis (log) leaves it out.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from dig2dig_ros.core.config import FusionConfig, with_overrides
from dig2dig_ros.core.frame import imaging
from dig2dig_ros.core.frame.fusion import Fuser, FusionError

COLOURS = ("#d62728", "#1f77b4", "#2ca02c", "#ff7f0e", "#9467bd")  # region boxes
SOURCE_STYLES = ("-", "--", ":", "-.")


@dataclass
class DigTrace:
    """Cumulative DIG after each weight update, at the working size.

    ``levels[u]`` is the timestep the gain of update u was measured down to (−1 = the clean source, σ = 0), with a
    leading zero-gain point at the first timestep when the first update measures a stretch ahead of it.
    """

    levels: np.ndarray  # (U,) timesteps, decreasing
    sigmas: np.ndarray  # (U,) σ = √((1−ᾱ)/ᾱ) at those timesteps (0 for the clean source)
    cumulative: np.ndarray  # (U,K,h,w)
    sources: np.ndarray  # (K,h,w) luminance in [0,1]
    scale: float  # working size / input size


@dataclass
class Region:
    """A named box (x, y, w, h) in working-size pixels."""

    name: str
    box: tuple[int, int, int, int]

    def mean_std(self, maps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Mean and standard deviation over the box of maps (..., h, w)."""
        x, y, w, h = self.box
        patch = maps[..., y : y + h, x : x + w]
        return patch.mean(axis=(-2, -1)), patch.std(axis=(-2, -1))


def trace_dig(fuser: Fuser, images: list[np.ndarray]) -> DigTrace:
    """Run the DIG sampler of `fuser` (method dig) on images and keep the cumulative DIG after every update."""
    cfg = fuser.config
    if fuser.prior is None:
        raise FusionError("plot-dig needs a diffusion prior (method dig)")
    prep = fuser.prepare(images)
    y, size = prep.small, prep.size  # (K,h,w) at the working size, (H, W)
    history = fuser.fuse_luminance(y).gain_history
    if not history:
        raise FusionError("the sampler made no DIG update")
    cumulative = np.cumsum(np.stack([gain for _, _, gain in history]), axis=0)  # (U,K,h,w)
    levels = [_level_reached(fuser.timesteps, step, cfg.dig) for step, _, _ in history]
    if levels[0] != fuser.timesteps[0]:
        levels.insert(0, fuser.timesteps[0])
        cumulative = np.concatenate([np.zeros_like(cumulative[:1]), cumulative])
    ac = fuser.prior.alphas_host.numpy()
    ab = np.array([ac[t] if t >= 0 else 1.0 for t in levels])
    return DigTrace(np.array(levels), np.sqrt((1 - ab) / ab), cumulative, y, max(y.shape[1:]) / max(size))


def half_gain_level(levels: np.ndarray, curve: np.ndarray) -> int | None:
    """The first timestep by which a cumulative curve (U,) reaches half its final value; None if that is ≤ 0."""
    if curve[-1] <= 0:
        return None
    return int(levels[int(np.argmax(curve >= 0.5 * curve[-1]))])


def _level_reached(timesteps: list[int], step: int, dig) -> int:
    """The timestep down to which the gain of the update at `step` was measured (−1 for the clean source)."""
    if dig.space == "xt":
        j = step + 1
    elif dig.direction == "ahead":
        j = step + dig.interval
    else:
        return timesteps[step]
    return timesteps[j] if j < len(timesteps) else -1


def auto_regions(sources: np.ndarray, labels: tuple[str, str] = ("infrared", "visible")) -> list[Region]:
    """Three non-overlapping square boxes: source 1 brighter than 2, source 2 brightest, source 2 most textured."""
    k, h, w = sources.shape
    side = max(4, min(h, w) // 5)
    first, second = sources[0].astype(np.float32), sources[1].astype(np.float32)
    gx, gy = cv2.Sobel(second, cv2.CV_32F, 1, 0), cv2.Sobel(second, cv2.CV_32F, 0, 1)
    criteria = [
        (f"bright in {labels[0]}", first - sources[1:].mean(0)),
        (f"lit in {labels[1]}", second),
        (f"textured in {labels[1]}", np.sqrt(gx**2 + gy**2)),
    ]
    taken = np.zeros((h - side + 1, w - side + 1), bool)  # top-left corners already covered
    regions = []
    for name, score in criteria:
        local = cv2.boxFilter(score, cv2.CV_32F, (side, side), normalize=True, borderType=cv2.BORDER_REFLECT)
        corners = local[side // 2 : side // 2 + h - side + 1, side // 2 : side // 2 + w - side + 1].copy()
        corners[taken] = -np.inf
        y, x = np.unravel_index(int(np.argmax(corners)), corners.shape)
        taken[max(0, y - side + 1) : y + side, max(0, x - side + 1) : x + side] = True
        regions.append(Region(name, (int(x), int(y), side, side)))
    return regions


def parse_box(text: str, scale: float, size: tuple[int, int]) -> Region:
    """NAME=x,y,w,h in input pixels → a Region at the working size (clipped to the image)."""
    name, sep, spec = text.partition("=")
    try:
        x, y, w, h = (float(v) for v in spec.split(","))
    except ValueError:
        raise ValueError(f"--box expects NAME=x,y,w,h, got {text!r}") from None
    if not sep or w <= 0 or h <= 0:
        raise ValueError(f"--box expects NAME=x,y,w,h with positive w, h, got {text!r}")
    hh, ww = size
    x0, y0 = min(max(0, round(x * scale)), ww - 1), min(max(0, round(y * scale)), hh - 1)
    x1, y1 = min(ww, max(x0 + 1, round((x + w) * scale))), min(hh, max(y0 + 1, round((y + h) * scale)))
    return Region(name, (x0, y0, x1 - x0, y1 - y0))


def render(trace: DigTrace, regions: list[Region], path: Path, size: tuple[int, int] = (1200, 600),
           axis: str = "timestep", labels: tuple[str, ...] = ("infrared", "visible")) -> None:
    """Write the figure: the sources with the boxes, then one panel per region and one for the whole image."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    k, h, w = trace.sources.shape
    whole = Region("whole image", (0, 0, w, h))
    panels = [*regions, whole]
    cols = 1 + (len(panels) + 1) // 2
    dpi = 100
    fig = plt.figure(figsize=(size[0] / dpi, size[1] / dpi), dpi=dpi)
    grid = fig.add_gridspec(2, cols, width_ratios=[1.2] + [1] * (cols - 1))
    for row in range(min(2, k)):
        ax = fig.add_subplot(grid[row, 0])
        ax.imshow(trace.sources[row], cmap="gray", vmin=0, vmax=1)
        ax.set_title(labels[row] if row < len(labels) else f"source {row + 1}", fontsize=9)
        ax.axis("off")
        for j, region in enumerate(regions):
            x, y, bw, bh = region.box
            ax.add_patch(Rectangle((x, y), bw, bh, fill=False, lw=1.5, color=COLOURS[j % len(COLOURS)]))
    keep = slice(None) if axis == "timestep" else trace.sigmas > 0  # a log axis cannot show the clean end
    xs = (trace.levels if axis == "timestep" else trace.sigmas)[keep]
    for j, region in enumerate(panels):
        ax = fig.add_subplot(grid[j % 2, 1 + j // 2])
        mean, std = region.mean_std(trace.cumulative[keep])  # (U,K)
        for s in range(k):
            name = labels[s] if s < len(labels) else f"source {s + 1}"
            line = ax.plot(xs, mean[:, s], SOURCE_STYLES[s % len(SOURCE_STYLES)], marker=".", label=name)[0]
            ax.fill_between(xs, mean[:, s] - std[:, s], mean[:, s] + std[:, s], color=line.get_color(), alpha=0.2)
        colour = COLOURS[j % len(COLOURS)] if region is not whole else "black"
        ax.set_title(region.name, fontsize=9, color=colour)
        if axis == "sigma":
            ax.set_xscale("log")
        ax.invert_xaxis()
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=8)
        if j % 2 == 1 or j == len(panels) - 1:
            ax.set_xlabel("timestep t" if axis == "timestep" else "noise level σ", fontsize=8)
        if j < 2:  # first column of curves
            ax.set_ylabel("cumulative DIG", fontsize=8)
        if j == 0:
            ax.legend(fontsize=8)
    fig.suptitle("Cumulative diffusion information gain by region (mean ± std over the region)", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The `dig2dig plot-dig` options."""
    parser.add_argument("sources", nargs=2, help="two source images (VIF: infrared then visible)")
    parser.add_argument("-o", "--output", required=True, help="figure path (PNG)")
    parser.add_argument("--prior", default="bundled", help="bundled, wiener, adm:PATH, diffusers:DIR")
    parser.add_argument("--steps", type=int, default=25, help="sampler steps (DIG-N)")
    parser.add_argument("--interval", type=int, default=1, help="DIG update interval k (1: a point per step)")
    parser.add_argument("--max-side", type=int, default=320, help="working size (0: input size)")
    parser.add_argument("--task", default="vif", help="vif labels the sources infrared and visible")
    parser.add_argument("--box", action="append", default=[], metavar="NAME=x,y,w,h",
                        help="a region in input-image pixels (repeatable; default: three found automatically)")
    parser.add_argument("--axis", choices=("timestep", "sigma"), default="timestep")
    parser.add_argument("--size", default="1200x600", help="figure size in pixels, WxH")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help="any fusion setting by dotted name, e.g. dig.distance=l1 (repeatable)")


def run(args: argparse.Namespace) -> int:
    """Trace DIG on the pair, write the figure, print each region's final cumulative DIG per source."""
    try:
        width, height = (int(v) for v in args.size.lower().split("x"))
    except ValueError:
        raise ValueError(f"--size expects WxH, got {args.size!r}") from None
    overrides: dict[str, object] = {"method": "dig", "task": args.task, "max_side": args.max_side,
                                    "sampler.steps": args.steps, "sampler.seed": args.seed,
                                    "dig.interval": args.interval}
    for item in args.set:
        name, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--set expects NAME=VALUE, got {item!r}")
        overrides[name.strip()] = value.strip()
    fuser = Fuser(with_overrides(FusionConfig(), overrides), prior=args.prior, device=args.device)
    images = [imaging.read_image(p) for p in args.sources]
    trace = trace_dig(fuser, images)
    labels = ("infrared", "visible") if args.task == "vif" else ("source 1", "source 2")
    size = trace.sources.shape[1:]
    regions = [parse_box(b, trace.scale, size) for b in args.box] or auto_regions(trace.sources, labels)
    render(trace, regions, Path(args.output), (width, height), args.axis, labels)
    print(f"wrote {args.output} ({len(trace.levels)} points from t={trace.levels[0]} to t={trace.levels[-1]})")
    for region in [*regions, Region("whole image", (0, 0, size[1], size[0]))]:
        mean = region.mean_std(trace.cumulative)[0]  # (U,K)
        values = ", ".join(f"{lab} {mean[-1, k]:.4f} (half by t={half_gain_level(trace.levels, mean[:, k])})"
                           for k, lab in enumerate(labels[: mean.shape[1]]))
        print(f"  {region.name} {region.box}: final cumulative DIG {values}")
    return 0
