"""The fused frame at the input resolution from a fusion run at a smaller working size.

Fusion (the sampler and DIG) runs at the working size; what it cannot see is the band of detail between the
working size and the input size. That band is taken from the sources themselves:

    F = up(Y_w) + γ·Σ_k D_k ⊙ shrink(c_k − up(down(c_k)))

with Y_w the fused luminance at the working size (or at the larger size `dig-blend` solves its blend at), γ the
detail gain (as guidance.grad_scale: detail a little below full contrast), c_k the sources at the input size,
down/up the same area / bilinear pair the base went through, D_k per-pixel detail weights and `shrink` a
noise-adaptive shrinkage (Donoho's MAD estimate of each source's noise level; no shrinkage on a clean
source). The DIG weights are brought up along the sources' edges with the fast guided filter (He & Sun 2015:
the guided filter's linear coefficients are fitted at the working size and applied to the full-resolution
guide), then clipped to [0,1] and renormalised to sum to 1 per pixel. No halos: the weights follow the
sources' edges, not a blur. The step's settings, defaults included, are config.FullResConfig's (the node's).
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from dig2dig_ros.core import imaging
from dig2dig_ros.core.classical import guided_coefficients
from dig2dig_ros.core.config import FullResConfig


def solve_size(size: tuple[int, int], work: tuple[int, int], side: int, noise: float, limit: float
               ) -> tuple[int, int]:
    """(H, W) to solve dig-blend's blend at, for input size and working size (H, W) each.

    The long side is at most `side` (0: the input's), and where the sources' noise σ exceeds `limit` (> 0) at most
    long·limit/σ, since area-averaging by a factor f leaves σ/f; never below the working size.
    """
    long = max(size)
    if side <= 0 or side > long:
        side = long
    if limit > 0 and noise > limit:
        side = min(side, int(long * limit / noise))
    if side <= max(work):
        return work
    return imaging.working_size(size, side)


def noise_factor(noise: Sequence[float] | None, limit: float, exponent: float) -> float:
    """f = (σ/limit)^exponent, at least 1, for the sources' largest noise σ: the factor dig-blend multiplies its
    DIG temperature by on noisy sources (1: clean sources, no estimate, or switched off)."""
    if not noise or limit <= 0 or exponent <= 0:
        return 1.0
    return max(1.0, max(noise) / limit) ** exponent


def flatten_weights(weights: np.ndarray, factor: float) -> np.ndarray:
    """Softmax weights (K,h,w) at temperature τ → the same softmax at τ·factor: w^(1/factor), renormalised.

    A weight of 0 (a source without data there) stays 0.
    """
    if factor == 1.0:
        return weights
    w = np.power(np.maximum(weights, 0.0), 1.0 / factor)  # (K,h,w)
    return (w / np.maximum(w.sum(0, keepdims=True), 1e-12)).astype(np.float32)


def upsample_weights(weights: np.ndarray, guides_small: np.ndarray, guides: np.ndarray,
                     params: FullResConfig) -> np.ndarray:
    """Weights (K,h,w) at the working size → (K,H,W) at the size of guides (K,H,W), along the guides' edges.

    Each source's weight is guided by that source; the result lies in [0,1] and sums to 1 per pixel.
    """
    size = guides.shape[-2:]
    out = np.empty(guides.shape, np.float32)
    for k in range(len(weights)):  # the fast guided filter: coefficients at the working size, applied at full size
        a, b = (imaging.resize(c, size, cv2.INTER_LINEAR)  # float32: params.eps is well above its rounding
                for c in guided_coefficients(guides_small[k], weights[k], params.radius, params.eps, np.float32))
        np.multiply(a, guides[k], out=out[k])
        out[k] += b
    np.clip(out, 0.0, 1.0, out=out)
    total = imaging.sum_planes(out)[None]  # (1,H,W)
    uniform = total < 1e-6  # every weight clipped to 0: fall back to equal shares
    out /= np.maximum(total, 1e-6, out=total)
    if uniform.any():
        out[np.broadcast_to(uniform, out.shape)] = 1.0 / len(out)
    return out


def shrink(detail: np.ndarray, threshold: float) -> np.ndarray:
    """Non-negative garrote: d·max(0, 1 − τ²/d²): small (noise) coefficients vanish, strong edges keep their size."""
    if threshold <= 0:
        return detail
    factor = detail * detail
    np.maximum(factor, 1e-12, out=factor)
    np.divide(threshold * threshold, factor, out=factor)
    np.subtract(1.0, factor, out=factor)
    np.maximum(factor, 0.0, out=factor)
    return np.multiply(detail, factor, out=factor)


def detail_weights(details: np.ndarray, weights: np.ndarray, params: FullResConfig) -> np.ndarray:
    """Per-pixel weights (K,H,W) of the sources' detail bands (K,H,W), summing to 1."""
    if params.detail == "dig":
        return weights
    energy = np.empty(details.shape, np.float32)  # (K,H,W) local detail energy
    for k, d in enumerate(details):
        cv2.GaussianBlur(np.multiply(d, d, out=energy[k]), (0, 0), params.saliency_sigma, dst=energy[k])
    if params.sharpness != 1:
        energy **= params.sharpness  # in place; numpy's scalar fast paths (0.5: sqrt) as energy ** sharpness
    energy *= weights  # DIG still has its say where both sources carry detail
    total = imaging.sum_planes(energy)[None]  # (1,H,W)
    empty = total <= 1e-12  # no detail anywhere: the DIG weights
    energy /= np.maximum(total, 1e-12, out=total)
    if empty.any():
        np.copyto(energy, weights, where=np.broadcast_to(empty, energy.shape))
    return energy


def reconstruct(fused_small: np.ndarray, weights_small: np.ndarray, sources: np.ndarray,
                params: FullResConfig, sources_small: np.ndarray | None = None,
                noise: Sequence[float] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The fused luminance (H,W) and weights (K,H,W) at the sources' size.

    fused_small: (h,w) in [0,1] at the working size; weights_small: (K,h,w); sources: (K,H,W) in [0,1];
    sources_small: the sources already area-resized to (h,w), if the caller has them (K,h,w); noise: each
    source's :func:`imaging.noise_sigma`, if the caller has it.
    """
    size = sources.shape[-2:]
    small = fused_small.shape
    if tuple(size) == tuple(small):
        return fused_small, weights_small
    if sources_small is None or sources_small.shape[-2:] != small:
        sources_small = np.stack([imaging.resize(c, small) for c in sources])  # (K,h,w)
    weights = upsample_weights(weights_small, sources_small, sources, params)  # (K,H,W)
    details = np.empty(sources.shape, np.float32)  # (K,H,W) c_k − up(down(c_k))
    for k, c in enumerate(sources_small):
        cv2.resize(c, size[::-1], dst=details[k], interpolation=cv2.INTER_LINEAR)
    np.subtract(sources, details, out=details)
    if params.shrink > 0:
        if noise is None:
            noise = [imaging.noise_sigma(c) for c in sources]
        for k, sigma in zip(range(len(details)), noise, strict=True):
            details[k] = shrink(details[k], params.shrink * sigma)
    dw = detail_weights(details, weights, params)
    weighted = dw * details if dw is weights else np.multiply(dw, details, out=dw)  # (K,H,W)
    detail = imaging.sum_planes(weighted)  # (H,W)
    if params.detail_gain != 1:
        detail *= np.float32(params.detail_gain)
    detail += imaging.resize(fused_small.astype(np.float32), size, cv2.INTER_LINEAR)
    return np.clip(detail, 0.0, 1.0, out=detail), weights
