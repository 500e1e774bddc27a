"""`ir.homography: auto`: the infrared → visible homography estimated while the rig runs, and watched.

Pairs are kept ``spacing_s`` apart on their stamps (the newest ``pairs`` of them, as 8-bit luminance). Once
there are enough, :func:`homography_estimate.estimate_from_pairs` runs on a background thread, so fusion never
waits for it; until an estimate is accepted the frames are fused unregistered. After that the rig is
re-estimated every ``refine_period_s`` from the latest pairs, starting from the current H:

- an estimate within ``warn_px`` of the current H moves it ``refine_rate`` of the way (grid points blended),
  so one noisy estimate cannot jerk the output;
- one farther away (a knocked camera) replaces it, and the status is a warning for ``warn_hold_s``;
- a refused one (no shared structure: night, fog, a covered lens) keeps the current H, with a warning.

No ROS. The node calls :meth:`offer` per pair and reads :attr:`homography` and :meth:`status`.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from dig2dig_ros.core.frame import imaging
from dig2dig_ros.core.frame.homography_estimate import (
    EstimateSettings,
    HomographyEstimate,
    apply,
    check_quality,
    estimate_from_pairs,
    fit_homography,
    grid_error,
    grid_points,
)
from dig2dig_ros.core.frame.registration import RegistrationError


@dataclass(frozen=True)
class AutoSettings:
    """When pairs are taken, how often the rig is re-estimated, and what counts as a changed alignment."""

    pairs: int = 8  # pairs an estimate uses (the newest)
    spacing_s: float = 1.0  # at least this many seconds (stamps) between kept pairs
    refine_period_s: float = 30.0  # re-estimate this often once aligned; 0: estimate once
    refine_rate: float = 0.5  # share of the way an agreeing re-estimate moves the current H
    warn_px: float = 8.0  # a re-estimate farther than this (mean grid distance, visible px) is a changed rig
    warn_hold_s: float = 30.0  # a changed alignment or a refused re-estimate stays a warning this long

    def validate(self) -> AutoSettings:
        """self, or ValueError naming the first bad value."""
        if self.pairs < 2:
            raise ValueError(f"pairs must be at least 2, got {self.pairs}")
        if self.spacing_s < 0 or self.refine_period_s < 0 or self.warn_hold_s < 0:
            raise ValueError("spacing_s, refine_period_s and warn_hold_s must not be negative")
        if not 0.0 < self.refine_rate <= 1.0:
            raise ValueError(f"refine_rate must be in (0, 1], got {self.refine_rate}")
        if self.warn_px <= 0:
            raise ValueError(f"warn_px must be positive, got {self.warn_px}")
        return self


@dataclass(frozen=True)
class AutoStatus:
    """What the estimator is doing, for logs and /diagnostics."""

    state: str  # "collecting", "estimating", "aligned", "changed", "refused" (or failed)
    message: str
    warn: bool
    pairs: int  # pairs held now
    estimates: int  # estimates finished (accepted or not)
    estimate: HomographyEstimate | None  # the latest accepted one


def blend_homographies(current: np.ndarray, new: np.ndarray, rate: float, ir_size: tuple[int, int],
                       vis_size: tuple[int, int]) -> np.ndarray:
    """The H whose 5×5 grid of infrared points lands ``rate`` of the way from where ``current`` puts them to where
    ``new`` does (least squares through the blended points; H[2,2] = 1)."""
    src = grid_points(ir_size)  # (25,2) infrared px
    return fit_homography(src, (1.0 - rate) * apply(current, src) + rate * apply(new, src), ir_size, vis_size)


def _gray8(img: np.ndarray) -> np.ndarray:
    """An 8-bit luminance copy (H,W) of any frame imaging reads."""
    if img.dtype == np.uint8 and img.ndim == 2:
        return img.copy()
    return imaging.to_uint8(imaging.split_luma(img)[0])


class AutoRegistration:
    """Collects spaced pairs, estimates H on a background thread, refines it and says how well it holds."""

    def __init__(self, settings: AutoSettings | None = None, estimate_settings: EstimateSettings | None = None,
                 log: Callable[[str, bool], None] | None = None) -> None:
        self.settings = (settings or AutoSettings()).validate()
        self.estimate_settings = estimate_settings or EstimateSettings()
        self.log = log or (lambda message, warn: None)  # (message, is_warning): one line per finished estimate
        self._lock = threading.Lock()
        self._pairs: deque[tuple[np.ndarray, np.ndarray]] = deque(maxlen=self.settings.pairs)
        self._sizes: tuple[tuple[int, int], tuple[int, int]] | None = None  # (ir, vis) (h, w) of the pairs held
        self._last_kept: float | None = None  # stamp of the newest pair kept
        self._last_estimate: float | None = None  # stamp when the latest estimate started
        self._thread: threading.Thread | None = None
        self._h: np.ndarray | None = None
        self._accepted: HomographyEstimate | None = None
        self._estimates = 0
        self._warning: tuple[float, str] | None = None  # (stamp, message) of the latest changed / refused
        self._latest_stamp = 0.0

    @property
    def homography(self) -> np.ndarray | None:
        """The current infrared → visible H, or None before the first accepted estimate."""
        with self._lock:
            return None if self._h is None else self._h.copy()

    @property
    def busy(self) -> bool:
        """True while an estimate runs."""
        thread = self._thread
        return thread is not None and thread.is_alive()

    def offer(self, ir: np.ndarray, vis: np.ndarray, stamp: float) -> bool:
        """Keep the pair if it is ``spacing_s`` after the last one kept (stamps in seconds; a stamp that jumps
        back starts the spacing afresh); start an estimate when one is due. True when the pair was kept."""
        sizes = (ir.shape[:2], vis.shape[:2])
        with self._lock:
            self._latest_stamp = stamp
            if self._last_kept is not None and stamp < self._last_kept:  # a replayed bag looped, a camera restarted
                self._last_kept = self._last_estimate = None
                if self._warning is not None:  # a warning is held warn_hold_s from now, on the new stamps
                    self._warning = (stamp, self._warning[1])
            if self._last_kept is not None and stamp - self._last_kept < self.settings.spacing_s:
                return False
            if self._sizes is not None and sizes != self._sizes:  # a camera changed its resolution: start again
                self._pairs.clear()
                self._h, self._accepted = None, None
            self._sizes = sizes
            self._pairs.append((_gray8(ir), _gray8(vis)))
            self._last_kept = stamp
            due = self._due(stamp)
            if due:
                self._last_estimate = stamp
                pairs, current = list(self._pairs), self._h
        if due:
            self._thread = threading.Thread(target=self._estimate, args=(pairs, current, stamp),
                                            name="dig2dig_auto_registration", daemon=True)
            self._thread.start()
        return True

    def _due(self, stamp: float) -> bool:
        if self.busy or len(self._pairs) < self.settings.pairs:
            return False
        if self._h is None:
            return True  # the first estimate, or a retry after a refusal (spaced by the pairs it collects)
        if self.settings.refine_period_s <= 0:
            return False
        return self._last_estimate is None or stamp - self._last_estimate >= self.settings.refine_period_s

    def _estimate(self, pairs: list[tuple[np.ndarray, np.ndarray]], current: np.ndarray | None, stamp: float
                  ) -> None:
        try:
            est = estimate_from_pairs(pairs, initial=current, settings=self.estimate_settings)
            check_quality(est, self.estimate_settings)
        except Exception as exc:  # noqa: BLE001 - refused (RegistrationError) or a fault of ours: never the node's end
            what = "refused" if isinstance(exc, RegistrationError) else f"failed ({type(exc).__name__})"
            with self._lock:
                self._estimates += 1
                if self._h is None:
                    self._pairs.clear()  # retry on fresh pairs
                message = (f"registration estimate {what}: {exc}"
                           + ("; keeping the current homography" if self._h is not None else
                              "; fusing unregistered, retrying on the next pairs"))
                self._warning = (stamp, message)
            self.log(message, True)
            return
        ir_size, vis_size = pairs[0][0].shape[:2], pairs[0][1].shape[:2]
        with self._lock:
            self._estimates += 1
            if self._sizes != (ir_size, vis_size):
                return  # a camera changed its resolution while this ran: the estimate is for the old one
            quality = (f"correlation {est.correlation:.2f}, residual {est.residual_px:.1f} px, overlap "
                       f"{est.overlap:.0%}, {est.inliers}/{len(est.pairs)} pairs agree, {est.seconds:.1f} s")
            if self._h is None:
                self._h, warn = est.h, False
                message = f"registration estimated from {len(pairs)} pairs: {quality}"
            else:
                moved = grid_error(est.h, self._h, ir_size)[0]
                if moved > self.settings.warn_px:
                    self._h, warn = est.h, True
                    message = (f"registration changed by {moved:.1f} px (more than {self.settings.warn_px:g}): was "
                               f"a camera moved? Now using the new estimate ({quality})")
                    self._warning = (stamp, message)
                else:
                    self._h = blend_homographies(self._h, est.h, self.settings.refine_rate, ir_size, vis_size)
                    warn, message = False, f"registration refined (moved {moved:.1f} px): {quality}"
            self._accepted = est
        self.log(message, warn)

    def status(self) -> AutoStatus:
        """The current state and a one-line message; warn is True for a changed or refused alignment (held
        ``warn_hold_s`` after it was seen) and while frames are fused unregistered after a refusal."""
        with self._lock:
            held, n, est, h = len(self._pairs), self._estimates, self._accepted, self._h
            warning = self._warning
            recent = warning is not None and self._latest_stamp - warning[0] <= self.settings.warn_hold_s
        if recent and warning is not None:
            state = "changed" if "changed by" in warning[1] else "refused"
            return AutoStatus(state, warning[1], True, held, n, est)
        if h is None:
            if self.busy:
                return AutoStatus("estimating", f"registration: estimating from {held} pairs; fused unregistered "
                                  "until then", False, held, n, est)
            return AutoStatus("collecting", f"registration: collecting pairs ({held} of {self.settings.pairs}); "
                              "fused unregistered until then", False, held, n, est)
        assert est is not None
        return AutoStatus("aligned", f"registration: correlation {est.correlation:.2f}, residual "
                          f"{est.residual_px:.1f} px, overlap {est.overlap:.0%}", False, held, n, est)

    def wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` s for a running estimate; True when none runs."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
        return not self.busy
