"""temporal.MotionCompensator: where each pixel was in the previous frame, at any frame size."""

import cv2
import numpy as np
import pytest

from dig2dig_ros.core.video import temporal


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


@pytest.mark.parametrize("small,size", [((240, 320), (480, 640)), ((360, 640), (1080, 1920)), ((30, 50), (97, 131))])
def test_the_flow_brought_up_is_the_flow_resized_and_scaled_to_the_frame(small, size):
    # Reference: the flow resized bilinearly to the frame, scaled to its pixels, added to the pixel grid; every
    # pixel, the edge rows and columns (where the resize holds the edge sample) included
    h, w = size
    rng = np.random.default_rng(1)
    flow = np.dstack([cv2.GaussianBlur(rng.normal(0, 4, small).astype(np.float32), (0, 0), 3) for _ in range(2)])
    xs, ys = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    up = cv2.resize(flow, (w, h), interpolation=cv2.INTER_LINEAR)  # (H,W,2)
    map_x, map_y = temporal.MotionCompensator().from_flow(flow.copy(), size)
    assert map_x.shape == map_y.shape == size
    assert np.abs(map_x - (xs + up[..., 0] * (w / small[1]))).max() < 1e-3
    assert np.abs(map_y - (ys + up[..., 1] * (h / small[0]))).max() < 1e-3


def test_a_flow_at_the_frame_size_is_added_to_the_grid_exactly():
    flow = np.random.default_rng(2).normal(0, 3, (48, 64, 2)).astype(np.float32)
    map_x, map_y = temporal.MotionCompensator().from_flow(flow.copy(), (48, 64))
    xs, ys = np.meshgrid(np.arange(64, dtype=np.float32), np.arange(48, dtype=np.float32))
    assert np.array_equal(map_x, xs + flow[..., 0]) and np.array_equal(map_y, ys + flow[..., 1])


def _bilinear(img: np.ndarray, map_x: np.ndarray, map_y: np.ndarray) -> np.ndarray:
    """img (H,W) at (map_x, map_y), bilinear with the coordinates clamped to the frame (float64)."""
    h, w = img.shape
    x, y = np.clip(map_x.astype(np.float64), 0, w - 1), np.clip(map_y.astype(np.float64), 0, h - 1)
    x0, y0 = np.minimum(np.floor(x).astype(int), w - 2), np.minimum(np.floor(y).astype(int), h - 2)
    fx, fy = x - x0, y - y0
    top = img[y0, x0] * (1 - fx) + img[y0, x0 + 1] * fx
    bottom = img[y0 + 1, x0] * (1 - fx) + img[y0 + 1, x0 + 1] * fx
    return top * (1 - fy) + bottom * fy


def test_the_stabilised_frame_follows_its_formula_and_keeps_the_new_frame_outside():
    # F = P + s·(1 − a·exp(−(s/σ)²)), s = clip(Y − P, −b, b), P the previous output at the coordinates; Y itself
    # where the coordinates leave the frame (by any amount: on the edge counts as inside)
    h, w = 150, 200
    rng = np.random.default_rng(3)
    current, previous = (cv2.GaussianBlur(rng.uniform(0, 1, (h, w)).astype(np.float32), (0, 0), 2) for _ in range(2))
    xs, ys = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    map_x = xs + rng.uniform(-1.5, 1.5, (h, w)).astype(np.float32)
    map_y = ys + rng.uniform(-1.5, 1.5, (h, w)).astype(np.float32)
    map_x[:, :3] = [-1e-4, 0.0, -2.0]  # just outside, on the edge, well outside
    map_x[:, -2:], map_y[:2] = [w - 1, w - 1 + 1e-3], [[0.0], [-1e-3]]
    bound = rng.uniform(0, 0.05, (h, w)).astype(np.float32)
    a, sigma = 0.3, 0.03
    p = _bilinear(previous, map_x, map_y)
    s = np.clip(current - p, -bound, bound)
    expected = p + s * (1 - a * np.exp(-((s / sigma) ** 2)))
    outside = (map_x < 0) | (map_x > w - 1) | (map_y < 0) | (map_y > h - 1)
    expected[outside] = current[outside]
    out = temporal.stabilise(current, previous, map_x, map_y, a, sigma, bound)
    assert np.array_equal(out[outside], current[outside]) and outside[:, 2].all()
    assert not outside[2:-2, 1].any()  # away from the rows the random y moves out of
    assert np.abs(out - expected).max() < 1e-5


def _opened(mask: np.ndarray) -> np.ndarray:
    """The 3x3 opening of a bool mask (H,W), outside the frame neutral (erosion: set, dilation: unset)."""
    h, w = mask.shape
    pad = np.pad(mask, 1, constant_values=True)
    eroded = np.all([pad[i:i + h, j:j + w] for i in range(3) for j in range(3)], axis=0)
    pad = np.pad(eroded, 1, constant_values=False)
    return np.any([pad[i:i + h, j:j + w] for i in range(3) for j in range(3)], axis=0)


def test_the_source_bound_follows_its_definition_for_three_sources():
    h, w, k = 90, 120, 3
    rng = np.random.default_rng(4)
    previous = rng.uniform(0.2, 0.8, (k, h, w)).astype(np.float32)
    current = previous + rng.normal(0, 0.01, (k, h, w)).astype(np.float32)
    current[0, 10:30, 10:40] += 0.3  # source 0 alone moves here, source 1 here, sources 0 and 2 together here
    current[1, 50:70, 20:50] -= 0.3
    current[[0, 2], 40:60, 70:100] += 0.2
    xs, ys = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    change = np.abs(current.astype(np.float64) - previous)  # D_k along the zero motion
    sigma = np.median(change[:, ::4, ::4].reshape(k, -1), axis=1) / 0.6745
    moved = change > 3 * sigma[:, None, None]
    alone = _opened(moved.sum(0) == 1)
    expected = np.where(alone, change.max(0), change.mean(0))
    bound = temporal.source_change(current, previous, xs, ys)
    assert alone[15, 20] and alone[60, 30] and not alone[50, 80]
    assert np.abs(bound - expected).max() < 1e-6
