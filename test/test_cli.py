"""The `dig2dig` CLI contract: outputs, weight maps, and one clear error line for bad input."""

import subprocess
import sys

import cv2
import numpy as np
import pytest

from dig2dig_ros.commands.cli import main
from dig2dig_ros.core.sample_scene import make_sample_pair

FAST = ["--prior", "wiener", "--steps", "4", "--device", "cpu"]


@pytest.fixture()
def sample_pair(tmp_path):
    ir, vis = make_sample_pair()
    cv2.imwrite(str(tmp_path / "ir.png"), ir)
    cv2.imwrite(str(tmp_path / "vis.png"), vis)
    return tmp_path / "ir.png", tmp_path / "vis.png"


def test_fuse_writes_colour_output_and_weights(sample_pair, tmp_path):
    ir, vis = sample_pair
    out, wdir = tmp_path / "fused.png", tmp_path / "w"
    assert main(["fuse", str(ir), str(vis), "-o", str(out), "--weights-dir", str(wdir), *FAST]) == 0
    fused = cv2.imread(str(out), cv2.IMREAD_UNCHANGED)
    assert fused.shape == (256, 320, 3)
    w0 = cv2.imread(str(wdir / "weight_0.png"), cv2.IMREAD_UNCHANGED)
    w1 = cv2.imread(str(wdir / "weight_1.png"), cv2.IMREAD_UNCHANGED)
    assert w0.dtype == np.uint8 and w0.shape == (256, 320)
    assert np.abs(w0.astype(int) + w1.astype(int) - 255).max() <= 1  # weights sum to one
    # The synthetic people are hot in infrared and nearly invisible in the visible frame.
    people = w0[185:215, 75:85].mean()
    assert people > w0.mean()


def test_fuse_dir_on_real_pairs(shared_data, tmp_path):
    data = tmp_path / "pairs"
    for sub in ("ir", "vis"):
        (data / sub).mkdir(parents=True)
        for src in sorted((shared_data / "vif" / "tno" / sub).iterdir())[:2]:
            (data / sub / src.name).symlink_to(src)
    assert main(["fuse-dir", "--data", str(data), "--out", str(tmp_path / "out"), "--max-side", "128", *FAST]) == 0
    written = sorted((tmp_path / "out").glob("*.png"))
    assert len(written) == 2
    for path in written:
        src = cv2.imread(str(next((data / "ir").glob(path.stem + ".*"))))
        assert cv2.imread(str(path), cv2.IMREAD_UNCHANGED).shape[:2] == src.shape[:2]


def test_sixteen_bit_input_is_normalised(tmp_path):
    ramp = np.tile(np.linspace(0, 65535, 64), (48, 1)).astype(np.uint16)
    cv2.imwrite(str(tmp_path / "a.png"), ramp)
    cv2.imwrite(str(tmp_path / "b.png"), ramp)
    assert main(["fuse", str(tmp_path / "a.png"), str(tmp_path / "b.png"), "-o", str(tmp_path / "f.png"),
                 "--method", "static", *FAST]) == 0
    fused = cv2.imread(str(tmp_path / "f.png"), cv2.IMREAD_UNCHANGED)
    assert fused.dtype == np.uint8
    assert fused[:, :8].mean() < 60 and fused[:, -8:].mean() > 195  # the ramp survives, not truncated


