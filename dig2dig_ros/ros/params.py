"""The fusion node's parameters: names, defaults, descriptions, ranges; and their mapping to FusionConfig.

Fusion settings come from `dig2dig_ros.core.config` (their one home); node settings are listed here.
`config/fusion.yaml` sets the values a deployment uses.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from dig2dig_ros.core import config as core
from dig2dig_ros.core.frame import thermal
from dig2dig_ros.core.frame.auto_registration import AutoSettings
from dig2dig_ros.core.frame.registration import RegistrationError, parse_homography

IR_NORMALIZATIONS = thermal.POLICIES
REFERENCES = ("visible", "ir")
TRANSPORTS = ("raw", "compressed")
RELIABILITY_CHOICES = ("auto", "reliable", "best_effort")  # dig2dig_ros.ros.qos_match reads the same three
AUTO_HOMOGRAPHY = "auto"  # ir.homography: estimated from the images while running (core.frame.auto_registration)
_AUTO = AutoSettings()  # the ir.auto.* defaults


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
    dynamic: bool = False  # any type: e.g. a list of 9 numbers or a file name


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
    ParamSpec("sync.interval_bound", 0.5,
              "emit a pair without waiting for the next frame when that frame cannot be closer: assume each "
              "camera's next stamp is at least this fraction of its median frame interval away (0 = wait, "
              "the strict C++ ApproximateTime rule)", low=0.0, high=1.0, read_only=True),
    ParamSpec("sync.max_wait", 0.25,
              "seconds a pair may wait for a better partner before it is emitted anyway (0 = never), e.g. "
              "a single pair or the last before a camera stops", low=0.0, high=10.0, read_only=True),
    ParamSpec("qos.input_reliability", "auto",
              "image subscriptions: auto = reliable when every publisher of the topic is, best effort otherwise "
              "(followed as publishers come and go); reliable or best_effort fix it (so does the topic's "
              "qos_overrides.<topic>.subscription.reliability, which wins)", RELIABILITY_CHOICES, read_only=True),
    ParamSpec("qos.input_depth", 5, "subscription queue depth", low=1, high=100, read_only=True),
    ParamSpec("qos.output_depth", 2, "publisher queue depth (reliable)", low=1, high=100, read_only=True),
    ParamSpec("ir.normalization", "percentile",
              "16-bit or float (kelvin, °C) infrared to [0,1]: per-frame percentile stretch or fixed range",
              IR_NORMALIZATIONS),
    ParamSpec("ir.range_low", 0.0, "fixed normalisation: value mapped to 0 (counts, kelvin or °C); < range_high",
              low=-100000.0, high=100000.0),
    ParamSpec("ir.range_high", 65535.0, "fixed normalisation: value mapped to 1 (counts, kelvin or °C)",
              low=-100000.0, high=100000.0),
    ParamSpec("ir.percentile_low", 1.0, "percentile stretch: lower percentile", low=0.0, high=100.0),
    ParamSpec("ir.percentile_high", 99.0, "percentile stretch: upper percentile", low=0.0, high=100.0),
    ParamSpec("ir.homography", "",
              "infrared → visible pixel homography: 9 numbers, row-major, or a file holding them; 'auto' = "
              "estimated from the images while running (ir.auto.*); empty = the cameras are aligned. The "
              "infrared frame is warped into the visible geometry; outside the infrared view its weight is 0",
              dynamic=True),
    ParamSpec("ir.auto.pairs", _AUTO.pairs, "ir.homography auto: pairs each estimate uses (the newest)",
              low=2, high=64, read_only=True),
    ParamSpec("ir.auto.spacing", _AUTO.spacing_s, "ir.homography auto: seconds (stamps) between the pairs kept",
              low=0.0, high=3600.0, read_only=True),
    ParamSpec("ir.auto.refine_period", _AUTO.refine_period_s,
              "ir.homography auto: seconds between re-estimates once aligned (0 = estimate once)",
              low=0.0, high=86400.0, read_only=True),
    ParamSpec("ir.auto.refine_rate", _AUTO.refine_rate,
              "ir.homography auto: share of the way an agreeing re-estimate moves the homography",
              low=0.01, high=1.0, read_only=True),
    ParamSpec("ir.auto.warn_px", _AUTO.warn_px,
              "ir.homography auto: a re-estimate this far (mean, visible px) from the current one means the "
              "rig changed: it replaces the homography and the status goes WARN", low=0.1, high=10000.0,
              read_only=True),
    ParamSpec("ir.auto.warn_hold", _AUTO.warn_hold_s,
              "ir.homography auto: seconds a changed or refused estimate keeps the status WARN",
              low=0.0, high=86400.0, read_only=True),
    ParamSpec("overlay_source", "ir", "source whose DIG weight the overlay shows", REFERENCES),
    ParamSpec("log_every", 30, "one summary log line per this many fused frames", low=1, high=100000),
    ParamSpec("diagnostics_period", 1.0, "seconds between /diagnostics messages", low=0.1, high=60.0,
              read_only=True),
    ParamSpec("torch_threads", 0, "CPU threads torch may use (0 = torch's default); leave cores to DDS",
              low=0, high=256, read_only=True),
    ParamSpec("pipeline", True,
              "fuse on two threads: the next pair's first half (up to the blend solve) while this pair's detail, "
              "stabilisation and publishing run (more frames/s on a multi-core CPU); false = one frame at a time",
              read_only=True),
]

FUSION_DESCRIPTIONS: dict[str, str] = {
    "method": "dig (DIG weights), static (W = 1/K), ddfm (DDFM, W = 1/2), dig-blend (no sampling), or a classical "
              "method: average, max, laplacian, gff",
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
    "guidance.mode": "guidance step: weighted (proximal step on the guidance energy) or ddfm (DDFM's EM step)",
    "guidance.data_sigma": "data uncertainty in [0,1] grey units: how long the sources outweigh the prior's estimate",
    "guidance.noise_scale": "sigma_d is at least this times the sources' estimated noise sigma, per frame (0: off)",
    "guidance.grad_weight": "sampler: weight of the gradient term against the intensity term, at a 640 px long side",
    "guidance.blend_grad_weight": "dig-blend: weight of the gradient term in the closed-form blend, at 640 px",
    "guidance.gradient": "sampler: gradient operator of the guidance energy, forward (differences) or sobel (3x3)",
    "guidance.blend_gradient": "dig-blend: gradient operator of the closed-form blend, sobel (3x3) or forward",
    "guidance.blend_refits": "dig-blend: solves again, each letting go the pixels whose edges could not be integrated",
    "guidance.refit_ratio": "dig-blend refits: a pixel is let go where its gradient misses the target by more than "
                            "this share of the target's size",
    "guidance.grad_target": "gradient target: maxabs (strongest weighted edge) or weighted (blend)",
    "guidance.grad_scale": "maxabs: share of the chosen source's edge contrast the target asks for",
    "guidance.select_sigma": "maxabs: Gaussian sigma of the edge-choice score, pixels at a 640 px long side",
    "dig.refine_radius": "guided filter of the DIG weights by each source, radius in working-size pixels (0: off)",
    "dig.refine_eps": "regulariser of that guided filter (sources in [-1,1])",
    "dig.blend_probe_t": "dig-blend: timestep (of a 1000-step schedule) its one DIG probe noises the sources to, "
                         "independent of sampler.* and dig.interval; 82 is where DIG-15 last updates its weights",
    "video.enabled": "video mode: frames as a sequence (DIG gain or sampler from the last frame; output stabilised)",
    "video.start_step": "sampler step a warm-started frame starts at (the steps before it are skipped)",
    "video.max_change": "mean absolute change of the sources above which a frame runs in full",
    "video.max_gap": "seconds between stamps above which a frame runs in full (0: no limit)",
    "video.dig_every": "dig-blend in video mode: frames per DIG measurement; the frames between reuse its gain",
    "video.flow_side": "video mode: long side in pixels the optical flow is measured at (0: the input's); smaller "
                       "is faster, larger flickers less",
    "video.temporal_strength": "video mode: share of the motion-compensated previous output kept (0: off)",
    "video.temporal_sigma": "video mode: output difference ([0,1]) beyond which the new frame wins",
    "video.source_bound": "video mode: the output changes along the motion by no more than its sources' mean change",
    "fullres.radius": "guided upsampling of the DIG weights: filter radius at the working size, pixels",
    "fullres.eps": "guided upsampling regulariser",
    "fullres.detail": "full-resolution detail weights: maxabs (stronger local detail wins, softly) or dig",
    "fullres.sharpness": "maxabs detail: exponent on the local detail energy",
    "fullres.saliency_sigma": "maxabs detail: Gaussian sigma of the local detail energy, input pixels",
    "fullres.shrink": "noise shrinkage of the full-resolution detail, in units of the estimated noise sigma",
    "fullres.detail_gain": "share of the sources' full-resolution detail contrast that is added",
    "fullres.solve_side": "dig-blend: long side the closed-form blend is solved at (0: input size)",
    "fullres.solve_noise": "dig-blend: the solve size shrinks until the sources' noise sigma, averaged down, is at "
                           "most this ([0,1] grey units; 0: off)",
    "fullres.noise_exponent": "dig-blend: where the sources' noise sigma exceeds solve_noise, the DIG temperature "
                              "is multiplied by (sigma/solve_noise)^this: flatter weights on noisy sources (0: off)",
}
FUSION_RANGES: dict[str, tuple[float, float]] = {
    "sampler.steps": (2, 1000), "sampler.eta": (0.0, 1.0), "sampler.seed": (0, 2**31 - 1),
    "dig.interval": (1, 1000), "dig.temperature": (0.001, 1000.0), "dig.pool_sigma": (0.0, 1.0),
    "guidance.data_sigma": (0.0, 1.0), "guidance.noise_scale": (0.0, 100.0), "guidance.grad_weight": (0.0, 10000.0),
    "guidance.blend_grad_weight": (0.0, 10000.0), "guidance.blend_refits": (0, 10),
    "guidance.refit_ratio": (0.01, 10.0),
    "guidance.grad_scale": (0.01, 2.0), "guidance.select_sigma": (0.0, 50.0),
    "dig.refine_radius": (0, 256), "dig.refine_eps": (1e-8, 100.0), "dig.blend_probe_t": (1, core.BLEND_PROBE_MAX),
    "video.start_step": (1, 1000),
    "video.max_change": (0.0, 1.0), "video.max_gap": (0.0, 3600.0), "video.dig_every": (1, 10000),
    "video.flow_side": (0, 100000),
    "video.temporal_strength": (0.0, 1.0), "video.temporal_sigma": (1e-4, 1.0),
    "fullres.radius": (1, 64), "fullres.eps": (1e-8, 10.0), "fullres.sharpness": (0.01, 10.0),
    "fullres.saliency_sigma": (0.1, 50.0), "fullres.shrink": (0.0, 10.0), "fullres.detail_gain": (0.0, 2.0),
    "fullres.solve_side": (0, 16384), "fullres.solve_noise": (0.0, 1.0), "fullres.noise_exponent": (0.0, 16.0),
}
FUSION_CHOICES: dict[str, tuple[str, ...]] = {
    "resize": core.RESIZE_POLICIES, "output_range": core.OUTPUT_RANGES, "dig.space": core.DIG_SPACES,
    "dig.distance": core.DIG_DISTANCES, "dig.direction": core.DIG_DIRECTIONS, "guidance.mode": core.GUIDANCE_MODES,
    "guidance.grad_target": core.GRAD_TARGETS, "guidance.gradient": core.GRADIENTS,
    "guidance.blend_gradient": core.GRADIENTS,
    "fullres.detail": core.DETAIL_MODES,
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
        # a setting added to the core without a description here is still declared, pointing at the core
        description = FUSION_DESCRIPTIONS.get(name, f"fusion setting {name} (see dig2dig_ros/core/config.py)")
        specs.append(ParamSpec(name, default, description, FUSION_CHOICES.get(name, ()), low, high))
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


def thermal_settings(values: dict[str, Any]) -> thermal.ThermalSettings:
    """The infrared normalisation from parameter values; raises ValueError naming the parameters."""
    settings = thermal.ThermalSettings(values["ir.normalization"], float(values["ir.range_low"]),
                                       float(values["ir.range_high"]), float(values["ir.percentile_low"]),
                                       float(values["ir.percentile_high"]))
    try:
        return settings.validate()
    except ValueError as exc:
        raise ValueError(f"ir.*: {exc}") from None


def check_values(values: dict[str, Any]) -> str | None:
    """Why a complete set of values cannot work together (inverted ranges, a bad homography), or None."""
    try:
        thermal_settings(values)
        if "ir.homography" in values:
            homography(values)
            if is_auto_homography(values):
                auto_settings(values)
    except ValueError as exc:
        return str(exc)
    return None


def is_auto_homography(values: dict[str, Any]) -> bool:
    """True when ir.homography is 'auto' (estimated from the images)."""
    value = values.get("ir.homography")
    return isinstance(value, str) and value.strip().lower() == AUTO_HOMOGRAPHY


def auto_settings(values: dict[str, Any]) -> AutoSettings:
    """The ir.auto.* parameters as AutoSettings; raises ValueError naming what is wrong."""
    return AutoSettings(pairs=int(values["ir.auto.pairs"]), spacing_s=float(values["ir.auto.spacing"]),
                        refine_period_s=float(values["ir.auto.refine_period"]),
                        refine_rate=float(values["ir.auto.refine_rate"]), warn_px=float(values["ir.auto.warn_px"]),
                        warn_hold_s=float(values["ir.auto.warn_hold"])).validate()


def homography(values: dict[str, Any]) -> np.ndarray | None:
    """ir.homography as a 3x3 array, or None when empty or 'auto'; raises ValueError naming the parameter."""
    value = values["ir.homography"]
    if is_auto_homography(values):
        return None
    try:
        return parse_homography(value if isinstance(value, str) or value is None else list(value))
    except RegistrationError as exc:
        raise ValueError(f"ir.homography: {exc}") from None


def check_value(spec: ParamSpec, value: Any) -> str | None:
    """Why value is not acceptable for spec, or None when it is."""
    if spec.choices and value not in spec.choices:
        return f"{spec.name} must be one of {', '.join(spec.choices)}; got {value!r}"
    if spec.low is not None and isinstance(value, int | float) and not spec.low <= value <= spec.high:
        return f"{spec.name} must be in [{spec.low}, {spec.high}]; got {value}"
    return None
