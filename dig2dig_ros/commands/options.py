"""The fusion options shared by every command that fuses, and the Fuser they describe."""

from __future__ import annotations

import argparse

import numpy as np

from dig2dig_ros.core.config import RESIZE_POLICIES, TASKS, FusionConfig, with_overrides
from dig2dig_ros.core.diffusion.priors import PriorError
from dig2dig_ros.core.diffusion.sampler import SamplerError
from dig2dig_ros.core.frame import imaging
from dig2dig_ros.core.frame.fusion import Fuser, FusionError
from dig2dig_ros.core.frame.registration import parse_homography, register_pair
from dig2dig_ros.core.frame.thermal import POLICIES, ThermalSettings, prepare_infrared

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


def add_infrared_options(parser: argparse.ArgumentParser) -> None:
    """VIF: how the infrared source (SRC1) is normalised and registered, as the node does it."""
    parser.add_argument("--ir-homography", metavar="H",
                        help="infrared → visible pixel homography: 9 comma-separated numbers (row-major) or a "
                             "file holding them; the infrared image is warped into the visible one's geometry")
    parser.add_argument("--ir-normalization", choices=POLICIES, default="percentile",
                        help="16-bit / float infrared to [0,1] (8-bit passes unchanged)")
    parser.add_argument("--ir-range", default="0,65535", metavar="LOW,HIGH",
                        help="fixed normalisation range, in counts, kelvin or °C")
    parser.add_argument("--ir-percentiles", default="1,99", metavar="LOW,HIGH", help="percentile stretch")


def prepare_sources(args: argparse.Namespace, images: list[np.ndarray]) -> tuple[list, list | None]:
    """VIF sources as the node prepares them: the infrared one normalised (core.frame.thermal) and registered into the
    visible geometry (--ir-homography); returns the images and the validity masks (None when unregistered)."""
    h = parse_homography(args.ir_homography)
    if args.task != "vif":
        if h is not None:
            raise ValueError("--ir-homography needs --task vif (SRC1 infrared, SRC2 visible)")
        return images, None
    low, high = _pair(args.ir_range, "--ir-range")
    p_low, p_high = _pair(args.ir_percentiles, "--ir-percentiles")
    thermal = ThermalSettings(args.ir_normalization, low, high, p_low, p_high).validate()
    images = [prepare_infrared(images[0], thermal), *images[1:]]
    if h is None:
        return images, None
    if len(images) != 2:
        raise ValueError(f"--ir-homography registers one infrared and one visible image, got {len(images)}")
    ir, vis, valid = register_pair(images[0], images[1], h, "visible")
    return [ir, vis], valid


def _pair(text: str, option: str) -> tuple[float, float]:
    try:
        low, high = (float(v) for v in str(text).split(","))
    except ValueError:
        raise ValueError(f"{option} expects LOW,HIGH, got {text!r}") from None
    return low, high
