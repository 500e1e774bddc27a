"""Fast classical fusion of K ≥ 2 gray images: the baselines the diffusion method is measured against.

Convention: every source is a float image in [0, 1] of shape (H, W), all of one shape (cast to float32); every
method returns float32 (H, W) in [0, 1]. Methods, by registry name:

- ``average``: the pixelwise mean.
- ``max``: the pixelwise maximum.
- ``laplacian``: Laplacian-pyramid fusion (Burt & Adelson): per level the detail coefficient of largest
  magnitude, the coarsest (base) level averaged.
- ``gff``: guided-filter fusion (Li, Kang & Hu, IEEE TIP 2013), see :func:`fuse_gff`.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import cv2
import numpy as np

PYRAMID_MIN_BASE_SIDE = 16  # the Laplacian pyramid stops when its base would be shorter than this (pixels)
RANGE_TOLERANCE = 1e-3  # how far outside [0, 1] a source may stray (rounding) before it is rejected


@dataclass(frozen=True)
class GFFParams:
    """Guided-filter fusion parameters; the defaults are the paper's."""

    base_ksize: int = 31  # mean filter of the two-scale decomposition (base = 31×31 mean)
    saliency_ksize: int = 11  # Gaussian low-pass of the Laplacian magnitude: 11×11 (radius 5)…
    saliency_sigma: float = 5.0  # …with σ = 5
    base_radius: int = 45  # r1: guided filter of the base-layer weights
    base_eps: float = 0.3  # ε1
    detail_radius: int = 7  # r2: guided filter of the detail-layer weights
    detail_eps: float = 1e-6  # ε2


def _stack(sources: Sequence[np.ndarray]) -> np.ndarray:
    """Validate the sources and stack them: (K,H,W) float32."""
    if len(sources) < 2:
        raise ValueError(f"fusion needs at least two sources, got {len(sources)}")
    arrays = [np.asarray(s) for s in sources]
    shape = arrays[0].shape
    if len(shape) != 2:
        raise ValueError(f"sources must be gray (H,W) images, got shape {shape}")
    for i, arr in enumerate(arrays):
        if arr.shape != shape:
            raise ValueError(f"source shapes differ: source 0 is {shape}, source {i} is {arr.shape}")
        if not np.issubdtype(arr.dtype, np.floating):
            raise ValueError(f"source {i} has dtype {arr.dtype}: sources are float images in [0, 1]")
    stack = np.stack(arrays).astype(np.float32, copy=False)  # (K,H,W)
    lo, hi = float(stack.min()), float(stack.max())
    if lo < -RANGE_TOLERANCE or hi > 1.0 + RANGE_TOLERANCE:
        raise ValueError(f"sources must lie in [0, 1], got values in [{lo:g}, {hi:g}] (divide 8-bit by 255)")
    return stack


def fuse_average(sources: Sequence[np.ndarray]) -> np.ndarray:
    """F = (1/K) Σ_k I_k, pixelwise."""
    return _stack(sources).mean(axis=0)  # (H,W)


def fuse_max(sources: Sequence[np.ndarray]) -> np.ndarray:
    """F = max_k I_k, pixelwise."""
    return _stack(sources).max(axis=0)  # (H,W)


# ---------------------------------------------------------------------------------------------------------
# Laplacian pyramid
# ---------------------------------------------------------------------------------------------------------
def pyramid_levels(shape: tuple[int, ...]) -> int:
    """Number of detail levels for an image: halve until the base's short side would drop below 16 px.

    levels = max(1, ⌊log2(min(H, W) / 16)⌋): 5 at 640×512, 4 at 640×480, 1 below 64 px.
    """
    return max(1, math.floor(math.log2(max(min(shape[:2]), 1) / PYRAMID_MIN_BASE_SIDE)))


def _laplacian_pyramid(img: np.ndarray, levels: int) -> list[np.ndarray]:
    """[detail_0 (H,W), detail_1 (H/2,W/2), ..., base]: levels detail bands and the Gaussian base."""
    bands = []
    current = img
    for _ in range(levels):
        smaller = cv2.pyrDown(current)
        expanded = cv2.pyrUp(smaller, dstsize=(current.shape[1], current.shape[0]))
        bands.append(current - expanded)
        current = smaller
    bands.append(current)
    return bands


def _collapse(bands: list[np.ndarray]) -> np.ndarray:
    img = bands[-1]
    for detail in reversed(bands[:-1]):
        img = cv2.pyrUp(img, dstsize=(detail.shape[1], detail.shape[0])) + detail
    return img


