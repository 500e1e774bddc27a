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
guide), then clipped to [0,1] and renormalised to sum to 1 per pixel. dig-blend fits once (:class:`WeightFit`)
and applies that fit at its solve size and again at the input size. No halos: the weights follow the
sources' edges, not a blur. The step's settings, defaults included, are config.FullResConfig's (the node's).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from dig2dig_ros.core.config import FullResConfig
from dig2dig_ros.core.frame import imaging
from dig2dig_ros.core.frame.classical import guided_coefficients


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


@dataclass
class WeightFit:
    """Weights fitted at a small size along their sources' edges: the fast guided filter's averaged linear
    coefficients (He & Sun 2015), weight_k ≈ ā_k·I_k + b̄_k, which :func:`apply_fit` applies to the sources I_k at
    any larger size."""

    a: np.ndarray  # (K,h,w) ā
    b: np.ndarray  # (K,h,w) b̄


def fit_weights(weights: np.ndarray, guides_small: np.ndarray, params: FullResConfig) -> WeightFit:
    """The guided fit of weights (K,h,w) to their guides (K,h,w) at that size, each source's weight to that
    source."""
    a, b = np.empty(weights.shape, np.float32), np.empty(weights.shape, np.float32)  # (K,h,w) each
    for k in range(len(weights)):
        coefficients = guided_coefficients(guides_small[k], weights[k], params.radius, params.eps, np.float32,
                                           imaging.scratch)  # float32: params.eps is well above its rounding
        np.copyto(a[k], coefficients[0])
        np.copyto(b[k], coefficients[1])
    return WeightFit(a, b)


def apply_fit(fit: WeightFit, guides: np.ndarray) -> np.ndarray:
    """The fitted weights at the size of guides (K,H,W): ā and b̄ brought up bilinearly, ā·I + b̄, clipped to [0,1]
    and renormalised to sum to 1 per pixel."""
    out = np.empty(guides.shape, np.float32)  # (K,H,W)
    offset = imaging.scratch("fullres.apply_fit.offset", guides.shape[-2:])  # (H,W) b̄ at full size
    for k in range(len(guides)):
        np.multiply(imaging.resize_into(fit.a[k], out[k], cv2.INTER_LINEAR), guides[k], out=out[k])  # ā·I
        out[k] += imaging.resize_into(fit.b[k], offset, cv2.INTER_LINEAR)
    np.clip(out, 0.0, 1.0, out=out)
    return _normalise(out, 1e-6, strict=True, fallback=None)


def upsample_weights(weights: np.ndarray, guides_small: np.ndarray, guides: np.ndarray,
                     params: FullResConfig) -> np.ndarray:
    """Weights (K,h,w) at the working size → (K,H,W) at the size of guides (K,H,W), along the guides' edges.

    Each source's weight is guided by that source; the result lies in [0,1] and sums to 1 per pixel.
    """
    return apply_fit(fit_weights(weights, guides_small, params), guides)


