"""Temporal stabilisation of a fused video: the previous fused frame, carried along the motion, where it agrees.

Per-frame fusion chooses, per pixel, whose edges and detail to keep; when two sources are close, that choice
can flip between frames and the fused video flickers more than either source. Video mode blends each new fused
frame with the previous *output*, warped to the current frame by optical flow, in the spirit of the
motion-compensated recursive filter of Dubois & Sabri (IEEE Trans. Commun. 1984):

    F_t = Y_t + a · g · (warp(F_{t−1}) − Y_t),   g = exp(−(|warp(F_{t−1}) − Y_t| / σ)²)

with Y_t the frame's own fused luminance, a the strength and σ the difference (grey levels of [0,1]) beyond which
the two are taken to disagree (a moving or changed region: the new frame wins). Pixels whose flow points
outside the previous frame are not blended. The flow (DIS, Kroeger et al. ECCV 2016) is measured on the mean
of the sources' luminance, so no single camera decides it. The same flow carries working-size maps (a reused
DIG gain) to the current frame (:func:`warp_small`).
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
import torch.nn.functional as F


def flow_guide(sources: np.ndarray) -> np.ndarray:
    """The image the flow is measured on: the sources' mean luminance (K,H,W) in [0,1] → (H,W) uint8."""
    return np.clip(sources.mean(0) * 255 + 0.5, 0, 255).astype(np.uint8)


class MotionCompensator:
    """Backward flow between consecutive guides and warping of the previous frame along it."""

    def __init__(self) -> None:
        self._dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST)
        self._grid: tuple[np.ndarray, np.ndarray] | None = None  # pixel coordinates (H,W) each, kept per size

    def coordinates(self, current: np.ndarray, previous: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per pixel of ``current`` (H,W) uint8, where it was in ``previous``: map_x, map_y (H,W) float32."""
        flow = self._dis.calc(current, previous, None)  # (H,W,2): current → previous
        h, w = current.shape
        if self._grid is None or self._grid[0].shape != (h, w):
            self._grid = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
        xs, ys = self._grid
        return xs + flow[..., 0], ys + flow[..., 1]


def stabilise(current: np.ndarray, previous: np.ndarray, map_x: np.ndarray, map_y: np.ndarray,
              strength: float, sigma: float) -> np.ndarray:
    """F_t from this frame's fused luminance ``current`` (H,W) and the previous output ``previous`` (H,W), both
    float32 in [0,1], with the previous frame sampled at (map_x, map_y) (:meth:`MotionCompensator.coordinates`)."""
    h, w = current.shape
    warped = cv2.remap(previous.astype(np.float32), map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    difference = warped - current  # (H,W)
    gain = strength * np.exp(-np.square(difference / sigma))
    inside = (map_x >= 0) & (map_x <= w - 1) & (map_y >= 0) & (map_y <= h - 1)
    out = current + np.where(inside, gain, 0.0).astype(np.float32) * difference
    return np.clip(out, 0.0, 1.0).astype(np.float32, copy=False)


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
