"""Image handling around the sampler (ALGORITHM.md §5): reading, colour, sizes, padding, output range."""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")  # what folder readers pick up
MAD_TO_SIGMA = 1 / 0.6745  # median absolute deviation → σ for Gaussian noise (Donoho & Johnstone 1994)
ROUNDING_VARIANCE_8BIT = 1 / (12 * 255**2)  # rounding to n/255: uniform error, variance q²/12 ([0,1] units)


class ImageError(ValueError):
    """An input image is unreadable, empty, of an unsupported type, or of a mismatched size."""


def read_image(path: str | Path) -> np.ndarray:
    """Read an image file as (H,W) gray or (H,W,3) BGR, keeping 16-bit depth (uint8 or uint16)."""
    path = Path(path)
    if not path.is_file():
        raise ImageError(f"cannot read {path}: no such file")
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None or img.size == 0:
        raise ImageError(f"cannot read {path}: not a readable image")
    if img.ndim == 3 and img.shape[2] == 4:
        img = cv2.cvtColor(img, cv2.COLOR_BGRA2BGR)
    return img


def to_unit(img: np.ndarray) -> np.ndarray:
    """uint8 /255, uint16 /65535 (normalised, not truncated), float kept; returns float32 in [0,1]."""
    if img.size == 0:
        raise ImageError("empty image")
    if img.dtype == np.uint8:
        return img.astype(np.float32) * np.float32(1 / 255)  # already in [0,1]
    if img.dtype == np.uint16:
        return img.astype(np.float32) * np.float32(1 / 65535)
    if not np.issubdtype(img.dtype, np.floating):
        raise ImageError(f"unsupported pixel type {img.dtype}")
    out = img.astype(np.float32)
    if not np.isfinite(out).all():
        raise ImageError("image contains NaN or infinite values")
    return np.clip(out, 0.0, 1.0)


def is_colour(img: np.ndarray) -> bool:
    """True for a 3-channel image whose channels are not all equal (3-channel gray counts as gray)."""
    if img.ndim != 3:
        return False
    return not (np.array_equal(img[..., 0], img[..., 1]) and np.array_equal(img[..., 1], img[..., 2]))


