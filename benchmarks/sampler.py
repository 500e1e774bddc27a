"""Milliseconds per fused frame of the Dig2DIG sampler, and DIG's overhead over static weights.

Prints a table for DIG-15 and DIG-25 at 320x256 and 640x512 on the current device, for each prior asked for
(default: bundled when it is installed, and wiener), plus each prior's cost per forward. With --adm, also the
paper's ADM prior's cost per forward at 256x256 (random weights; see benchmarks/adm_cost.py), so the speed-up
of our own prior is stated against the paper's. Timings are medians over --repeats frames after a warm-up.

    .venv/bin/python benchmarks/sampler.py [--priors bundled,wiener] [--repeats 3] [--device auto] [--adm]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

from dig2dig_ros.core.config import FusionConfig, SamplerConfig
from dig2dig_ros.core.device import resolve_device
from dig2dig_ros.core.diffusion.priors import PriorError, load_prior
from dig2dig_ros.core.frame.fusion import Fuser
from dig2dig_ros.core.sample_scene import make_sample_pair

SIZES = ((256, 320), (512, 640))  # (H, W)
STEPS = (15, 25)


def frame_ms(fuser: Fuser, size: tuple[int, int], repeats: int) -> float:
    """Median milliseconds to fuse one synthetic pair of this size (after one warm-up frame)."""
    pair = list(make_sample_pair(size=size))
    fuser(pair)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fuser(pair)
        if fuser.device.type == "cuda":
            torch.cuda.synchronize()
        times.append(1000 * (time.perf_counter() - start))
    return statistics.median(times)


def forward_ms(prior: torch.nn.Module, size: tuple[int, int], repeats: int, device: torch.device) -> float:
    """Median milliseconds of one prior forward, batch 1."""
    x = torch.randn(1, prior.channels, *size, device=device)
    t = torch.full((1,), 500, device=device)
    times = []
    with torch.no_grad():
        prior(x, t)
        for _ in range(repeats):
            start = time.perf_counter()
            prior(x, t)
            if device.type == "cuda":
                torch.cuda.synchronize()
            times.append(1000 * (time.perf_counter() - start))
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--priors", default="bundled,wiener")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--adm", action="store_true", help="also time the paper's ADM prior (slow on a CPU)")
    args = parser.parse_args()
    device = resolve_device(args.device)
    print(f"device: {device}, torch {torch.__version__}, threads {torch.get_num_threads()}\n")
    print("| prior | size | forward ms | DIG-15 ms | static-15 ms | DIG/static "
          "| DIG-25 ms | static-25 ms | DIG/static |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name in args.priors.split(","):
        try:
            prior = load_prior(name, device)
        except PriorError as exc:
            print(f"| {name} | not available: {exc} |")
            continue
        for size in SIZES:
            cells = [f"{forward_ms(prior, size, args.repeats, device):.1f}"]
            for steps in STEPS:
                ms = {}
                for method in ("dig", "static"):
                    config = FusionConfig(method=method, sampler=SamplerConfig(steps=steps))
                    ms[method] = frame_ms(Fuser(config, prior=prior, device=str(device)), size, args.repeats)
                cells += [f"{ms['dig']:.0f}", f"{ms['static']:.0f}", f"{ms['dig'] / ms['static']:.2f}"]
            print(f"| {name} | {size[1]}x{size[0]} | " + " | ".join(cells) + " |", flush=True)
    if args.adm:
        sys.path.insert(0, str(Path(__file__).parent))
        from adm_cost import count_flops, seconds_per_forward

        from dig2dig_ros.core.diffusion.priors.adm import AdmConfig, AdmPrior, AdmUNet

        adm = AdmPrior(AdmUNet(AdmConfig())).to(device).eval()
        x, t = torch.randn(1, 3, 256, 256, device=device), torch.full((1,), 500, device=device)
        gflop = count_flops(adm, x, t) / 1e9
        seconds = seconds_per_forward(adm, x, t, repeats=1)
        print(f"\nADM (paper's prior) at 256x256: {gflop:.0f} GFLOP, {1000 * seconds:.0f} ms per forward")
    return 0


if __name__ == "__main__":
    sys.exit(main())
