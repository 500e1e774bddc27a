"""`dig2dig eval` and `dig2dig plot-dig` on small synthetic data the tests write themselves."""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import pytest

from dig2dig_ros.commands import evaluate, plot_dig
from dig2dig_ros.commands.cli import main
from dig2dig_ros.core import metrics
from dig2dig_ros.core.config import FusionConfig, with_overrides
from dig2dig_ros.core.frame import imaging
from dig2dig_ros.core.frame.fusion import Fuser, FusionError
from dig2dig_ros.core.sample_scene import make_sample_pair

SIZE = (64, 80)


@pytest.fixture
def vif_dir(tmp_path: Path) -> Path:
    """tmp/vif/{ir,vis}/f0.png, f1.png: two frames of the synthetic night street."""
    root = tmp_path / "vif"
    for frame in range(2):
        ir, vis = make_sample_pair(frame=frame * 3, size=SIZE)
        for sub, img in (("ir", ir), ("vis", vis)):
            (root / sub).mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(root / sub / f"f{frame}.png"), img)
    return root


def parse_table(text: str) -> dict[str, dict[str, str]]:
    """{row label: {column header without arrow: cell}} of the first Markdown table in text."""
    lines = [ln for ln in text.splitlines() if ln.startswith("|")]
    header = [h.strip().split(" ")[0] for h in lines[0].strip("|").split("|")]
    rows = {}
    for line in lines[2:]:
        cells = [c.strip().strip("*") for c in line.strip("|").split("|")]
        rows[cells[0]] = dict(zip(header, cells, strict=True))
    return rows


def hand_mse(fused: np.ndarray, ir: np.ndarray, vis: np.ndarray) -> float:
    f, a, b = (metrics.to_gray255(x) for x in (fused, ir, vis))
    return (np.mean((a - f) ** 2) + np.mean((b - f) ** 2)) / 2


def test_eval_writes_one_row_per_method_with_finite_metrics(vif_dir: Path, tmp_path: Path, capsys) -> None:
    report = tmp_path / "report.md"
    argv = ["eval", "--data", str(vif_dir), "--method", "average", "--method", "static", "--prior", "wiener",
            "--steps", "3", "--max-side", "64", "--threads", "1", "--out", str(report)]
    assert main(argv) == 0
    rows = parse_table(report.read_text())
    assert list(rows) == ["average", "static"]
    for row in rows.values():
        assert row["n"] == "2"
        for name in (*evaluate.METRICS, "s/img"):
            assert math.isfinite(float(row[name])), (name, row[name])
    # average's MSE by hand: mean over the pairs of the two squared errors against A = ir, B = vis.
    fuser = Fuser(with_overrides(FusionConfig(), {"method": "average", "max_side": 64}), prior="wiener")
    expected = []
    for stem in ("f0", "f1"):
        ir, vis = (imaging.read_image(vif_dir / sub / f"{stem}.png") for sub in ("ir", "vis"))
        expected.append(hand_mse(fuser([ir, vis]).fused, ir, vis))
    assert float(rows["average"]["MSE"]) == pytest.approx(np.mean(expected), abs=0.051)
    assert "| average |" in capsys.readouterr().out


def test_eval_reads_fused_images_by_stem(vif_dir: Path, tmp_path: Path) -> None:
    fused_dir = tmp_path / "mine"
    fused_dir.mkdir()
    expected = []
    for stem in ("f0", "f1"):
        ir, vis = (imaging.read_image(vif_dir / sub / f"{stem}.png") for sub in ("ir", "vis"))
        fused = np.rint(metrics.to_gray255(vis)).astype(np.uint8)  # "fusion" = the visible luma
        cv2.imwrite(str(fused_dir / f"{stem}.png"), fused)
        expected.append(hand_mse(fused, ir, vis))
    samples = evaluate.find_samples(vif_dir)[1]
    scores = evaluate.evaluate_folder(fused_dir, samples)
    assert [s.name for s in scores] == ["f0", "f1"]
    assert np.mean([s.values["MSE"] for s in scores]) == pytest.approx(np.mean(expected), rel=1e-9)
    assert all(math.isnan(s.seconds) for s in scores)
    report = tmp_path / "r.md"
    assert main(["eval", "--data", str(vif_dir), "--fused", f"mine={fused_dir}", "--out", str(report)]) == 0
    row = parse_table(report.read_text())["mine"]
    assert float(row["MSE"]) == pytest.approx(np.mean(expected), abs=0.051)
    assert row["s/img"] == "n/a"


