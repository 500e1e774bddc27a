"""Temporal flicker of a fused video: its warping error, and that error relative to the sources' own.

Definition (the warping error of Lai et al., "Learning Blind Video Temporal Consistency", ECCV 2018, §5.1,
with this project's choices marked):

    E(V) = 1/(T−1) · Σ_{t=2..T}  Σ_p M_t(p) · |V_t(p) − V̂_{t−1}(p)|  /  Σ_p M_t(p)

- V̂_{t−1} is frame t−1 warped onto frame t with the backward optical flow b_t (frame t → frame t−1):
  V̂_{t−1}(p) = V_{t−1}(p + b_t(p)), bilinear.
- The flow comes from the **visible** frames for every video measured (fused and sources alike), computed with
  OpenCV's DIS optical flow (Kroeger et al., ECCV 2016), medium preset, on 8-bit gray frames [ours; Lai et al.
  use FlowNet2].
- M_t is the non-occlusion mask: the forward–backward consistency check of Sundaram et al. (ECCV 2010), as used
  by Ruder et al. (GCPR 2016) whose masks Lai et al. adopt: p is kept when
  |b_t(p) + f_t(p + b_t(p))|² ≤ 0.01·(|b_t(p)|² + |f_t(p + b_t(p))|²) + 0.5, with f_t the forward flow
  (frame t−1 → frame t), and when p + b_t(p) lies inside the frame. Ruder et al.'s extra motion-boundary test
  is not applied [ours].
- |·| is the absolute difference on the gray [0, 255] scale (BT.601 luma for colour frames) [ours: Lai et al.
  use the squared difference of RGB in [0, 1]; ``squared=True`` gives that form on gray values].

The **flicker ratio** is E(fused) divided by the mean of E(source_k) over the sources, all measured with the
same flow and masks: ≈ 1 when the fused video changes as much as its sources do (it moves as the scene moves),
> 1 when fusion adds temporal change of its own (flicker), < 1 when it is steadier than its sources. Mind that
every video leaves a residual even when warped exactly (sensor noise, sub-pixel interpolation, rounding), and a
fusion that averages sources whose residuals are independent averages those too: the plain average of two
reads about 1/√2 ≈ 0.71 on a cleanly moving scene (test/test_flicker.py). Compare methods on the same
sequence rather than against 1 alone.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from dig2dig_ros.core.frame.imaging import remap_linear
from dig2dig_ros.core.metrics import to_gray255

CONSISTENCY_REL = 0.01  # Sundaram et al.: relative tolerance of the forward–backward check ...
CONSISTENCY_ABS = 0.5  # ... and its absolute tolerance, in squared pixels
DIS_PRESET = cv2.DISOPTICAL_FLOW_PRESET_MEDIUM


@dataclass
class Motion:
    """The visible video's motion between consecutive frames, shared by every video measured against it."""

    backward: list[np.ndarray]  # per t = 1..T−1: (H,W,2) float32 flow frame t → frame t−1, in pixels (x, y)
    masks: list[np.ndarray]  # per t = 1..T−1: (H,W) bool, True where the pixel is not occluded

    @property
    def valid_fraction(self) -> float:
        """Mean fraction of pixels kept by the masks."""
        return float(np.mean([m.mean() for m in self.masks])) if self.masks else 0.0


@dataclass
class FlickerResult:
    """Warping errors of a fused video and its sources, and their ratio."""

    fused: float  # E(fused), gray levels on the [0,255] scale
    sources: tuple[float, ...]  # E(source_k), same units
    ratio: float  # fused / mean(sources); 1 when all are 0, inf when only the sources are 0
    valid_fraction: float  # mean fraction of pixels that passed the occlusion check


def _gray_u8(img: np.ndarray) -> np.ndarray:
    """(H,W) uint8 gray of any frame the metrics accept."""
    return np.clip(np.rint(to_gray255(img)), 0, 255).astype(np.uint8)


def _pixel_grid(height: int, width: int) -> np.ndarray:
    """(H,W,2) float32 pixel coordinates (x, y)."""
    xs, ys = np.meshgrid(np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32))
    return np.stack([xs, ys], axis=-1)


