"""Cost of one forward of the paper's ADM prior (guided-diffusion 256x256 unconditional): params, FLOPs, time.

Random weights, float32, CPU by default. FLOPs come from torch's FlopCounterMode (a multiply-add counts 2),
with attention forced onto the math kernel so that its matmuls are counted. Usage:

    .venv/bin/python benchmarks/adm_cost.py [--height 256 --width 256 --batch 1 --repeats 2 --device cpu]
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from dig2dig_ros.core.diffusion.priors.adm import AdmConfig, AdmPrior, AdmUNet


def count_flops(prior: AdmPrior, x: torch.Tensor, t: torch.Tensor) -> int:
    """FLOPs of one forward (attention on the math kernel so FlopCounterMode sees its matmuls)."""
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        prior(x, t)
    return counter.get_total_flops()


def seconds_per_forward(prior: AdmPrior, x: torch.Tensor, t: torch.Tensor, repeats: int) -> float:
    """Mean wall time of ``repeats`` forwards after one warm-up."""
    with torch.no_grad():
        prior(x, t)
        if x.is_cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(repeats):
            prior(x, t)
        if x.is_cuda:
            torch.cuda.synchronize()
    return (time.perf_counter() - start) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--height", type=int, default=256)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    args = parser.parse_args()

    torch.manual_seed(0)
    prior = AdmPrior(AdmUNet(AdmConfig()), dtype=getattr(torch, args.dtype)).to(args.device).eval()
    x = torch.randn(args.batch, 3, args.height, args.width, device=args.device)  # (B,3,H,W)
    t = torch.full((args.batch,), 500, dtype=torch.long, device=args.device)  # (B,)

    params = sum(p.numel() for p in prior.parameters())
    flops = count_flops(prior, x, t)
    seconds = seconds_per_forward(prior, x, t, args.repeats)
    where = f"{args.device} ({torch.get_num_threads()} threads)" if args.device == "cpu" else args.device
    rows = [
        ("input", f"{args.batch}x3x{args.height}x{args.width}, {args.dtype}, {where}"),
        ("parameters", f"{params:,}"),
        ("GFLOP / forward", f"{flops / 1e9:,.1f}"),
        ("s / forward", f"{seconds:.3f} (mean of {args.repeats} after 1 warm-up)"),
        ("GFLOP/s", f"{flops / 1e9 / seconds:,.1f}"),
    ]
    for name, value in rows:
        print(f"{name:<16} {value}")


if __name__ == "__main__":
    main()
