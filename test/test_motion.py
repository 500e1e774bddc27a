"""temporal.MotionCompensator: where each pixel was in the previous frame, at any frame size."""

import cv2
import numpy as np
import pytest

from dig2dig_ros.core import temporal


def _texture(h: int, w: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    noise = cv2.resize(rng.uniform(0, 255, (h // 8, w // 8)).astype(np.float32), (w, h),
                       interpolation=cv2.INTER_CUBIC)
    return np.clip(cv2.GaussianBlur(noise, (0, 0), 2.0), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("size", [(480, 640), (960, 1280)])  # at the default side 640, and twice it
def test_a_known_shift_is_found_at_full_resolution(size):
    h, w = size
    dx, dy = 6.0, -4.0  # the scene moved by (dx, dy) px from the previous frame to the current one
    previous = _texture(h + 40, w + 40)
    shift = np.float32([[1, 0, dx], [0, 1, dy]])
    current = cv2.warpAffine(previous, shift, (w + 40, h + 40), flags=cv2.INTER_LINEAR)
    crop = (slice(20, 20 + h), slice(20, 20 + w))
    current, previous = np.ascontiguousarray(current[crop]), np.ascontiguousarray(previous[crop])
    map_x, map_y = temporal.MotionCompensator().coordinates(current, previous)
    assert map_x.shape == (h, w)
    xs, ys = np.meshgrid(np.arange(w), np.arange(h))
    inner = (slice(h // 8, -h // 8), slice(w // 8, -w // 8))  # away from the borders the shift leaves open
    err = np.hypot(map_x - (xs - dx), map_y - (ys - dy))[inner]
    assert np.median(err) < 1.0, np.median(err)  # 0.3 px; a flow left in the smaller frame's pixels: 3.7 px


def test_the_side_decides_the_size_the_flow_is_measured_at():
    h, w = 960, 1280
    previous = _texture(h, w, seed=3)
    current = np.ascontiguousarray(cv2.warpAffine(previous, np.float32([[1, 0, 2.5], [0, 1, 1.5]]), (w, h)))
    at_640 = temporal.MotionCompensator(640).coordinates(current, previous)
    at_input = temporal.MotionCompensator(0).coordinates(current, previous)
    assert at_640[0].shape == at_input[0].shape == (h, w)
    assert np.abs(at_640[0] - at_input[0]).mean() > 1e-3  # measured on another grid: not the same flow
