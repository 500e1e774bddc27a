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
output where the two agree. `dig-blend` stabilises its blend at the size it was solved at, before the detail is
added, so the band above that size is this frame's sources' own (at 1280×960 a quarter of the pixels, and less
flicker with more Qabf than stabilising the finished frame: docs/VIDEO.md); the other methods stabilise the
finished luminance. A frame is fused on its own instead for the first frame, after a time jump (stamps
going back, or a gap longer than `video.max_gap`), when the scene changed too much (mean absolute change of the
sources at the working size above `video.max_change`), and when the working size or settings changed.

The frame runs the fuser's stages by name (stages.py) in two halves that two threads can run on consecutive
frames at once (the fusion node's pipeline): :meth:`VideoFuser.front` runs prepare, ``flow`` (the motion to the
last frame) and the method's stages up to the detail, and hands a :class:`Pending` frame to
:meth:`VideoFuser.back`, which runs ``detail``, ``stabilise`` and ``compose``. Each half keeps what it needs from
the previous frame on its own (:class:`FrontState`, :class:`BackState`); the back must see every front result in
order, and stabilises a frame only against the output of the frame its motion was measured to.
``VideoFuser(...)(images)`` is ``back(front(images))``. ``Fuser.profile`` times each stage.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import cv2
import numpy as np
import torch

from dig2dig_ros.core.frame import imaging
from dig2dig_ros.core.frame.fusion import (
    BlendMethod,
    ClassicalMethod,
    Fuser,
    FusionResult,
    Prepared,
    WarmStart,
    with_detail,
    with_solve,
)
from dig2dig_ros.core.frame.stages import SolveGrid, StageTimer
from dig2dig_ros.core.video import temporal

BALANCE_RATE = 0.2  # weight of the newest frame in each half's average time


@dataclass
class FrontState:
    """What the next frame's front half needs from the last one."""

    index: int  # the frame's number in this sequence
    stamp: float | None
    small: np.ndarray  # (K,h,w) the sources at the working size
    guide: np.ndarray  # (H,W) uint8 the frame the flow is measured on
    sample: torch.Tensor | None  # (1,C,H',W') the sampler's final sample (sampler methods)
    gain: torch.Tensor | None  # (K,1,H',W') the DIG gain (dig-blend)
    since_measure: int = 0  # dig-blend: frames since DIG was last measured


@dataclass
class BackState:
    """What the next frame's back half needs from the last one."""

    index: int  # the frame these are from
    luminance: np.ndarray  # (h,w) float32 its stabilised luminance (dig-blend: the blend before the detail)
    sources: np.ndarray  # (K,h,w) its sources' luminance at that size (the stabilisation's bound)


@dataclass
class Pending:
    """A frame between the halves: fused up to the detail by :meth:`VideoFuser.front`, for :meth:`VideoFuser.back`."""

    index: int | None  # the frame's number in the sequence (None: video mode off, no state)
    previous: int | None  # the frame ``coords`` point into (None: no motion, the frame is not stabilised)
    prep: Prepared
    result: FusionResult  # luminance and weights at the solve size (``detailed`` False) or the input size
    detailed: bool  # False: the back still runs the detail
    grid: SolveGrid | None  # dig-blend's grid when the back solves the blend too (see _before_detail)
    coords: tuple[np.ndarray, np.ndarray] | None  # (H,W) each: where each pixel of this frame was in ``previous``
    reason: str  # why the frame ran in full ("warm" when it was warm-started; "video mode off...")
    seconds: float  # the front half's own time


