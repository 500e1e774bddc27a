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
