"""A synthetic night street and its thermal counterpart: the sample the project ships (made here, free to use).

The visible frame is dark and noisy with a street lamp's pool of light, textured building fronts and a lit
window row; people are almost invisible in it. The infrared frame shows the people and a car engine warm and
bright, the sky cold, and little of the facade texture. `frame` moves the people, for a short sequence.
"""

from __future__ import annotations

import numpy as np

SAMPLE_SIZE = (256, 320)  # (H, W)


def _blob(yy: np.ndarray, xx: np.ndarray, cy: float, cx: float, ry: float, rx: float) -> np.ndarray:
    return (((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0).astype(np.float32)


def _person(yy: np.ndarray, xx: np.ndarray, cy: float, cx: float, scale: float) -> np.ndarray:
    head = _blob(yy, xx, cy - 26 * scale, cx, 5 * scale, 4.5 * scale)
    body = _blob(yy, xx, cy - 8 * scale, cx, 14 * scale, 6 * scale)
    legs = _blob(yy, xx, cy + 14 * scale, cx - 3 * scale, 12 * scale, 2.5 * scale)
    legs += _blob(yy, xx, cy + 14 * scale, cx + 3 * scale, 12 * scale, 2.5 * scale)
    return np.clip(head + body + legs, 0, 1)


def make_sample_pair(
    frame: int = 0, size: tuple[int, int] = SAMPLE_SIZE, seed: int = 7
) -> tuple[np.ndarray, np.ndarray]:
    """(infrared (H,W) uint8 gray, visible (H,W,3) uint8 BGR) of the synthetic night street at `frame`."""
    h, w = size
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    sy, sx = yy / h, xx / w  # unit coordinates, so the scene scales with size
    horizon = 0.45
    ground = (sy > horizon).astype(np.float32)
    facade = ((sy > 0.18) & (sy <= horizon) & ((sx < 0.42) | (sx > 0.58))).astype(np.float32)
    bricks = (np.sin(sx * w * 0.9) > 0.6) | (np.sin(sy * h * 1.3) > 0.8)
    windows = facade * ((np.sin(sx * 40) > 0.3) & (np.sin(sy * 50) > 0.2) & (sy < 0.35))
    lamp = np.exp(-(((sx - 0.7) / 0.12) ** 2 + ((sy - 0.7) / 0.18) ** 2))
    stripes = ground * ((np.abs(sx - 0.5 - (sy - horizon) * 0.1) < 0.01) & (np.sin(sy * 90) > 0))
    shift = frame * 4.0 / w
    people = [(0.78, 0.25 + shift, 1.0), (0.72, 0.5 - 0.6 * shift, 0.8), (0.85, 0.86, 1.1)]
    person_mask = np.zeros((h, w), np.float32)
    for cy, cx, s in people:
        person_mask = np.maximum(person_mask, _person(sy * h, sx * w, cy * h, (cx % 1.0) * w, s * h / 256))
    car = _blob(sy, sx, 0.62, 0.12, 0.05, 0.1) * ground
    # Visible: dark, facade texture, lit windows, lamp light, faint people, sensor noise.
    vis = 0.04 + 0.05 * ground + facade * (0.08 + 0.05 * bricks) + 0.5 * windows + 0.55 * lamp
    vis = vis + 0.3 * stripes * lamp + 0.02 * person_mask + 0.12 * car
    vis = np.clip(vis + rng.normal(0, 0.02, (h, w)), 0, 1)
    tint = np.stack([0.55 + 0.1 * lamp, 0.8 + 0.1 * lamp, 1.0 + 0 * lamp], axis=-1)  # warm sodium light (BGR)
    vis_bgr = np.clip(vis[..., None] * tint * 1.1, 0, 1)
    # Infrared: cold sky, mid facades with weak structure, warm ground, hot people and car engine.
    ir = 0.08 * (1 - ground) * (1 - facade) + facade * (0.35 + 0.03 * bricks) + ground * (0.3 + 0.1 * sy)
    ir = ir + 0.1 * windows + 0.55 * person_mask + 0.4 * car * (sx < 0.12)
    ir = np.clip(ir + rng.normal(0, 0.015, (h, w)), 0, 1)
    return (ir * 255).round().astype(np.uint8), (vis_bgr * 255).round().astype(np.uint8)