def split_ycbcr(img: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """float32 [0,1] (H,W) or BGR (H,W,3) → luminance (H,W) and chroma (H,W,2) Cr,Cb (None for gray)."""
    if img.ndim == 2:
        return img, None
    if not is_colour(img):
        return img[..., 0].copy(), None
    ycrcb = cv2.cvtColor(img, cv2.COLOR_BGR2YCrCb)  # (H,W,3), float32 [0,1], chroma centred at 0.5
    return ycrcb[..., 0].copy(), ycrcb[..., 1:].copy()


def split_luma(img: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """Any source image → luminance (H,W) float32 in [0,1] and chroma (H,W,2) Cr,Cb (None for gray).

    uint8 colour stays in uint8 through the colour conversion (chroma returned as uint8, centred at 128): the
    cheap path for camera frames. Other types go through :func:`to_unit` and :func:`split_ycbcr` (float chroma).
    """
    if img.dtype == np.uint8:
        if img.size == 0:
            raise ImageError("empty image")
        if img.ndim == 2 or not is_colour(img):
            return (img if img.ndim == 2 else img[..., 0]).astype(np.float32) * np.float32(1 / 255), None
        ycrcb = cv2.cvtColor(img, cv2.COLOR_BGR2YCrCb)  # (H,W,3) uint8
        return ycrcb[..., 0].astype(np.float32) * np.float32(1 / 255), ycrcb[..., 1:]
    return split_ycbcr(to_unit(img))


def merge_luma(y: np.ndarray, chroma: np.ndarray | None) -> np.ndarray:
    """Luminance (H,W) in [0,1] + chroma from :func:`split_luma` (uint8 or float, or None) → uint8 BGR or gray."""
    y8 = to_uint8(y)
    if chroma is None:
        return y8
    if chroma.dtype == np.uint8:
        return cv2.cvtColor(np.dstack([y8, chroma]), cv2.COLOR_YCrCb2BGR)
    return to_uint8(merge_ycbcr(y, chroma))


def merge_ycbcr(y: np.ndarray, chroma: np.ndarray | None) -> np.ndarray:
    """Luminance (H,W) + Cr,Cb (H,W,2) → BGR (H,W,3) float32 [0,1]; gray stays (H,W)."""
    if chroma is None:
        return np.clip(y, 0, 1)
    ycrcb = np.dstack([y.astype(np.float32), chroma.astype(np.float32)])
    return np.clip(cv2.cvtColor(ycrcb, cv2.COLOR_YCrCb2BGR), 0, 1)


def common_size(images: list[np.ndarray], policy: str) -> tuple[int, int]:
    """The (H, W) all sources are brought to: equal sizes pass; otherwise per the resize policy."""
    sizes = [img.shape[:2] for img in images]
    if any(h == 0 or w == 0 for h, w in sizes):
        raise ImageError("a source image is empty")
    if len(set(sizes)) == 1:
        return sizes[0]
    if policy == "first":
        return sizes[0]
    if policy == "largest":
        return max(sizes, key=lambda s: s[0] * s[1])
    if policy == "smallest":
        return min(sizes, key=lambda s: s[0] * s[1])
    listed = ", ".join(f"{w}x{h}" for h, w in sizes)
    raise ImageError(f"source sizes differ ({listed}); set a resize policy (first, largest, smallest)")


def sum_planes(x: np.ndarray) -> np.ndarray:
    """Σ_k x_k (H,W) of planes x (K,H,W), added in order into a new array of x's type (x.sum(0) without its
    reduction machinery: one add per extra plane)."""
    total = x[0].copy()
    for plane in x[1:]:
        total += plane
    return total


def remap_linear(img: np.ndarray, map_x: np.ndarray, map_y: np.ndarray) -> np.ndarray:
    """img (H,W) or (H,W,C) sampled bilinearly at (map_x, map_y) (H',W'); outside the frame: replicated border."""
    return cv2.remap(img, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def resize(img: np.ndarray, size: tuple[int, int], upsample: int = cv2.INTER_CUBIC) -> np.ndarray:
    """Resize to (H, W): area averaging when shrinking, `upsample` (an OpenCV interpolation) when enlarging."""
    h, w = size
    if img.shape[:2] == (h, w):
        return img
    shrink = h * w < img.shape[0] * img.shape[1]
    return cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA if shrink else upsample)


def noise_sigma(x: np.ndarray) -> float:
    """Donoho's estimate of additive Gaussian noise σ in x (H,W): MAD of the finest diagonal Haar band / 0.6745.

    For 8-bit data (x = n/255) that band takes only multiples of 1/510 and a plain median would move in steps of
    0.74 grey levels; there the median is interpolated within its step (the grouped-data median), so the
    estimate follows the noise continuously, and the rounding's own share (σ² = 1/12 grey level², what a clean
    8-bit frame shows) is taken out: what is left is the noise the camera added.
    """
    h, w = (x.shape[0] // 2) * 2, (x.shape[1] // 2) * 2
    q = x[:h, :w]
    band = np.abs(q[0::2, 0::2] - q[0::2, 1::2] - q[1::2, 0::2] + q[1::2, 1::2]) / 2  # (H/2,W/2)
    steps = band * 510.0  # an integer per coefficient if x came from 8-bit data
    whole = np.rint(steps)
    if band.size == 0 or np.abs(steps - whole).max() > 0.01:
        return float(np.median(band)) * MAD_TO_SIGMA
    counts = np.bincount(whole.astype(np.intp, copy=False).ravel())  # coefficients per step (≤ 510 steps)
    median = _histogram_median(counts)
    step = int(median)
    below, at = int(counts[:step].sum()), int(counts[step]) if median == step else 0
    if at == 0:  # an even count whose two middle values differ: the median lies between two steps
        sigma = median / 510.0 * MAD_TO_SIGMA
    else:
        low, width = (0.0, 0.5) if median == 0 else (median - 0.5, 1.0)  # the values that round to `median`
        sigma = (low + (whole.size / 2 - below) / at * width) / 510.0 * MAD_TO_SIGMA
    return math.sqrt(max(0.0, sigma**2 - ROUNDING_VARIANCE_8BIT))


def _histogram_median(counts: np.ndarray) -> float:
    """The median of the integers whose counts per value are ``counts`` (n,), as np.median of them would give."""
    total = int(counts.sum())
    cumulative = np.cumsum(counts)  # (n,)
    low = int(np.searchsorted(cumulative, (total - 1) // 2, side="right"))  # the value at sorted index (N−1)//2
    high = int(np.searchsorted(cumulative, total // 2, side="right"))  # and at N//2
    return (low + high) / 2


def working_size(size: tuple[int, int], max_side: int) -> tuple[int, int]:
    """(H, W) scaled so the long side is at most max_side (0: unchanged), aspect kept."""
    h, w = size
    if max_side <= 0 or max(h, w) <= max_side:
        return h, w
    scale = max_side / max(h, w)
    return max(1, round(h * scale)), max(1, round(w * scale))


def pad_to_multiple(x: np.ndarray, multiple: int) -> tuple[np.ndarray, tuple[int, int]]:
    """Reflect-pad (H,W[,C]) at the bottom/right to multiples; returns the padded array and the original (H,W)."""
    h, w = x.shape[:2]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph == 0 and pw == 0:
        return x, (h, w)
    mode = "reflect" if ph < h and pw < w else "symmetric"
    pad = ((0, ph), (0, pw)) + ((0, 0),) * (x.ndim - 2)
    return np.pad(x, pad, mode=mode), (h, w)


def to_output(y: np.ndarray, mode: str) -> np.ndarray:
    """Fused luminance in [−1,1] → [0,1]: clamp (default) or the DDFM/CCF min-max stretch."""
    if mode == "minmax":
        lo, hi = float(y.min()), float(y.max())
        return (y - lo) / (hi - lo) if hi > lo else np.zeros_like(y)
    return np.clip((y + 1) / 2, 0, 1)


def weight_overlay(fused: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """A weight map (H,W) in [0,1] as a JET colour map (blue 0 → red 1) blended over the fused image; BGR uint8."""
    base = fused if fused.ndim == 3 else cv2.cvtColor(fused, cv2.COLOR_GRAY2BGR)
    heat = cv2.applyColorMap(to_uint8(weight), cv2.COLORMAP_JET)
    return cv2.addWeighted(base, 0.5, heat, 0.5, 0)


def to_uint8(img: np.ndarray) -> np.ndarray:
    """float [0,1] → uint8, rounded."""
    return cv2.convertScaleAbs(np.clip(img, 0, 1), alpha=255.0) if img.dtype == np.float32 else \
        np.clip(np.rint(img * 255.0), 0, 255).astype(np.uint8)
