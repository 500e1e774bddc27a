"""The infrared → visible homography estimated from image pairs (core/frame/homography_estimate.py).

Known warps: the infrared of aligned pairs is warped by a known G, so the truth is (aligned H) ∘ G⁻¹, built
here from G alone; errors are distances over a 5×5 grid of infrared pixels, in visible pixels.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from dig2dig_ros.core.frame.homography_estimate import (
    EstimateRefused,
    EstimateSettings,
    apply,
    check_quality,
    estimate_from_pairs,
    fit_homography,
    grid_distances,
    grid_error,
    initial_homography,
    overlap_fraction,
    similarity,
    structure_map,
)
from dig2dig_ros.core.sample_scene import make_sample_pair

SIZE = (256, 320)  # (h, w) of the synthetic visible frames


def synthetic_pairs(n: int = 3) -> list[tuple[np.ndarray, np.ndarray]]:
    """Aligned pairs of the shipped synthetic street, each frame a little different (people move)."""
    return [make_sample_pair(k * 5, size=SIZE) for k in range(n)]


def warp_ir(pairs, g: np.ndarray, size: tuple[int, int]):
    return [(cv2.warpPerspective(ir, g, (size[1], size[0]), flags=cv2.INTER_LINEAR,
                                 borderMode=cv2.BORDER_REPLICATE), vis) for ir, vis in pairs]


def test_similarity_maps_centre_to_centre_plus_shift_and_scales_lengths():
    h = similarity((100, 200), (300, 400), 2.0, 90.0, (5.0, -3.0))
    centre = cv2.perspectiveTransform(np.array([[[99.5, 49.5]]]), h)[0, 0]
    assert np.allclose(centre, [199.5 + 5, 149.5 - 3])
    step = cv2.perspectiveTransform(np.array([[[100.5, 49.5]]]), h)[0, 0] - centre
    assert np.allclose(step, [0.0, 2.0], atol=1e-9)  # +x in the infrared is +y (90°), twice as long
    # the size-ratio start: a 640x512 infrared in a 1280x1024 frame doubles, centre to centre
    assert np.allclose(initial_homography((512, 640), (1024, 1280)), similarity((512, 640), (1024, 1280), 2, 0, (0, 0)))
    k_ir = np.array([[400.0, 0, 320], [0, 400, 256], [0, 0, 1]])
    k_vis = np.array([[1000.0, 0, 600], [0, 1000, 500], [0, 0, 1]])
    h = initial_homography((512, 640), (1024, 1280), k_ir, k_vis)
    assert np.allclose(cv2.perspectiveTransform(np.array([[[320.0, 256.0]]]), h)[0, 0], [600, 500])


def test_grid_error_and_overlap_are_what_their_geometry_says():
    shift = np.array([[1, 0, 3.0], [0, 1, 4.0], [0, 0, 1]])
    assert grid_error(shift, np.eye(3), (100, 100)) == pytest.approx((5.0, 5.0))
    half_out = np.array([[1, 0, 50.0], [0, 1, 0], [0, 0, 1]])  # the right half leaves a 100x100 frame
    assert overlap_fraction(half_out, (100, 100), (100, 100)) == pytest.approx(0.5, abs=0.03)


def test_grid_distances_are_per_point_and_row_major():
    tilt = np.array([[1.0, 0, 0], [0, 1, 0], [0, 0, 1]]) + np.array([[0, 0, 0], [0, 0, 0], [1e-3, 0, 0]])
    d = grid_distances(tilt, np.eye(3), (101, 101), 3).reshape(3, 3)
    # x' = x / (1 + 1e-3 x): nothing moves at x = 0; at x = 100, (100, y) goes to (100, y) / 1.1
    assert np.allclose(d[:, 0], 0.0) and d[0, 2] == pytest.approx(100 - 100 / 1.1)
    assert d[2, 2] == pytest.approx(np.hypot(100, 100) * (1 - 1 / 1.1))


def test_fit_homography_with_a_perspective_ridge():
    rng = np.random.default_rng(3)
    ir, vis = (240, 320), (480, 640)
    src = rng.uniform([0, 0], [319, 239], (40, 2))
    affine = np.array([[1.9, 0.1, 20.0], [-0.05, 2.1, -8.0], [0, 0, 1]])
    persp = affine + np.array([[0, 0, 0], [0, 0, 0], [4e-4, -3e-4, 0]])
    # no ridge: the plain fit recovers any homography; a ridge leaves an affine truth exactly where it is
    for truth, ridge in ((persp, 0.0), (affine, 0.0), (affine, 10.0)):
        h = fit_homography(src, apply(truth, src), ir, vis, ridge)
        assert np.allclose(apply(h, src), apply(truth, src), atol=1e-6), ridge
    # a strong ridge flattens a perspective truth to (nearly) affine; a weak one barely moves it
    strong = fit_homography(src, apply(persp, src), ir, vis, 1e3)
    weak = fit_homography(src, apply(persp, src), ir, vis, 1e-8)
    assert np.abs(strong[2, :2]).max() < 0.05 * np.abs(persp[2, :2]).max()
    assert np.abs(apply(weak, src) - apply(persp, src)).max() < 1e-3


def test_structure_map_ignores_contrast_sign_and_is_zero_for_a_flat_image():
    img = np.zeros((64, 64), np.uint8)
    img[16:48, 16:48] = 200
    a, b = structure_map(img, (64, 64)), structure_map(255 - img, (64, 64))
    assert np.allclose(a, b, atol=1e-4) and abs(float(a.mean())) < 1e-4
    assert a[16, 32] > a[32, 32] + 1.0  # the edge stands out of the flat inside
    assert not structure_map(np.full((64, 64), 90, np.uint8), (64, 64)).any()


@pytest.mark.parametrize("case", ["narrower 240x192", "rotated, zoomed, shifted", "perspective"])
def test_known_warps_of_synthetic_pairs_are_recovered(case):
    pairs = synthetic_pairs()
    if case == "narrower 240x192":  # a smaller infrared seeing 70% of the visible width, off centre
        size = (192, 240)
        g = similarity(SIZE, size, 240 / (0.7 * SIZE[1]), 0.0, (8.0, -6.0))
    elif case == "rotated, zoomed, shifted":
        size = SIZE
        g = similarity(SIZE, size, 1.05, 3.0, (-12.0, 9.0))
    else:
        size = SIZE
        c = np.array([[1, 0, -159.5], [0, 1, -127.5], [0, 0, 1]])
        g = np.linalg.inv(c) @ np.array([[1.0, 0.02, 4.0], [-0.01, 1.0, -3.0], [2e-4, -1e-4, 1.0]]) @ c
    est = estimate_from_pairs(warp_ir(pairs, g, size))
    truth = np.linalg.inv(g)  # the synthetic pairs are aligned exactly
    mean, worst = grid_error(est.h, truth / truth[2, 2], size)
    assert mean < 1.0 and worst < 2.5, (mean, worst)
    check_quality(est)  # accepted
    assert est.inliers == len(pairs) and est.overlap > 0.95


@pytest.mark.parametrize("kind", ["noise", "flat"])
def test_pairs_without_shared_structure_are_refused(kind):
    rng = np.random.default_rng(1)
    pairs = [(ir, rng.integers(0, 256, vis.shape, np.uint8) if kind == "noise" else np.full_like(vis, 90))
             for ir, vis in synthetic_pairs()]
    with pytest.raises(EstimateRefused):
        check_quality(estimate_from_pairs(pairs))


# --- public LLVIP pairs (skipped without ../shared) -----------------------------------------------------------
LLVIP_STEMS = ("010003", "010023", "010043", "200002")  # held-out stems (index % 5 == 2), two views


def llvip_pairs(shared_data):
    folder = shared_data / "vif" / "llvip"
    return [(cv2.imread(str(folder / "ir" / f"{s}.jpg")), cv2.imread(str(folder / "vis" / f"{s}.jpg")))
            for s in LLVIP_STEMS]


def test_llvip_known_warps_compose_with_the_aligned_estimate(shared_data):
    pairs = llvip_pairs(shared_data)[:3]  # one view: 010003, 010023, 010043
    aligned = estimate_from_pairs(pairs)
    check_quality(aligned)
    assert grid_error(aligned.h, np.eye(3), (1024, 1280))[0] < 12.0  # near the dataset's own alignment
    small = (512, 640)
    g = similarity((1024, 1280), small, 640 / (0.6 * 1280), 0.0, (20.0, -12.0))  # narrower 640x512 infrared
    est = estimate_from_pairs(warp_ir(pairs, g, small))
    check_quality(est)
    ref = aligned.h @ np.linalg.inv(g)
    mean, worst = grid_error(est.h, ref / ref[2, 2], small)
    assert mean < 2.0 and worst < 5.0, (mean, worst)


def test_llvip_aligned_pairs_of_a_well_aligned_view_stay_near_the_identity(shared_data):
    # 200002 and 200007 (held-out, one view): the dataset's own alignment there is good to about 3 px (median
    # shift of edge tiles 3.0 and 3.8 px, the 2.9 px), so the estimate must land within 5 px mean of the
    # identity. (The 0100xx view is off by 5-8 px in the dataset itself; see docs/ROBOT.md.)
    folder = shared_data / "vif" / "llvip"
    pairs = [(cv2.imread(str(folder / "ir" / f"{s}.jpg")), cv2.imread(str(folder / "vis" / f"{s}.jpg")))
             for s in ("200002", "200007")]
    est = estimate_from_pairs(pairs)
    check_quality(est)
    mean, worst = grid_error(est.h, np.eye(3), (1024, 1280))
    assert mean < 5.0 and worst < 16.0, (mean, worst)


def edge_tile_shifts(pairs) -> tuple[np.ndarray, np.ndarray]:
    """Where each well-textured tile of the infrared lies in the visible, by ECC translation of gradient
    magnitudes (not the estimator's maps or its model): (tile centres (N,2), displacements (N,2)), full-res px."""
    def grad(img):
        g = cv2.GaussianBlur(cv2.cvtColor(cv2.resize(img, (640, 512), interpolation=cv2.INTER_AREA),
                                          cv2.COLOR_BGR2GRAY).astype(np.float32), (0, 0), 1.5)
        m = cv2.magnitude(cv2.Sobel(g, cv2.CV_32F, 1, 0), cv2.Sobel(g, cv2.CV_32F, 0, 1))
        return m / (cv2.GaussianBlur(m, (0, 0), 16) + m.mean())

    centres, shifts = [], []
    for ir, vis in pairs:
        a, b = grad(ir), grad(vis)  # (512, 640) each
        for i in range(6):
            for j in range(8):
                tile = (slice(i * 512 // 6, (i + 1) * 512 // 6), slice(j * 80, (j + 1) * 80))
                try:
                    rho, w = cv2.findTransformECC(a[tile], b[tile], np.eye(2, 3, dtype=np.float32),
                                                  cv2.MOTION_TRANSLATION, (3, 100, 1e-5), None, 1)
                except cv2.error:
                    continue
                if rho > 0.5 and np.abs(w[:, 2]).max() < 8:  # confident, and not a jump to another edge
                    centres.append(((j + 0.5) * 160 - 0.5, (i + 0.5) * 1024 / 6 - 0.5))
                    shifts.append(2.0 * w[:, 2])
    return np.array(centres), np.array(shifts)


def test_llvip_aligned_estimate_follows_the_datasets_own_local_misalignment(shared_data):
    # The street view (0100xx) is the reason the aligned estimate is ~7 px from the identity (docs/ROBOT.md):
    # confident edge tiles there are off by ~5 px under the identity, and the estimate explains them better.
    pairs = llvip_pairs(shared_data)[:3]
    centres, shifts = edge_tile_shifts(pairs)
    assert len(centres) >= 20
    est = estimate_from_pairs(pairs)
    off_identity = np.median(np.linalg.norm(shifts, axis=1))
    off_estimate = np.median(np.linalg.norm(shifts - (apply(est.h, centres) - centres), axis=1))
    assert off_identity > 4.0 and off_estimate < off_identity - 1.0, (off_identity, off_estimate)


def test_llvip_affine_last_level_is_nearer_the_identity_but_loses_the_perspective(shared_data):
    # the trade-off docs/ROBOT.md measures: the street view's own perspective is what keeps the default estimate
    # ~7 px from the identity, and an estimator without it cannot follow a real perspective warp
    pairs = llvip_pairs(shared_data)[:2]
    affine = EstimateSettings(final_motion="affine")
    full = (1024, 1280)
    default_h, affine_h = estimate_from_pairs(pairs).h, estimate_from_pairs(pairs, settings=affine).h
    assert grid_error(affine_h, np.eye(3), full)[0] < grid_error(default_h, np.eye(3), full)[0] - 1.5
    c = np.array([[1, 0, -639.5], [0, 1, -511.5], [0, 0, 1]])
    g = np.linalg.inv(c) @ np.array([[1.02, 0.01, 12.0], [-0.01, 0.99, -8.0], [3e-5, -2e-5, 1.0]]) @ c
    ref = affine_h @ np.linalg.inv(g)  # (the default's 0.13 px on this warp: benchmarks/registration.py)
    assert grid_error(estimate_from_pairs(warp_ir(pairs, g, full), settings=affine).h, ref / ref[2, 2], full)[0] > 3.0


def test_llvip_infrared_with_other_scenes_is_refused(shared_data):
    pairs = llvip_pairs(shared_data)
    others = sorted((shared_data / "vif" / "roadscene" / "vis").iterdir())[:len(pairs)]
    bad = [(ir, cv2.resize(cv2.imread(str(p)), (1280, 1024))) for (ir, _), p in zip(pairs, others, strict=True)]
    with pytest.raises(EstimateRefused):
        check_quality(estimate_from_pairs(bad))


# --- the command: dig2dig calibrate --auto ------------------------------------------------------------------
def write_pairs(folder, pairs):
    for k, (ir, vis) in enumerate(pairs):
        for name, img in (("ir", ir), ("vis", vis)):
            (folder / name).mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(folder / name / f"p{k}.png"), img)


def test_calibrate_auto_writes_the_homography_the_options_read(tmp_path, capsys):
    from dig2dig_ros.commands.cli import main
    from dig2dig_ros.core.frame.registration import parse_homography

    g = similarity(SIZE, (192, 240), 240 / (0.7 * SIZE[1]), 1.0, (6.0, 4.0))
    write_pairs(tmp_path / "data", warp_ir(synthetic_pairs(), g, (192, 240)))
    out = tmp_path / "H.txt"
    assert main(["calibrate", "--auto", "--data", str(tmp_path / "data"), "-o", str(out)]) == 0
    captured = capsys.readouterr()
    h = parse_homography(str(out))  # the format --ir-homography and ir.homography read
    truth = np.linalg.inv(g)
    assert grid_error(h, truth / truth[2, 2], (192, 240))[0] < 1.0
    assert "pair p0: correlation" in captured.err and "overlap" in captured.err and "residual" in captured.err
    assert captured.out.strip().splitlines()[-1] == open(out).read().strip()


def test_calibrate_auto_refuses_in_one_line_and_writes_nothing(tmp_path, capsys):
    from dig2dig_ros.commands.cli import main

    rng = np.random.default_rng(2)
    write_pairs(tmp_path / "data", [(ir, rng.integers(0, 256, vis.shape, np.uint8)) for ir, vis in synthetic_pairs()])
    out = tmp_path / "H.txt"
    assert main(["calibrate", "--auto", "--data", str(tmp_path / "data"), "-o", str(out)]) == 2
    captured = capsys.readouterr()
    assert not out.exists() and captured.out == ""
    assert captured.err.count("\n") == 1 and captured.err.startswith("dig2dig: error:")
    assert main(["calibrate", "--auto"]) == 2  # neither --data nor --bag
    assert main(["calibrate"]) == 2  # neither points nor --auto


def test_calibrate_auto_reads_synchronised_pairs_from_a_bag(tmp_path, capsys):
    from dig2dig_ros.bags.bag import write_image_bag
    from dig2dig_ros.commands.cli import main

    g = similarity(SIZE, SIZE, 1.04, -2.0, (10.0, -7.0))
    pairs = warp_ir([make_sample_pair(k, size=SIZE) for k in range(12)], g, SIZE)
    bag = tmp_path / "rig"
    write_image_bag(bag, pairs, rate=10.0, start_ns=10**9, vis_offset=0.004)  # cameras 4 ms apart
    out = tmp_path / "H.txt"
    assert main(["calibrate", "--auto", "--bag", str(bag), "--pairs", "4", "-o", str(out)]) == 0
    err = capsys.readouterr().err
    assert "4 synchronised pairs" in err and "pair 1.000:" in err and "pair 2.100:" in err  # first and last
    truth = np.linalg.inv(g)
    assert grid_error(np.loadtxt(out, delimiter=",").reshape(3, 3), truth / truth[2, 2], SIZE)[0] < 1.0


def test_calibrate_auto_starts_from_the_bags_camera_info(tmp_path, capsys):
    from rosbags.rosbag2 import Writer

    from dig2dig_ros.bags.bag import IMAGE_TYPE, ir_pixels, serialize_image, typestore, visible_pixels
    from dig2dig_ros.commands.cli import main

    small, scale = (192, 240), 240 / (0.6 * SIZE[1])  # infrared pixels per visible pixel
    g = similarity(SIZE, small, scale, 0.0, (5.0, -4.0))
    pairs = warp_ir([make_sample_pair(k, size=SIZE) for k in range(4)], g, small)
    store, types = typestore(), typestore().types
    info_type = "sensor_msgs/msg/CameraInfo"

    def info(stamp: int, size: tuple[int, int], focal: float) -> bytes:
        header = types["std_msgs/msg/Header"](stamp=types["builtin_interfaces/msg/Time"](
            sec=stamp // 10**9, nanosec=stamp % 10**9), frame_id="camera")
        roi = types["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0, do_rectify=False)
        k = np.array([focal, 0, (size[1] - 1) / 2, 0, focal, (size[0] - 1) / 2, 0, 0, 1], np.float64)
        msg = types[info_type](header=header, height=size[0], width=size[1], distortion_model="plumb_bob",
                               d=np.zeros(5), k=k, r=np.eye(3).ravel(), p=np.zeros(12), binning_x=0, binning_y=0,
                               roi=roi)
        return store.serialize_cdr(msg, info_type)

    with Writer(tmp_path / "rig", version=9) as writer:
        conns = [writer.add_connection(t, m, typestore=store) for t, m in (
            ("/ir/image", IMAGE_TYPE), ("/visible/image", IMAGE_TYPE),
            ("/ir/camera_info", info_type), ("/visible/camera_info", info_type))]
        for k, (ir, vis) in enumerate(pairs):
            t = 10**9 + k * 10**8
            writer.write(conns[0], t, serialize_image(*ir_pixels(ir), t, "ir"))
            writer.write(conns[1], t, serialize_image(*visible_pixels(vis), t, "vis"))
            writer.write(conns[2], t, info(t, small, 300.0 * scale))
            writer.write(conns[3], t, info(t, SIZE, 300.0))
    out = tmp_path / "H.txt"
    assert main(["calibrate", "--auto", "--bag", str(tmp_path / "rig"), "-o", str(out)]) == 0
    assert "started from camera_info focal lengths" in capsys.readouterr().err
    truth = np.linalg.inv(g)
    assert grid_error(np.loadtxt(out, delimiter=",").reshape(3, 3), truth / truth[2, 2], small)[0] < 1.0
