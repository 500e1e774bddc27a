"""The Dig2DIG sampler: DDIM over an unconditional prior, rectified by DIG-weighted guidance each step.

One step (ALGORITHM.md §3), for x_t (1,C,H,W):
    eps    = prior(x_t, t)
    x0     = clamp((x_t − √(1−ᾱ_t)·eps) / √ᾱ_t, −1, 1)
    y      = luminance(x0);  y' = rectify(y, sources, W);  x0' = x0 + (y' − y)
    eps'   = (x_t − √ᾱ_t·x0') / √(1−ᾱ_t)
    x_prev = √ᾱ_prev·x0' + √(1−ᾱ_prev−σ²)·eps' + σ·z        (DDIM; σ = 0 when eta = 0)
The sources' DIG probes ride in the same prior call as the sample (one forward per step).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from dig2dig_ros.core.config import DigConfig, GuidanceConfig
from dig2dig_ros.core.dig import DigRecord, DigTracker
from dig2dig_ros.core.guidance import guidance_target, rectify
from dig2dig_ros.core.priors.base import Prior
from dig2dig_ros.core.schedule import alpha_bar, previous_timestep

# Rec. 601 luma of an RGB prior's sample.
LUMA_RGB = (0.299, 0.587, 0.114)


class SamplerError(RuntimeError):
    """The sampler produced non-finite values; the message names the step."""


@dataclass
class SampleResult:
    """What one sampling run returns: luminance (1,1,H,W) in [−1,1], weights and DIG records."""

    luminance: torch.Tensor
    weights: torch.Tensor  # (K,1,H,W) final weights
    history: list[DigRecord]
    cumulative_dig: torch.Tensor  # (K,1,H,W)
    prior_calls: int


def luminance(x: torch.Tensor) -> torch.Tensor:
    """(B,C,H,W) → (B,1,H,W): identity for C = 1, Rec. 601 luma for C = 3."""
    if x.shape[1] == 1:
        return x
    coeffs = torch.tensor(LUMA_RGB, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return (x * coeffs).sum(dim=1, keepdim=True)


def predict_x0(x_t: torch.Tensor, eps: torch.Tensor, ab: torch.Tensor) -> torch.Tensor:
    """x̂0 = (x_t − √(1−ᾱ)·ε) / √ᾱ, for per-sample ᾱ (B,1,1,1)."""
    return (x_t - (1 - ab).sqrt() * eps) / ab.sqrt()


def ddim_step(x0: torch.Tensor, eps: torch.Tensor, ab_prev: float, sigma: float, noise: torch.Tensor | None):
    """x_prev = √ᾱ_prev·x0 + √(1−ᾱ_prev−σ²)·ε + σ·z."""
    x = ab_prev**0.5 * x0 + max(1 - ab_prev - sigma**2, 0.0) ** 0.5 * eps
    return x if noise is None or sigma == 0 else x + sigma * noise


def _ddim_sigma(eta: float, ab: float, ab_prev: float) -> float:
    if eta == 0 or ab_prev >= 1:
        return 0.0
    return eta * ((1 - ab_prev) / (1 - ab) * (1 - ab / ab_prev)) ** 0.5


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
) -> SampleResult:
    """Sample the fused luminance for sources (K,1,H,W) in [−1,1] (H, W multiples of prior.multiple).

    ``dynamic_weights=False`` is the `static` ablation: W_k = 1/K everywhere, no DIG probes.
    ``callback`` receives {"i", "t", "x", "x0", "weights"} after each step.
    """
    k, _, h, w = sources.shape
    prior.check_size(h, w)
    device, dtype = sources.device, sources.dtype
    c = prior.channels
    ac = prior.alphas_cumprod  # on the prior's device, for per-sample ᾱ of the batch
    ac_host = ac.double().cpu()  # one copy per frame: scalar ᾱ reads below cost no device sync
    probe_sources = sources.expand(k, c, h, w)  # gray sources replicated for an RGB prior
    tracker = DigTracker(dig, list(timesteps), sources)
    x = torch.randn((1, c, h, w), generator=generator, device=device, dtype=dtype)  # (1,C,H,W)
    calls = 0
    target = guidance_target(sources, tracker.weights, guidance)  # (1,1,H,W), refreshed with the weights
    for i, t in enumerate(timesteps):
        t_prev = previous_timestep(timesteps, i)
        ab, ab_prev = alpha_bar(ac_host, t), alpha_bar(ac_host, t_prev)
        updating = dynamic_weights and tracker.is_update(i)
        probes = tracker.probes(i) if updating else []  # may be empty when the distances are cached
        # One prior call: the sample, then every source noised at each probe timestep (one shared ε draw).
        batch, batch_t = [x], [t]
        if probes:
            probe_noise = torch.randn((1, c, h, w), generator=generator, device=device, dtype=dtype)
        for s in probes:
            a = alpha_bar(ac_host, s)
            batch.append(a**0.5 * probe_sources + (1 - a) ** 0.5 * probe_noise)  # (K,C,H,W)
            batch_t += [s] * k
        xb = torch.cat(batch)  # (1 + K·P, C, H, W)
        tb = torch.tensor(batch_t, device=device, dtype=torch.long)
        eps_all = prior(xb, tb)
        calls += 1
        ab_b = ac.to(device)[tb].view(-1, 1, 1, 1).to(dtype)
        x0_all = predict_x0(xb, eps_all, ab_b)
        x0 = x0_all[:1].clamp(-1, 1)  # (1,C,H,W)
        if updating:
            estimates = {s: luminance(x0_all[1 + j * k : 1 + (j + 1) * k]) for j, s in enumerate(probes)}
            after_jump = None
            if dig.space == "xt":  # literal reading: distances of x_k^t and of one DDIM jump on
                xs, es = xb[1 : 1 + k], eps_all[1 : 1 + k]
                after_jump = luminance(ddim_step(predict_x0(xs, es, ab_b[1 : 1 + k]), es, ab_prev, 0.0, None))
                estimates = {t: luminance(xs)}
            tracker.update(i, estimates, after_jump)
            target = guidance_target(sources, tracker.weights, guidance)
        y = luminance(x0)  # (1,1,H,W)
        x0r = x0 + (rectify(y, target, guidance) - y)
        eps_r = (x - ab**0.5 * x0r) / (1 - ab) ** 0.5
        sigma = _ddim_sigma(eta, ab, ab_prev)
        noise = torch.randn(x.shape, generator=generator, device=device, dtype=dtype) if sigma > 0 else None
        x = x0r if t_prev < 0 else ddim_step(x0r, eps_r, ab_prev, sigma, noise)
        if not torch.isfinite(x).all():
            raise SamplerError(f"non-finite values in the sample at sampler step {i} (t={t})")
        if callback is not None:
            callback({"i": i, "t": t, "x": x, "x0": x0r, "weights": tracker.weights})
    return SampleResult(
        luminance=luminance(x).clamp(-1, 1),
        weights=tracker.weights,
        history=tracker.history,
        cumulative_dig=tracker.cumulative,
        prior_calls=calls,
    )
