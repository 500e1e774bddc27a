"""The Dig2DIG sampler: DDIM over an unconditional prior, each step guided toward the DIG-weighted sources.

One step (the paper's Eq. 3: an unconditional step, the weighted multimodal guidance, and noise), for x_t (1,C,H,W):
    eps    = prior(x_t, t)                                     (batched with the weighting's probes)
    x0     = clamp((x_t − √(1−ᾱ_t)·eps) / √ᾱ_t, −1, 1)
    W      = weighting.update(i, probe eps)
    y      = luminance(x0);  y' = guidance(y, W, ᾱ_t);  x0' = x0 + (y' − y)
    eps'   = (x_t − √ᾱ_t·x0') / √(1−ᾱ_t)
    x_prev = √ᾱ_prev·x0' + √(1−ᾱ_prev−σ²)·eps' + σ·z          (DDIM; σ = 0 when eta = 0)
The guidance starts from the prior's estimate y (see guidance.py), so the prior shapes the result.
The weighting (dig.py) decides which probes it needs and how it turns their ε into weights; the loop does not
know. A video frame may start from a given sample part-way through the schedule (`start`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import torch

from dig2dig_ros.core.config import DigConfig, GuidanceConfig
from dig2dig_ros.core.diffusion.dig import DigRecord, DigWeighting, StaticWeighting, luminance, mask_weights
from dig2dig_ros.core.diffusion.guidance import make_guidance
from dig2dig_ros.core.diffusion.priors.base import Prior
from dig2dig_ros.core.diffusion.schedule import alpha_bar, previous_timestep

__all__ = ["SampleResult", "SamplerError", "SamplingCancelled", "luminance", "sample", "sample_dig"]


class SamplerError(RuntimeError):
    """The sampler produced non-finite values; the message names the step."""


class SamplingCancelled(RuntimeError):
    """``should_stop`` asked the sampler to stop between two steps."""


class Weighting(Protocol):
    """Per-pixel source weights across the steps (dig.DigWeighting, dig.StaticWeighting)."""

    history: list[DigRecord]
    cumulative: torch.Tensor

    def probes(self, i: int) -> tuple[torch.Tensor, torch.Tensor] | None: ...

    def update(self, i: int, eps: torch.Tensor | None) -> torch.Tensor: ...


class Guidance(Protocol):
    """Moves the prior's luminance estimate toward the weighted sources (guidance.py)."""

    def __call__(self, y0: torch.Tensor, weights: torch.Tensor, alpha_bar: float) -> torch.Tensor: ...


@dataclass
class SampleResult:
    """What one sampling run returns: luminance (1,1,H,W) in [−1,1], weights and DIG records."""

    luminance: torch.Tensor
    weights: torch.Tensor  # (K,1,H,W) final weights
    history: list[DigRecord]
    cumulative_dig: torch.Tensor  # (K,1,H,W)
    prior_calls: int
    sample: torch.Tensor  # (1,C,H,W) the final sample, for warm-starting the next video frame


def predict_x0(x_t: torch.Tensor, eps: torch.Tensor, ab: float) -> torch.Tensor:
    """x̂0 = (x_t − √(1−ᾱ)·ε) / √ᾱ."""
    return (x_t - (1 - ab) ** 0.5 * eps) / ab**0.5


def ddim_step(x0: torch.Tensor, eps: torch.Tensor, ab_prev: float, sigma: float,
              noise: torch.Tensor | None) -> torch.Tensor:
    """x_prev = √ᾱ_prev·x0 + √(1−ᾱ_prev−σ²)·ε + σ·z."""
    x = ab_prev**0.5 * x0 + max(1 - ab_prev - sigma**2, 0.0) ** 0.5 * eps
    return x if noise is None or sigma == 0 else x + sigma * noise


def ddim_sigma(eta: float, ab: float, ab_prev: float) -> float:
    """DDIM's σ for stochasticity eta between ᾱ and ᾱ_prev."""
    if eta == 0 or ab_prev >= 1:
        return 0.0
    return eta * ((1 - ab_prev) / (1 - ab) * (1 - ab / ab_prev)) ** 0.5


