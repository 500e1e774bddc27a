"""The infrared → visible homography estimated from image pairs of one rig, without a calibration target.

Intensities do not correspond across the two cameras; structure does. Each image becomes a *structure map*:
the gradient magnitude divided by its local mean (so a dim edge in the dark counts like a bright one, and the
sign of the contrast, which flips between thermal and visible, does not matter), clipped and smoothed.

1. **Coarse**: for every scale (log-spaced over [s0/2, 2 s0] around the focal or size ratio s0) and rotation
   (± ``rotation_deg``), the infrared maps are warped into the visible frame and phase-correlated with the
   visible maps; the normalised cross-power spectra of all pairs are summed before the inverse FFT, so the
   score and the shift are those of all pairs together. A second, finer grid searches around the best three.
2. **Fine**: ECC (``cv2.findTransformECC``) on the structure maps, per pair, coarse to fine (affine at the first
   levels, homography at the last), every pair started from the joint estimate; after each level the pairs vote: per
   grid point, the correlation-weighted median of where the pairs map it gives a consensus H, pairs far from
   it are outliers, and the least-squares H through the inliers' grid points is the joint estimate that
   starts the next level. A pair with little texture thus neither pulls the estimate nor breaks it.
3. **Quality**: per pair the ECC correlation and the residual (mean distance over a 5×5 grid of infrared
   pixels, in visible pixels, between the pair's own H and the joint one); overall the inliers' median
   correlation and residual and the overlap (the fraction of the infrared frame that lands inside the visible
   frame). :func:`check_quality` refuses an estimate the pairs do not support (:class:`EstimateRefused`).

``EstimateSettings.final_motion`` ("affine") and ``perspective_ridge`` (> 0) trade the perspective terms for
nearness to the size-ratio start; both are off by default (docs/ROBOT.md measures why).

No ROS, no trained model. ``estimate_from_pairs`` is the entry point; ``grid_error`` measures two estimates.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np

from dig2dig_ros.core.frame import imaging
from dig2dig_ros.core.frame.registration import RegistrationError


class EstimateRefused(RegistrationError):
    """The pairs share too little structure to trust an estimated homography; the message says which test."""


@dataclass(frozen=True)
class EstimateSettings:
    """What the estimator searches and when it refuses (defaults chosen on the LLVIP tuning pairs)."""

    coarse_side: int = 160  # long side (px) of the visible maps in the coarse search
    levels: tuple[int, ...] = (320, 512)  # long side of the visible maps per ECC level (last: homography)
    scale_span: float = 2.0  # scales searched: [s0 / span, s0 * span]
    rotation_deg: float = 6.0  # rotations searched: ± this
    shift_fraction: float = 0.25  # shifts searched: ± this fraction of the visible frame, about the centre
    coarse_pairs: int = 6  # pairs used in the coarse search (spread over the list)
    ecc_iterations: int = 60
    ecc_eps: float = 1e-4  # ECC stops when the correlation gains less than this
    coarse_scale_step: float = 0.06  # log-scale step of the coarse grid (the finer grid: a quarter of it)
    coarse_rotation_step: float = 2.0  # degrees (the finer grid: a quarter of it)
    max_pairs: int = 12  # pairs refined (spread over the list); quality is reported for these
    min_correlation: float = 0.25  # refuse below: median ECC correlation of the inlier pairs
    min_inlier_fraction: float = 0.5  # refuse below: pairs that agree with the joint estimate
    max_residual_px: float = 8.0  # refuse above: median residual of the inliers (visible px)
    min_overlap: float = 0.25  # refuse below: fraction of the infrared frame inside the visible frame
    final_motion: str = "homography"  # model of the last ECC level: "homography" or "affine"
    perspective_ridge: float = 0.0  # > 0: the joint fit pulls the perspective terms (normalised coords) to 0


@dataclass(frozen=True)
class PairQuality:
    """How one pair agrees with the joint estimate: its ECC correlation, residual (px) and inlier flag."""

    name: str
    correlation: float
    residual_px: float
    inlier: bool


@dataclass(frozen=True)
class HomographyEstimate:
    """The joint H (3×3, infrared → visible pixels, H[2,2] = 1) and its quality figures."""

    h: np.ndarray
    pairs: list[PairQuality]
    correlation: float  # median ECC correlation of the inliers
    residual_px: float  # median residual of the inliers, visible px
    overlap: float  # fraction of the infrared frame inside the visible frame
    coarse_score: float  # joint phase-correlation peak of the coarse search
    seconds: float
    initial: np.ndarray = field(repr=False)  # the H the search was centred on

    @property
    def inliers(self) -> int:
        return sum(p.inlier for p in self.pairs)


def structure_map(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The modality-robust structure of an image at size (height, width): float32 (height, width), zero mean.

    Gradient magnitude over its local mean (plus half the global mean, so flat noise stays low), clipped at 4
    and smoothed; a flat image gives all zeros.
    """
    return _structure(imaging.split_luma(img)[0], size)