@pytest.mark.parametrize("case,message", [
    ("one", "at least two"),
    ("missing", "no such file"),
    ("unreadable", "not a readable image"),
    ("sizes", "sizes differ"),
    ("prior", "unknown prior"),
])
def test_bad_input_gives_one_error_line(case, message, sample_pair, tmp_path, capsys):
    ir, vis = sample_pair
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"not an image")
    small = tmp_path / "small.png"
    cv2.imwrite(str(small), np.zeros((10, 10), np.uint8))
    args = {
        "one": [str(ir)], "missing": [str(ir), str(tmp_path / "nope.png")], "unreadable": [str(ir), str(junk)],
        "sizes": [str(ir), str(small)], "prior": [str(ir), str(vis)],
    }[case]
    extra = ["--prior", "nope"] if case == "prior" else FAST
    assert main(["fuse", *args, "-o", str(tmp_path / "o.png"), *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("dig2dig: error:") and message in err[0]


def test_resize_policy_allows_mismatched_sizes(sample_pair, tmp_path):
    ir, _ = sample_pair
    small = tmp_path / "small.png"
    cv2.imwrite(str(small), np.full((64, 80), 128, np.uint8))
    out = tmp_path / "o.png"
    assert main(["fuse", str(ir), str(small), "-o", str(out), "--resize", "first", *FAST]) == 0
    assert cv2.imread(str(out), cv2.IMREAD_UNCHANGED).shape == (256, 320)


def test_console_script_exit_status_without_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "dig2dig_ros.commands.cli", "fuse", "a.png", "b.png", "-o", "o.png"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and "no such file" in proc.stderr


# -- infrared the way the node prepares it: thermal normalisation and registration ---------------------------

SHIFT = np.array([[1.0, 0.0, 9.0], [0.0, 1.0, -6.0], [0.0, 0.0, 1.0]])  # aligned ir → misaligned ir


def test_sixteen_bit_infrared_gets_the_nodes_normalisation(sample_pair, tmp_path):
    from dig2dig_ros.core.frame.thermal import prepare_infrared

    ir8 = cv2.imread(str(sample_pair[0]), cv2.IMREAD_GRAYSCALE)
    counts = (ir8.astype(np.uint16) * 4 + 21000)  # a narrow band of raw counts
    cv2.imwrite(str(tmp_path / "ir16.png"), counts)
    cv2.imwrite(str(tmp_path / "ir8.png"), np.rint(prepare_infrared(counts) * 255).astype(np.uint8))
    outs = []
    for name in ("ir16.png", "ir8.png"):
        out = tmp_path / f"fused_{name}"
        assert main(["fuse", str(tmp_path / name), str(sample_pair[1]), "-o", str(out), "--method", "average"]) == 0
        outs.append(cv2.imread(str(out)).astype(int))
    assert np.abs(outs[0] - outs[1]).max() <= 2  # the same frame, not counts / 65535 (nearly black)
    assert outs[0].mean() > 40


def test_ir_homography_registers_a_misaligned_pair(sample_pair, tmp_path):
    ir = cv2.imread(str(sample_pair[0]), cv2.IMREAD_GRAYSCALE)
    misaligned = cv2.warpPerspective(ir, SHIFT, (ir.shape[1], ir.shape[0]), borderMode=cv2.BORDER_REPLICATE)
    cv2.imwrite(str(tmp_path / "mis.png"), misaligned)
    h = np.linalg.inv(SHIFT)
    (tmp_path / "H.txt").write_text("\n".join(" ".join(f"{v:.6f}" for v in row) for row in h))
    common = ["--method", "average"]
    aligned, plain, registered, from_file = (tmp_path / f"{n}.png" for n in ("a", "p", "r", "f"))
    assert main(["fuse", str(sample_pair[0]), str(sample_pair[1]), "-o", str(aligned), *common]) == 0
    assert main(["fuse", str(tmp_path / "mis.png"), str(sample_pair[1]), "-o", str(plain), *common]) == 0
    numbers = ",".join(f"{v:.6f}" for v in h.reshape(-1))
    assert main(["fuse", str(tmp_path / "mis.png"), str(sample_pair[1]), "-o", str(registered), *common,
                 "--ir-homography", numbers]) == 0
    assert main(["fuse", str(tmp_path / "mis.png"), str(sample_pair[1]), "-o", str(from_file), *common,
                 "--ir-homography", str(tmp_path / "H.txt")]) == 0
    a, p, r, f = (cv2.imread(str(x)).astype(float) for x in (aligned, plain, registered, from_file))
    inner = (slice(16, -16), slice(16, -16))
    assert np.abs(r[inner] - a[inner]).mean() < 1.0 < np.abs(p[inner] - a[inner]).mean()
    assert np.array_equal(r, f)


def test_fuse_dir_takes_the_homography_too(sample_pair, tmp_path):
    data = tmp_path / "pairs"
    for sub, src in (("ir", sample_pair[0]), ("vis", sample_pair[1])):
        (data / sub).mkdir(parents=True)
        (data / sub / "a.png").symlink_to(src)
    out = tmp_path / "out"
    assert main(["fuse-dir", "--data", str(data), "--out", str(out), "--method", "average",
                 "--ir-homography", "1,0,0,0,1,0,0,0,1"]) == 0
    assert cv2.imread(str(out / "a.png")).shape == (256, 320, 3)


@pytest.mark.parametrize("args,message", [
    (["--ir-homography", "1,2,3"], "9 numbers"),
    (["--ir-homography", "/nonexistent/H.txt"], "does not exist"),
    (["--ir-normalization", "fixed", "--ir-range", "300,200"], "range_low < range_high"),
    (["--ir-percentiles", "99,1"], "percentile_low < percentile_high"),
    (["--task", "mef", "--ir-homography", "1,0,0,0,1,0,0,0,1"], "--task vif"),
])
def test_bad_infrared_options_give_one_error_line(args, message, sample_pair, tmp_path, capsys):
    ir, vis = sample_pair
    assert main(["fuse", str(ir), str(vis), "-o", str(tmp_path / "o.png"), "--method", "average", *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("dig2dig: error:") and message in err[0]


def test_calibrate_prints_the_homography_the_options_take(tmp_path, capsys):
    h_true = np.array([[1.02, 0.01, 14.0], [-0.02, 0.97, -9.0], [1e-5, 2e-5, 1.0]])
    ir_pts = np.array([[20, 30], [600, 25], [610, 480], [30, 470], [320, 240]], np.float64)
    vis_pts = cv2.perspectiveTransform(ir_pts.reshape(-1, 1, 2), h_true).reshape(-1, 2)
    lines = ["# x_ir y_ir x_vis y_vis"] + [f"{a} {b} {c} {d}" for (a, b), (c, d) in zip(ir_pts, vis_pts, strict=True)]
    (tmp_path / "points.txt").write_text("\n".join(lines) + "\n")
    assert main(["calibrate", str(tmp_path / "points.txt"), "-o", str(tmp_path / "H.txt")]) == 0
    from dig2dig_ros.core.frame.registration import parse_homography

    printed = capsys.readouterr().out.strip().splitlines()[-1]
    assert np.allclose(parse_homography(printed), h_true, atol=1e-5)
    assert np.allclose(parse_homography(str(tmp_path / "H.txt")), h_true, atol=1e-5)


def test_fuse_dir_sequence_warm_starts_consecutive_frames(tmp_path, capsys):
    rng = np.random.default_rng(0)
    wide = cv2.GaussianBlur(rng.random((48, 80)).astype(np.float32), (0, 0), 3)
    wide = cv2.normalize(wide, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)
    data = tmp_path / "seq"
    for sub in ("ir", "vis"):
        (data / sub).mkdir(parents=True)
        for i in range(3):  # a slow pan: consecutive frames differ by one column
            cv2.imwrite(str(data / sub / f"frame{i:03d}.png"), wide[:, i : i + 64])
    out = tmp_path / "out"
    assert main(["fuse-dir", "--data", str(data), "--out", str(out), "--sequence", "--method", "dig",
                 "--prior", "wiener", "--steps", "6", "--set", "video.start_step=3"]) == 0
    assert "(2 warm-started)" in capsys.readouterr().out
    assert len(list(out.glob("*.png"))) == 3
