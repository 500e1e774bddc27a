"""imaging.noise_sigma on 8-bit data against the grouped-data median computed with np.median (its definition), and
its integer twin noise_sigma_8bit on the uint8 plane split_luma_8bit names."""

import math

import cv2
import numpy as np
import pytest

from dig2dig_ros.core.frame import imaging


def reference_sigma(x: np.ndarray) -> float:
    """Donoho's σ of the finest diagonal Haar band, grouped-data median for 8-bit steps, rounding share removed."""
    h, w = (x.shape[0] // 2) * 2, (x.shape[1] // 2) * 2
    q = x[:h, :w].astype(np.float64)
    steps = np.rint(np.abs(q[0::2, 0::2] - q[0::2, 1::2] - q[1::2, 0::2] + q[1::2, 1::2]) / 2 * 510)
    median = float(np.median(steps))
    below, at = np.count_nonzero(steps < median), np.count_nonzero(steps == median)
    if at == 0:
        mad = median
    else:
        low, width = (0.0, 0.5) if median == 0 else (median - 0.5, 1.0)
        mad = low + (steps.size / 2 - below) / at * width
    sigma = mad / 510 * imaging.MAD_TO_SIGMA
    return math.sqrt(max(0.0, sigma**2 - imaging.ROUNDING_VARIANCE_8BIT))


@pytest.mark.parametrize("seed", range(40))
def test_matches_the_grouped_median_of_np_median(seed):
    rng = np.random.default_rng(seed)
    h, w = (int(v) for v in rng.integers(2, 80, 2))
    noise = float(rng.choice([0.0, 0.3, 1.0, 4.0, 12.0]))
    x = (np.clip(np.rint(rng.uniform(20, 235) + noise * rng.standard_normal((h, w))), 0, 255) / 255)
    assert imaging.noise_sigma(x.astype(np.float32)) == pytest.approx(reference_sigma(x), rel=1e-6, abs=1e-9)


def test_an_even_count_whose_middle_values_differ():
    # Haar band of a 2x4 frame: two coefficients, 1 and 3 steps: the median lies between steps (2, no step there)
    x = np.array([[0, 0, 0, 0], [2, 0, 6, 0]], np.float64) / 255
    assert imaging.noise_sigma(x.astype(np.float32)) == pytest.approx(reference_sigma(x))
    assert reference_sigma(x) > 0


@pytest.mark.parametrize("seed", range(12))
def test_the_8_bit_plane_gives_the_float_estimate_bit_for_bit(seed):
    rng = np.random.default_rng(100 + seed)
    h, w = (int(v) for v in rng.integers(1, 90, 2))
    noise = float(rng.choice([0.0, 0.5, 3.0, 40.0]))
    n = np.clip(np.rint(rng.uniform(0, 255) + noise * rng.standard_normal((h, w))), 0, 255).astype(np.uint8)
    x = n.astype(np.float32) * np.float32(1 / 255)  # what split_luma makes of the plane
    got, expected = imaging.noise_sigma_8bit(n), imaging.noise_sigma(x)
    assert got == expected
    if h >= 2 and w >= 2:
        assert got == pytest.approx(reference_sigma(x.astype(np.float64)), rel=1e-6, abs=1e-9)


@pytest.mark.parametrize("kind", ["gray", "gray3", "colour"])
def test_split_luma_names_the_8_bit_plane_its_luminance_is_made_of(kind):
    rng = np.random.default_rng(7)
    img = rng.integers(0, 256, (30, 41, 3)).astype(np.uint8)
    img = {"gray": img[..., 1].copy(), "gray3": np.repeat(img[..., 1:2], 3, axis=2), "colour": img}[kind]
    out = np.full(img.shape[:2], -1.0, np.float32)
    y, chroma, plane = imaging.split_luma_8bit(img, out=out)
    assert y is out and plane.dtype == np.uint8
    np.testing.assert_array_equal(y, plane.astype(np.float32) * np.float32(1 / 255))
    reference = img if kind == "gray" else img[..., 1] if kind == "gray3" else None
    if reference is not None:
        np.testing.assert_array_equal(plane, reference)
        assert chroma is None
    else:  # OpenCV's own conversion, channel by channel
        ycrcb = cv2.cvtColor(img, cv2.COLOR_BGR2YCrCb)
        np.testing.assert_array_equal(plane, ycrcb[..., 0])
        np.testing.assert_array_equal(chroma, ycrcb[..., 1:])
        assert chroma.flags.c_contiguous
    assert imaging.split_luma_8bit(img.astype(np.float32) / 255)[2] is None  # float input: no 8-bit plane


@pytest.mark.parametrize("shape", [(1, 40), (40, 1), (1, 1)])
def test_a_frame_too_thin_for_the_band_measures_no_noise(shape):
    import warnings

    n = np.random.default_rng(3).integers(0, 256, shape).astype(np.uint8)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "mean of empty slice" on the way
        assert imaging.noise_sigma(n.astype(np.float32) / 255) == 0.0
        assert imaging.noise_sigma_8bit(n) == 0.0
