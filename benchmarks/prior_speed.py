"""Milliseconds per prior forward (batch 1) at 320x256 and 640x512: bundled vs wiener, and their ratio.

Usage: .venv/bin/python benchmarks/prior_speed.py [--threads N] [--repeats N] [--device cpu|cuda]
Reports the median over the repeats after a warm-up; run it with nothing else busy on the machine.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from dig2dig_ros.core.diffusion.priors import Prior, load_prior

SIZES = ((256, 320), (512, 640))  # (H, W)
DIG15_FORWARDS = {1: 15, 3: 2}  # DIG-15 with two sources: 15 batch-1 forwards and 2 of batch 3 (sample + sources)


@torch.inference_mode()
def ms_per_forward(prior: Prior, height: int, width: int, repeats: int, device: str, batch: int = 1) -> float:
    """Median wall-clock milliseconds of one forward of ``batch`` images at t = 500."""
    x = torch.randn(batch, prior.channels, height, width, device=device)  # (B,C,H,W)
    t = torch.full((batch,), 500, dtype=torch.long, device=device)
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
    h, w = SIZES[0]
    frame = sum(n * ms_per_forward(priors["bundled"], h, w, a.repeats, a.device, b) for b, n in DIG15_FORWARDS.items())
    print(f"bundled prior time per DIG-15 frame at {w}x{h} (15 x batch 1 + 2 x batch 3): {frame:.0f} ms")


if __name__ == "__main__":
    main()
