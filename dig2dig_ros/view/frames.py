"""Newest-wins frame slots and the latest diagnostics, shared by the live views. No ROS import here.

A producer (a ROS callback) only stores its newest frame in a `FrameSlot` and wakes the readers: it never waits
for a reader, never encodes, never queues. Readers (one HTTP stream or the Foxglove sender each) wait for a frame
newer than the one they last saw, so a slow reader skips frames and costs nothing but its own stream. The
payload is kept as received and decoded only when a reader wants it, at most once per frame for JPEG.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np


@dataclass(frozen=True)
class Frame:
    """One received frame: the payload as received, its header and the slot's sequence number (1, 2, ...)."""

    payload: Any
    stamp_ns: int
    frame_id: str
    seq: int
    received: float  # time.monotonic() at arrival


class FrameSlot:
    """The newest frame of one topic. `put` never blocks on readers; `wait_newer` blocks the reader only."""

    def __init__(self, to_bgr: Callable[[Any], np.ndarray]) -> None:
        self._to_bgr = to_bgr
        self._cond = threading.Condition()
        self._frame: Frame | None = None
        self._arrivals: deque[float] = deque(maxlen=30)
        self._encode_lock = threading.Lock()
        self._jpeg: tuple[int, int, bytes, tuple[int, int]] | None = None  # (seq, quality, bytes, (h, w))
        self.last_read = time.monotonic()

    def put(self, payload: Any, stamp_ns: int = 0, frame_id: str = "") -> Frame:
        """Store the newest frame (the previous one is simply replaced) and wake the readers."""
        now = time.monotonic()
        with self._cond:
            seq = self._frame.seq + 1 if self._frame else 1
            self._frame = Frame(payload, int(stamp_ns), frame_id, seq, now)
            self._arrivals.append(now)
            self._cond.notify_all()
            return self._frame

    def latest(self) -> Frame | None:
        """The newest frame (None before the first); counts as a read (see `unread_s`)."""
        self.last_read = time.monotonic()
        return self._frame

    def peek(self) -> Frame | None:
        """The newest frame without counting as a read: a status page must not keep a topic subscribed."""
        return self._frame

    def unread_s(self) -> float:
        """Seconds since a reader last asked for a frame (`latest`, `wait_newer`); `peek` does not count."""
        return time.monotonic() - self.last_read

    def wait_newer(self, seq: int, timeout: float) -> Frame | None:
        """The newest frame if its seq is above `seq`, waiting up to `timeout` s for one; else None."""
        self.last_read = time.monotonic()
        with self._cond:
            self._cond.wait_for(lambda: self._frame is not None and self._frame.seq > seq, timeout=timeout)
            frame = self._frame
        return frame if frame is not None and frame.seq > seq else None

    def rate_hz(self) -> float:
        """Arrival rate over the last 30 frames, 0 when the newest is older than 2 s (a stopped topic)."""
        times = list(self._arrivals)
        if len(times) < 2 or time.monotonic() - times[-1] > 2.0:
            return 0.0
        return (len(times) - 1) / max(times[-1] - times[0], 1e-9)

    def bgr(self, frame: Frame) -> np.ndarray:
        """The frame as displayable BGR uint8 (decoded in the reader's thread)."""
        return self._to_bgr(frame.payload)

    def jpeg(self, frame: Frame, quality: int = 80) -> tuple[bytes, tuple[int, int]]:
        """JPEG bytes and (height, width) of `frame`, encoded once per frame however many readers want it."""
        with self._encode_lock:
            cached = self._jpeg
            if cached is not None and cached[0] == frame.seq and cached[1] == quality:
                return cached[2], cached[3]
            image = self.bgr(frame)
            data = encode_jpeg(image, quality)
            self._jpeg = (frame.seq, quality, data, image.shape[:2])
            return data, image.shape[:2]