def fuse_laplacian(sources: Sequence[np.ndarray], levels: int | None = None) -> np.ndarray:
    """Laplacian-pyramid fusion: max-|·| detail coefficients, averaged base, collapsed and clipped to [0, 1].

    Pyramids use OpenCV's 5×5 Burt–Adelson kernel (cv2.pyrDown/pyrUp, reflect-101 borders); levels defaults to
    :func:`pyramid_levels`. At each pixel of each detail band the coefficient of largest magnitude wins (ties:
    the first source); the base band is the mean of the sources' bases.
    """
    stack = _stack(sources)  # (K,H,W)
    n_levels = pyramid_levels(stack.shape[1:]) if levels is None else levels
    pyramids = [_laplacian_pyramid(img, n_levels) for img in stack]
    fused = []
    for level in range(n_levels):
        bands = np.stack([p[level] for p in pyramids])  # (K,h,w)
        pick = np.argmax(np.abs(bands), axis=0)[None]  # (1,h,w)
        fused.append(np.take_along_axis(bands, pick, axis=0)[0])
    fused.append(np.mean([p[-1] for p in pyramids], axis=0))
    return np.clip(_collapse(fused), 0.0, 1.0).astype(np.float32)


# ---------------------------------------------------------------------------------------------------------
# Guided-filter fusion
# ---------------------------------------------------------------------------------------------------------
def _box_mean(img: np.ndarray, radius: int, counts: np.ndarray, box: np.ndarray | None = None,
              out: np.ndarray | None = None) -> np.ndarray:
    """Mean over the (2r+1)² window clipped to the image (He et al.'s normalised box filter), in img's float type;
    ``counts``: :func:`_window_areas` of img's shape and radius. ``box`` holds the window sums and ``out`` the
    result where given (neither may be img)."""
    k = (2 * radius + 1, 2 * radius + 1)
    total = cv2.boxFilter(img, -1, k, dst=box, normalize=False, borderType=cv2.BORDER_CONSTANT)  # (H,W)
    return np.divide(total, counts, out=total if out is None else out)


@functools.lru_cache(maxsize=16)
def _window_areas(shape: tuple[int, ...], radius: int, dtype: type[np.floating] = np.float64) -> np.ndarray:
    """How many pixels of each pixel's (2r+1)² window fall inside an image of shape (H, W): (H,W) in dtype,
    read-only (kept per shape)."""
    areas = (_window_counts(shape[0], radius)[:, None] * _window_counts(shape[1], radius)).astype(dtype, copy=False)
    areas.flags.writeable = False
    return areas


def _window_counts(n: int, radius: int) -> np.ndarray:
    """How many of the 2r+1 positions around each index 0..n−1 fall inside 0..n−1: (n,)."""
    idx = np.arange(n)
    return (np.minimum(idx + radius, n - 1) - np.maximum(idx - radius, 0) + 1).astype(np.float64)


Scratch = Callable[[str, tuple[int, ...], type], np.ndarray]  # (name, shape, dtype) → an array to write into


def guided_coefficients(guide: np.ndarray, src: np.ndarray, radius: int, eps: float,
                        dtype: type[np.floating] = np.float64, scratch: Scratch | None = None
                        ) -> tuple[np.ndarray, np.ndarray]:
    """The guided filter's linear coefficients, averaged over the windows covering each pixel: (ā, b̄), so that
    the filtered src is ā·guide + b̄ (and, fitted on a small image, ā and b̄ upsampled apply to a larger guide:
    the fast guided filter). Per (2r+1)² window ω: a = cov_ω(I, p) / (var_ω(I) + ε), b = mean_ω(p) − a·mean_ω(I).
    Windows are clipped at the image border. Computed and returned in ``dtype`` (H, W) each: float64 by default;
    float32 (a third of the time) agrees to about 1e-6 where ε is well above float32's rounding of var_ω(I)
    (ε ≳ 1e-4 for images in [0, 1]; not for gff's ε2 = 1e-6).

    ``scratch``: where every intermediate, the two returned arrays included, is written (e.g. imaging.scratch,
    for a caller that uses them up before its next call); None: new arrays.
    """
    i = np.asarray(guide, dtype=dtype)  # (H,W)
    p = np.asarray(src, dtype=dtype)  # (H,W)
    shape = i.shape

    def buffer(role: str) -> np.ndarray:
        return np.empty(shape, i.dtype) if scratch is None else scratch("classical.guided." + role, shape, i.dtype)

    n = _window_areas(shape, radius, i.dtype)  # (H,W)
    box = buffer("box")  # (H,W) window sums
    mean_i, mean_p = _box_mean(i, radius, n, box, buffer("mean_i")), _box_mean(p, radius, n, box, buffer("mean_p"))
    product = np.multiply(i, i, out=buffer("product"))  # (H,W), reused once each value is used up
    var_i = _box_mean(product, radius, n, box, buffer("var_i"))
    cov_ip = _box_mean(np.multiply(i, p, out=product), radius, n, box, buffer("cov_ip"))
    var_i -= np.multiply(mean_i, mean_i, out=product)
    cov_ip -= np.multiply(mean_i, mean_p, out=product)
    var_i += i.dtype.type(eps)
    a = np.divide(cov_ip, var_i, out=cov_ip)
    b = np.subtract(mean_p, np.multiply(a, mean_i, out=product), out=mean_p)
    return _box_mean(a, radius, n, box, var_i), _box_mean(b, radius, n, box, mean_i)  # (H,W) each


