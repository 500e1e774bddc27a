"""The fusion options shared by every command that fuses, and the Fuser they describe."""

from __future__ import annotations

import argparse

from dig2dig_ros.core import imaging
from dig2dig_ros.core.config import RESIZE_POLICIES, TASKS, FusionConfig, with_overrides
from dig2dig_ros.core.fusion import Fuser, FusionError
from dig2dig_ros.core.priors import PriorError
from dig2dig_ros.core.sampler import SamplerError

DEFAULT_PRIOR = "bundled"
# What a command reports as one error line and exit status 2.
USER_ERRORS = (FusionError, PriorError, SamplerError, imaging.ImageError, ValueError, KeyError, OSError)


def add_fusion_options(parser: argparse.ArgumentParser) -> None:
    """The fusion options every command that fuses shares (task, method, prior, sizes, --set)."""
    defaults = FusionConfig()
    parser.add_argument("--task", choices=TASKS, default=defaults.task, help="vif: SRC1 infrared, SRC2 visible")
    parser.add_argument("--method", default=defaults.method, help="dig, static, average, max, laplacian, gff")
    parser.add_argument("--steps", type=int, default=defaults.sampler.steps, help="sampler steps (DIG-N)")
    parser.add_argument("--prior", default=DEFAULT_PRIOR, help="bundled, wiener, adm:PATH, diffusers:DIR")
    parser.add_argument("--max-side", type=int, default=defaults.max_side, help="working size (0: input size)")
    parser.add_argument("--seed", type=int, default=defaults.sampler.seed)
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    parser.add_argument("--resize", choices=RESIZE_POLICIES, default=defaults.resize,
                        help="policy for sources of different sizes (default: error)")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help="any fusion setting by dotted name, e.g. dig.interval=5 (repeatable)")


def build_fuser(args: argparse.Namespace) -> Fuser:
    """A Fuser from the parsed fusion options."""
    overrides: dict[str, object] = {
        "task": args.task, "method": args.method, "max_side": args.max_side, "resize": args.resize,
        "sampler.steps": args.steps, "sampler.seed": args.seed,
    }
    for item in args.set:
        name, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--set expects NAME=VALUE, got {item!r}")
        overrides[name.strip()] = value.strip()
    config = with_overrides(FusionConfig(), overrides)
    return Fuser(config, prior=args.prior, device=args.device)
