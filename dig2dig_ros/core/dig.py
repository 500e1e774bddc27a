"""Diffusion information gain (ALGORITHM.md §4): per-pixel, per-source weights that change over the steps.

DIG_k measures how much one stretch of denoising recovers of source k, region by region. Source k is noised to
the sample's level, the prior denoises it, and D_k(t) = Pool(d(x̂0_k(t), c_k)) is how far the prior's clean
estimate still is from the source. The gain between two noise levels is the drop of D_k; the weights are a
softmax of the gains across sources, scaled by their mean spread so that only differences between sources
matter.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from dig2dig_ros.core.config import DigConfig


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of x (B,C,H,W) with reflect padding; σ in pixels (≤ 0: identity)."""
    if sigma <= 0:
        return x
    h, w = x.shape[-2:]
    radius = max(1, min(int(math.ceil(3 * sigma)), min(h, w) - 1))
    taps = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
    kernel = torch.exp(-0.5 * (taps / sigma) ** 2)
    kernel = kernel / kernel.sum()  # (2r+1,)
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


@dataclass
class DigTracker:
    """Holds the DIG state across sampler steps: cached distances, current weights, the update history.

    The sampler asks :meth:`probes` which timesteps the sources must be denoised at for step i (batched with
    the sample's own forward), hands the prior's clean estimates back to :meth:`update`, and reads
    :attr:`weights`.
    """

    config: DigConfig
    timesteps: list[int]
    sources: torch.Tensor  # (K,1,H,W) luminance in [−1,1]
    weights: torch.Tensor = field(init=False)  # (K,1,H,W)
    history: list[DigRecord] = field(default_factory=list, init=False)
    cumulative: torch.Tensor = field(init=False)  # (K,1,H,W) running sum of the gains
    _distances: dict[int, torch.Tensor] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        k = self.sources.shape[0]
        self.weights = torch.full_like(self.sources, 1.0 / k)
        self.cumulative = torch.zeros_like(self.sources)
        h, w = self.sources.shape[-2:]
        self.pool_sigma = self.config.pool_sigma * max(h, w)
        self._baseline: torch.Tensor | None = None

    @property
    def baseline(self) -> torch.Tensor:
        """Pool(d(local mean of c_k, c_k)) (K,1,H,W): what the local mean alone already explains; no estimate is
        credited for recovering more than that. Computed on first use (static sampling never needs it)."""
        if self._baseline is None:
            self._baseline = self.pooled_distance(gaussian_blur(self.sources, self.pool_sigma))
        return self._baseline

    def is_update(self, i: int) -> bool:
        """Whether sampler step i refreshes the weights."""
        return i % self.config.interval == 0

    def probes(self, i: int) -> list[int]:
        """Timesteps at which the sources must be noised and denoised at step i (empty if no update)."""
        if not self.is_update(i):
            return []
        t = self.timesteps[i]
        if self.config.space == "xt" or self.config.direction == "behind":
            return [t]
        return [s for s in (t, self._ahead(i)) if s >= 0 and s not in self._distances]

    def _ahead(self, i: int) -> int:
        """The timestep k steps after step i; −1 (the clean source, D = 0) past the end."""
        j = i + self.config.interval
        return self.timesteps[j] if j < len(self.timesteps) else -1

    def pooled_distance(self, x0: torch.Tensor) -> torch.Tensor:
        """D = Pool(d(x0_k, c_k)) for clean estimates x0 (K,1,H,W)."""
        return gaussian_blur(distance_map(x0, self.sources, self.config.distance), self.pool_sigma)

    def structure_distance(self, x0: torch.Tensor) -> torch.Tensor:
        """D capped at the local-mean baseline, so a gain measures structure, not distance to the prior's mean."""
        return torch.minimum(self.pooled_distance(x0), self.baseline)

    def update(self, i: int, estimates: dict[int, torch.Tensor], next_estimates: torch.Tensor | None = None):
        """Refresh the weights at step i from the prior's clean estimates of the sources, per probe timestep.

        For ``space = xt`` pass, as ``next_estimates``, the sources after one DDIM jump to the next timestep,
        and as ``estimates[t]`` the noised sources x_k^t themselves.
        """
        t = self.timesteps[i]
        if self.config.space == "xt":
            gain = self.pooled_distance(estimates[t]) - self.pooled_distance(next_estimates)
        else:
            for s, x0 in estimates.items():
                self._distances[s] = self.structure_distance(x0)
            if self.config.direction == "ahead":
                ahead = self._ahead(i)
                gain = self._distances[t] - (self._distances[ahead] if ahead >= 0 else 0.0)
            else:
                previous = self._distances.get(-2, self.baseline)  # first update: from the local mean
                gain = previous - self._distances[t]
                self._distances = {-2: self._distances[t]}
        self.weights = weights_from_gain(gain, self.config.temperature)
        self.cumulative = self.cumulative + gain
        self.history.append(DigRecord(step=i, timestep=t, gain=gain, weights=self.weights))
        return self.weights
