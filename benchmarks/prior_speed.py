"""Milliseconds per prior forward (batch 1) at 320x256 and 640x512: bundled vs wiener, and their ratio.

Usage: .venv/bin/python benchmarks/prior_speed.py [--threads N] [--repeats N] [--device cpu|cuda]
Reports the median over the repeats after a warm-up; run it with nothing else busy on the machine.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from dig2dig_ros.core.priors import Prior, load_prior

SIZES = ((256, 320), (512, 640))  # (H, W)


@torch.inference_mode()
def ms_per_forward(prior: Prior, height: int, width: int, repeats: int, device: str) -> float:
    """Median wall-clock milliseconds of one batch-1 forward at t = 500."""
    x = torch.randn(1, prior.channels, height, width, device=device)  # (1,C,H,W)
    t = torch.full((1,), 500, dtype=torch.long, device=device)
    for _ in range(3):
        prior(x, t)
    times = []
    for _ in range(repeats):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        prior(x, t)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def main() -> None:
    """Print the table."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--repeats", type=int, default=30)
    p.add_argument("--device", default="cpu")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    priors = {name: load_prior(name, a.device) for name in ("bundled", "wiener")}
    params = sum(q.numel() for q in priors["bundled"].parameters())
    print(f"device {a.device}, {a.threads} threads, bundled prior {params / 1e6:.2f}M parameters")
    print("| size | bundled ms | wiener ms | ratio |")
    print("|---|---|---|---|")
    for h, w in SIZES:
        ms = {name: ms_per_forward(prior, h, w, a.repeats, a.device) for name, prior in priors.items()}
        print(f"| {w}x{h} | {ms['bundled']:.1f} | {ms['wiener']:.1f} | {ms['bundled'] / ms['wiener']:.1f} |")


if __name__ == "__main__":
    main()