def mask_weights(weights: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Weights (K,H,W) times validity masks (K,H,W) float32 0/1, renormalised per pixel, in place (returned): where
    every valid source's weight is 0 the valid sources share equally; unchanged where no source is valid. The same
    values as dig.mask_weights (the torch version the working size uses), with full-size buffers reused."""
    shape = weights.shape[1:]
    count = imaging.sum_planes(valid, out=imaging.scratch("fullres.mask.count", shape))  # (H,W) valid sources
    nobody = np.flatnonzero(count <= 0)  # (n,) no source valid there: the weights stay as they came
    kept = [plane.flat[nobody] for plane in weights] if nobody.size else []  # copies (fancy indexing)
    np.multiply(weights, valid, out=weights)
    total = imaging.sum_planes(weights, out=imaging.scratch("fullres.mask.total", shape))  # (H,W)
    shared = np.flatnonzero(~(total > np.float32(1e-12)))  # (m,) every valid weight 0 (or NaN): equal shares
    np.maximum(total, np.float32(1e-12), out=total)
    for plane in weights:
        np.divide(plane, total, out=plane)
    for k, plane in enumerate(weights if shared.size else ()):
        plane.flat[shared] = valid[k].flat[shared] / np.maximum(count.flat[shared], np.float32(1))
    for plane, values in zip(weights, kept, strict=False):
        plane.flat[nobody] = values
    return weights


def _normalise(x: np.ndarray, floor: float, strict: bool, fallback: np.ndarray | None) -> np.ndarray:
    """x (K,H,W) divided in place by its sum over k, at least ``floor``; where that sum is below the floor (``strict``;
    else at most the floor) the shares are ``fallback``'s (K,H,W), or 1/K each when it is None."""
    floor = np.float32(floor)
    total = imaging.sum_planes(x, out=imaging.scratch("fullres.normalise.total", x.shape[1:], x.dtype))  # (H,W)
    lowest = total.min()  # the floor and the fallback only matter where some pixel reaches it (or is NaN)
    fall = None  # flat indices (n,) of the pixels at the floor: usually none, or few
    if not (lowest >= floor if strict else lowest > floor):
        fall = np.flatnonzero(total < floor if strict else total <= floor)
        total.flat[fall] = floor  # np.maximum(total, floor) (NaN stays NaN), there only
    for plane in x:
        np.divide(plane, total, out=plane)
    for k, plane in enumerate(x if fall is not None and fall.size else ()):
        plane.flat[fall] = 1.0 / len(x) if fallback is None else fallback[k].flat[fall]
    return x


def shrink(detail: np.ndarray, threshold: float, out: np.ndarray | None = None) -> np.ndarray:
    """Non-negative garrote: d·max(0, 1 − τ²/d²): small (noise) coefficients vanish, strong edges keep their size.

    ``out``: where to write it (may be detail itself); threshold ≤ 0 returns detail (or out holding it).
    """
    if threshold <= 0:
        if out is None:
            return detail
        np.copyto(out, detail)
        return out
    factor = detail * detail
    np.maximum(factor, 1e-12, out=factor)
    np.divide(threshold * threshold, factor, out=factor)
    np.subtract(1.0, factor, out=factor)
    np.maximum(factor, 0.0, out=factor)
    return np.multiply(detail, factor, out=factor if out is None else out)


def detail_weights(details: np.ndarray, weights: np.ndarray, params: FullResConfig) -> np.ndarray:
    """Per-pixel weights (K,H,W) of the sources' detail bands (K,H,W), summing to 1 ("dig": the DIG weights)."""
    if params.detail == "dig":
        return weights
    return _detail_shares(detail_energy(details, params.saliency_sigma), weights, params.sharpness)


def detail_energy(details: np.ndarray, sigma: float) -> np.ndarray:
    """Local energy G_σ * d_k² (K,H,W) of the detail bands (K,H,W)."""
    return _blur_planes(np.multiply(details, details, dtype=np.float32), sigma)


def _blur_planes(x: np.ndarray, sigma: float) -> np.ndarray:
    """Each plane of x (K,H,W) float32 Gaussian-blurred with σ in place (cv2's kernel size for σ); returns x."""
    for plane in x:
        cv2.GaussianBlur(plane, (0, 0), sigma, dst=plane)
    return x


def _detail_shares(energy: np.ndarray, weights: np.ndarray, sharpness: float) -> np.ndarray:
    """maxabs detail weights (K,…) in place of their local energy (K,…): energy^sharpness · DIG weight, normalised;
    where no source has detail, the DIG weights."""
    if sharpness != 1:
        energy **= sharpness  # in place; numpy's scalar fast paths (0.5: sqrt) as energy ** sharpness
    energy *= weights  # DIG still has its say where both sources carry detail
    return _normalise(energy, 1e-12, strict=False, fallback=weights)


def reconstruct(fused_small: np.ndarray, weights_small: np.ndarray, sources: np.ndarray,
                params: FullResConfig, sources_small: np.ndarray | None = None,
                noise: Sequence[float] | None = None, fit: WeightFit | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The fused luminance (H,W) and weights (K,H,W) at the sources' size.

    fused_small: (h,w) in [0,1] at the working size; weights_small: (K,h,w); sources: (K,H,W) in [0,1];
    sources_small: the sources already area-resized to (h,w), if the caller has them (K,h,w); noise: each
    source's :func:`imaging.noise_sigma`, if the caller has it; fit: the weights' fit at a smaller size that
    ``weights_small`` came from (dig-blend's working-size fit, :func:`fit_weights`), applied at the sources' size
    instead of fitting ``weights_small`` again.
    """
    size = sources.shape[-2:]
    small = fused_small.shape
    if tuple(size) == tuple(small):
        return fused_small, weights_small
    if sources_small is None or sources_small.shape[-2:] != small:
        sources_small = imaging.resize_planes(sources, small)  # (K,h,w)
    if fit is not None:
        weights = apply_fit(fit, sources)  # (K,H,W)
    else:
        weights = upsample_weights(weights_small, sources_small, sources, params)  # (K,H,W)
    if params.shrink > 0 and noise is None:
        noise = [imaging.noise_sigma(c) for c in sources]
    details = imaging.scratch("fullres.reconstruct.details", sources.shape)  # (K,H,W) c_k − up(down(c_k))
    for k, c in enumerate(sources_small):
        cv2.resize(c, size[::-1], dst=details[k], interpolation=cv2.INTER_LINEAR)
    np.subtract(sources, details, out=details)
    for k, sigma in enumerate(noise if params.shrink > 0 else ()):
        if params.shrink * sigma > 0:  # a clean source keeps its detail as it is
            shrink(details[k], params.shrink * sigma, out=details[k])
    weighted = imaging.scratch("fullres.reconstruct.weighted", sources.shape)  # (K,H,W) D_k ⊙ detail_k
    if params.detail == "dig":
        np.multiply(weights, details, out=weighted)
    else:  # the detail weights, computed in `weighted`, then multiplied in place
        _blur_planes(np.multiply(details, details, out=weighted), params.saliency_sigma)  # G_σ * d²
        np.multiply(_detail_shares(weighted, weights, params.sharpness), details, out=weighted)
    fused = imaging.sum_planes(weighted, out=np.empty(size, np.float32))  # (H,W)
    if params.detail_gain != 1:
        fused *= np.float32(params.detail_gain)
    fused += imaging.resize_into(np.asarray(fused_small, np.float32), details[0], cv2.INTER_LINEAR)  # up(Y_w)
    return np.clip(fused, 0.0, 1.0, out=fused), weights
