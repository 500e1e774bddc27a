"""Diffusion information gain (ALGORITHM.md §4): per-pixel, per-source weights that change over the steps.

DIG_k measures how much one stretch of denoising recovers of source k, region by region. Source k is noised to
the sample's level, the prior denoises it, and D_k(t) = Pool(d(x̂0_k(t), c_k)) is how far the prior's clean
estimate still is from the source. The gain between two noise levels is the drop of D_k; the weights are a
softmax of the gains across sources, scaled by their mean spread so that only differences between sources
matter.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from dig2dig_ros.core.config import DigConfig
from dig2dig_ros.core.diffusion.schedule import alpha_bar

# Rec. 601 luma of an RGB prior's sample.
LUMA_RGB = (0.299, 0.587, 0.114)


def _on_host(x: torch.Tensor) -> bool:
    """Whether x (float32 on the CPU, no autograd) can go through OpenCV."""
    return x.device.type == "cpu" and x.dtype == torch.float32 and not x.requires_grad


def _per_plane(x: torch.Tensor, filt) -> torch.Tensor:
    """An OpenCV filter applied to each (H,W) plane of x (B,C,H,W)."""
    planes = x.reshape(-1, *x.shape[-2:]).contiguous().numpy()  # (B·C,H,W)
    return torch.from_numpy(np.stack([filt(p) for p in planes])).reshape(x.shape)


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of x (B,C,H,W) with reflect padding; σ in pixels (≤ 0: identity)."""
    if sigma <= 0:
        return x
    h, w = x.shape[-2:]
    radius = max(1, min(int(math.ceil(3 * sigma)), min(h, w) - 1))
    taps = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
    kernel = torch.exp(-0.5 * (taps / sigma) ** 2)
    kernel = kernel / kernel.sum()  # (2r+1,)
    if _on_host(x):  # OpenCV: the same kernel and borders, several times faster than conv2d there
        k = kernel.numpy()
        return _per_plane(x, lambda p: cv2.sepFilter2D(p, -1, k, k, borderType=cv2.BORDER_REFLECT_101))
    c = x.shape[1]
    x = F.pad(x, (radius, radius, 0, 0), mode="reflect")
    x = F.conv2d(x, kernel.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    x = F.pad(x, (0, 0, radius, radius), mode="reflect")
    return F.conv2d(x, kernel.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def distance_map(x: torch.Tensor, c: torch.Tensor, kind: str, window_sigma: float = 1.5) -> torch.Tensor:
    """Per-pixel distance d(x, c) of (K,1,H,W) tensors: l2 (squared error), l1, or ssim (1 − local SSIM)."""
    if kind == "l2":
        return (x - c) ** 2
    if kind == "l1":
        return (x - c).abs()
    if kind == "ssim":
        # On [−1,1] data: data range 2, the usual constants K1 = 0.01, K2 = 0.03.
        c1, c2 = (0.01 * 2) ** 2, (0.03 * 2) ** 2
        mx, mc = gaussian_blur(x, window_sigma), gaussian_blur(c, window_sigma)
        vx = gaussian_blur(x * x, window_sigma) - mx**2
        vc = gaussian_blur(c * c, window_sigma) - mc**2
        cov = gaussian_blur(x * c, window_sigma) - mx * mc
        ssim = ((2 * mx * mc + c1) * (2 * cov + c2)) / ((mx**2 + mc**2 + c1) * (vx + vc + c2))
        return 1 - ssim
    raise ValueError(f"unknown DIG distance {kind!r}")


def weights_from_gain(gain: torch.Tensor, temperature: float) -> torch.Tensor:
    """W = softmax_k(DIG_k / s) over sources for gain (K,1,H,W); s = τ · mean|DIG_k − mean_k DIG_k|.

    Returns (K,1,H,W) weights in [0,1] summing to 1 per pixel; uniform where the sources' gains are equal.
    """
    spread = (gain - gain.mean(dim=0, keepdim=True)).abs().mean()
    if not torch.isfinite(spread) or spread <= torch.finfo(gain.dtype).tiny:
        return torch.full_like(gain, 1.0 / gain.shape[0])
    return torch.softmax(gain / (temperature * spread), dim=0)


@dataclass
class DigRecord:
    """One weight update: the sampler step, its timestep, the gain and the resulting weights (K,1,H,W)."""

    step: int
    timestep: int
    gain: torch.Tensor
    weights: torch.Tensor


class StaticWeighting:
    """W_k = 1/K everywhere (the `static` ablation), or a given weight map; asks for no probes."""

    def __init__(self, weights: torch.Tensor) -> None:
        self.weights = weights  # (K,1,H,W)
        self.history: list[DigRecord] = []
        self.cumulative = torch.zeros_like(weights)

    def probes(self, i: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        """No extra prior inputs."""
        return None

    def update(self, i: int, eps: torch.Tensor | None) -> torch.Tensor:
        """The fixed weights (K,1,H,W)."""
        return self.weights


class DigWeighting:
    """DIG weights across sampler steps: which probes the prior must denoise, and the weights they give.

    The sampler calls :meth:`probes` at each step and batches what it returns with the sample's own forward;
    it hands the prior's ε for those inputs back to :meth:`update`, which returns the current weights
    (K,1,H,W). Which timesteps are probed and which distances are reused from earlier steps stays in here.
    """

    def __init__(self, config: DigConfig, timesteps: list[int], sources: torch.Tensor, alphas_cumprod: torch.Tensor,
                 channels: int, generator: torch.Generator | None = None, valid: torch.Tensor | None = None) -> None:
        self.config, self.timesteps = config, list(timesteps)
        self.sources = sources  # (K,1,H,W) luminance in [−1,1]
        self.valid = valid  # (K,1,H,W) 1 where a source has data, or None
        self.ac = alphas_cumprod.double().cpu()  # a no-op for Prior.alphas_host: scalar ᾱ reads, no syncs
        self.generator, self.channels = generator, channels
        k, _, h, w = sources.shape
        self.weights = self._masked(torch.full_like(sources, 1.0 / k))
        self.cumulative = torch.zeros_like(sources)
        self.history: list[DigRecord] = []
        self.pool_sigma = config.pool_sigma * max(h, w)
        self._baseline: torch.Tensor | None = None
        self._distances: dict[int, torch.Tensor] = {}  # D_k(t) by probe timestep
        self._previous: torch.Tensor | None = None  # `behind`: D at the last update
        self._pending: list[int] = []  # probe timesteps of the batch handed out by probes()
        self._first = 0  # the first sampler step: always an update

    def skip_to(self, start: int) -> None:
        """The sampler starts at step `start` (a warm-started video frame): measure the weights there."""
        self._first = start

    @property
    def baseline(self) -> torch.Tensor:
        """Pool(d(local mean of c_k, c_k)) (K,1,H,W): what the local mean alone already explains; no estimate is
        credited for recovering more than that."""
        if self._baseline is None:
            self._baseline = self.pooled_distance(gaussian_blur(self.sources, self.pool_sigma))
        return self._baseline

    def is_update(self, i: int) -> bool:
        """Whether sampler step i refreshes the weights."""
        return i % self.config.interval == 0 or i == self._first

    def _ahead(self, i: int) -> int:
        """The timestep k steps after step i; −1 (the clean source, D = 0) past the end."""
        j = i + self.config.interval
        return self.timesteps[j] if j < len(self.timesteps) else -1

    def probe_timesteps(self, i: int) -> list[int]:
        """Timesteps at which the sources must be noised and denoised at step i (empty if nothing is needed)."""
        if not self.is_update(i):
            return []
        t = self.timesteps[i]
        if self.config.space == "xt" or self.config.direction == "behind":
            return [t]
        return [s for s in (t, self._ahead(i)) if s >= 0 and s not in self._distances]

    def probes(self, i: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Prior inputs for step i: every source noised at each probe timestep with one shared ε draw,
        (K·P,C,H,W), and their timesteps (K·P,); None when step i needs none."""
        self._pending = self.probe_timesteps(i)
        if not self._pending:
            return None
        k, _, h, w = self.sources.shape
        c, sources = self.channels, self.sources.expand(k, self.channels, h, w)  # gray replicated for RGB
        noise = torch.randn((1, c, h, w), generator=self.generator, device=sources.device, dtype=sources.dtype)
        inputs = [alpha_bar(self.ac, s) ** 0.5 * sources + (1 - alpha_bar(self.ac, s)) ** 0.5 * noise
                  for s in self._pending]
        steps = torch.tensor([s for s in self._pending for _ in range(k)], device=sources.device, dtype=torch.long)
        self._inputs = torch.cat(inputs)
        return self._inputs, steps

    def update(self, i: int, eps: torch.Tensor | None) -> torch.Tensor:
        """The weights (K,1,H,W) after step i, given the prior's ε (K·P,C,H,W) for this step's probes."""
        if not self.is_update(i):
            return self.weights
        k = self.sources.shape[0]
        t = self.timesteps[i]
        estimates = {}
        for j, s in enumerate(self._pending):
            x_t, e = self._inputs[j * k : (j + 1) * k], eps[j * k : (j + 1) * k]
            a = alpha_bar(self.ac, s)
            if self.config.space == "xt":  # literal reading: x_k^t against one DDIM jump on
                t_prev = self.timesteps[i + 1] if i + 1 < len(self.timesteps) else -1
                a_prev = alpha_bar(self.ac, t_prev)
                x0 = (x_t - (1 - a) ** 0.5 * e) / a**0.5
                jumped = a_prev**0.5 * x0 + (1 - a_prev) ** 0.5 * e
                gain = self.pooled_distance(luminance(x_t)) - self.pooled_distance(luminance(jumped))
                return self._set(i, t, gain)
            estimates[s] = luminance((x_t - (1 - a) ** 0.5 * e) / a**0.5)
        for s, x0 in estimates.items():
            self._distances[s] = self.structure_distance(x0)
        if self.config.direction == "ahead":
            ahead = self._ahead(i)
            gain = self._distances[t] - (self._distances[ahead] if ahead >= 0 else 0.0)
        else:
            previous = self.baseline if self._previous is None else self._previous  # first: from the local mean
            gain = previous - self._distances[t]
            self._previous, self._distances = self._distances[t], {}
        return self._set(i, t, gain)

    @property
    def gain(self) -> torch.Tensor | None:
        """The DIG gain (K,1,H,W) of the last update, or None before the first."""
        return self.history[-1].gain if self.history else None

    def set_gain(self, i: int, gain: torch.Tensor) -> torch.Tensor:
        """The weights (K,1,H,W) at step i from a gain (K,1,H,W) measured elsewhere (a previous video frame),
        refined along this frame's sources; replaces step i's own record if it has one."""
        if self.history and self.history[-1].step == i:
            last = self.history.pop()
            self.cumulative = self.cumulative - last.gain
        return self._set(i, self.timesteps[i], gain)

    def _set(self, i: int, t: int, gain: torch.Tensor) -> torch.Tensor:
        weights = weights_from_gain(gain, self.config.temperature)
        if self.config.refine_radius > 0:
            weights = refine_weights(weights, self.sources, self.config.refine_radius, self.config.refine_eps)
        self.weights = self._masked(weights)
        self.cumulative = self.cumulative + gain
        self.history.append(DigRecord(step=i, timestep=t, gain=gain, weights=self.weights))
        return self.weights

    def _masked(self, weights: torch.Tensor) -> torch.Tensor:
        """Weights with sources forced to 0 where they have no data (renormalised; uniform where none has)."""
        return mask_weights(weights, self.valid)

    def pooled_distance(self, x0: torch.Tensor) -> torch.Tensor:
        """D = Pool(d(x0_k, c_k)) for clean estimates x0 (K,1,H,W)."""
        return gaussian_blur(distance_map(x0, self.sources, self.config.distance), self.pool_sigma)

    def structure_distance(self, x0: torch.Tensor) -> torch.Tensor:
        """D capped at the local-mean baseline, so a gain measures structure, not distance to the prior's mean."""
        return torch.minimum(self.pooled_distance(x0), self.baseline)


def box_mean(x: torch.Tensor, radius: int) -> torch.Tensor:
    """Mean over (2r+1)² windows of x (B,C,H,W) with reflected borders, by running sums (O(1) per pixel).

    On the CPU OpenCV's box filter does it (same borders; about 8× faster than torch's reflect padding there).
    """
    n = 2 * radius + 1
    if _on_host(x):
        return _per_plane(x, lambda p: cv2.blur(p, (n, n), borderType=cv2.BORDER_REFLECT_101))
    x = F.pad(x, (radius, radius, radius, radius), mode="reflect")
    c = F.pad(x.cumsum(-1), (1, 0))
    x = (c[..., n:] - c[..., :-n]) / n
    c = F.pad(x.cumsum(-2), (0, 0, 1, 0))
    return (c[..., n:, :] - c[..., :-n, :]) / n


def refine_weights(weights: torch.Tensor, guides: torch.Tensor, radius: int, eps: float) -> torch.Tensor:
    """Weights (K,1,H,W) guided-filtered by their own sources (K,1,H,W) (He et al. 2013, as in GFF), so they follow
    the sources' edges instead of the pooling window; clipped to [0,1] and renormalised to sum to 1."""
    radius = min(radius, (min(weights.shape[-2:]) - 1) // 2)
    if radius < 1:
        return weights
    mean_i, mean_p = box_mean(guides, radius), box_mean(weights, radius)
    var = box_mean(guides * guides, radius) - mean_i**2
    a = (box_mean(guides * weights, radius) - mean_i * mean_p) / (var + eps)
    b = mean_p - a * mean_i
    q = (box_mean(a, radius) * guides + box_mean(b, radius)).clamp(0, 1)
    total = q.sum(0, keepdim=True)
    return torch.where(total > 1e-6, q / total.clamp_min(1e-6), torch.full_like(q, 1.0 / len(q)))


def mask_weights(weights: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
    """Weights (K,1,H,W) times validity masks (K,1,H,W), renormalised per pixel: where every valid source's
    weight is 0 the valid sources share equally; unchanged where no source is valid or when valid is None."""
    if valid is None:
        return weights
    masked = weights * valid
    total = masked.sum(0, keepdim=True)
    count = valid.sum(0, keepdim=True)
    shared = valid / count.clamp_min(1)
    out = torch.where(total > 1e-12, masked / total.clamp_min(1e-12), shared)
    return torch.where(count > 0, out, weights)


def luminance(x: torch.Tensor) -> torch.Tensor:
    """(B,C,H,W) → (B,1,H,W): identity for C = 1, Rec. 601 luma for C = 3."""
    if x.shape[1] == 1:
        return x
    coeffs = torch.tensor(LUMA_RGB, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return (x * coeffs).sum(dim=1, keepdim=True)
