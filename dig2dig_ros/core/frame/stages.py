"""The stages of one fused frame, each a function with typed inputs and outputs.

    prepare → DIG weights → weights to the solve size → solve → detail → (stabilise) → compose

`prepare` gives the sources' luminance at the input, working and solve sizes (:class:`Prepared`); `to_working`
puts the working-size planes in the prior's layout (:class:`Working`). dig-blend then measures its DIG weights
with one prior call (:func:`dig_weights`), brings them to the size it solves its blend at (:func:`to_solve_size`:
flattened on noisy sources, upsampled along the sources' edges) and solves the closed-form blend there
(:func:`solve`). The sampler methods run the sampler instead (:func:`sample`: DIG weights and the guided steps
interleaved), the classical methods their rule at the input size (:func:`classical`). :func:`detail` brings a
solved luminance up to the input size with the sources' own detail; video mode stabilises it over time
(temporal.py), and `compose` merges the sources' colour back (fusion.Fuser.compose).

:class:`StageTimer` runs a stage by name: it checks the caller's ``should_stop`` before the stages that are
cancellation points (:data:`STOP_POINTS`) and, when given a profile dict, adds each stage's seconds to it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TypeVar

import numpy as np
import torch

from dig2dig_ros.core.config import FullResConfig, FusionConfig, GuidanceConfig
from dig2dig_ros.core.diffusion.dig import DigRecord, DigWeighting
from dig2dig_ros.core.diffusion.guidance import guidance_target, make_guidance
from dig2dig_ros.core.diffusion.priors import Prior
from dig2dig_ros.core.diffusion.sampler import SamplingCancelled, make_weighting, noise_to
from dig2dig_ros.core.diffusion.sampler import sample as run_sampler
from dig2dig_ros.core.diffusion.schedule import alpha_bar
from dig2dig_ros.core.frame import fullres, imaging

# The stages a profile names, in frame order (a method runs some of them: fusion.METHODS).
STAGES = ("prepare", "noise", "flow", "dig_weights", "to_solve_size", "solve", "sample", "detail", "stabilise",
          "compose")
# Cancellation points: the stage → what FusionCancelled says would have run next.
STOP_POINTS = {"dig_weights": "the DIG weights", "to_solve_size": "the blend", "detail": "the full-resolution step"}

T = TypeVar("T")


class FusionCancelled(RuntimeError):
    """The caller's ``should_stop`` stopped a fusion between two sampler steps or two of dig-blend's stages."""


class StageTimer:
    """Runs stages by name: a cancellation check before each stop point, and their seconds into ``profile``."""

    def __init__(self, should_stop: Callable[[], bool] | None = None, profile: dict[str, float] | None = None):
        self.should_stop, self.profile = should_stop, profile

    def __call__(self, name: str, fn: Callable[..., T], *args, **kwargs) -> T:
        """``fn(*args, **kwargs)`` as stage ``name``; raises FusionCancelled first if ``should_stop`` says so."""
        if name in STOP_POINTS and self.should_stop is not None and self.should_stop():
            raise FusionCancelled(f"stopped before {STOP_POINTS[name]}")
        if self.profile is None:
            return fn(*args, **kwargs)
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            self.add(name, time.perf_counter() - start)

    def add(self, name: str, seconds: float) -> None:
        """Count ``seconds`` to stage ``name`` (when profiling)."""
        if self.profile is not None:
            self.profile[name] = self.profile.get(name, 0.0) + seconds


@dataclass
class Prepared:
    """The sources as fusion takes them."""

    sources: np.ndarray  # (K,H,W) float32 luminance in [0,1] at the common (input) size
    small: np.ndarray  # (K,h,w) the same at the working size
    solve: np.ndarray  # (K,h2,w2) the same at the size dig-blend solves its blend at (``small`` if that is it)
    noise: list[float] | None  # per source, imaging.noise_sigma at the input size (None: not needed: no prior, or
    # a sampler method with the input at the working size)
    chromas: list[np.ndarray | None]  # per source (H,W,2) Cr,Cb or None
    valid: np.ndarray | None  # (K,H,W) float32 1 where a source has data, or None (all valid)
    valid_small: np.ndarray | None  # (K,h,w)

    @property
    def size(self) -> tuple[int, int]:
        """The input (H, W)."""
        return self.sources.shape[1], self.sources.shape[2]

    @property
    def larger_than_working(self) -> bool:
        """Whether the input is larger than the working size (dig-blend then solves at ``solve``)."""
        return self.small.shape != self.sources.shape


@dataclass
class WarmStart:
    """What a video frame takes from the previous one.

    The sampler starts from ``sample`` noised to timesteps[start]; dig-blend takes the DIG gain from ``gain``
    instead of measuring it (``measure`` False), or measures it and mixes in ``momentum`` of ``gain``.
    """

    sample: torch.Tensor | None = None  # (1,C,H',W') a previous frame's final sample at the padded working size
    start: int = 0  # the sampler step to start at
    gain: torch.Tensor | None = None  # (K,1,H',W') a previous frame's DIG gain (dig-blend)
    measure: bool = True  # dig-blend: measure DIG on this frame (one prior call)
    momentum: float = 0.0  # dig-blend: share of ``gain`` in a new measurement


@dataclass
class Working:
    """The working-size sources in the prior's layout."""

    sources: torch.Tensor  # (K,1,H',W') luminance in [−1,1], padded to the prior's multiple
    valid: torch.Tensor | None  # (K,1,H',W') 1 where a source has data, or None
    size: tuple[int, int]  # (h, w): the image inside the padding

    def crop(self, maps: torch.Tensor) -> np.ndarray:
        """Maps (N,1,H',W') on this grid → (N,h,w) on the host, padding cut away."""
        h, w = self.size
        return maps[:, 0, :h, :w].cpu().numpy()


