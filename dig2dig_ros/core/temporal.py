"""Temporal stabilisation of a fused video: the previous fused frame, carried along the motion, where it agrees.

Per-frame fusion chooses, per pixel, whose edges and detail to keep; when two sources are close, that choice
can flip between frames, and the maxabs edge choice keeps the stronger of two sources' noise gradients, so the
fused video changes more between frames than either source does (M3SVD: 1.46 times their mean warping error,
docs/VIDEO.md). Video mode corrects each new fused frame Y_t against the previous *output* carried to the current
frame by optical flow, P = warp(F_{t−1}), in two steps:

1. **Source bound.** Along the same flow each source changed by D_k = |c_k,t − warp(c_k,t−1)| at each pixel; the
   fused frame may change by no more than the sources' mean change there, b = (1/K)·Σ_k D_k:

       Y'_t = P + clip(Y_t − P, −b, b)

   This is the flicker ratio's own yardstick (flicker.py: the fused warping error over the sources' mean), so the
   fused video cannot change more than its sources do. Real motion passes: where the flow misses a moving object
   or the scene changes, the sources change too, b is large, and the new frame's content goes through; where
   the sources are still (up to their noise), what only the fusion changed (an edge choice or a weight that
   flipped, the chosen source's noise amplified) is held back.
2. **Recursive blend**, in the spirit of the motion-compensated recursive filter of Dubois & Sabri (IEEE Trans.
   Commun. 1984):

       F_t = Y'_t + a · g · (P − Y'_t),   g = exp(−(|P − Y'_t| / σ)²)

   with a the strength and σ the difference (grey levels of [0,1]) beyond which the two are taken to disagree
   (a moving or changed region: the new frame wins).

Pixels whose flow points outside the previous frame keep Y_t. The flow (DIS, Kroeger et al. ECCV 2016, `fast`
preset) is measured on the mean of the sources' luminance, so no single camera decides it. The same flow carries
working-size maps (a reused DIG gain) to the current frame (:func:`warp_small`).
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from dig2dig_ros.core.imaging import remap_linear, sum_planes, working_size

FLOW_PRESET = cv2.DISOPTICAL_FLOW_PRESET_FAST  # ultrafast: 2 ms less per 640x480 frame, M3SVD flicker 0.03 higher


MOTION_SIGMAS = 3.0  # a source's change beyond this many of its noise σ is motion (or a real change), not noise
MEDIAN_STRIDE = 4  # the noise σ from every 4th pixel each way
MOVER_MIN_PIXELS = 3  # one camera's change counts as motion only where it fills a 3x3 patch (isolated spikes are noise)
_MOVER_PATCH = np.ones((MOVER_MIN_PIXELS, MOVER_MIN_PIXELS), np.uint8)  # the opening's structuring element


def flow_guide(sources: np.ndarray) -> np.ndarray:
    """The image the flow is measured on: the sources' mean luminance (K,H,W) in [0,1] → (H,W) uint8."""
    return cv2.convertScaleAbs(sum_planes(sources), alpha=255.0 / len(sources))  # rounded, saturated to [0,255]


