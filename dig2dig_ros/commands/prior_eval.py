"""``dig2dig prior-eval``: how well a prior recovers clean images from noise, as x0-estimate PSNR per timestep.

Per image: the luminance (BT.601 Y, [−1, 1]), area-downscaled so the long side is at most ``max_side`` and
centre-cropped to a multiple of ``EVAL_MULTIPLE`` (every prior then sees the same pixels). Per timestep t:
x_t = √ᾱ·x0 + √(1−ᾱ)·ε with ε drawn from a seed fixed per (image, t) (the same noise for every prior),
x̂0 = clamp((x_t − √(1−ᾱ)·ε̂)/√ᾱ, −1, 1) and PSNR = 10·log10(255²/MSE) on the 0..255 scale. Reported: the
mean PSNR over the images, per t.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from dig2dig_ros.commands.train_prior import find_images, is_listed, read_list, read_luminance
from dig2dig_ros.core.device import resolve_device
from dig2dig_ros.core.diffusion.priors import Prior, load_prior

EVAL_MULTIPLE = 32  # images are centre-cropped to this multiple (covers every prior's own multiple)
DEFAULT_TS = (100, 300, 500, 700)
DEFAULT_MAX_SIDE = 640  # the largest live working size


def centre_crop(img: np.ndarray, multiple: int) -> np.ndarray:
    """The centred (H',W') crop of img (H,W) with H', W' the largest multiples of ``multiple``."""
    h, w = img.shape
    hh, ww = h - h % multiple, w - w % multiple
    if hh == 0 or ww == 0:
        raise ValueError(f"image {h}x{w} is smaller than {multiple}px")
    y, x = (h - hh) // 2, (w - ww) // 2
    return img[y : y + hh, x : x + ww]


def psnr_255(estimate: torch.Tensor, clean: torch.Tensor) -> float:
    """PSNR in dB of two [−1, 1] images on the 0..255 scale."""
    mse = float(((estimate.double() - clean.double()) * 127.5).pow(2).mean())
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)


@torch.inference_mode()
def x0_psnr(prior: Prior, clean: torch.Tensor, t: int, generator: torch.Generator) -> float:
    """PSNR of the prior's clamped x0 estimate from one noisy draw of clean (1,1,H,W) at timestep t."""
    ab = float(prior.alphas_cumprod[t])
    eps = torch.randn(clean.shape, generator=generator).to(clean.device)  # (1,1,H,W)
    x_t = math.sqrt(ab) * clean + math.sqrt(1 - ab) * eps
    eps_hat = prior(x_t, torch.full((1,), t, dtype=torch.long, device=clean.device))  # (1,1,H,W)
    x0 = ((x_t - math.sqrt(1 - ab) * eps_hat) / math.sqrt(ab)).clamp(-1, 1)
    return psnr_255(x0, clean)


def eval_images(images_dir: str | Path, list_file: str | Path | None = None) -> list[Path]:
    """The images under images_dir, restricted to those named in list_file when given."""
    paths = find_images([images_dir])
    if list_file is not None:
        entries = read_list(list_file)
        paths = [p for p in paths if is_listed(p, entries)]
    if not paths:
        raise FileNotFoundError(f"no images to evaluate under {images_dir}" + (f" in {list_file}" if list_file else ""))
    return paths


def run_prior_eval(
    images_dir: str | Path,
    prior_spec: str = "bundled",
    ts: Sequence[int] = DEFAULT_TS,
    list_file: str | Path | None = None,
    max_side: int = DEFAULT_MAX_SIDE,
    seed: int = 0,
    device: str = "auto",
) -> dict:
    """Mean x0 PSNR per t: ``{"prior", "images", "psnr": {t: dB}, "per_image": {t: [dB, ...]}}``."""
    device = str(resolve_device(device))
    prior = load_prior(prior_spec, device)
    multiple = math.lcm(EVAL_MULTIPLE, prior.multiple)
    per_image: dict[int, list[float]] = {int(t): [] for t in ts}
    paths = eval_images(images_dir, list_file)
    for i, path in enumerate(paths):
        clean = torch.from_numpy(centre_crop(read_luminance(path, max_side), multiple).copy())[None, None]
        clean = clean.to(device)  # (1,1,H,W)
        for t in per_image:
            gen = torch.Generator().manual_seed(seed * 1_000_003 + i * 1000 + t)
            per_image[t].append(x0_psnr(prior, clean, t, gen))
    return {
        "prior": prior_spec,
        "images": len(paths),
        "psnr": {t: float(np.mean(v)) for t, v in per_image.items()},
        "per_image": per_image,
    }


def format_table(results: Sequence[dict]) -> str:
    """A markdown table: one row per t, one column per prior (mean x0 PSNR, dB)."""
    head = "| t | " + " | ".join(r["prior"] for r in results) + " |"
    rule = "|---|" + "---|" * len(results)
    rows = [
        f"| {t} | " + " | ".join(f"{r['psnr'][t]:.2f}" for r in results) + " |" for t in results[0]["psnr"]
    ]
    return "\n".join([head, rule, *rows])


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    """The prior-eval arguments, added to ``parser`` (a ``dig2dig`` subcommand) or a new parser."""
    p = parser or argparse.ArgumentParser(prog="dig2dig prior-eval", description=__doc__.split("\n")[0])
    p.add_argument("--images", required=True, type=Path, help="folder searched recursively for images")
    p.add_argument("--prior", action="append", help="prior spec (repeatable; default: bundled)")
    p.add_argument("--t", default=",".join(map(str, DEFAULT_TS)), help="comma-separated timesteps")
    p.add_argument("--list", type=Path, help="only the images listed in this split file (paths relative)")
    p.add_argument("--max-side", type=int, default=DEFAULT_MAX_SIDE)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Print the mean x0 PSNR table for each prior."""
    return run(build_parser().parse_args(argv))


def run(a: argparse.Namespace) -> int:
    """Run prior-eval for arguments parsed by :func:`build_parser`."""
    try:
        ts = [int(t) for t in a.t.split(",")]
    except ValueError:
        print(f"--t must be comma-separated integers, got {a.t!r}", file=sys.stderr)
        return 2
    if any(not 0 <= t < 1000 for t in ts):
        print(f"timesteps must be in 0..999, got {ts}", file=sys.stderr)
        return 2
    results = [
        run_prior_eval(a.images, spec, ts, a.list, a.max_side, a.seed, a.device) for spec in a.prior or ["bundled"]
    ]
    print(f"x0 PSNR (dB, luminance 0..255), mean over {results[0]['images']} images")
    print(format_table(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
