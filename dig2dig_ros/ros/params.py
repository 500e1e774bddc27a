"""The fusion node's parameters: names, defaults, descriptions, ranges; and their mapping to FusionConfig.

Fusion settings come from `dig2dig_ros.core.config` (their one home); node settings are listed here.
`config/fusion.yaml` sets the values a deployment uses.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dig2dig_ros.core import config as core

IR_NORMALIZATIONS = ("percentile", "fixed")
REFERENCES = ("visible", "ir")
TRANSPORTS = ("raw", "compressed")


@dataclass(frozen=True)
class ParamSpec:
    """One declared ROS parameter."""

    name: str
    default: Any
    description: str
    choices: tuple[str, ...] = ()
    low: float | None = None
    high: float | None = None
    read_only: bool = False


NODE_PARAMS: list[ParamSpec] = [
    ParamSpec("prior", "bundled", "diffusion prior: bundled, wiener, adm:PATH or diffusers:DIR", read_only=True),
    ParamSpec("device", "auto", "auto (CUDA when available), cpu, cuda or cuda:N", read_only=True),
    ParamSpec("working_size", 320, "long side in pixels that fusion runs at (0 = input size)", low=0, high=4096),
    ParamSpec("reference_frame", "visible", "whose header (stamp, frame_id) the outputs carry", REFERENCES),
    ParamSpec("input_transport", "raw", "raw: <topic>; compressed: <topic>/compressed", TRANSPORTS,
              read_only=True),
    ParamSpec("sync.queue_size", 10, "messages kept per input for synchronisation", low=1, high=1000,
              read_only=True),
    ParamSpec("sync.slop", 0.05, "largest stamp difference, in seconds, of a synchronised pair", low=0.0, high=10.0,
              read_only=True),
    ParamSpec("sync.allow_headerless", False, "pair messages without stamps by arrival time", read_only=True),
    ParamSpec("qos.reliable_inputs", False, "subscribe reliable instead of sensor-data (best effort)",
              read_only=True),
    ParamSpec("qos.input_depth", 5, "subscription queue depth", low=1, high=100, read_only=True),
    ParamSpec("qos.output_depth", 2, "publisher queue depth (reliable)", low=1, high=100, read_only=True),
    ParamSpec("ir.normalization", "percentile", "mono16 infrared to [0,1]: per-frame percentile stretch or fixed",
              IR_NORMALIZATIONS),
    ParamSpec("ir.range_low", 0.0, "fixed normalisation: counts mapped to 0", low=0.0, high=65535.0),
    ParamSpec("ir.range_high", 65535.0, "fixed normalisation: counts mapped to 1", low=0.0, high=65535.0),
    ParamSpec("ir.percentile_low", 1.0, "percentile stretch: lower percentile", low=0.0, high=100.0),
    ParamSpec("ir.percentile_high", 99.0, "percentile stretch: upper percentile", low=0.0, high=100.0),
    ParamSpec("overlay_source", "ir", "source whose DIG weight the overlay shows", REFERENCES),
    ParamSpec("log_every", 30, "one summary log line per this many fused frames", low=1, high=100000),
    ParamSpec("diagnostics_period", 1.0, "seconds between /diagnostics messages", low=0.1, high=60.0,
              read_only=True),
]

FUSION_DESCRIPTIONS: dict[str, str] = {
    "method": "dig (DIG weights), static (fixed 1/K weights), or a classical method: average, max, laplacian, gff",
    "resize": "inputs of different sizes: none (drop the pair with a warning), first, largest, smallest",
    "output_range": "fused luminance to 8 bits: clamp, or minmax (DDFM/CCF stretch)",
    "sampler.steps": "reverse diffusion steps (DIG-15 / DIG-25)",
    "sampler.spacing": "timestep spacing: quadratic, uniform, or section counts like 8,4,3",
    "sampler.eta": "DDIM stochasticity (0 = deterministic)",
    "sampler.seed": "seed of the initial noise and the DIG probes, the same every frame",
    "dig.interval": "update the DIG weights every k sampler steps",
    "dig.space": "x0: distances of the prior's clean estimates; xt: the literal reading",
    "dig.distance": "per-pixel distance: l2, l1 or ssim",
    "dig.direction": "ahead: gain over the coming k steps; behind: gain since the last update",
    "dig.temperature": "softmax temperature in units of the mean gain difference between sources",
    "dig.pool_sigma": "Gaussian pooling sigma as a fraction of the long side",
    "guidance.mode": "guidance energy: weighted",
    "guidance.step_size": "relaxation toward the guidance target per step, (0, 1]",
    "guidance.grad_weight": "weight of the gradient term against the intensity term",
    "guidance.grad_target": "gradient target: maxabs (strongest weighted edge) or weighted (blend)",
}
FUSION_RANGES: dict[str, tuple[float, float]] = {
    "sampler.steps": (2, 1000), "sampler.eta": (0.0, 1.0), "sampler.seed": (0, 2**31 - 1),
    "dig.interval": (1, 1000), "dig.temperature": (0.001, 1000.0), "dig.pool_sigma": (0.0, 1.0),
    "guidance.step_size": (0.001, 1.0), "guidance.grad_weight": (0.0, 100.0),
}
FUSION_CHOICES: dict[str, tuple[str, ...]] = {
    "resize": core.RESIZE_POLICIES, "output_range": core.OUTPUT_RANGES, "dig.space": core.DIG_SPACES,
    "dig.distance": core.DIG_DISTANCES, "dig.direction": core.DIG_DIRECTIONS, "guidance.mode": core.GUIDANCE_MODES,
    "guidance.grad_target": core.GRAD_TARGETS,
}
# Settings the node does not expose: the task is VIF; the working size is `working_size`.
NOT_DECLARED = ("task", "max_side")


def fusion_params() -> list[ParamSpec]:
    """A ParamSpec for every FusionConfig setting the node exposes, defaults from the core."""
    specs = []
    for name, default in core.flatten(core.FusionConfig()).items():
        if name in NOT_DECLARED:
            continue
        low, high = FUSION_RANGES.get(name, (None, None))
        specs.append(ParamSpec(name, default, FUSION_DESCRIPTIONS[name], FUSION_CHOICES.get(name, ()), low, high))
    return specs


def all_params() -> list[ParamSpec]:
    """Every parameter the fusion node declares."""
    return NODE_PARAMS + fusion_params()


def fusion_config(values: dict[str, Any]) -> core.FusionConfig:
    """A validated FusionConfig from parameter values (dotted names); raises ValueError if invalid."""
    overrides = {name: values[name] for name in core.flatten(core.FusionConfig()) if name in values}
    overrides["task"] = "vif"
    overrides["max_side"] = int(values.get("working_size", 0))
    return core.with_overrides(core.FusionConfig(), overrides).validate()


def check_value(spec: ParamSpec, value: Any) -> str | None:
    """Why value is not acceptable for spec, or None when it is."""
    if spec.choices and value not in spec.choices:
        return f"{spec.name} must be one of {', '.join(spec.choices)}; got {value!r}"
    if spec.low is not None and isinstance(value, int | float) and not spec.low <= value <= spec.high:
        return f"{spec.name} must be in [{spec.low}, {spec.high}]; got {value}"
    return None
