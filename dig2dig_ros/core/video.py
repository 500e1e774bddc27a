"""Video mode: each frame starts from the previous one, and the fused video is stabilised over time.

A camera delivers a sequence, not independent pairs. What a frame takes from the last one depends on the method:

- the sampler (`dig`, `static`, `ddfm`) starts at step `video.start_step` from the previous frame's final sample
  noised to that step's timestep (SDEdit, Meng et al. ICLR 2022) and runs only the remaining steps, with DIG
  measured at the start step and the guidance as usual;
- `dig-blend` measures DIG (its one prior call) on every `video.dig_every`-th frame and reuses that gain on the
  frames between, carried along the optical flow (so a walking person keeps the infrared's weight) and refined
  along the current frame's sources.

Then the fused luminance is stabilised against the previous output carried along the motion (temporal.py): it
changes by no more than its sources changed there (``video.source_bound``), and is blended with the previous
output where the two agree. A frame is fused on its own instead for the first frame, after a time jump (stamps
going back, or a gap longer than `video.max_gap`), when the scene changed too much (mean absolute change of the
sources at the working size above `video.max_change`), and when the working size or settings changed.

The frame runs the fuser's stages by name (stages.py): prepare, then ``flow`` (the motion to the last frame),
the method's stages up to the detail, ``stabilise``, and ``compose``; ``Fuser.profile`` times each.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from dig2dig_ros.core import temporal
from dig2dig_ros.core.fusion import Fuser, FusionResult, WarmStart


@dataclass
class VideoState:
    """What the next frame needs from the last one."""

    stamp: float | None
    small: np.ndarray  # (K,h,w) the sources at the working size
    result: FusionResult  # its luminance is the published (stabilised) one
    guide: np.ndarray  # (H,W) uint8 the frame the flow is measured on
    sources: np.ndarray  # (K,H,W) the sources' luminance at the input size (the stabilisation's bound)
    since_measure: int = 0  # dig-blend: frames since DIG was last measured


class VideoFuser:
    """Fuses consecutive frames with warm starts; ``last_reason`` says why a frame ran in full (or "warm")."""

    def __init__(self, fuser: Fuser) -> None:
        self.fuser = fuser
        self.state: VideoState | None = None
        self.last_reason = "first frame"
        self.motion = temporal.MotionCompensator()

    def reset(self) -> None:
        """Forget the previous frame: the next one runs in full."""
        self.state = None

    def cold_reason(self, small: np.ndarray, stamp: float | None) -> str | None:
        """Why this frame (sources (K,h,w) at the working size, stamp in seconds) must run from noise, or None."""
        cfg = self.fuser.config.video
        state = self.state
        if state is None or (state.result.sample is None and state.result.gain is None):
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

    def _stabilise(self, luminance: np.ndarray, sources: np.ndarray,
                   coords: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
        """This frame's fused luminance (H,W) stabilised against the last output, for its sources (K,H,W) and the
        motion ``coords`` to the last frame (temporal.stabilise)."""
        cfg, state = self.fuser.config.video, self.state
        bound = None
        if cfg.source_bound and state.sources.shape == sources.shape:
            bound = temporal.source_change(sources, state.sources, *coords)
        return temporal.stabilise(luminance, state.result.luminance, *coords, cfg.temporal_strength,
                                  cfg.temporal_sigma, bound)

    def __call__(self, images: list[np.ndarray], stamp: float | None = None,
                 valid: list[np.ndarray | None] | None = None,
                 should_stop: Callable[[], bool] | None = None) -> FusionResult:
        """Fuse one frame of the sequence (as Fuser.__call__), starting from the previous one when it can."""
        fuser = self.fuser
        cfg = fuser.config.video
        if fuser.prior is None or not cfg.enabled:
            self.last_reason = "video mode off for this method" if cfg.enabled else "video mode off"
            return fuser(images, valid, should_stop)
        start = time.perf_counter()
        timer = fuser.timer()
        prep = fuser.prepare(images, valid)
        reason = self.cold_reason(prep.small, stamp)
        state = self.state
        guide = timer("flow", temporal.flow_guide, prep.sources)
        coords = None  # where each pixel of this frame was in the last one
        if reason is None and state.guide.shape == guide.shape:
            coords = timer("flow", self.motion.coordinates, guide, state.guide)
        warm, since = None, 0
        if reason is None and fuser.config.method == "dig-blend":
            since = state.since_measure + 1
            measure = since >= cfg.dig_every
            gain = state.result.gain
            if coords is not None and not measure:  # the gain moves with the scene (a walking person's weight)
                gain = timer("flow", temporal.warp_small, gain, *coords, prep.small.shape[1:])
            warm = WarmStart(gain=gain, measure=measure)
            since = 0 if measure else since
        elif reason is None:
            warm = WarmStart(sample=state.result.sample, start=min(cfg.start_step, len(fuser.timesteps) - 1))
        result = fuser.fuse_input_size(prep, should_stop, warm)
        if coords is not None and cfg.temporal_strength > 0:
            result.luminance = timer("stabilise", self._stabilise, result.luminance, prep.sources, coords)
        result.fused = fuser.compose(prep, result.luminance, result.weights)  # once, after the stabilisation
        self.last_reason = reason or "warm"
        self.state = VideoState(stamp, prep.small, result, guide, prep.sources, since)
        result.seconds = time.perf_counter() - start
        return result
