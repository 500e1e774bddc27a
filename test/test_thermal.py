"""The one infrared normalisation (core): 16-bit counts, float kelvin / °C, fixed range or percentile stretch."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from dig2dig_ros.core.frame.thermal import (
    ThermalError,
    ThermalSettings,
    check_settings,
    normalize_thermal,
    prepare_infrared,
)


def test_flat_frame_does_not_divide_by_zero():
    flat = np.full((8, 8), 3000, np.uint16)
    for policy in ("percentile", "fixed"):
        out = normalize_thermal(flat, policy, 2000.0, 4000.0, (1.0, 99.0))
        assert out.dtype == np.float32 and out.shape == (8, 8) and np.all(np.isfinite(out))
    np.testing.assert_array_equal(normalize_thermal(flat, "percentile", 0, 1, (1, 99)), 0.0)
    np.testing.assert_allclose(normalize_thermal(flat, "fixed", 2000.0, 4000.0, (1, 99)), 0.5)


def test_ramp_fixed_and_percentile():
    ramp = np.arange(1000, 1100, dtype=np.uint16).reshape(10, 10)  # 100 distinct counts
    fixed = normalize_thermal(ramp, "fixed", 1020.0, 1080.0, (1, 99))
    assert fixed[0, 0] == 0.0 and fixed[-1, -1] == 1.0
    np.testing.assert_allclose(fixed[5, 0], (1050 - 1020) / 60, rtol=1e-6)
    stretched = normalize_thermal(ramp, "percentile", 0, 1, (10.0, 90.0))
    # nearest rank: the 10th / 90th percentiles of 1000..1099 are 1009 and 1089
    assert stretched.min() == 0.0 and stretched.max() == 1.0
    np.testing.assert_allclose(stretched.reshape(-1)[9:90], (np.arange(1009, 1090) - 1009) / 80, rtol=1e-6)
    assert np.all(np.diff(stretched.reshape(-1)) >= 0)
    out = normalize_thermal(ramp.astype(np.float32), "percentile", 0, 1, (0.0, 100.0))  # numpy percentiles
    np.testing.assert_allclose(out.reshape(-1), np.arange(100) / 99, rtol=1e-6)


@pytest.mark.parametrize("offset", [273.15, 0.0], ids=["kelvin", "celsius"])
def test_float_temperatures_keep_their_contrast(offset):
    # A 20 °C scene with a 36 °C person: before, 32FC1 was clipped to [0,1], i.e. a constant frame.
    scene = np.full((32, 32), 20.0 + offset, np.float32)
    scene[8:24, 12:20] = 36.0 + offset
    stretched = prepare_infrared(scene)
    assert stretched[16, 16] == 1.0 and stretched[0, 0] == 0.0
    fixed = prepare_infrared(scene, ThermalSettings("fixed", low=offset + 0.0, high=offset + 40.0))
    np.testing.assert_allclose([fixed[0, 0], fixed[16, 16]], [0.5, 0.9], rtol=1e-5)


def test_sixteen_bit_png_is_normalised_like_a_mono16_message(tmp_path):
    counts = (np.random.default_rng(0).integers(0, 400, (24, 40)) + 21000).astype(np.uint16)
    cv2.imwrite(str(tmp_path / "ir.png"), counts)
    decoded = cv2.imdecode(np.fromfile(tmp_path / "ir.png", np.uint8), cv2.IMREAD_UNCHANGED)
    assert decoded.dtype == np.uint16
    np.testing.assert_array_equal(prepare_infrared(decoded), prepare_infrared(counts))
    assert prepare_infrared(counts).max() == 1.0  # the narrow band is stretched, not divided by 65535


def test_eight_bit_frames_pass_unchanged():
    frame = np.arange(64, dtype=np.uint8).reshape(8, 8)
    assert prepare_infrared(frame) is frame


@pytest.mark.parametrize("settings,match", [
    (("fixed", 10.0, 10.0, (1, 99)), "range_low < range_high"),
    (("fixed", 300.0, 200.0, (1, 99)), "range_low < range_high"),
    (("percentile", 0.0, 1.0, (99, 1)), "percentile_low < percentile_high"),
    (("percentile", 0.0, 1.0, (50, 50)), "percentile_low < percentile_high"),
    (("percentile", 300.0, 200.0, (1, 99)), "range_low < range_high"),  # checked whatever the policy
    (("auto", 0.0, 1.0, (1, 99)), "unknown thermal normalisation 'auto'"),
])
def test_inverted_or_unknown_settings_are_refused(settings, match):
    with pytest.raises(ValueError, match=match):
        check_settings(*settings)
    with pytest.raises(ValueError, match=match):
        normalize_thermal(np.zeros((4, 4), np.uint16), *settings)


@pytest.mark.parametrize("frame,match", [
    (np.zeros((4, 4, 3), np.uint16), r"\(4, 4, 3\)"),
    (np.zeros((0, 4), np.uint16), "empty"),
    (np.array([[1.0, np.nan]], np.float32), "NaN"),
    (np.array([[1.0, np.inf]], np.float32), "NaN or infinite"),
    (np.zeros((4, 4), np.int32), "int32"),
])
def test_bad_frames_raise_thermal_error(frame, match):
    with pytest.raises(ThermalError, match=match):
        prepare_infrared(frame)