class VideoFuser:
    """Fuses consecutive frames with warm starts; ``last_reason`` says why a frame ran in full (or "warm").

    :meth:`front` and :meth:`back` may run at the same time on different frames (one thread each); each of them
    must not be called from two threads at once.
    """

    def __init__(self, fuser: Fuser, balance: bool = False) -> None:
        self.fuser = fuser
        self.front_state: FrontState | None = None
        self.back_state: BackState | None = None
        self.last_reason = "first frame"
        self.motion = temporal.MotionCompensator(fuser.config.video.flow_side)
        self._count = 0  # frames the front half has started
        self.balance = balance  # two threads: the solve also goes to the back while the front is the longer half
        self._front_s = self._back_s = 0.0  # each half's own seconds per frame, averaged over recent frames

    @property
    def state(self) -> FrontState | None:
        """The front half's state (the one a cancelled or failed frame leaves as it was)."""
        return self.front_state

    def reset(self) -> None:
        """Forget the previous frame: the next one runs in full."""
        self.front_state = self.back_state = None

    def cold_reason(self, small: np.ndarray, stamp: float | None) -> str | None:
        """Why this frame (sources (K,h,w) at the working size, stamp in seconds) must run from noise, or None."""
        cfg = self.fuser.config.video
        state = self.front_state
        if state is None or (state.sample is None and state.gain is None):
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

    def front(self, images: list[np.ndarray], stamp: float | None = None,
              valid: list[np.ndarray | None] | None = None,
              should_stop: Callable[[], bool] | None = None) -> Pending:
        """The first half of a frame (as Fuser.__call__'s arguments): prepare, the motion to the last frame, the
        method's stages up to the detail, warm-started from the previous frame when it can."""
        start = time.perf_counter()
        fuser = self.fuser
        cfg = fuser.config.video
        timer = fuser.timer(should_stop)
        prep = fuser.prepare(images, valid)
        if fuser.prior is None or not cfg.enabled:
            reason = "video mode off for this method" if cfg.enabled else "video mode off"
            return self._pending(None, None, prep, self._before_detail(prep, timer, None), None, reason, start)
        reason = self.cold_reason(prep.small, stamp)
        state = self.front_state
        guide = timer("flow", temporal.flow_guide, prep.sources)
        coords = None  # where each pixel of this frame was in the last one
        if reason is None and state.guide.shape == guide.shape:
            coords = timer("flow", self.motion.coordinates, guide, state.guide, self._stabilised(prep)[0].shape)
        warm, since = None, 0
        if reason is None and fuser.config.method == "dig-blend":
            since = state.since_measure + 1
            measure = since >= cfg.dig_every
            gain = state.gain
            if coords is not None and not measure:  # the gain moves with the scene (a walking person's weight)
                gain = timer("flow", temporal.warp_small, gain, *coords, prep.small.shape[1:])
            warm = WarmStart(gain=gain, measure=measure)
            since = 0 if measure else since
        elif reason is None:
            warm = WarmStart(sample=state.sample, start=min(cfg.start_step, len(fuser.timesteps) - 1))
        out = self._before_detail(prep, timer, warm)
        index = self._count
        self._count += 1
        previous = state.index if coords is not None else None
        self.front_state = FrontState(index, stamp, prep.small, guide, out[0].sample, out[0].gain, since)
        return self._pending(index, previous, prep, out, coords, reason or "warm", start)

    def back(self, pending: Pending, should_stop: Callable[[], bool] | None = None) -> FusionResult:
        """The second half of a frame from :meth:`front`: the detail, the stabilisation against the last output
        (when ``pending`` was measured against it), and the colour merge. Call it for every front result, in
        order."""
        start = time.perf_counter()
        fuser, cfg = self.fuser, self.fuser.config.video
        timer = fuser.timer(should_stop)
        prep, result = pending.prep, pending.result
        if pending.grid is not None:
            result = with_solve(fuser, timer, pending.grid, result)
        state = self.back_state
        stabilise = (pending.coords is not None and cfg.temporal_strength > 0 and state is not None
                     and state.index == pending.previous)
        sources = self._stabilised(prep)

        def stabilised(luminance: np.ndarray) -> np.ndarray:
            if not stabilise:
                return luminance
            return timer("stabilise", self._stabilise, luminance, sources, pending.coords)

        at_solve = sources is prep.solve  # dig-blend: its solved blend is stabilised, before the detail (where
        # the two are one array the detail adds nothing, so the order does not matter)
        if at_solve:
            result.luminance = kept = stabilised(result.luminance)  # kept: what the next frame is stabilised against
        if not pending.detailed:
            result = with_detail(fuser, prep, timer, result)
        if not at_solve:
            result.luminance = kept = stabilised(result.luminance)
        result.fused = fuser.compose(prep, result.luminance, result.weights)  # once, after the stabilisation
        if pending.index is not None:
            self.back_state = BackState(pending.index, kept, sources)
        own = time.perf_counter() - start
        self._back_s += BALANCE_RATE * (own - self._back_s)
        result.seconds = pending.seconds + own
        return result

    def __call__(self, images: list[np.ndarray], stamp: float | None = None,
                 valid: list[np.ndarray | None] | None = None,
                 should_stop: Callable[[], bool] | None = None) -> FusionResult:
        """Fuse one frame of the sequence (as Fuser.__call__), starting from the previous one when it can; a frame
        that fails or is cancelled leaves the sequence as it was."""
        before = self.front_state
        pending = self.front(images, stamp, valid, should_stop)
        try:
            return self.back(pending, should_stop)
        except BaseException:
            self.front_state = before
            raise

    def _before_detail(self, prep: Prepared, timer: StageTimer, warm: WarmStart | None
                       ) -> tuple[FusionResult, bool, SolveGrid | None]:
        """The method's stages up to the detail (a classical method: all of them), whether they included it, and
        dig-blend's grid when the solve is left to the back half.

        The blend's solve moves to the back half, so the halves balance, where the front carries more than its
        share: where the input is no larger than the size dig-blend solves at (the detail step has nothing to add
        and the back would only stabilise and compose), and on a frame that measures DIG (its prior call is the
        largest stage, on one frame in `video.dig_every`); with ``balance`` (two threads), also wherever the front
        has taken longer than the back over the last frames (each half's own time, averaged at BALANCE_RATE).
        """
        method = self.fuser.method
        if isinstance(method, ClassicalMethod):
            return method.run(self.fuser, prep, timer, warm), True, None
        later = self.balance and self._front_s > self._back_s
        if isinstance(method, BlendMethod) and (prep.solve.shape[1:] == prep.size or warm is None or warm.measure
                                                or later):
            grid, out = method.before_solve(self.fuser, prep, timer, warm)
            return out, False, grid
        return method.before_detail(self.fuser, prep, timer, warm), False, None

    def _pending(self, index: int | None, previous: int | None, prep: Prepared,
                 out: tuple[FusionResult, bool, SolveGrid | None], coords: tuple[np.ndarray, np.ndarray] | None,
                 reason: str, start: float) -> Pending:
        self.last_reason = reason
        seconds = time.perf_counter() - start
        self._front_s += BALANCE_RATE * (seconds - self._front_s)
        return Pending(index, previous, prep, out[0], out[1], out[2], coords, reason, seconds)

    def _stabilised(self, prep: Prepared) -> np.ndarray:
        """The sources (K,h,w) at the size a frame's luminance is stabilised at: dig-blend's solve size (its blend
        is stabilised before the detail is added, so the detail above that size is this frame's sources'), the
        input size for the other methods."""
        return prep.solve if isinstance(self.fuser.method, BlendMethod) else prep.sources

    def _stabilise(self, luminance: np.ndarray, sources: np.ndarray,
                   coords: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
        """This frame's luminance (h,w) stabilised against the last one, for its sources (K,h,w) and the motion
        ``coords`` (h,w) each to the last frame (temporal.stabilise). The last frame's luminance and sources are
        brought to (h,w) first where their size differs (dig-blend's solve size follows the noise estimate)."""
        cfg, state = self.fuser.config.video, self.back_state
        previous, before = state.luminance, state.sources
        if previous.shape != luminance.shape:
            previous = imaging.resize(previous, luminance.shape, cv2.INTER_LINEAR)  # (h,w)
            before = imaging.resize_planes(before, luminance.shape, cv2.INTER_LINEAR)  # (K,h,w)
        bound = None
        if cfg.source_bound and before.shape == sources.shape:
            bound = temporal.source_change(sources, before, *coords)
        return temporal.stabilise(luminance, previous, *coords, cfg.temporal_strength, cfg.temporal_sigma, bound)


Frame = tuple[list[np.ndarray], float | None, list[np.ndarray | None] | None]  # images, stamp, validity masks


def fuse_pipelined(video: VideoFuser, frames: Iterable[Frame], consume: Callable[[int, FusionResult], None]) -> None:
    """Fuse a finite sequence in order, as the node does on two threads: the front half of frame t+1 (and reading
    it: ``frames`` is iterated on the calling thread) while the back half of frame t and ``consume(t, result)``
    (e.g. writing it) run on a second thread. At most one front result waits between the halves; nothing is
    dropped. The first error of either half stops the sequence and is raised here, after both threads end."""
    handoff: queue.Queue = queue.Queue(maxsize=1)  # (index, Pending), or None: no more frames
    failures: list[BaseException] = []

    def back_half() -> None:
        while (item := handoff.get()) is not None:
            if failures:
                continue  # a half failed: drain what the front handed over, finish nothing more
            try:
                consume(item[0], video.back(item[1]))
            except BaseException as exc:  # noqa: BLE001 - raised on the calling thread below
                failures.append(exc)

    thread = threading.Thread(target=back_half, name="video_back_half", daemon=True)
    thread.start()
    try:
        for index, (images, stamp, valid) in enumerate(frames):
            if failures:
                break
            handoff.put((index, video.front(images, stamp=stamp, valid=valid)))
    finally:
        handoff.put(None)
        thread.join()
    if failures:
        raise failures[0]
