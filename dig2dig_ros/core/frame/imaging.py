"""Image handling around the sampler (ALGORITHM.md §5): reading, colour, sizes, padding, output range."""

from __future__ import annotations

import math
import threading
from pathlib import Path

import cv2
import numpy as np

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")  # what folder readers pick up
MAD_TO_SIGMA = 1 / 0.6745  # median absolute deviation → σ for Gaussian noise (Donoho & Johnstone 1994)
ROUNDING_VARIANCE_8BIT = 1 / (12 * 255**2)  # rounding to n/255: uniform error, variance q²/12 ([0,1] units)
UNIT_8BIT = np.arange(256, dtype=np.float32) * np.float32(1 / 255)  # (256,) n → n/255 in float32, as to_unit
UNIT_8BIT.flags.writeable = False
COLOUR_PROBE_ROWS = 8  # is_colour looks at this many rows first
SCRATCH_ENTRIES = 64  # scratch arrays a thread keeps (all dropped when a new one would exceed it)
_SCRATCH = threading.local()  # per thread: {(name, shape, dtype): array}


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
    # a colour frame almost always shows it in its first rows: the whole frame is compared only when they are gray
    return not (_channels_equal(img[:COLOUR_PROBE_ROWS]) and _channels_equal(img))


def _channels_equal(img: np.ndarray) -> bool:
    """Whether the three channels of img (H,W,3) are equal everywhere."""
    return np.array_equal(img[..., 0], img[..., 1]) and np.array_equal(img[..., 1], img[..., 2])


