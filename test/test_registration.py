"""Infrared → visible registration: parsing H, warping with a validity mask, estimating H from points."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from dig2dig_ros.core.frame.registration import (
    RegistrationError,
    estimate_homography,
    format_homography,
    is_identity,
    parse_homography,
    register_pair,
    warp_into,
)
from dig2dig_ros.core.sample_scene import make_sample_pair

SHIFT = np.array([[1.0, 0.0, 12.0], [0.0, 1.0, -7.0], [0.0, 0.0, 1.0]])  # ir (x, y) → vis (x + 12, y − 7)


def test_parse_accepts_numbers_strings_and_files(tmp_path):
    expected = SHIFT
    assert np.array_equal(parse_homography(SHIFT.reshape(-1).tolist()), expected)
    assert np.array_equal(parse_homography("1,0,12, 0,1,-7, 0,0,1"), expected)
    assert np.array_equal(parse_homography("[[1 0 12]; [0 1 -7]; [0 0 1]]"), expected)
    text = tmp_path / "H.txt"
    text.write_text("# ir -> vis\n1 0 12\n0 1 -7\n0 0 1\n")
    assert np.array_equal(parse_homography(str(text)), expected)
    np.save(tmp_path / "H.npy", SHIFT * 2.0)  # scaled: normalised to H[2,2] = 1
    assert np.allclose(parse_homography(str(tmp_path / "H.npy")), expected)
    assert parse_homography("") is None and parse_homography([]) is None and parse_homography(None) is None
    assert np.allclose(parse_homography(format_homography(SHIFT)), SHIFT)


@pytest.mark.parametrize("value,match", [
    ("1,0,0,0,1,0,0,0", "9 numbers"),
    ([1.0] * 10, "9 numbers"),
    ("1,0,x,0,1,0,0,0,1", "9 numbers"),
    ("0,0,0,0,0,0,0,0,0", "singular"),
    ([1, 0, 0, 0, 1, 0, 0, 0, float("nan")], "non-finite"),
    ("/nonexistent/H.txt", "does not exist"),
])
def test_parse_rejects_bad_values(value, match):
    with pytest.raises(RegistrationError, match=match):
        parse_homography(value)


def test_identity_check():
    assert is_identity(None) and is_identity(np.eye(3)) and not is_identity(SHIFT)


def test_warp_moves_pixels_and_masks_what_the_source_did_not_see():
    ir = np.zeros((60, 80), np.uint8)
    ir[20:30, 30:40] = 200
    warped, mask = warp_into(ir, SHIFT, (50, 90))  # into a visible frame of another size
    assert warped.shape == (50, 90) and mask.shape == (50, 90) and mask.dtype == np.uint8
    assert warped[13:23, 42:52].min() == 200 and warped[13:23, 42:52].size == 100
    assert warped.sum() == ir.sum()  # the block moved whole, nothing added
    # visible (x, y) sees infrared (x − 12, y + 7): x < 12 and y ≥ 53 (outside 50) have no infrared data
    assert mask[:, :12].max() == 0 and mask[:, 12:].min() == 255
    colour = np.dstack([ir, ir, ir]).astype(np.float32) / 255
    warped_c, _ = warp_into(colour, SHIFT, (50, 90))
    assert warped_c.shape == (50, 90, 3) and warped_c.dtype == np.float32


def test_a_misaligned_frame_registered_by_the_inverse_matches_the_aligned_one():
    ir, vis = make_sample_pair(size=(128, 160))
    h_true = np.array([[1.03, 0.02, -6.0], [-0.01, 0.98, 4.0], [1e-5, 0.0, 1.0]])  # vis → misaligned ir
    misaligned, _ = warp_into(ir, h_true, ir.shape)
    h = np.linalg.inv(h_true)  # misaligned ir → vis
    ir2, vis2, valid = register_pair(misaligned, vis, h, "visible")
    assert vis2 is vis and valid[1] is None and valid[0].shape == vis.shape[:2]
    inner = (slice(12, -12), slice(12, -12))
    err = np.abs(ir2[inner].astype(float) - ir[inner].astype(float))
    assert err.mean() < 3.0 and valid[0][inner].min() == 255
    # reference ir: the visible frame is warped the other way, into the infrared geometry
    ir3, vis3, valid3 = register_pair(misaligned, vis, h, "ir")
    assert ir3 is misaligned and valid3[0] is None and vis3.shape == vis.shape
    assert register_pair(ir, vis, None) == (ir, vis, [None, None])


def test_estimate_recovers_a_known_homography_from_points():
    h_true = np.array([[0.9, 0.05, 20.0], [-0.03, 1.1, -15.0], [2e-5, -1e-5, 1.0]])
    ir_points = np.array([[10, 10], [600, 20], [620, 500], [15, 490], [320, 256], [100, 300]], np.float64)
    vis_points = cv2.perspectiveTransform(ir_points.reshape(-1, 1, 2), h_true).reshape(-1, 2)
    h, rms = estimate_homography(ir_points, vis_points)
    assert np.allclose(h, h_true, atol=1e-5) and rms < 1e-3
    with pytest.raises(RegistrationError, match="at least 4"):
        estimate_homography(ir_points[:3], vis_points[:3])


def test_the_validity_mask_is_made_once_per_homography_and_size_and_cannot_be_written():
    from dig2dig_ros.core.frame.registration import validity_mask

    h = np.array([[1.0, 0.0, 7.0], [0.0, 1.0, -3.0], [0.0, 0.0, 1.0]])
    img = np.zeros((40, 50), np.uint8)
    _, first = warp_into(img, h, (40, 50))
    _, again = warp_into(img + 1, h.copy(), (40, 50))
    assert again is first and not first.flags.writeable
    expected = cv2.warpPerspective(np.full((40, 50), 255, np.uint8), h, (50, 40), flags=cv2.INTER_NEAREST,
                                   borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    np.testing.assert_array_equal(first, expected)
    other = validity_mask(h @ np.diag([1.0, 1.0, 1.0]) + np.array([[0, 0, 1.0], [0, 0, 0], [0, 0, 0]]),
                          (40, 50), (40, 50))
    assert other is not first and other[:, 7].max() == 0  # another H: its own mask (shifted one more column)
    assert validity_mask(h, (40, 50), (30, 50)).shape == (30, 50)  # another output size: its own