def _structure(gray: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """:func:`structure_map` of a luminance image (H,W) float32 [0,1]."""
    height, width = size
    interp = cv2.INTER_AREA if width < gray.shape[1] else cv2.INTER_LINEAR
    gray = cv2.resize(gray, (width, height), interpolation=interp)
    gray = cv2.GaussianBlur(gray, (0, 0), 1.0)
    mag = cv2.magnitude(cv2.Sobel(gray, cv2.CV_32F, 1, 0, ksize=3), cv2.Sobel(gray, cv2.CV_32F, 0, 1, ksize=3))
    mean = float(mag.mean())
    if mean < 1e-6:
        return np.zeros((height, width), np.float32)
    local = cv2.GaussianBlur(mag, (0, 0), max(height, width) / 40)
    out = np.minimum(mag / (local + 0.5 * mean), 4.0)
    out = cv2.GaussianBlur(out, (0, 0), 1.0)
    return (out - out.mean()).astype(np.float32)


def level_scale(src: tuple[int, int], dst: tuple[int, int]) -> np.ndarray:
    """The 3×3 map from pixel coordinates of a (h, w) image to those of its resize to dst (pixel centres)."""
    fy, fx = dst[0] / src[0], dst[1] / src[1]
    return np.array([[fx, 0, 0.5 * fx - 0.5], [0, fy, 0.5 * fy - 0.5], [0, 0, 1]], np.float64)


def level_size(size: tuple[int, int], long_side: int) -> tuple[int, int]:
    """(h, w) scaled so that its long side is long_side (never below 8 px)."""
    f = long_side / max(size)
    return max(8, round(size[0] * f)), max(8, round(size[1] * f))


def initial_homography(ir_size: tuple[int, int], vis_size: tuple[int, int],
                       k_ir: np.ndarray | None = None, k_vis: np.ndarray | None = None) -> np.ndarray:
    """The starting H: K_vis K_ir⁻¹ from the cameras' intrinsics (3×3 each) when given, else centre to
    centre scaled by the size ratio (geometric mean of the width and height ratios)."""
    if k_ir is not None and k_vis is not None:
        h = np.asarray(k_vis, np.float64).reshape(3, 3) @ np.linalg.inv(np.asarray(k_ir, np.float64).reshape(3, 3))
        return h / h[2, 2]
    s = math.sqrt(vis_size[0] / ir_size[0] * vis_size[1] / ir_size[1])
    return similarity(ir_size, vis_size, s, 0.0, (0.0, 0.0))


def similarity(ir_size: tuple[int, int], vis_size: tuple[int, int], scale: float, degrees: float,
               shift: tuple[float, float]) -> np.ndarray:
    """H mapping the infrared centre to the visible centre + shift (dx, dy), scaled and rotated about it."""
    a = math.radians(degrees)
    c, s = scale * math.cos(a), scale * math.sin(a)
    cx_i, cy_i = (ir_size[1] - 1) / 2, (ir_size[0] - 1) / 2
    cx_v, cy_v = (vis_size[1] - 1) / 2 + shift[0], (vis_size[0] - 1) / 2 + shift[1]
    return np.array([[c, -s, cx_v - c * cx_i + s * cy_i], [s, c, cy_v - s * cx_i - c * cy_i], [0, 0, 1]])


def grid_points(size: tuple[int, int], n: int = 5) -> np.ndarray:
    """An n×n grid of pixel coordinates spanning a (h, w) frame: (n*n, 2) float64 (x, y)."""
    xs, ys = np.meshgrid(np.linspace(0, size[1] - 1, n), np.linspace(0, size[0] - 1, n))
    return np.stack([xs.ravel(), ys.ravel()], axis=1)


def apply(h: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Points (N,2) mapped by the homography h: (N,2)."""
    return cv2.perspectiveTransform(np.asarray(points, np.float64).reshape(-1, 1, 2), h).reshape(-1, 2)


def grid_distances(h: np.ndarray, reference: np.ndarray, ir_size: tuple[int, int], n: int = 5) -> np.ndarray:
    """Distance in visible px between h and reference at each point of :func:`grid_points`: (n*n,) row-major."""
    grid = grid_points(ir_size, n)
    return np.linalg.norm(apply(h, grid) - apply(reference, grid), axis=1)


def grid_error(h: np.ndarray, reference: np.ndarray, ir_size: tuple[int, int], n: int = 5) -> tuple[float, float]:
    """(mean, max) distance in visible px between h and reference over an n×n grid of infrared pixels."""
    d = grid_distances(h, reference, ir_size, n)
    return float(d.mean()), float(d.max())


def overlap_fraction(h: np.ndarray, ir_size: tuple[int, int], vis_size: tuple[int, int]) -> float:
    """The fraction of the infrared frame that h maps inside the visible frame (sampled on a 40×40 grid)."""
    p = apply(h, grid_points(ir_size, 40))
    inside = (p[:, 0] >= -0.5) & (p[:, 0] <= vis_size[1] - 0.5) & (p[:, 1] >= -0.5) & (p[:, 1] <= vis_size[0] - 0.5)
    return float(inside.mean())


def _scale_of(h: np.ndarray, ir_size: tuple[int, int]) -> float:
    """Local scale (visible px per infrared px) of h at the infrared centre."""
    c = np.array([[(ir_size[1] - 1) / 2, (ir_size[0] - 1) / 2]])
    p = apply(h, np.vstack([c, c + [1, 0], c + [0, 1]]))
    (ax, ay), (bx, by) = p[1] - p[0], p[2] - p[0]
    return math.sqrt(abs(ax * by - ay * bx))


class _Pair:
    """One pair's images and their cached structure maps per size."""

    def __init__(self, name: str, ir: np.ndarray, vis: np.ndarray) -> None:
        self.name, self.ir, self.vis = name, ir, vis
        self.ir_size, self.vis_size = ir.shape[:2], vis.shape[:2]
        self._gray: dict[str, np.ndarray] = {}  # luminance (H,W) float32, converted once
        self._maps: dict[tuple[str, tuple[int, int]], np.ndarray] = {}

    def map(self, which: str, size: tuple[int, int]) -> np.ndarray:
        key = (which, size)
        if key not in self._maps:
            if which not in self._gray:
                self._gray[which] = imaging.split_luma(self.ir if which == "ir" else self.vis)[0]
            self._maps[key] = _structure(self._gray[which], size)
        return self._maps[key]


def _coarse(pairs: list[_Pair], h0: np.ndarray, st: EstimateSettings) -> tuple[np.ndarray, float]:
    """The similarity H (full resolution) with the highest joint phase-correlation peak, and that peak."""
    ir_size, vis_size = pairs[0].ir_size, pairs[0].vis_size
    vsz = level_size(vis_size, st.coarse_side)
    sv = level_scale(vis_size, vsz)
    s0 = _scale_of(h0, ir_size)
    isz = level_size(ir_size, max(8, round(max(ir_size) * s0 * vsz[1] / vis_size[1])))
    si = level_scale(ir_size, isz)
    pad = (int(vsz[0] * (1 + 2 * st.shift_fraction)) // 2 * 2, int(vsz[1] * (1 + 2 * st.shift_fraction)) // 2 * 2)
    window = np.outer(np.hanning(vsz[0]), np.hanning(vsz[1])).astype(np.float32)
    vis_f = []
    for p in pairs:
        canvas = np.zeros(pad, np.float32)
        canvas[: vsz[0], : vsz[1]] = p.map("vis", vsz) * window
        vis_f.append(np.fft.rfft2(canvas))
    ir_maps = [p.map("ir", isz) for p in pairs]
    # the search is about h0's centre mapping; the shift found is relative to it
    c0 = apply(h0, np.array([[(ir_size[1] - 1) / 2, (ir_size[0] - 1) / 2]]))[0]
    base_shift = (c0[0] - (vis_size[1] - 1) / 2, c0[1] - (vis_size[0] - 1) / 2)
    limit = (st.shift_fraction * vsz[0], st.shift_fraction * vsz[1])

    def score(scale: float, degrees: float) -> tuple[float, tuple[float, float]]:
        h = similarity(ir_size, vis_size, scale, degrees, base_shift)
        hl = sv @ h @ np.linalg.inv(si)
        total = np.zeros_like(vis_f[0])
        for m, vf in zip(ir_maps, vis_f, strict=True):
            warped = cv2.warpPerspective(m, hl, (vsz[1], vsz[0]), flags=cv2.INTER_LINEAR,
                                         borderMode=cv2.BORDER_CONSTANT, borderValue=0) * window
            canvas = np.zeros(pad, np.float32)
            canvas[: vsz[0], : vsz[1]] = warped
            cross = vf * np.conj(np.fft.rfft2(canvas))
            total += cross / (np.abs(cross) + 1e-3 * np.abs(cross).mean() + 1e-12)
        corr = np.fft.irfft2(total / len(pairs), s=pad)  # (pad) peak at the shift vis ← warped ir
        corr = cv2.GaussianBlur(corr.astype(np.float32), (0, 0), 0.7)
        corr = np.fft.fftshift(corr)
        cy, cx = pad[0] // 2, pad[1] // 2
        y0, y1 = cy - int(limit[0]), cy + int(limit[0]) + 1
        x0, x1 = cx - int(limit[1]), cx + int(limit[1]) + 1
        sub = corr[y0:y1, x0:x1]
        iy, ix = np.unravel_index(int(np.argmax(sub)), sub.shape)
        dy, dx = _subpixel(sub, iy, ix)
        shift_level = (ix + dx + x0 - cx, iy + dy + y0 - cy)
        return float(sub[iy, ix]), (shift_level[0] / sv[0, 0], shift_level[1] / sv[1, 1])

    results = []
    ln_span = math.log(st.scale_span)
    ds, dr = st.coarse_scale_step, st.coarse_rotation_step
    for ls in np.arange(-ln_span, ln_span + 1e-9, ds):
        for deg in np.arange(-st.rotation_deg, st.rotation_deg + 1e-9, dr):
            results.append((*score(s0 * math.exp(ls), deg), s0 * math.exp(ls), deg))
    results.sort(key=lambda r: -r[0])
    fine = list(results[:1])
    for _, _, scale, deg in results[:3]:
        for ls in np.array([-2, -1, 0, 1, 2]) * ds / 4:
            for dd in np.array([-2, -1, 0, 1, 2]) * dr / 4:
                fine.append((*score(scale * math.exp(ls), deg + dd), scale * math.exp(ls), deg + dd))
    best, shift, scale, deg = max(fine, key=lambda r: r[0])
    h = similarity(ir_size, vis_size, scale, deg, (base_shift[0] + shift[0], base_shift[1] + shift[1]))
    return h, best


def _subpixel(surface: np.ndarray, iy: int, ix: int) -> tuple[float, float]:
    """Parabolic sub-pixel offset (dy, dx) of the peak at (iy, ix)."""
    def offset(a: float, b: float, c: float) -> float:
        d = a - 2 * b + c
        return 0.0 if abs(d) < 1e-12 else float(np.clip(0.5 * (a - c) / d, -0.5, 0.5))

    h, w = surface.shape
    dy = offset(surface[iy - 1, ix], surface[iy, ix], surface[iy + 1, ix]) if 0 < iy < h - 1 else 0.0
    dx = offset(surface[iy, ix - 1], surface[iy, ix], surface[iy, ix + 1]) if 0 < ix < w - 1 else 0.0
    return dy, dx


def _ecc(pair: _Pair, h: np.ndarray, long_side: int, motion: int, iterations: int, eps: float = 1e-5
         ) -> tuple[np.ndarray, float]:
    """One pair's ECC refinement of h (full resolution) at one level; (h, correlation), correlation 0 when
    ECC fails (then h is returned unchanged)."""
    vsz = level_size(pair.vis_size, long_side)
    sv = level_scale(pair.vis_size, vsz)
    isz = level_size(pair.ir_size, max(8, round(max(pair.ir_size) * _scale_of(h, pair.ir_size) * sv[0, 0])))
    si = level_scale(pair.ir_size, isz)
    template, target = pair.map("ir", isz), pair.map("vis", vsz)
    if not template.any() or not target.any():
        return h, 0.0
    hl = sv @ h @ np.linalg.inv(si)
    hl = hl / hl[2, 2]
    warp = (hl if motion == cv2.MOTION_HOMOGRAPHY else hl[:2]).astype(np.float32)
    criteria = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, iterations, eps)
    try:
        rho, warp = cv2.findTransformECC(template, target, warp, motion, criteria, None, 1)
    except cv2.error:
        return h, 0.0
    out = np.vstack([warp, [0, 0, 1]]) if warp.shape[0] == 2 else warp
    out = np.linalg.inv(sv) @ out.astype(np.float64) @ si
    if not np.all(np.isfinite(out)) or abs(out[2, 2]) < 1e-12:
        return h, 0.0
    return out / out[2, 2], float(rho)


def _consensus(hs: list[np.ndarray], rho: np.ndarray, ir_size: tuple[int, int], tolerance: float,
               vis_size: tuple[int, int] | None = None, ridge: float = 0.0
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The joint H of per-pair estimates: weighted-median grid points, then least squares over the inliers
    (perspective terms pulled toward 0 by ridge, see :func:`fit_homography`).
    Returns (H, residuals (P,) px, inlier mask (P,))."""
    grid = grid_points(ir_size, 5)
    mapped = np.stack([apply(h, grid) for h in hs])  # (P, 25, 2)
    w = np.maximum(rho, 0.0) + 1e-9
    median = np.stack([[_weighted_median(mapped[:, k, d], w) for d in range(2)] for k in range(len(grid))])
    h_med, _ = cv2.findHomography(grid, median, 0)
    resid = np.linalg.norm(mapped - apply(h_med, grid)[None], axis=2).mean(axis=1)  # (P,)
    ok = rho > 0
    scatter = np.median(resid[ok]) if ok.any() else 0.0
    inlier = ok & (resid <= max(tolerance, 3.0 * scatter))
    if inlier.sum() == 0:
        return h_med / h_med[2, 2], resid, inlier
    src = np.tile(grid, (int(inlier.sum()), 1))
    h = fit_homography(src, mapped[inlier].reshape(-1, 2), ir_size, vis_size or ir_size, ridge)
    resid = np.linalg.norm(mapped - apply(h, grid)[None], axis=2).mean(axis=1)
    return h, resid, inlier


def _normaliser(size: tuple[int, int]) -> np.ndarray:
    """The 3×3 map from pixel coordinates of a (h, w) frame to coordinates centred on it, half-diagonal 1."""
    s = 2.0 / math.hypot(size[0], size[1])
    return np.array([[s, 0, -s * (size[1] - 1) / 2], [0, s, -s * (size[0] - 1) / 2], [0, 0, 1]])


def fit_homography(src: np.ndarray, dst: np.ndarray, ir_size: tuple[int, int], vis_size: tuple[int, int],
                   ridge: float = 0.0) -> np.ndarray:
    """The least-squares H (H[2,2] = 1) mapping infrared points src (N,2) to visible points dst (N,2).

    ridge > 0 adds ridge · N · (g² + h²) on the perspective terms g, h of H in frame-normalised coordinates
    (centred, half-diagonal 1), on the linearised (DLT) residual; ridge = 0 is the plain least-squares fit."""
    if ridge <= 0:
        h, _ = cv2.findHomography(np.asarray(src, np.float64), np.asarray(dst, np.float64), 0)
        return h / h[2, 2]
    ni, nv = _normaliser(ir_size), _normaliser(vis_size)
    s, d = apply(ni, src), apply(nv, dst)  # (N,2) each
    x, y, u, v = s[:, 0], s[:, 1], d[:, 0], d[:, 1]
    z, o = np.zeros_like(x), np.ones_like(x)
    a = np.vstack([np.stack([x, y, o, z, z, z, -u * x, -u * y], 1),
                   np.stack([z, z, z, x, y, o, -v * x, -v * y], 1)])  # (2N, 8)
    penalty = np.diag([0.0] * 6 + [ridge * len(x)] * 2)
    p = np.linalg.solve(a.T @ a + penalty, a.T @ np.concatenate([u, v]))
    h = np.linalg.inv(nv) @ np.append(p, 1.0).reshape(3, 3) @ ni
    return h / h[2, 2]


def _weighted_median(values: np.ndarray, weights: np.ndarray) -> float:
    order = np.argsort(values)
    cum = np.cumsum(weights[order])
    return float(values[order][np.searchsorted(cum, 0.5 * cum[-1])])


def spread(n: int, k: int) -> list[int]:
    """k indices spread evenly over range(n), first and last included (all when n ≤ k)."""
    if n <= k:
        return list(range(n))
    return sorted({round(i * (n - 1) / (k - 1)) for i in range(k)}) if k > 1 else [0]


def estimate_from_pairs(
    pairs: Sequence[tuple[np.ndarray, np.ndarray]],
    names: Sequence[str] | None = None,
    initial: np.ndarray | None = None,
    settings: EstimateSettings | None = None,
) -> HomographyEstimate:
    """The infrared → visible H of one rig from image pairs [(ir, vis), ...] (any dtype imaging reads; every
    infrared the same size, every visible the same size), estimated jointly; initial: the starting H
    (default: :func:`initial_homography` from the sizes). Does not refuse: see :func:`check_quality`.
    Raises RegistrationError for no pairs or mixed sizes."""
    started = time.perf_counter()
    st = settings or EstimateSettings()
    if not pairs:
        raise RegistrationError("no image pairs to estimate a homography from")
    names = list(names) if names is not None else [str(i) for i in range(len(pairs))]
    items = [_Pair(n, ir, vis) for n, (ir, vis) in zip(names, pairs, strict=True)]
    ir_size, vis_size = items[0].ir_size, items[0].vis_size
    for p in items:
        if p.ir_size != ir_size or p.vis_size != vis_size:
            raise RegistrationError(f"pair {p.name}: sizes {p.ir_size} / {p.vis_size} differ from the first pair's "
                                    f"{ir_size} / {vis_size}: the pairs must come from one rig")
    if st.final_motion not in ("homography", "affine"):
        raise ValueError(f"final_motion must be 'homography' or 'affine', not {st.final_motion!r}")
    h0 = initial if initial is not None else initial_homography(ir_size, vis_size)
    items = [items[i] for i in spread(len(items), st.max_pairs)]
    names = [p.name for p in items]
    coarse_items = [items[i] for i in spread(len(items), st.coarse_pairs)]
    h, coarse_score = _coarse(coarse_items, h0, st)
    rho = np.zeros(len(items))
    resid = np.full(len(items), np.inf)
    inlier = np.zeros(len(items), bool)
    levels = sorted({min(side, max(vis_size)) for side in st.levels})  # never above the visible resolution
    for level, long_side in enumerate(levels):
        last = level == len(levels) - 1
        motion = cv2.MOTION_HOMOGRAPHY if last and st.final_motion == "homography" else cv2.MOTION_AFFINE
        results = [_ecc(p, h, long_side, motion, st.ecc_iterations, st.ecc_eps) for p in items]
        rho = np.array([r[1] for r in results])
        if not (rho > 0).any():
            break
        tolerance = 2.0 * vis_size[1] / long_side  # two level pixels, in full-resolution px
        h, resid, inlier = _consensus([r[0] for r in results], rho, ir_size, tolerance, vis_size,
                                      st.perspective_ridge if last else 0.0)
    quality = [PairQuality(n, float(r), float(d), bool(i)) for n, r, d, i in zip(names, rho, resid, inlier,
                                                                                 strict=True)]
    return HomographyEstimate(
        h=h, pairs=quality,
        correlation=float(np.median(rho[inlier])) if inlier.any() else 0.0,
        residual_px=float(np.median(resid[inlier])) if inlier.any() else float("inf"),
        overlap=overlap_fraction(h, ir_size, vis_size), coarse_score=coarse_score,
        seconds=time.perf_counter() - started, initial=h0,
    )


def check_quality(estimate: HomographyEstimate, settings: EstimateSettings | None = None) -> None:
    """Raise EstimateRefused (one line: which figure failed) unless the pairs support the estimate."""
    st = settings or EstimateSettings()
    n = len(estimate.pairs)
    if estimate.inliers < max(1, math.ceil(st.min_inlier_fraction * n)):
        raise EstimateRefused(f"only {estimate.inliers} of {n} pairs agree on one homography (need "
                              f"{st.min_inlier_fraction:.0%}): the pairs share too little structure")
    if estimate.correlation < st.min_correlation:
        raise EstimateRefused(f"structure correlation {estimate.correlation:.2f} is below {st.min_correlation:.2f}: "
                              "the infrared and visible images share too little structure to trust the result")
    if estimate.residual_px > st.max_residual_px:
        raise EstimateRefused(f"the pairs disagree by {estimate.residual_px:.1f} px (limit {st.max_residual_px:.1f})")
    if estimate.overlap < st.min_overlap:
        raise EstimateRefused(f"only {estimate.overlap:.0%} of the infrared view lands in the visible frame "
                              f"(need {st.min_overlap:.0%})")
