"""Every fusion setting with its default: the one home of the core's parameters (ALGORITHM.md §2–§5).

The ROS node declares its parameters from these dataclasses, and `config/fusion.yaml` mirrors them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, is_dataclass
from typing import Any

TASKS = ("vif", "mef", "mff")
DIG_METHODS = ("dig", "static", "ddfm", "dig-blend")  # the methods that use a prior
GUIDANCE_MODES = ("weighted", "ddfm")
DETAIL_MODES = ("maxabs", "dig")
GRAD_TARGETS = ("maxabs", "weighted")
GRADIENTS = ("sobel", "forward")
DIG_SPACES = ("x0", "xt")
DIG_DISTANCES = ("l2", "l1", "ssim")
DIG_DIRECTIONS = ("ahead", "behind")
OUTPUT_RANGES = ("clamp", "minmax")
RESIZE_POLICIES = ("none", "first", "largest", "smallest")
BLEND_PROBE_MAX = 999  # dig.blend_probe_t is a timestep of a 1000-step schedule; 0 (ᾱ ≈ 1) has little to measure


@dataclass
class SamplerConfig:
    """The reduced-step DDIM sampler."""

    steps: int = 15  # DIG-N: number of reverse steps (the paper: 15/20/25/50)
    spacing: str = "quadratic"  # quadratic | uniform | sections like "8,4,3"
    eta: float = 0.0  # DDIM stochasticity (0 = deterministic DDIM)
    seed: int = 0  # the initial noise and DIG probes are seeded per frame with this


@dataclass
class DigConfig:
    """Diffusion information gain: how the per-pixel source weights are measured."""

    interval: int = 10  # update the weights every k sampler steps
    space: str = "x0"  # x0: distances of the prior's clean estimates | xt: the literal reading
    distance: str = "l1"  # l2 | l1 | ssim (l1 chosen in docs/EVALUATION.md)
    direction: str = "ahead"  # ahead: gain over the coming k steps | behind: gain since the last update
    temperature: float = 8.0  # softmax temperature, in units of the mean gain difference (docs/EVALUATION.md)
    pool_sigma: float = 1 / 32  # Gaussian pooling σ as a fraction of the image's long side
    refine_radius: int = 8  # guided filter (by each source) of the weights, radius in working-size pixels (0: off)
    refine_eps: float = 0.01  # its regulariser, on sources in [−1,1]
    blend_probe_t: int = 82  # dig-blend: the timestep its one DIG probe noises the sources to, on a 1000-step
    # schedule (a prior trained with N steps: round(t·(N−1)/999)); 82 is DIG-15's last weight update (step 10 of
    # the quadratic 15), which dig-blend took from sampler.steps and dig.interval before it had its own setting


@dataclass
class GuidanceConfig:
    """How the sources pull the sample (the guidance step of ALGORITHM.md §3, guidance.py)."""

    mode: str = "weighted"  # weighted: proximal step on the guidance energy | ddfm: DDFM's EM step
    data_sigma: float = 0.01  # σ_d: the data's uncertainty, [0,1] grey units; larger lets the prior say more
    noise_scale: float = 2.0  # σ_d is at least this times the sources' estimated noise σ (MAD), per frame (0: off)
    grad_weight: float = 16.0  # μ of the sampler's guidance steps: weight of the gradient term against the
    # intensity term at a 640 px long side (scaled by the squared size ratio on other grids: 4 at 320 px)
    blend_grad_weight: float = 32.0  # μ of dig-blend's closed-form blend, at 640 px (docs/EVALUATION.md); larger
    # than the sampler's, where a strong gradient term leaves the prior's estimate nothing to decide
    gradient: str = "forward"  # the sampler's gradient operator: forward (forward differences) | sobel (3×3, as
    # Qabf measures edges); with sobel the sampler's output from noisy sources was no closer to the clean fusion
    # than the closed-form target (test/test_sampler.py: ratio 1.10, the test asks < 0.97)
    blend_gradient: str = "sobel"  # dig-blend's gradient operator (docs/EVALUATION.md)
    blend_refits: int = 1  # dig-blend: solves again with the pixels whose edges could not be integrated let go
    refit_ratio: float = 0.5  # ... those whose gradient misses the target by more than this share of its size
    grad_target: str = "maxabs"  # maxabs | weighted
    grad_scale: float = 0.85  # maxabs: the chosen source's edges are drawn at this share of their contrast
    select_sigma: float = 1.0  # maxabs: Gaussian σ (pixels at a 640 px long side) of the edge-choice score


@dataclass
class FullResConfig:
    """The full-resolution step (fullres.py): detail the working size cannot hold, from the sources."""

    radius: int = 2  # guided upsampling of the weights: filter radius at the working size (pixels)
    eps: float = 1e-3  # guided filter regulariser
    detail: str = "maxabs"  # detail weights: maxabs (stronger local detail wins, softly) | dig (the DIG weights)
    sharpness: float = 0.5  # maxabs: exponent on the local detail energy (higher: closer to a hard choice)
    saliency_sigma: float = 2.0  # maxabs: Gaussian σ (input pixels) of the local detail energy
    shrink: float = 1.0  # noise shrinkage of the detail in units of each source's estimated noise σ (0: off)
    detail_gain: float = 0.85  # the detail is added at this share of its contrast (as guidance.grad_scale)
    solve_side: int = 640  # dig-blend: long side the closed-form blend is solved at, then detail up to the input
    # size (0 or ≥ the input: at the input size; never below the working size)
    solve_noise: float = 0.008  # ... but no finer than where the sources' estimated noise σ ([0,1] grey units),
    # averaged down with the image, falls to this (0: no limit); the detail above it is shrunk as noise
    noise_exponent: float = 3.0  # dig-blend: where that noise σ exceeds solve_noise, the DIG weights' temperature is
    # multiplied by (σ/solve_noise)^noise_exponent: flatter weights on noisy sources (0: off)


@dataclass
class VideoConfig:
    """Video mode (video.py): each frame starts from the previous one (sampler: warm start; dig-blend: the DIG
    gain carried over), and the fused frame is stabilised against the previous output (temporal.py)."""

    enabled: bool = True  # on: faster, less flicker, 0.01 less Qabf (docs/VIDEO.md); off: each frame on its own
    start_step: int = 10  # the sampler step a warm frame starts at (of sampler.steps; DIG-15: 5 steps remain)
    dig_every: int = 4  # dig-blend: frames per DIG measurement (one prior call); the frames between reuse its gain
    temporal_strength: float = 0.3  # a: share of the motion-compensated previous output kept (0: off)
    temporal_sigma: float = 0.03  # σ: output difference ([0,1]) beyond which the new frame wins (moving, changed)
    flow_side: int = 640  # the optical flow is measured with the long side at most this (0: the input's); at
    # 1280x960 a quarter of the cost, M3SVD flicker 1.090 against 1.040 at the input size (README)
    source_bound: bool = True  # the output changes along the motion by no more than its sources' mean change
    # there, a source that alone moved in full (temporal.py; docs/VIDEO.md); off: the blend alone
    max_change: float = 0.08  # mean absolute change of the sources ([0,1]) above which a frame runs in full
    max_gap: float = 5.0  # seconds between stamps above which a frame runs in full (0: no limit); longer than a
    # slow frame, since a busy node skips the pairs in between


@dataclass
class FusionConfig:
    """One fusion job: method, task, image handling and the three groups above."""

    method: str = "dig-blend"  # dig | dig-blend | static | ddfm | a classical method (average, max, laplacian, gff);
    # dig-blend: chosen in docs/EVALUATION.md (as good as the sampler at a fifteenth of the prior calls)
    task: str = "vif"  # vif: source 0 infrared, source 1 visible | mef | mff
    max_side: int = 0  # working size: the long side fusion runs at (0 = input size)
    resize: str = "none"  # policy for sources of different sizes: none (error) | first | largest | smallest
    output_range: str = "clamp"  # clamp | minmax (DDFM/CCF stretch)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    dig: DigConfig = field(default_factory=DigConfig)
    guidance: GuidanceConfig = field(default_factory=GuidanceConfig)
    fullres: FullResConfig = field(default_factory=FullResConfig)
    video: VideoConfig = field(default_factory=VideoConfig)

    def validate(self) -> FusionConfig:
        """Raise ValueError naming the first bad setting; return self."""
        _choice("task", self.task, TASKS)
        _choice("resize", self.resize, RESIZE_POLICIES)
        _choice("output_range", self.output_range, OUTPUT_RANGES)
        _choice("dig.space", self.dig.space, DIG_SPACES)
        _choice("dig.distance", self.dig.distance, DIG_DISTANCES)
        _choice("dig.direction", self.dig.direction, DIG_DIRECTIONS)
        _choice("guidance.mode", self.guidance.mode, GUIDANCE_MODES)
        _choice("guidance.grad_target", self.guidance.grad_target, GRAD_TARGETS)
        _choice("guidance.gradient", self.guidance.gradient, GRADIENTS)
        _choice("guidance.blend_gradient", self.guidance.blend_gradient, GRADIENTS)
        if self.sampler.steps < 2:
            raise ValueError(f"sampler.steps must be at least 2, got {self.sampler.steps}")
        if self.dig.interval < 1:
            raise ValueError(f"dig.interval must be at least 1, got {self.dig.interval}")
        if not 1 <= self.dig.blend_probe_t <= BLEND_PROBE_MAX:
            raise ValueError(f"dig.blend_probe_t must be in [1, {BLEND_PROBE_MAX}], got {self.dig.blend_probe_t}")
        if self.dig.temperature <= 0:
            raise ValueError(f"dig.temperature must be positive, got {self.dig.temperature}")
        if self.guidance.noise_scale < 0:
            raise ValueError(f"guidance.noise_scale must be >= 0, got {self.guidance.noise_scale}")
        if not 0 <= self.guidance.data_sigma <= 1:
            raise ValueError(f"guidance.data_sigma must be in [0, 1], got {self.guidance.data_sigma}")
        _choice("fullres.detail", self.fullres.detail, DETAIL_MODES)
        if self.video.start_step < 1 or self.video.max_change < 0 or self.video.max_gap < 0:
            raise ValueError("video.start_step must be at least 1, video.max_change and video.max_gap >= 0")
        if self.video.flow_side < 0:
            raise ValueError(f"video.flow_side must be 0 (the input's) or positive, got {self.video.flow_side}")
        if self.video.dig_every < 1:
            raise ValueError(f"video.dig_every must be at least 1, got {self.video.dig_every}")
        if not 0 <= self.video.temporal_strength <= 1:
            raise ValueError(f"video.temporal_strength must be in [0, 1], got {self.video.temporal_strength}")
        if self.video.temporal_sigma <= 0:
            raise ValueError(f"video.temporal_sigma must be > 0, got {self.video.temporal_sigma}")
        if self.dig.refine_radius < 0 or self.dig.refine_eps <= 0:
            raise ValueError("dig.refine_radius must be >= 0 and dig.refine_eps positive")
        if self.fullres.radius < 1 or self.fullres.eps <= 0:
            raise ValueError("fullres.radius must be at least 1 and fullres.eps positive")
        if self.fullres.sharpness <= 0 or self.fullres.saliency_sigma <= 0 or self.fullres.shrink < 0:
            raise ValueError("fullres.sharpness and fullres.saliency_sigma must be positive, fullres.shrink >= 0")
        if self.guidance.grad_weight < 0 or self.guidance.blend_grad_weight < 0:
            raise ValueError("guidance.grad_weight and guidance.blend_grad_weight must be >= 0")
        if self.guidance.blend_refits < 0 or self.guidance.refit_ratio <= 0:
            raise ValueError("guidance.blend_refits must be >= 0 and guidance.refit_ratio positive")
        if self.guidance.grad_scale <= 0 or self.guidance.select_sigma < 0:
            raise ValueError("guidance.grad_scale must be positive and guidance.select_sigma >= 0")
        if min(self.fullres.detail_gain, self.fullres.solve_side, self.fullres.solve_noise,
               self.fullres.noise_exponent) < 0:
            raise ValueError("fullres.detail_gain, fullres.solve_side, fullres.solve_noise and "
                             "fullres.noise_exponent must be >= 0")
        if self.max_side < 0:
            raise ValueError(f"max_side must be >= 0, got {self.max_side}")
        return self


def _choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(allowed)}; got {value!r}")


def flatten(config: Any, prefix: str = "") -> dict[str, Any]:
    """{"sampler.steps": 15, ...}: dotted names of every leaf setting."""
    out: dict[str, Any] = {}
    for f in fields(config):
        value = getattr(config, f.name)
        if is_dataclass(value):
            out.update(flatten(value, f"{prefix}{f.name}."))
        else:
            out[f"{prefix}{f.name}"] = value
    return out


def with_overrides(config: FusionConfig, overrides: dict[str, Any]) -> FusionConfig:
    """A copy of config with dotted-name overrides applied (unknown names raise KeyError)."""
    data = asdict(config)
    for name, value in overrides.items():
        *path, leaf = name.split(".")
        node = data
        for part in path:
            if part not in node or not isinstance(node[part], dict):
                raise KeyError(f"unknown fusion setting {name!r}")
            node = node[part]
        if leaf not in node or isinstance(node[leaf], dict):
            raise KeyError(f"unknown fusion setting {name!r}")
        node[leaf] = _convert(node[leaf], value, name)
    return from_dict(data)


def from_dict(data: dict[str, Any]) -> FusionConfig:
    """FusionConfig from a nested dict (as written by asdict or a YAML file)."""
    data = dict(data)
    groups = {"sampler": SamplerConfig, "dig": DigConfig, "guidance": GuidanceConfig, "fullres": FullResConfig,
              "video": VideoConfig}
    for name, cls in groups.items():
        data[name] = cls(**data.get(name, {}))
    return FusionConfig(**data)


def _convert(current: Any, value: Any, name: str) -> Any:
    """value as the type of the setting's current value ("false"/"true" for booleans)."""
    if current is None:
        return value
    if isinstance(current, bool) and isinstance(value, str):
        if value.strip().lower() not in ("true", "false", "1", "0"):
            raise ValueError(f"{name} must be true or false, got {value!r}")
        return value.strip().lower() in ("true", "1")
    return type(current)(value)