class FrameHub:
    """Slots by topic name, made on first use; `on_new_topic(topic)` lets the owner subscribe to it then."""

    def __init__(self, to_bgr: Callable[[Any], np.ndarray] | None = None,
                 on_new_topic: Callable[[str], None] | None = None) -> None:
        self._to_bgr = to_bgr or array_to_bgr
        self._on_new_topic = on_new_topic
        self._slots: dict[str, FrameSlot] = {}
        self._lock = threading.Lock()

    def slot(self, topic: str) -> FrameSlot:
        with self._lock:
            slot = self._slots.get(topic)
            created = slot is None
            if created:
                slot = self._slots[topic] = FrameSlot(self._to_bgr)
        if created and self._on_new_topic is not None:
            self._on_new_topic(topic)
        return slot

    def existing(self, topic: str) -> FrameSlot | None:
        with self._lock:
            return self._slots.get(topic)

    def topics(self) -> dict[str, FrameSlot]:
        with self._lock:
            return dict(self._slots)

    def forget(self, topic: str) -> None:
        with self._lock:
            self._slots.pop(topic, None)


# -- images to something a browser can show ------------------------------------------------------------------
def array_to_bgr(payload: tuple[np.ndarray, str]) -> np.ndarray:
    """`(array, encoding)` → BGR uint8 for display (the hub's default decoder)."""
    array, encoding = payload
    return to_display(array, encoding)


def to_display(image: np.ndarray, encoding: str) -> np.ndarray:
    """An image in a ROS encoding as BGR uint8: colour as is, mono stretched to 8 bit, float maps as a colour map.

    32FC1/64FC1 in [0, 1] (the DIG weights) map 0 → blue, 1 → red (JET, like `fused/dig/overlay`); floats outside
    [0, 1] (e.g. a thermal image in kelvin) are stretched to their finite min..max first.
    """
    enc = encoding.lower()
    if image.size == 0:
        raise ValueError("empty image")
    if enc in ("bgr8", "8uc3"):
        return np.ascontiguousarray(image[..., :3])
    if enc == "rgb8":
        return cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    if enc == "bgra8":
        return np.ascontiguousarray(image[..., :3])
    if enc == "rgba8":
        return cv2.cvtColor(image, cv2.COLOR_RGBA2BGR)
    if enc in ("mono8", "8uc1"):
        return cv2.cvtColor(_plane(image), cv2.COLOR_GRAY2BGR)
    if enc in ("mono16", "16uc1"):
        return cv2.cvtColor(_stretch(_plane(image).astype(np.float32)), cv2.COLOR_GRAY2BGR)
    if enc in ("32fc1", "64fc1"):
        return weight_colormap(_plane(image))
    raise ValueError(f"cannot display encoding {encoding!r}")


def weight_colormap(values: np.ndarray) -> np.ndarray:
    """A float map as a JET colour map (BGR uint8): [0, 1] as is, anything else stretched; NaN shows as 0."""
    values = np.nan_to_num(values.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    low, high = float(values.min()), float(values.max())
    if low < 0.0 or high > 1.0:
        unit = _stretch(values)
    else:
        unit = np.round(values * 255.0).astype(np.uint8)
    return cv2.applyColorMap(unit, cv2.COLORMAP_JET)


def _plane(image: np.ndarray) -> np.ndarray:
    return image[..., 0] if image.ndim == 3 else image


def _stretch(values: np.ndarray) -> np.ndarray:
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return np.zeros(values.shape, np.uint8)
    low, high = float(finite.min()), float(finite.max())
    scaled = (values - low) * (255.0 / (high - low)) if high > low else np.zeros_like(values)
    return np.clip(np.round(np.nan_to_num(scaled)), 0, 255).astype(np.uint8)


def encode_jpeg(bgr: np.ndarray, quality: int = 80) -> bytes:
    ok, data = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return data.tobytes()


# -- the latest diagnostics ----------------------------------------------------------------------------------
LEVELS = {0: "OK", 1: "WARN", 2: "ERROR", 3: "STALE"}


class DiagnosticsBoard:
    """The newest status of every diagnostics name: {name: {level, message, hardware_id, values, age_s}}."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._statuses: dict[str, dict[str, Any]] = {}

    def update(self, name: str, level: int, message: str, hardware_id: str, values: dict[str, str]) -> None:
        entry = {"level": LEVELS.get(int(level), str(level)), "message": message, "hardware_id": hardware_id,
                 "values": dict(values), "received": time.monotonic()}
        with self._lock:
            self._statuses[name] = entry

    def snapshot(self) -> dict[str, dict[str, Any]]:
        now = time.monotonic()
        with self._lock:
            items = list(self._statuses.items())
        out = {}
        for name, entry in items:
            shown = {k: v for k, v in entry.items() if k != "received"}
            shown["age_s"] = round(now - entry["received"], 2)
            out[name] = shown
        return out