def noise_to(x0: torch.Tensor, ab: float, generator: torch.Generator | None) -> torch.Tensor:
    """x_t = √ᾱ·x0 + √(1−ᾱ)·ε: a clean image (1,C,H,W) noised to a timestep (SDEdit's start)."""
    eps = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
    return ab**0.5 * x0 + (1 - ab) ** 0.5 * eps


@torch.no_grad()
def sample(
    prior: Prior,
    x: torch.Tensor,
    timesteps: list[int],
    weighting: Weighting,
    guidance: Guidance,
    start: int = 0,
    eta: float = 0.0,
    generator: torch.Generator | None = None,
    callback: Callable[[dict], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> SampleResult:
    """Run the reverse steps timesteps[start:] from x (1,C,H,W), the sample at timesteps[start]."""
    ac = prior.alphas_host  # (T,) float64 on the CPU
    calls = 0
    for i in range(start, len(timesteps)):
        if should_stop is not None and should_stop():
            raise SamplingCancelled(f"stopped before sampler step {i}")
        t, t_prev = timesteps[i], previous_timestep(timesteps, i)
        ab, ab_prev = alpha_bar(ac, t), alpha_bar(ac, t_prev)
        probes = weighting.probes(i)  # extra prior inputs (P,C,H,W) and their timesteps (P,), or None
        batch, steps = x, torch.tensor([t], device=x.device)
        if probes is not None:
            batch, steps = torch.cat([x, probes[0]]), torch.cat([steps, probes[1]])
        eps_all = prior(batch, steps)  # (1 + P, C, H, W): the sample and the probes in one call
        calls += 1
        eps = eps_all[:1]
        weights = weighting.update(i, eps_all[1:] if probes is not None else None)  # (K,1,H,W)
        x0 = predict_x0(x, eps, ab).clamp(-1, 1)
        y = luminance(x0)  # (1,1,H,W)
        x0 = x0 + (guidance(y, weights, ab) - y)
        eps = (x - ab**0.5 * x0) / (1 - ab) ** 0.5
        sigma = ddim_sigma(eta, ab, ab_prev)
        noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype) if sigma > 0 else None
        x = x0 if t_prev < 0 else ddim_step(x0, eps, ab_prev, sigma, noise)
        if not torch.isfinite(x).all():
            raise SamplerError(f"non-finite values in the sample at sampler step {i} (t={t})")
        if callback is not None:
            callback({"i": i, "t": t, "x": x, "x0": x0, "weights": weights})
    return SampleResult(luminance=luminance(x).clamp(-1, 1), weights=weights, history=weighting.history,
                        cumulative_dig=weighting.cumulative, prior_calls=calls, sample=x)


def make_weighting(prior: Prior, sources: torch.Tensor, timesteps: list[int], dig: DigConfig, dynamic: bool,
                   generator: torch.Generator | None = None, valid: torch.Tensor | None = None) -> Weighting:
    """DIG weights (dynamic) or fixed 1/K weights for sources (K,1,H,W), zero where valid (K,1,H,W) is 0."""
    if not dynamic:
        return StaticWeighting(mask_weights(torch.full_like(sources, 1.0 / sources.shape[0]), valid))
    return DigWeighting(dig, timesteps, sources, prior.alphas_host, prior.channels, generator, valid)


@torch.no_grad()
def sample_dig(
    prior: Prior,
    sources: torch.Tensor,
    timesteps: list[int],
    dig: DigConfig,
    guidance: GuidanceConfig,
    dynamic_weights: bool = True,
    eta: float = 0.0,
    generator: torch.Generator | None = None,
    callback: Callable[[dict], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    valid: torch.Tensor | None = None,
) -> SampleResult:
    """Sample the fused luminance for sources (K,1,H,W) in [−1,1] (H, W multiples of prior.multiple) from noise.

    ``dynamic_weights=False`` is the `static` ablation: W_k = 1/K everywhere, no DIG probes.
    ``callback`` receives {"i", "t", "x", "x0", "weights"} after each step.
    """
    k, _, h, w = sources.shape
    prior.check_size(h, w)
    weighting = make_weighting(prior, sources, timesteps, dig, dynamic_weights, generator, valid)
    x = torch.randn((1, prior.channels, h, w), generator=generator, device=sources.device, dtype=sources.dtype)
    return sample(prior, x, list(timesteps), weighting, make_guidance(sources, guidance), eta=eta,
                  generator=generator, callback=callback, should_stop=should_stop)