@dataclass
class DigWeights:
    """DIG weights at the working size and the measurement they came from."""

    weights: torch.Tensor  # (K,1,H',W') in [0,1], summing to 1 per pixel
    weighting: DigWeighting  # its history, cumulative DIG and gain
    prior_calls: int  # 1 when measured on this frame, 0 when a previous frame's gain was reused


@dataclass
class SolveGrid:
    """What the closed-form blend is solved on: sources and weights at one size."""

    sources: torch.Tensor  # (K,1,h2',w2') in [−1,1]; the image is the top-left ``size``, the rest padding
    weights: torch.Tensor  # (K,1,h2',w2')
    size: tuple[int, int]  # (h2, w2)
    clamp: bool  # clamp y* to [−1,1] before the output mapping (at the working size, as the sampler's output is)
    fit: fullres.WeightFit | None = None  # the working-size fit the weights were brought up with (None: not)


@dataclass
class Solved:
    """A fused luminance at the size it was solved at, and the weights it was solved with."""

    luminance: np.ndarray  # (h2,w2) float32 in [0,1]
    weights: np.ndarray  # (K,h2,w2) float32
    fit: fullres.WeightFit | None = None  # the working-size fit they came from, applied again at the input size


@dataclass
class Sampled:
    """The sampler's output at the working size."""

    solved: Solved  # luminance and final weights, cropped
    history: list[DigRecord]  # every weight update (padded maps)
    cumulative: torch.Tensor  # (K,1,H',W') cumulative DIG
    prior_calls: int
    sample: torch.Tensor  # (1,C,H',W') the final sample


