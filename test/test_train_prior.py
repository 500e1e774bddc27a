"""Training the bundled prior: it learns, it is deterministic and resumable, the CLI and the held-back split."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from dig2dig_ros.commands.train_prior import (
    TrainSettings,
    find_images,
    is_listed,
    main,
    read_list,
    read_luminance,
    train,
    x0_loss,
)
from dig2dig_ros.core.diffusion.priors import load_prior
from dig2dig_ros.core.diffusion.priors.bundled import BundledConfig, BundledPrior

REPO = Path(__file__).resolve().parents[1]
SMALL = BundledConfig(widths=(16, 24, 32), blocks=(1, 1, 1), heads=2, emb_dim=32)
QUICK = {"batch": 8, "crop": 32, "lr": 2e-3, "warmup": 10, "save_every": 1000, "seed": 3}


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four 64x80 checkerboards (8 px squares, shifted, different contrasts) in two subfolders, plus a text file."""
    root = tmp_path_factory.mktemp("tiny")
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:64, 0:80]
    for i in range(4):
        board = ((xx + 2 * i) // 8 + (yy + i) // 8) % 2 * 2 - 1  # (64,80) of ±1
        img = 128 + (40 + 15 * i) * board + rng.normal(0, 3, board.shape)
        sub = root / ("ir" if i % 2 else "vis")
        sub.mkdir(exist_ok=True)
        cv2.imwrite(str(sub / f"{i:02d}.png"), np.clip(img, 0, 255).astype(np.uint8))
    (root / "notes.txt").write_text("not an image")
    return root


def _images(folder: Path) -> list[np.ndarray]:
    return [read_luminance(p) for p in find_images([folder])]


def _fixed_loss(prior: BundledPrior, images: list[np.ndarray]) -> float:
    crops = torch.stack([torch.from_numpy(im[:32, :32].copy()) for im in images])[:, None]  # (4,1,32,32)
    gen = torch.Generator().manual_seed(123)
    with torch.no_grad():
        return float(sum(x0_loss(prior, crops.repeat(8, 1, 1, 1), gen) for _ in range(4)))


def test_finds_images_recursively_and_reads_luminance(tiny_folder: Path) -> None:
    paths = find_images([tiny_folder])
    assert [p.name for p in paths] == ["01.png", "03.png", "00.png", "02.png"]
    y = read_luminance(paths[0], max_side=40)
    assert y.shape == (32, 40) and y.dtype == np.float32 and -1 <= y.min() < y.max() <= 1


def test_training_a_few_steps_lowers_the_loss(tiny_folder: Path, tmp_path: Path) -> None:
    images = _images(tiny_folder)
    out = tmp_path / "p.safetensors"
    losses = train(images, out, TrainSettings(steps=60, **QUICK), cfg=SMALL, progress=False)
    assert len(losses) == 60
    before = _fixed_loss(BundledPrior(SMALL), images)  # the untrained net is its Wiener estimate
    after = _fixed_loss(load_prior(f"bundled:{out}"), images)
    assert after < 0.9 * before


def test_training_is_deterministic_for_a_seed(tiny_folder: Path, tmp_path: Path) -> None:
    images = _images(tiny_folder)
    a, b, c = (tmp_path / f"{n}.safetensors" for n in "abc")
    train(images, a, TrainSettings(steps=5, **QUICK), cfg=SMALL, progress=False)
    train(images, b, TrainSettings(steps=5, **QUICK), cfg=SMALL, progress=False)
    train(images, c, TrainSettings(steps=5, **dict(QUICK, seed=4)), cfg=SMALL, progress=False)
    wa, wb, wc = load_file(str(a)), load_file(str(b)), load_file(str(c))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert not all(torch.equal(wa[k], wc[k]) for k in wa)


def test_resuming_continues_exactly(tiny_folder: Path, tmp_path: Path) -> None:
    images = _images(tiny_folder)
    straight, halves = tmp_path / "straight.safetensors", tmp_path / "halves.safetensors"
    train(images, straight, TrainSettings(steps=8, **QUICK), cfg=SMALL, progress=False)
    train(images, halves, TrainSettings(steps=4, **QUICK), cfg=SMALL, progress=False)
    resume = halves.with_name(halves.name + ".resume.safetensors")
    assert resume.is_file()
    losses = train(images, halves, TrainSettings(steps=8, **QUICK), cfg=SMALL, resume=resume, progress=False)
    assert len(losses) == 4
    ws, wh = load_file(str(straight)), load_file(str(halves))
    assert all(torch.equal(ws[k], wh[k]) for k in ws)


def test_command_line_writes_loadable_weights_and_honours_the_holdout(tiny_folder: Path, tmp_path: Path) -> None:
    holdout = tmp_path / "held.txt"
    holdout.write_text("# held back\nvis/00.png\n")
    out = tmp_path / "cli.safetensors"
    argv = ["--data", str(tiny_folder), "--out", str(out), "--steps", "2", "--batch", "2", "--crop", "32"]
    assert main([*argv, "--holdout", str(holdout)]) == 0
    cfg = json.loads(out.with_suffix(".json").read_text())
    assert cfg["meta"]["images"] == 3 and cfg["meta"]["steps"] == 2
    assert -1 < cfg["wiener"]["mean"] < 1 and cfg["sigma_data"] == cfg["wiener"]["std"] > 0
    prior = load_prior(f"bundled:{out}")
    assert prior.multiple == 16


def test_is_listed_matches_whole_path_components(tmp_path: Path) -> None:
    assert is_listed(tmp_path / "vif" / "tno" / "ir" / "01.png", ["vif/tno/ir/01.png"])
    assert not is_listed(tmp_path / "vif" / "tno" / "ir" / "101.png", ["ir/01.png"])
    assert not is_listed(tmp_path / "vif" / "tno" / "vis" / "01.png", ["vif/tno/ir/01.png"])


def test_validation_split_names_existing_whole_pairs(shared_data: Path) -> None:
    entries = read_list(REPO / "data_splits" / "prior_validation.txt")
    assert len(entries) == len(set(entries)) >= 40
    assert all((shared_data / e).is_file() for e in entries)
    ir = {e.replace("/ir/", "/") for e in entries if "/ir/" in e}
    vis = {e.replace("/vis/", "/") for e in entries if "/vis/" in e}
    assert {Path(e).with_suffix("") for e in ir} == {Path(e).with_suffix("") for e in vis}
