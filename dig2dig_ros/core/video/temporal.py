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

from dig2dig_ros.core.frame.imaging import remap_linear, sum_planes, working_size

FLOW_PRESET = cv2.DISOPTICAL_FLOW_PRESET_FAST  # ultrafast: 2 ms less per 640x480 frame, M3SVD flicker 0.03 higher


MOTION_SIGMAS = 3.0  # a source's change beyond this many of its noise σ is motion (or a real change), not noise
MEDIAN_STRIDE = 4  # the noise σ from every 4th pixel each way
MOVER_MIN_PIXELS = 3  # one camera's change counts as motion only where it fills a 3x3 patch (isolated spikes are noise)
_MOVER_PATCH = np.ones((MOVER_MIN_PIXELS, MOVER_MIN_PIXELS), np.uint8)  # the opening's structuring element


def flow_guide(sources: np.ndarray) -> np.ndarray:
    """The image the flow is measured on: the sources' mean luminance (K,H,W) in [0,1] → (H,W) uint8."""
    scale = 255.0 / len(sources)
    if len(sources) == 2:  # VIF: the weighted sum straight to uint8, in one pass
        return cv2.addWeighted(sources[0], scale, sources[1], scale, 0.0, dtype=cv2.CV_8U)
    return cv2.convertScaleAbs(sum_planes(sources), alpha=scale)  # rounded, saturated to [0,255]


class MotionCompensator:
    """Backward flow between consecutive guides and warping of the previous frame along it."""

    def __init__(self, side: int = 640) -> None:
        self.side = side  # frames larger than this long side are measured at it (0: at their own size)
        self._dis = cv2.DISOpticalFlow_create(FLOW_PRESET)
        self._grid: _FlowGrid | None = None  # kept per (frame size, flow size)

    def coordinates(self, current: np.ndarray, previous: np.ndarray, size: tuple[int, int] | None = None
                    ) -> tuple[np.ndarray, np.ndarray]:
        """Per pixel of ``current`` (H,W) uint8, where it was in ``previous``: map_x, map_y float32 at ``size``
        ((h,w) of the same view, default (H,W)), in that size's pixels.

        Frames larger than ``side`` are measured at that long side and the flow brought up (or down) bilinearly.
        """
        full = current.shape
        small = working_size(full, self.side)
        if small != full:
            current, previous = (cv2.resize(g, small[::-1], interpolation=cv2.INTER_AREA) for g in (current, previous))
        return self.from_flow(self._dis.calc(current, previous, None), size or full)

    def from_flow(self, flow: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        """map_x, map_y (H,W) float32 for a frame of ``size`` (H,W) from the backward flow (h,w,2) measured on it
        at (h,w) (current → previous, in pixels of (h,w)): xs + (W/w)·flow_x and ys + (H/h)·flow_y, the flow
        brought up bilinearly (cv2.resize, edge samples held)."""
        if self._grid is None or self._grid.key != (size, flow.shape[:2]):
            self._grid = _FlowGrid(size, flow.shape[:2])
        grid = self._grid
        if flow.shape[:2] == size:
            return grid.x + flow[..., 0], grid.y + flow[..., 1]
        # Where each pixel of the flow's grid was, in full-size pixels: an affine function of the flow, so bringing
        # it up bilinearly gives xs + scale·(the flow brought up), except where the resize holds the edge sample.
        map_x = np.multiply(flow[..., 0], np.float32(grid.scale[1]))  # (h,w)
        map_x += grid.x
        map_y = np.multiply(flow[..., 1], np.float32(grid.scale[0]))
        map_y += grid.y
        h, w = size
        map_x, map_y = (cv2.resize(m, (w, h), interpolation=cv2.INTER_LINEAR) for m in (map_x, map_y))  # (H,W)
        map_x[:, grid.cols] += grid.col_fix  # the edge columns and rows: the held sample's own position replaced
        map_y[grid.rows] += grid.row_fix[:, None]
        return map_x, map_y


class _FlowGrid:
    """The flow's grid (h,w) in the pixels of the frame (H,W) it is brought up to."""

    def __init__(self, size: tuple[int, int], small: tuple[int, int]) -> None:
        self.key = (size, small)
        self.scale = (size[0] / small[0], size[1] / small[1])  # full-size pixels per flow pixel, (y, x)
        centres = [(np.arange(n) + 0.5) * s - 0.5 for n, s in zip(small, self.scale, strict=True)]  # (h,), (w,)
        self.x = np.broadcast_to(centres[1].astype(np.float32), small).copy()  # (h,w) each
        self.y = np.broadcast_to(centres[0].astype(np.float32)[:, None], small).copy()
        (self.rows, self.row_fix), (self.cols, self.col_fix) = (
            _held_edges(c, n) for c, n in zip(centres, size, strict=True))


def _held_edges(centres: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The indices of n output samples that a bilinear resize from samples at ``centres`` (m,) holds at the first
    or last one (their position falls outside [0, m−1] in input samples), and index − that centre for each."""
    m = len(centres)
    at = (np.arange(n) + 0.5) * (m / n) - 0.5  # (n,) output positions in input samples
    low, high = np.flatnonzero(at < 0), np.flatnonzero(at > m - 1)
    index = np.concatenate([low, high])
    held = np.concatenate([np.full(len(low), centres[0]), np.full(len(high), centres[-1])])
    return index, (index - held).astype(np.float32)


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