def to_working(small: np.ndarray, valid_small: np.ndarray | None, prior: Prior, device: torch.device) -> Working:
    """Sources (K,h,w) in [0,1] and validity masks (K,h,w) → the prior's padded layout (:class:`Working`)."""
    padded, size = imaging.pad_to_multiple(np.moveaxis(small, 0, -1), prior.multiple)  # (H',W',K)
    sources = torch.from_numpy(np.moveaxis(padded, -1, 0).copy()).to(device)  # (K,H',W')
    sources = (sources * 2 - 1).unsqueeze(1).float()  # (K,1,H',W') in [−1,1]
    valid = None
    if valid_small is not None:
        vp, _ = imaging.pad_to_multiple(np.moveaxis(valid_small, 0, -1), prior.multiple)
        valid = (torch.from_numpy(np.moveaxis(vp, -1, 0).copy()).to(device) > 0.5).float().unsqueeze(1)
    prior.check_size(*sources.shape[-2:])
    return Working(sources, valid, size)


def dig_weights(prior: Prior, working: Working, config: FusionConfig, probe: int, generator: torch.Generator,
                warm: WarmStart | None = None) -> DigWeights:
    """dig-blend's DIG weights: probes of the sources at timestep ``probe``, one batched prior call.

    With a warm start carrying a gain of this size, that gain is reused (no prior call) or, when this frame
    measures, mixed with the new one.
    """
    weighting = DigWeighting(config.dig, [probe], working.sources, prior.alphas_host, prior.channels, generator,
                             working.valid)
    last = 0  # the one weight update, at the probe timestep
    carried = warm.gain if warm is not None and warm.gain is not None else None
    if carried is not None and carried.shape != working.sources.shape:
        carried = None
    if carried is not None and not warm.measure:
        return DigWeights(weighting.set_gain(last, carried), weighting, 0)
    probes = weighting.probes(last)
    with torch.no_grad():
        eps = prior(*probes) if probes is not None else None
    weights = weighting.update(last, eps)
    if carried is not None and warm.momentum > 0:
        weights = weighting.set_gain(last, warm.momentum * carried + (1 - warm.momentum) * weighting.gain)
    return DigWeights(weights, weighting, int(probes is not None))


def noise_factor(prep: Prepared, config: FullResConfig) -> float:
    """dig-blend: the factor on its DIG temperature for these sources' noise (fullres.noise_factor; 1: clean or no
    estimate)."""
    return fullres.noise_factor(prep.noise, config.solve_noise, config.noise_exponent)


def working_grid(working: Working, weights: torch.Tensor, factor: float) -> SolveGrid:
    """The blend solved at the working size, on the padded sources, under weights (K,1,H',W') flattened by
    ``factor`` (fullres.flatten_weights)."""
    if factor != 1.0:
        weights = torch.from_numpy(fullres.flatten_weights(weights.cpu().numpy(), factor)).to(weights)
    return SolveGrid(working.sources, weights, working.size, clamp=True)


def to_solve_size(prep: Prepared, working: Working, weights: torch.Tensor, config: FullResConfig,
                  device: torch.device) -> SolveGrid:
    """DIG weights (K,1,H',W') at the working size → the grid dig-blend solves its blend on: flattened on noisy
    sources (:func:`noise_factor`) and, where the input is larger than the working size, brought up to
    ``prep.solve`` along the sources' edges (fullres.upsample_weights)."""
    factor = noise_factor(prep, config)
    if not prep.larger_than_working:
        return working_grid(working, weights, factor)
    w = fullres.flatten_weights(working.crop(weights).astype(np.float32), factor)  # (K,h,w)
    fit = None
    if prep.solve is not prep.small:
        fit = fullres.fit_weights(w, prep.small, config)  # the detail applies the same fit at the input size
        w = fullres.apply_fit(fit, prep.solve)  # (K,h2,w2)
    sources = (torch.from_numpy(prep.solve).to(device).unsqueeze(1) * 2).sub_(1)  # (K,1,h2,w2) in [−1,1]
    return SolveGrid(sources, torch.from_numpy(w).to(device).unsqueeze(1), prep.solve.shape[1:], clamp=False, fit=fit)