def guided_filter(guide: np.ndarray, src: np.ndarray, radius: int, eps: float) -> np.ndarray:
    """He, Sun & Tang's guided filter (gray guide): an edge-preserving smoothing of src that follows guide.

    q = ā·I + b̄ with the coefficients of :func:`guided_coefficients`; returns float64 (H, W).
    """
    a, b = guided_coefficients(guide, src, radius, eps)
    return a * np.asarray(guide, dtype=np.float64) + b  # (H,W)


def _refined_weights(guides: np.ndarray, masks: list[np.ndarray], radius: int, eps: float) -> np.ndarray:
    """Guided-filter each binary map with its own source as guide, then normalise to sum 1 per pixel: (K,H,W)."""
    w = np.stack([guided_filter(g, m, radius, eps) for g, m in zip(guides, masks, strict=True)])
    w = np.clip(w, 0.0, 1.0) + 1e-12  # clip: see fuse_gff; 1e-12 guards 0/0, as in the authors' code
    return w / w.sum(axis=0, keepdims=True)


def _saliency(img: np.ndarray, params: GFFParams) -> np.ndarray:
    """|3×3 Laplacian of img|, Gaussian low-passed: (H,W)."""
    border = cv2.BORDER_REPLICATE
    lap = np.abs(cv2.Laplacian(img, cv2.CV_64F, ksize=1, borderType=border))  # kernel [0 1 0; 1 -4 1; 0 1 0]
    k = (params.saliency_ksize, params.saliency_ksize)
    return cv2.GaussianBlur(lap, k, params.saliency_sigma, borderType=border)


def fuse_gff(sources: Sequence[np.ndarray], params: GFFParams = GFFParams()) -> np.ndarray:
    """Guided-filter fusion (Li, Kang & Hu 2013), clipped to [0, 1].

    1. Two-scale decomposition: base B_k = I_k ∗ Z (31×31 mean filter), detail D_k = I_k − B_k.
    2. Saliency S_k = |I_k ∗ L| ∗ g: magnitude of the 3×3 Laplacian [0 1 0; 1 −4 1; 0 1 0], low-passed by an
       11×11 Gaussian with σ = 5.
    3. Binary maps P_k = 1 where S_k is the largest saliency (ties: the first source), else 0.
    4. Weights W_k^B = G_{r1,ε1}(P_k, I_k), W_k^D = G_{r2,ε2}(P_k, I_k) (guided filter, guide I_k; r1 = 45,
       ε1 = 0.3, r2 = 7, ε2 = 1e-6 for images in [0, 1]), each set normalised to sum to 1 per pixel.
       The guided filter over- and undershoots a binary map near edges; we clip each weight to [0, 1] before
       normalising (the paper is silent): unclipped detail weights reach −0.4 where the set sums to ~0.01 on
       TNO, and clipping gave equal or better Qabf, SSIM and Nabf on every TNO/MSRS pair we tried.
    5. F = Σ_k W_k^B B_k + Σ_k W_k^D D_k.
    Borders: the mean, Laplacian and Gaussian filters replicate the edge pixels; guided-filter windows are
    clipped to the image.
    """
    stack = _stack(sources).astype(np.float64)  # (K,H,W)
    border = cv2.BORDER_REPLICATE
    base = np.stack([cv2.blur(img, (params.base_ksize, params.base_ksize), borderType=border) for img in stack])
    detail = stack - base  # (K,H,W)
    saliency = np.stack([_saliency(img, params) for img in stack])  # (K,H,W)
    winner = np.argmax(saliency, axis=0)  # (H,W)
    masks = [(winner == k).astype(np.float64) for k in range(len(stack))]  # K x (H,W)
    w_base = _refined_weights(stack, masks, params.base_radius, params.base_eps)  # (K,H,W)
    w_detail = _refined_weights(stack, masks, params.detail_radius, params.detail_eps)  # (K,H,W)
    fused = np.sum(w_base * base, axis=0) + np.sum(w_detail * detail, axis=0)  # (H,W)
    return np.clip(fused, 0.0, 1.0).astype(np.float32)


# ---------------------------------------------------------------------------------------------------------
# Registry
# ---------------------------------------------------------------------------------------------------------
CLASSICAL_METHODS: dict[str, Callable[[list[np.ndarray]], np.ndarray]] = {
    "average": fuse_average,
    "max": fuse_max,
    "laplacian": fuse_laplacian,
    "gff": fuse_gff,
}


def fuse_classical(name: str, sources: Sequence[np.ndarray]) -> np.ndarray:
    """Fuse float [0, 1] (H, W) sources with the classical method registered under name; float32 (H, W)."""
    try:
        method = CLASSICAL_METHODS[name]
    except KeyError:
        choices = ", ".join(sorted(CLASSICAL_METHODS))
        raise ValueError(f"unknown classical fusion method {name!r}; choose one of: {choices}") from None
    return method(list(sources))
