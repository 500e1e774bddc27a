"""Infrared (thermal) frames to float [0,1]: the one normalisation the node and the command line share.

Raw radiometric frames carry no display mapping: 16-bit counts (mono16 / 16UC1 messages, 16-bit PNG files or
compressed messages) or temperatures as 32-bit floats (32FC1, in kelvin or °C). ``prepare_infrared`` maps every
such frame to float32 (H,W) in [0,1] with one policy:

- ``fixed``: (value − low) / (high − low), clipped; ``low``/``high`` are in the frame's own units (counts for
  16-bit frames, kelvin or °C for float frames): the same mapping for every frame, so brightness means
  temperature.
- ``percentile``: a per-frame stretch between two percentiles (default 1 and 99), clipped: always uses the full
  range, whatever the scene's temperatures.

8-bit frames are taken as the camera's own display mapping (AGC output) and pass unchanged. Settings are checked
by ``check_settings`` (ValueError with a message that names the problem): a node refuses them at start-up and
at run time instead of failing on every frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

POLICIES = ("percentile", "fixed")


class ThermalError(ValueError):
    """A frame that cannot be normalised (wrong shape, empty, non-finite values)."""


@dataclass(frozen=True)
class ThermalSettings:
    """How raw infrared frames become [0,1]."""

    policy: str = "percentile"
    low: float = 0.0  # fixed: value mapped to 0 (counts, kelvin or °C)
    high: float = 65535.0  # fixed: value mapped to 1
    percentile_low: float = 1.0
    percentile_high: float = 99.0

    def validate(self) -> ThermalSettings:
        check_settings(self.policy, self.low, self.high, (self.percentile_low, self.percentile_high))
        return self


def check_settings(policy: str, low: float, high: float, percentiles: tuple[float, float]) -> None:
    """Raise ValueError naming the problem when the settings cannot normalise a frame.

    Both pairs are checked whatever the policy, so switching the policy later cannot expose an inverted pair.
    """
    if policy not in POLICIES:
        raise ValueError(f"unknown thermal normalisation {policy!r}: use one of {', '.join(POLICIES)}")
    if not (np.isfinite(low) and np.isfinite(high) and float(low) < float(high)):
        raise ValueError(f"thermal fixed range needs range_low < range_high, got low={low}, high={high}")
    p_lo, p_hi = (float(p) for p in percentiles)
    if not 0.0 <= p_lo < p_hi <= 100.0:
        raise ValueError(f"thermal percentiles need 0 <= percentile_low < percentile_high <= 100, "
                         f"got low={p_lo}, high={p_hi}")


def _percentiles(arr: np.ndarray, percentiles: tuple[float, float]) -> tuple[float, float]:
    """Two percentiles of arr; nearest rank from a histogram for integer frames ≤ 16 bit (fast), else numpy."""
    if arr.dtype in (np.uint8, np.uint16):
        counts = np.bincount(arr.reshape(-1), minlength=1)  # (max+1,)
        cdf = np.cumsum(counts)  # (max+1,)
        ranks = [max(1, int(np.ceil(p / 100.0 * arr.size))) for p in percentiles]
        lo, hi = (int(np.searchsorted(cdf, r)) for r in ranks)
        return float(lo), float(hi)
    lo, hi = np.percentile(arr, percentiles)
    return float(lo), float(hi)


def normalize_thermal(
    frame: np.ndarray,
    policy: str = "percentile",
    low: float = 0.0,
    high: float = 65535.0,
    percentiles: tuple[float, float] = (1.0, 99.0),
) -> np.ndarray:
    """A raw thermal frame (H,W) (uint16 counts, or float kelvin / °C) as float32 (H,W) in [0,1].

    A flat frame (equal percentiles) maps to 0 rather than dividing by zero. Raises ValueError for bad settings
    and ThermalError for a frame that is not a non-empty (H,W) array of finite values.
    """
    check_settings(policy, low, high, percentiles)
    arr = np.asarray(frame)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim != 2 or arr.size == 0:
        raise ThermalError(f"thermal frame must be a non-empty (H,W) array, got shape {arr.shape}")
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise ThermalError(f"thermal frame ({arr.dtype}) contains NaN or infinite values")
    if policy == "fixed":
        lo, span = float(low), float(high) - float(low)
    else:
        lo, hi = _percentiles(arr, percentiles)
        span = hi - lo if hi > lo else 1.0
    out = arr.astype(np.float32)  # (H,W)
    out -= np.float32(lo)
    out *= np.float32(1.0 / span)
    return np.clip(out, 0.0, 1.0, out=out)


def prepare_infrared(frame: np.ndarray, settings: ThermalSettings | None = None) -> np.ndarray:
    """Any infrared frame as the fusion core takes it: 8-bit unchanged, 16-bit and float normalised to [0,1].

    A 3-channel frame (a colour-mapped or 3-channel gray export) is passed on unchanged when 8-bit; a 16-bit or
    float frame must have one channel.
    """
    s = settings or ThermalSettings()
    arr = np.asarray(frame)
    if arr.size == 0:
        raise ThermalError(f"infrared frame is empty (shape {arr.shape})")
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == np.uint16 or arr.dtype.kind == "f":
        return normalize_thermal(arr, s.policy, s.low, s.high, (s.percentile_low, s.percentile_high))
    raise ThermalError(f"unsupported infrared pixel type {arr.dtype} (uint8, uint16 or float)")