def test_eval_missing_fused_image_is_a_user_error(vif_dir: Path, tmp_path: Path, capsys) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["eval", "--data", str(vif_dir), "--fused", str(empty)]) == 2
    assert "no fused image named f0" in capsys.readouterr().err


def test_scene_folders_give_task_and_source_order(tmp_path: Path) -> None:
    img = np.zeros((8, 8), np.uint8)
    for scene, names in (("s1", ("over.png", "under.png")), ("s2", ("under.png", "over.png"))):
        (tmp_path / "m" / scene).mkdir(parents=True)
        for name in names:
            cv2.imwrite(str(tmp_path / "m" / scene / name), img)
    task, samples = evaluate.find_samples(tmp_path / "m")
    assert task == "mef"
    assert [[p.name for p in s.sources] for s in samples] == [["under.png", "over.png"]] * 2
    (tmp_path / "f" / "x").mkdir(parents=True)
    for name in ("b.jpg", "a.jpg"):
        cv2.imwrite(str(tmp_path / "f" / "x" / name), img)
    task, samples = evaluate.find_samples(tmp_path / "f")
    assert (task, [p.name for p in samples[0].sources]) == ("mff", ["a.jpg", "b.jpg"])
    (tmp_path / "u" / "x").mkdir(parents=True)
    for name in ("p.png", "q.png"):
        cv2.imwrite(str(tmp_path / "u" / "x" / name), img)
    with pytest.raises(FusionError, match="--task"):
        evaluate.find_samples(tmp_path / "u")
    assert evaluate.find_samples(tmp_path / "u", "mff")[0] == "mff"


def test_markdown_table_bolds_the_best_value_per_column() -> None:
    good = evaluate.Row("good", [evaluate.Score("x", {"Qabf": 0.7, "MSE": 10.0}, 1.0)])
    bad = evaluate.Row("bad", [evaluate.Score("x", {"Qabf": 0.5, "MSE": 20.0}, 2.0)])
    rows = evaluate.markdown_table([good, bad], columns=("Qabf", "MSE")).splitlines()
    assert rows[2] == "| good | 1 | **0.700** | **10.0** | **1.000** |"
    assert rows[3] == "| bad | 1 | 0.500 | 20.0 | 2.000 |"


def test_plot_dig_writes_figure_and_credits_each_source_where_it_holds_information(tmp_path: Path) -> None:
    ir, vis = make_sample_pair(size=(96, 120))
    paths = [tmp_path / "ir.png", tmp_path / "vis.png"]
    for path, img in zip(paths, (ir, vis), strict=True):
        cv2.imwrite(str(path), img)
    out = tmp_path / "fig.png"
    argv = ["plot-dig", *map(str, paths), "-o", str(out), "--prior", "wiener", "--steps", "8", "--max-side", "0",
            "--size", "640x360"]
    assert main(argv) == 0
    assert cv2.imread(str(out)).shape == (360, 640, 3)

    config = with_overrides(FusionConfig(), {"method": "dig", "sampler.steps": 8, "dig.interval": 1})
    fuser = Fuser(config, prior="wiener")
    trace = plot_dig.trace_dig(fuser, [ir, vis])
    assert trace.levels[0] == fuser.timesteps[0] and trace.levels[-1] == -1
    assert np.all(np.diff(trace.levels) < 0)
    assert np.all(np.diff(trace.sigmas) < 0)
    assert trace.cumulative.shape == (len(trace.levels), 2, 96, 120)
    assert np.all(trace.cumulative[0] == 0)
    hot, lit, textured = plot_dig.auto_regions(trace.sources)
    final = {r.name: r.mean_std(trace.cumulative[-1])[0] for r in (hot, lit, textured)}
    assert final[hot.name][0] > 2 * final[hot.name][1]  # people: infrared gains far more
    assert final[lit.name][1] > final[lit.name][0]  # lamp light: visible gains more
    assert final[textured.name][1] > final[textured.name][0]


def test_parse_box_scales_and_clips() -> None:
    region = plot_dig.parse_box("car=100,50,40,1000", 0.5, (200, 300))
    assert (region.name, region.box) == ("car", (50, 25, 20, 175))
    with pytest.raises(ValueError, match="NAME=x,y,w,h"):
        plot_dig.parse_box("car=1,2,3", 1.0, (10, 10))
