"""Video mode: each frame's sampler starts from the previous fused frame, noised part-way (SDEdit-style).

A camera delivers a sequence, not independent pairs. Frame t starts at sampler step `video.start_step` from the
previous frame's final sample noised to that step's timestep (SDEdit, Meng et al. ICLR 2022) and runs only the
remaining steps, with DIG measured at the start step and the guidance as usual. A full run from noise is used
instead for the first frame, after a time jump (stamps going back, or a gap longer than `video.max_gap`), when
the scene changed too much (mean absolute change of the sources at the working size above `video.max_change`),
and when the working size or settings changed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from dig2dig_ros.core.fusion import Fuser, FusionResult, WarmStart


@dataclass
class VideoState:
    """What the next frame needs from the last one."""

    stamp: float | None
    small: np.ndarray  # (K,h,w) the sources at the working size
    result: FusionResult


class VideoFuser:
    """Fuses consecutive frames with warm starts; ``last_reason`` says why a frame ran in full (or "warm")."""

    def __init__(self, fuser: Fuser) -> None:
        self.fuser = fuser
        self.state: VideoState | None = None
        self.last_reason = "first frame"

    def reset(self) -> None:
        """Forget the previous frame: the next one runs in full."""
        self.state = None

    def cold_reason(self, small: np.ndarray, stamp: float | None) -> str | None:
        """Why this frame (sources (K,h,w) at the working size, stamp in seconds) must run from noise, or None."""
        cfg = self.fuser.config.video
        state = self.state
        if state is None or state.result.sample is None:
            return "first frame"
        if state.small.shape != small.shape:
            return "size changed"
        if stamp is not None and state.stamp is not None:
            if stamp < state.stamp:
                return f"time jumped back {state.stamp - stamp:.2f} s"
            if cfg.max_gap > 0 and stamp - state.stamp > cfg.max_gap:
                return f"gap of {stamp - state.stamp:.2f} s"
        change = float(np.abs(small - state.small).mean())
        if change > cfg.max_change:
            return f"scene changed (mean change {change:.3f} > {cfg.max_change})"
        return None

    def __call__(self, images: list[np.ndarray], stamp: float | None = None,
                 valid: list[np.ndarray | None] | None = None,
                 should_stop: Callable[[], bool] | None = None) -> FusionResult:
        """Fuse one frame of the sequence (as Fuser.__call__), warm-started from the previous one when it can be."""
        fuser = self.fuser
        cfg = fuser.config.video
        if fuser.prior is None or fuser.config.method == "dig-blend" or not cfg.enabled:
            self.last_reason = "video mode off for this method" if cfg.enabled else "video mode off"
            return fuser(images, valid, should_stop)
        prep = fuser.prepare(images, valid)
        reason = self.cold_reason(prep.small, stamp)
        start = min(cfg.start_step, len(fuser.timesteps) - 1)
        warm = None if reason is not None else WarmStart(self.state.result.sample, start)
        result = fuser.fuse_prepared(prep, should_stop, warm)
        self.last_reason = reason or "warm"
        self.state = VideoState(stamp, prep.small, result)
        return result