def split_ycbcr(img: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """float32 [0,1] (H,W) or BGR (H,W,3) → luminance (H,W) and chroma (H,W,2) Cr,Cb (None for gray)."""
    if img.ndim == 2:
        return img, None
    if not is_colour(img):
        return img[..., 0].copy(), None
    ycrcb = cv2.cvtColor(img, cv2.COLOR_BGR2YCrCb)  # (H,W,3), float32 [0,1], chroma centred at 0.5
    return ycrcb[..., 0].copy(), ycrcb[..., 1:].copy()


def split_luma(img: np.ndarray, out: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Any source image → luminance (H,W) float32 in [0,1] and chroma (H,W,2) Cr,Cb (None for gray).

    uint8 colour stays in uint8 through the colour conversion (chroma returned as uint8, centred at 128, one
    contiguous (H,W,2) array): the cheap path for camera frames. Other types go through :func:`to_unit` and
    :func:`split_ycbcr` (float chroma). ``out``: an (H,W) float32 array the luminance is written into (and returned).
    """
    y, chroma, _ = split_luma_8bit(img, out)
    return y, chroma


def split_luma_8bit(img: np.ndarray, out: np.ndarray | None = None
                    ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """:func:`split_luma`, and for uint8 input the 8-bit plane n (H,W) uint8 whose n·float32(1/255) the luminance is
    (what :func:`noise_sigma_8bit` measures; img itself for a gray frame), else None."""
    if img.dtype == np.uint8:
        if img.size == 0:
            raise ImageError("empty image")
        if img.ndim == 2:
            return _unit_8bit(img, out), None, img
        if not is_colour(img):
            plane = cv2.extractChannel(img, 0)  # (H,W)
            return _unit_8bit(plane, out), None, plane
        ycrcb = scratch("imaging.split_luma.ycrcb", (*img.shape[:2], 3), np.uint8)  # (H,W,3)
        _written(cv2.cvtColor(img, cv2.COLOR_BGR2YCrCb, dst=ycrcb), ycrcb)
        plane = np.empty(img.shape[:2], np.uint8)  # (H,W) Y
        chroma = np.empty((*img.shape[:2], 2), np.uint8)  # (H,W,2) Cr,Cb
        cv2.mixChannels([ycrcb], [plane, chroma], [0, 0, 1, 1, 2, 2])  # one pass: Y to plane, Cr,Cb to chroma
        return _unit_8bit(plane, out), chroma, plane
    y, chroma = split_ycbcr(to_unit(img))
    if out is None:
        return y, chroma, None
    np.copyto(out, y)
    return out, chroma, None


def _unit_8bit(plane: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """uint8 (H,W) → float32 n·float32(1/255) (H,W), into ``out`` if given: one table look-up per pixel."""
    return cv2.LUT(plane, UNIT_8BIT) if out is None else _written(cv2.LUT(plane, UNIT_8BIT, dst=out), out)


def merge_luma(y: np.ndarray, chroma: np.ndarray | None) -> np.ndarray:
    """Luminance (H,W) in [0,1] + chroma from :func:`split_luma` (uint8 or float, or None) → uint8 BGR or gray."""
    if chroma is None:
        return to_uint8(y)
    if chroma.dtype == np.uint8:
        y8 = to_uint8(y, out=scratch("imaging.merge_luma.y8", y.shape, np.uint8))  # (H,W)
        ycrcb = scratch("imaging.merge_luma.ycrcb", (*y.shape, 3), np.uint8)  # (H,W,3) Y,Cr,Cb
        return cv2.cvtColor(_written(cv2.merge([y8, chroma], dst=ycrcb), ycrcb), cv2.COLOR_YCrCb2BGR)
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


def sum_planes(x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Σ_k x_k (H,W) of planes x (K,H,W), added in order into a new array of x's type, or into ``out`` (H,W), which
    may be x[0] (x.sum(0) without its reduction machinery: one add per extra plane)."""
    if len(x) == 1:
        return x[0].copy() if out is None else _written(np.copyto(out, x[0]), out)
    total = np.add(x[0], x[1], out=out)
    for plane in x[2:]:
        total += plane
    return total


def scratch(name: str, shape: tuple[int, ...], dtype: type = np.float32) -> np.ndarray:
    """This thread's scratch array ``name`` of this shape and dtype, the same one on every call, so that a frame's
    temporaries need not fault in fresh pages (a 1280x960 float32 plane: up to ~1 ms of page faults).

    Its content is whatever its last use left. Only for values used up before the function that asked returns:
    never returned to its caller, never kept; one name per use (module.function.role).
    """
    arrays = getattr(_SCRATCH, "arrays", None)
    if arrays is None:
        arrays = _SCRATCH.arrays = {}
    key = (name, tuple(shape), np.dtype(dtype))
    array = arrays.get(key)
    if array is None:
        if len(arrays) >= SCRATCH_ENTRIES:
            arrays.clear()  # arrays still in use stay alive with their users
        array = arrays[key] = np.empty(shape, dtype)
    return array


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


def resize_into(img: np.ndarray, out: np.ndarray, upsample: int = cv2.INTER_CUBIC) -> np.ndarray:
    """:func:`resize` of img to out's (H, W), written into out (of img's type and channels); returns out."""
    h, w = out.shape[:2]
    if img.shape[:2] == (h, w):
        return _written(np.copyto(out, img), out)
    shrink = h * w < img.shape[0] * img.shape[1]
    return _written(cv2.resize(img, (w, h), dst=out, interpolation=cv2.INTER_AREA if shrink else upsample), out)


def _written(result: np.ndarray | None, out: np.ndarray) -> np.ndarray:
    """out, holding ``result``: what a cv2 call given ``dst=out`` returned (a view of out, or a new array where out
    did not fit it; then copied in), or None (numpy's copyto)."""
    if result is not None and not np.may_share_memory(result, out):
        np.copyto(out, result)
    return out


def resize_planes(x: np.ndarray, size: tuple[int, int], upsample: int = cv2.INTER_CUBIC) -> np.ndarray:
    """:func:`resize` of each plane of x (K,H,W) to size (h, w): (K,h,w), a new array."""
    out = np.empty((len(x), *size), x.dtype)  # (K,h,w)
    for plane, dst in zip(x, out, strict=True):
        resize_into(plane, dst, upsample)
    return out


def noise_sigma(x: np.ndarray) -> float:
    """Donoho's estimate of additive Gaussian noise σ in x (H,W): MAD of the finest diagonal Haar band / 0.6745.

    For 8-bit data (x = n/255) that band takes only multiples of 1/510 and a plain median would move in steps of
    0.74 grey levels; there the median is interpolated within its step (the grouped-data median), so the
    estimate follows the noise continuously, and the rounding's own share (σ² = 1/12 grey level², what a clean
    8-bit frame shows) is taken out: what is left is the noise the camera added. A frame less than 2 pixels tall
    or wide has no such band: 0 (no noise measurable).
    """
    h, w = (x.shape[0] // 2) * 2, (x.shape[1] // 2) * 2
    if h == 0 or w == 0:
        return 0.0
    q = x[:h, :w]
    band = np.abs(q[0::2, 0::2] - q[0::2, 1::2] - q[1::2, 0::2] + q[1::2, 1::2]) / 2  # (H/2,W/2)
    steps = band * 510.0  # an integer per coefficient if x came from 8-bit data
    whole = np.rint(steps)
    if np.abs(steps - whole).max() > 0.01:
        return float(np.median(band)) * MAD_TO_SIGMA
    return _sigma_8bit(np.bincount(whole.astype(np.intp).ravel()))  # coefficients per step (≤ 510 steps)


def noise_sigma_8bit(n: np.ndarray) -> float:
    """:func:`noise_sigma` of x = n·float32(1/255) (what :func:`split_luma` makes of uint8 data), the same float,
    from the 8-bit plane n (H,W) uint8 itself: in integers, without x's float passes.

    The float path takes its 8-bit branch there and counts the same steps: 510·band differs from the integer
    |n00 − n01 − n10 + n11| by at most ~3e-4 (the rounding of n/255 and of three float32 additions).
    """
    h, w = (n.shape[0] // 2) * 2, (n.shape[1] // 2) * 2
    q = n[:h, :w]
    steps = np.subtract(q[0::2, 0::2], q[0::2, 1::2], dtype=np.int16,
                        out=scratch("imaging.noise_sigma_8bit.steps", (h // 2, w // 2), np.int16))  # (H/2,W/2)
    steps -= q[1::2, 0::2]
    steps += q[1::2, 1::2]
    if steps.size == 0:
        return noise_sigma(n.astype(np.float32) * np.float32(1 / 255))
    counts = cv2.calcHist([np.abs(steps, out=steps).view(np.uint16)], [0], None, [511], [0, 511])  # (511,1)
    return _sigma_8bit(counts.ravel().astype(np.int64))


def _sigma_8bit(counts: np.ndarray) -> float:
    """noise_sigma's 8-bit estimate from the counts of its band's steps (coefficients per multiple of 1/510)."""
    median = _histogram_median(counts)
    step = int(median)
    below, at = int(counts[:step].sum()), int(counts[step]) if median == step else 0
    if at == 0:  # an even count whose two middle values differ: the median lies between two steps
        sigma = median / 510.0 * MAD_TO_SIGMA
    else:
        low, width = (0.0, 0.5) if median == 0 else (median - 0.5, 1.0)  # the values that round to `median`
        sigma = (low + (int(counts.sum()) / 2 - below) / at * width) / 510.0 * MAD_TO_SIGMA
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


def to_uint8(img: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """float [0,1] → uint8, rounded (into ``out``, uint8 of img's shape, if given)."""
    if img.dtype != np.float32:
        y8 = np.clip(np.rint(img * 255.0), 0, 255).astype(np.uint8)
        return y8 if out is None else _written(y8, out)
    # convertScaleAbs saturates above 255 itself: only a negative value (|·| would mirror it) needs the clip
    src = img if img.size and img.min() >= 0 else np.clip(img, 0, 1)
    if out is None:
        return cv2.convertScaleAbs(src, alpha=255.0)
    return _written(cv2.convertScaleAbs(src, dst=out, alpha=255.0), out)