def blend_target(sources: torch.Tensor, weights: torch.Tensor, config: GuidanceConfig) -> torch.Tensor:
    """dig-blend's y* (1,1,h,w) for sources and weights (K,1,h,w): the guidance energy with the blend's own μ and
    gradient, and its refits."""
    energy = replace(config, grad_weight=config.blend_grad_weight, gradient=config.blend_gradient)
    return guidance_target(sources, weights, energy, config.blend_refits)


def solve(grid: SolveGrid, config: GuidanceConfig, output_range: str) -> Solved:
    """The closed-form blend y* on ``grid``, mapped to [0,1] (imaging.to_output), and the weights it used."""
    y = blend_target(grid.sources, grid.weights, config)  # (1,1,h2',w2')
    if grid.clamp:
        y = y.clamp(-1, 1)
    h, w = grid.size
    luminance = imaging.to_output(y[0, 0, :h, :w].cpu().numpy(), output_range).astype(np.float32)
    return Solved(luminance, grid.weights[:, 0, :h, :w].cpu().numpy().astype(np.float32), grid.fit)


def sample(prior: Prior, working: Working, small: np.ndarray, timesteps: list[int], config: FusionConfig,
           generator: torch.Generator, warm: WarmStart | None = None,
           should_stop: Callable[[], bool] | None = None) -> Sampled:
    """The sampler methods (dig, static, ddfm) at the working size: from noise, or from ``warm``'s sample noised
    to its start step; ``should_stop`` is checked between steps (FusionCancelled). ``small``: the sources (K,h,w)
    on the host, for their noise σ."""
    noise = max(imaging.noise_sigma(c) for c in small)  # the sources' noise σ, from the host copy
    guidance_cfg = replace(config.guidance, mode="ddfm") if config.method == "ddfm" else config.guidance
    sources = working.sources
    c, (h, w) = prior.channels, sources.shape[-2:]
    x = torch.randn((1, c, h, w), generator=generator, device=sources.device, dtype=sources.dtype)
    start = 0
    if (warm is not None and warm.sample is not None and warm.sample.shape == x.shape
            and 0 < warm.start < len(timesteps)):
        start = warm.start
        ab = alpha_bar(prior.alphas_host, timesteps[start])
        x = noise_to(warm.sample.to(sources.device, sources.dtype), ab, generator)
    weighting = make_weighting(prior, sources, timesteps, config.dig, config.method == "dig", generator,
                               working.valid)
    if start > 0 and isinstance(weighting, DigWeighting):
        weighting.skip_to(start)
    try:
        guidance = make_guidance(sources, guidance_cfg, noise)
        out = run_sampler(prior, x, timesteps, weighting, guidance, start=start, eta=config.sampler.eta,
                          generator=generator, should_stop=should_stop)
    except SamplingCancelled as exc:
        raise FusionCancelled(str(exc)) from exc
    luminance = imaging.to_output(working.crop(out.luminance)[0], config.output_range).astype(np.float32)
    solved = Solved(luminance, working.crop(out.weights).astype(np.float32))
    return Sampled(solved, out.history, out.cumulative_dig, out.prior_calls, out.sample)


def classical(sources: np.ndarray, method: str) -> np.ndarray:
    """A classical method's fused luminance (H,W) in [0,1] of sources (K,H,W) in [0,1]."""
    from dig2dig_ros.core.frame.classical import CLASSICAL_METHODS

    return np.clip(CLASSICAL_METHODS[method](list(sources)), 0, 1).astype(np.float32)


def detail(solved: Solved, prep: Prepared, config: FullResConfig) -> Solved:
    """The full-resolution step: a luminance solved at the working or solve size → the input size, the band above
    from the sources' own detail (fullres.reconstruct); weights there, zero where a source has no data."""
    luminance, weights = fullres.reconstruct(solved.luminance, solved.weights, prep.sources, config, prep.solve,
                                             prep.noise, solved.fit)
    if prep.valid is not None:
        weights = fullres.mask_weights(weights.copy() if weights is solved.weights else weights, prep.valid)
    return Solved(luminance, weights)
