"""imaging.noise_sigma on 8-bit data against the grouped-data median computed with np.median (its definition)."""

import math

import numpy as np
import pytest

from dig2dig_ros.core import imaging


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