def _sample(img: np.ndarray, coords: np.ndarray) -> np.ndarray:
    """img (H,W) or (H,W,C) sampled bilinearly at coords (H,W,2) (x, y); outside the frame: replicated border."""
    return remap_linear(img, coords[..., 0], coords[..., 1])


def estimate_motion(guide: Sequence[np.ndarray]) -> Motion:
    """DIS flow both ways between consecutive frames of the guide (visible) video, and occlusion masks.

    ``guide``: T ≥ 2 frames of one size, (H,W) gray or (H,W,3) BGR, uint8/uint16/float in [0, 1].
    """
    if len(guide) < 2:
        raise ValueError(f"need at least two frames to measure motion, got {len(guide)}")
    frames = [_gray_u8(f) for f in guide]
    h, w = frames[0].shape
    if any(f.shape != (h, w) for f in frames):
        raise ValueError("guide frames differ in size")
    dis = cv2.DISOpticalFlow_create(DIS_PRESET)
    grid = _pixel_grid(h, w)  # (H,W,2)
    backward, masks = [], []
    for prev, cur in zip(frames[:-1], frames[1:], strict=True):
        back = dis.calc(cur, prev, None)  # (H,W,2): cur pixel p matches prev pixel p + back(p)
        fwd = dis.calc(prev, cur, None)  # (H,W,2): prev pixel q matches cur pixel q + fwd(q)
        target = grid + back  # (H,W,2) where each pixel of frame t comes from in frame t−1
        fwd_at = _sample(fwd, target)  # (H,W,2)
        gap = np.sum((back + fwd_at) ** 2, axis=-1)  # (H,W)
        tol = CONSISTENCY_REL * (np.sum(back**2, axis=-1) + np.sum(fwd_at**2, axis=-1)) + CONSISTENCY_ABS
        inside = (target[..., 0] >= 0) & (target[..., 0] <= w - 1) & (target[..., 1] >= 0) & (target[..., 1] <= h - 1)
        backward.append(back)
        masks.append((gap <= tol) & inside)
    return Motion(backward=backward, masks=masks)


def warping_error(frames: Sequence[np.ndarray], motion: Motion, squared: bool = False) -> float:
    """E(V) of the module docstring for ``frames`` (T frames of the guide's size) under ``motion``."""
    if len(frames) != len(motion.backward) + 1:
        raise ValueError(f"{len(frames)} frames for motion measured over {len(motion.backward) + 1}")
    gray = [to_gray255(f).astype(np.float32) for f in frames]  # each (H,W) on [0,255]
    h, w = motion.masks[0].shape if motion.masks else gray[0].shape
    if any(g.shape != (h, w) for g in gray):
        raise ValueError(f"frames must all be {w}x{h}, the size of the video the motion came from")
    grid = _pixel_grid(h, w)
    per_frame = []
    for t, (back, mask) in enumerate(zip(motion.backward, motion.masks, strict=True), start=1):
        if not mask.any():
            continue
        diff = np.abs(gray[t] - _sample(gray[t - 1], grid + back))[mask]  # (N,) kept pixels
        per_frame.append(float(np.mean(diff**2 if squared else diff)))
    return float(np.mean(per_frame)) if per_frame else math.nan


def flicker(
    fused: Sequence[np.ndarray],
    sources: Sequence[Sequence[np.ndarray]],
    guide_index: int = 1,
    motion: Motion | None = None,
    squared: bool = False,
) -> FlickerResult:
    """Warping error of the fused video and its ratio to the mean of the sources' own warping errors.

    ``sources``: one frame sequence per source (VIF: [infrared, visible]); the flow comes from
    ``sources[guide_index]`` (the visible video) unless ``motion`` is given (to reuse it across methods).
    """
    if motion is None:
        motion = estimate_motion(sources[guide_index])
    e_fused = warping_error(fused, motion, squared)
    e_sources = tuple(warping_error(s, motion, squared) for s in sources)
    reference = float(np.mean(e_sources))
    if reference > 0:
        ratio = e_fused / reference
    else:
        ratio = 1.0 if e_fused == 0 else math.inf
    return FlickerResult(fused=e_fused, sources=e_sources, ratio=ratio, valid_fraction=motion.valid_fraction)
