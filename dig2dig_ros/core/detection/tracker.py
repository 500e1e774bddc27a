"""A small multi-object tracker for per-frame detections (SORT with ByteTrack's second pass); plain numpy.

Each track is a constant-velocity Kalman filter on the box centre and size, ``[cx, cy, w, h, vcx, vcy, vw, vh]``
(pixels and pixels per second), predicted to each frame's stamp, so a frame that never reached the tracker (a
dropped frame) only makes the step longer. Association is greedy by IoU between the predicted boxes and the
detections, within a class: first the detections scored at least ``high_score``, then the rest against the tracks
left over (ByteTrack's second pass: a weak detection cannot take a track from a strong one, and a person whose
score dips keeps their id).

Births and deaths:

* every detection left unmatched starts a **tentative** track with a new id, so every detection has an id;
* a track is **confirmed** after ``min_hits`` consecutive matched frames; a tentative track that misses one
  frame is deleted (a one-frame false detection never holds an id);
* a confirmed track survives up to ``max_age`` processed frames without a match (coasting on its prediction),
  then is deleted; its id is never reused.

A stamp going back, or a gap longer than ``max_gap`` seconds, resets the tracker (every track deleted; ids go on
counting), as video mode starts afresh (dig2dig_ros.core.video.fuser).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from .decode import Detections, box_iou

# Kalman noise, relative to the box height (as DeepSORT scales its noise): measurement error of a box edge,
# and the random acceleration a track may take between frames (per second²), e.g. a walker starting to run.
MEASUREMENT_STD = 0.05
ACCELERATION_STD = 2.0
INITIAL_VELOCITY_STD = 1.0  # box heights per second
MIN_DT = 1e-3  # seconds: two frames with the same stamp still predict a little


@dataclass
class TrackerConfig:
    """Tracker thresholds (the detector node declares them as tracker.* parameters)."""

    match_iou: float = 0.3  # least IoU of a predicted track box and a detection to associate them
    high_score: float = 0.5  # detections scored at least this are matched first; lower ones only extend tracks
    min_hits: int = 3  # consecutive matched frames before a track is confirmed
    max_age: int = 5  # processed frames a confirmed track may go unmatched before it is deleted
    max_gap: float = 5.0  # seconds between frames beyond which the tracker starts afresh (0 = never)

    def validate(self) -> TrackerConfig:
        """self, or ValueError naming the bad setting."""
        if not 0.0 <= self.match_iou <= 1.0:
            raise ValueError(f"match_iou must be in [0, 1], got {self.match_iou}")
        if not 0.0 <= self.high_score <= 1.0:
            raise ValueError(f"high_score must be in [0, 1], got {self.high_score}")
        if self.min_hits < 1 or self.max_age < 0 or self.max_gap < 0:
            raise ValueError(f"need min_hits >= 1, max_age >= 0, max_gap >= 0; got {self}")
        return self


def xyxy_to_state(box: np.ndarray) -> np.ndarray:
    """(4,) xyxy → (4,) [cx, cy, w, h]."""
    return np.array([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2, box[2] - box[0], box[3] - box[1]])


def state_to_xyxy(z: np.ndarray) -> np.ndarray:
    """(..., 4+) [cx, cy, w, h, ...] → (..., 4) xyxy (sizes kept non-negative)."""
    half = np.clip(z[..., 2:4], 0, None) / 2
    return np.concatenate((z[..., 0:2] - half, z[..., 0:2] + half), axis=-1)


class Track:
    """One object: Kalman state, id, and its hit/miss counts."""

    H = np.hstack((np.eye(4), np.zeros((4, 4))))  # (4,8) measurement: centre and size

    def __init__(self, track_id: int, box: np.ndarray, class_id: int, stamp: float) -> None:
        self.id = track_id
        self.class_id = class_id
        self.stamp = stamp
        z = xyxy_to_state(box)
        self.x = np.concatenate((z, np.zeros(4)))  # (8,)
        h = max(float(z[3]), 1.0)
        std = np.array([2 * MEASUREMENT_STD * h] * 4 + [INITIAL_VELOCITY_STD * h] * 4)
        self.P = np.diag(std**2)  # (8,8)
        self.hits = 1  # consecutive matched frames
        self.misses = 0  # consecutive unmatched frames
        self.confirmed = False

    def predict(self, stamp: float) -> np.ndarray:
        """Advance the state to stamp (seconds); returns the predicted (4,) xyxy box."""
        dt = max(stamp - self.stamp, MIN_DT)
        F = np.eye(8)
        F[:4, 4:] = dt * np.eye(4)
        h = max(float(self.x[3]), 1.0)
        a = ACCELERATION_STD * h
        # White-noise acceleration: position (a dt²/2)², velocity (a dt)², their covariance a² dt³/2.
        q = np.array([[dt**4 / 4, dt**3 / 2], [dt**3 / 2, dt**2]]) * a**2
        Q = np.kron(q, np.eye(4))  # (8,8)
        self.x = F @ self.x
        self.P = F @ self.P @ F.T + Q
        self.stamp = stamp
        return state_to_xyxy(self.x)

    def update(self, box: np.ndarray) -> None:
        """Correct the predicted state with a detection (4,) xyxy."""
        z = xyxy_to_state(box)
        h = max(float(z[3]), 1.0)
        R = np.eye(4) * (MEASUREMENT_STD * h) ** 2
        S = self.H @ self.P @ self.H.T + R  # (4,4)
        K = np.linalg.solve(S, self.H @ self.P).T  # (8,4); P and S are symmetric
        self.x = self.x + K @ (z - self.H @ self.x)
        self.P = (np.eye(8) - K @ self.H) @ self.P


def greedy_match(iou: np.ndarray, threshold: float) -> list[tuple[int, int]]:
    """(T,D) IoU matrix → (track, detection) pairs, highest IoU first, each row and column once, IoU ≥ threshold."""
    pairs = []
    if iou.size == 0:
        return pairs
    order = np.argsort(-iou, axis=None, kind="stable")
    used_t, used_d = set(), set()
    for flat in order:
        t, d = divmod(int(flat), iou.shape[1])
        if iou[t, d] < threshold or iou[t, d] <= 0:
            break
        if t in used_t or d in used_d:
            continue
        used_t.add(t)
        used_d.add(d)
        pairs.append((t, d))
    return pairs


class Tracker:
    """Gives each detection of a frame sequence a track id that stays with its object (see the module docstring)."""

    def __init__(self, cfg: TrackerConfig | None = None) -> None:
        self.cfg = (cfg or TrackerConfig()).validate()
        self.tracks: list[Track] = []
        self.next_id = 1
        self.stamp: float | None = None
        self.resets = 0
        self.last_reset: str | None = None  # why the latest update started afresh, else None

    def reset(self) -> None:
        """Forget every track (ids are not reused)."""
        self.tracks = []
        self.stamp = None

    def _time_jump(self, stamp: float) -> str | None:
        if self.stamp is None:
            return None
        if stamp < self.stamp:
            return f"time jumped back {self.stamp - stamp:.2f} s"
        if self.cfg.max_gap > 0 and stamp - self.stamp > self.cfg.max_gap:
            return f"gap of {stamp - self.stamp:.2f} s"
        return None

    def confirmed_count(self) -> int:
        """Confirmed tracks alive (matched or coasting)."""
        return sum(t.confirmed for t in self.tracks)

    def _associate(self, predicted: np.ndarray, boxes: np.ndarray, classes: np.ndarray,
                   scores: np.ndarray) -> np.ndarray:
        """For each detection (boxes (N,4), classes (N,), scores (N,)) the index of the track it continues, or -1;
        predicted: (T,4) the tracks' boxes at this frame."""
        assigned = np.full(len(boxes), -1, dtype=np.int64)  # (N,)
        free = np.ones(len(self.tracks), dtype=bool)  # (T,)
        track_classes = np.array([t.class_id for t in self.tracks], dtype=np.int64)  # (T,)
        high = scores >= self.cfg.high_score  # (N,)
        for det_mask in (high, ~high):  # the well-scored detections choose first
            rows, cols = np.flatnonzero(free), np.flatnonzero(det_mask & (assigned < 0))
            if not len(rows) or not len(cols):
                continue
            iou = box_iou(predicted[rows], boxes[cols])  # (t,d)
            iou[track_classes[rows][:, None] != classes[cols][None, :]] = 0.0
            for t, d in greedy_match(iou, self.cfg.match_iou):
                assigned[cols[d]] = rows[t]
                free[rows[t]] = False
        return assigned

    def update(self, dets: Detections, stamp: float) -> Detections:
        """dets of the frame at stamp (seconds), returned with track_ids (N,) and confirmed (N,) filled in."""
        cfg = self.cfg
        self.last_reset = self._time_jump(stamp)
        if self.last_reset is not None:
            self.reset()
            self.resets += 1
        self.stamp = stamp
        boxes = np.asarray(dets.boxes, dtype=np.float64).reshape(-1, 4)  # (N,4)
        classes = np.asarray(dets.class_ids, dtype=np.int64).reshape(-1)  # (N,)
        predicted = np.array([t.predict(stamp) for t in self.tracks]).reshape(-1, 4)  # (T,4)
        assigned = self._associate(predicted, boxes, classes, np.asarray(dets.scores).reshape(-1))  # (N,)
        free_tracks = np.ones(len(self.tracks), dtype=bool)
        free_tracks[assigned[assigned >= 0]] = False
        owner: list[Track | None] = [self.tracks[a] if a >= 0 else None for a in assigned]
        for d, track in enumerate(owner):
            if track is not None:
                track.update(boxes[d])
                track.hits += 1
                track.misses = 0
                track.confirmed = track.confirmed or track.hits >= cfg.min_hits
        survivors = []
        for i, track in enumerate(self.tracks):
            if free_tracks[i]:
                track.misses += 1
                track.hits = 0
                if not track.confirmed or track.misses > cfg.max_age:
                    continue
            survivors.append(track)
        for d in np.flatnonzero(assigned < 0):
            track = Track(self.next_id, boxes[d], int(classes[d]), stamp)
            track.confirmed = cfg.min_hits <= 1
            self.next_id += 1
            owner[d] = track
            survivors.append(track)
        self.tracks = survivors
        ids = np.array([t.id for t in owner], dtype=np.int64)  # (N,)
        confirmed = np.array([t.confirmed for t in owner], dtype=bool)  # (N,)
        return dataclasses.replace(dets, track_ids=ids, confirmed=confirmed)