class MotionCompensator:
    """Backward flow between consecutive guides and warping of the previous frame along it."""

    def __init__(self, side: int = 640) -> None:
        self.side = side  # frames larger than this long side are measured at it (0: at their own size)
        self._dis = cv2.DISOpticalFlow_create(FLOW_PRESET)
        self._grid: tuple[np.ndarray, np.ndarray] | None = None  # pixel coordinates (H,W) each, kept per size

    def coordinates(self, current: np.ndarray, previous: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per pixel of ``current`` (H,W) uint8, where it was in ``previous``: map_x, map_y (H,W) float32.

        Frames larger than ``side`` are measured at that long side and the flow brought up bilinearly.
        """
        h, w = current.shape
        small = working_size((h, w), self.side)
        if small != (h, w):
            current, previous = (cv2.resize(g, small[::-1], interpolation=cv2.INTER_AREA) for g in (current, previous))
        flow = self._dis.calc(current, previous, None)  # (h',w',2): current → previous, in pixels of (h',w')
        if small != (h, w):
            flow = cv2.resize(flow, (w, h), interpolation=cv2.INTER_LINEAR)  # (H,W,2)
            flow *= np.array([w / small[1], h / small[0]], np.float32)
        if self._grid is None or self._grid[0].shape != (h, w):
            self._grid = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
        xs, ys = self._grid
        return xs + flow[..., 0], ys + flow[..., 1]


def _warp(image: np.ndarray, map_x: np.ndarray, map_y: np.ndarray) -> np.ndarray:
    """image (H,W) sampled bilinearly at (map_x, map_y) (H,W); outside the frame: replicated border."""
    return remap_linear(image.astype(np.float32, copy=False), map_x, map_y)


def source_change(sources: np.ndarray, previous: np.ndarray, map_x: np.ndarray, map_y: np.ndarray) -> np.ndarray:
    """b (H,W): how much the output may change at each pixel, from this frame's sources (K,H,W) and the last
    frame's (K,H,W), both in [0,1], the last ones sampled at (map_x, map_y).

    With D_k = |c_k,t − warp(c_k,t−1)|: b = (1/K)·Σ_k D_k, the sources' mean change; but where exactly one source
    changed by more than its noise (D_k > z·s_k, s_k the robust σ of D_k over the frame, median/0.6745, z =
    :data:`MOTION_SIGMAS`) and the others did not, over at least a :data:`MOVER_MIN_PIXELS`-square patch,
    b = that source's D_k: an object that moves in one camera only (a warm person in the dark) is followed at
    once instead of leaving half of itself behind.
    """
    k, (h, w) = len(sources), sources.shape[1:]
    change = np.empty((k, h, w), np.float32)  # D_k
    for c, (now, before) in enumerate(zip(sources, previous, strict=True)):
        cv2.absdiff(now.astype(np.float32, copy=False), _warp(before, map_x, map_y), dst=change[c])
    sigma = np.array([np.median(d[::MEDIAN_STRIDE, ::MEDIAN_STRIDE]) / 0.6745 for d in change], np.float32)
    moved = change > MOTION_SIGMAS * sigma[:, None, None]  # (K,H,W) beyond the noise: most pixels are still
    alone = moved.sum(0, dtype=np.uint8) == 1  # (H,W) exactly one source moved
    # An object moving covers a patch; a pixel alone beyond 3σ is the noise's tail (a noisy visible camera has
    # many): the smallest opening drops those, so they stay bounded by the mean change.
    alone = cv2.morphologyEx(alone.view(np.uint8), cv2.MORPH_OPEN, _MOVER_PATCH).view(bool)  # (H,W)
    bound = sum_planes(change)  # (H,W) the sources' mean change ...
    bound *= np.float32(1 / k)
    np.copyto(bound, change.max(0), where=alone)
    return bound


def stabilise(current: np.ndarray, previous: np.ndarray, map_x: np.ndarray, map_y: np.ndarray,
              strength: float, sigma: float, bound: np.ndarray | None = None) -> np.ndarray:
    """F_t from this frame's fused luminance ``current`` (H,W) and the previous output ``previous`` (H,W), both
    float32 in [0,1], with the previous frame sampled at (map_x, map_y) (:meth:`MotionCompensator.coordinates`).

    ``bound`` (H,W): the most the output may change from the carried previous output at each pixel
    (:func:`source_change`), applied before the blend; None: no bound.
    """
    h, w = current.shape
    warped = _warp(previous, map_x, map_y)
    step = np.subtract(current, warped, dtype=np.float32)  # (H,W) Y_t − P, then Y'_t − P
    if bound is not None:
        np.minimum(step, bound, out=step)
        np.maximum(step, -bound, out=step)
    # F_t = Y'_t + a·g·(P − Y'_t) = P + step·(1 − a·g), g = exp(−(step/σ)²)
    factor = np.multiply(step, step)
    factor *= np.float32(-1.0 / (sigma * sigma))
    np.exp(factor, out=factor)
    factor *= np.float32(-strength)
    factor += np.float32(1.0)
    out = np.multiply(step, factor, out=factor)
    out += warped
    inside = (map_x >= 0) & (map_x <= w - 1) & (map_y >= 0) & (map_y <= h - 1)
    np.copyto(out, current, where=~inside)
    return np.clip(out, 0.0, 1.0, out=out)


def warp_small(maps: torch.Tensor, map_x: np.ndarray, map_y: np.ndarray, size: tuple[int, int]) -> torch.Tensor:
    """Maps (K,1,H',W') of the previous frame at the working size (the top-left ``size`` = (h,w) holds the image,
    the rest is padding) carried to the current frame along full-resolution coordinates (H,W)
    (:meth:`MotionCompensator.coordinates`); returns a new tensor, padding unchanged."""
    h, w = size
    big_h, big_w = map_x.shape
    sx, sy = w / big_w, h / big_h
    small_x = (cv2.resize(map_x, (w, h), interpolation=cv2.INTER_AREA) + 0.5) * sx - 0.5  # (h,w) small pixels
    small_y = (cv2.resize(map_y, (w, h), interpolation=cv2.INTER_AREA) + 0.5) * sy - 0.5
    pad_h, pad_w = maps.shape[-2:]
    grid = np.stack([(2 * small_x + 1) / pad_w - 1, (2 * small_y + 1) / pad_h - 1], axis=-1)  # (h,w,2) in [−1,1]
    grid_t = torch.from_numpy(grid).to(maps.device, maps.dtype).unsqueeze(0).expand(len(maps), h, w, 2)
    out = maps.clone()
    out[..., :h, :w] = F.grid_sample(maps, grid_t, mode="bilinear", padding_mode="border", align_corners=False)
    return out
