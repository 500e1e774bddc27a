"""The flicker metric on synthetic videos: still, moving coherently, and flickering."""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import pytest

from dig2dig_ros.core.video.flicker import estimate_motion, flicker, warping_error

SIZE = (96, 128)  # (H, W)
FRAMES = 6


def _texture(seed: int, size: tuple[int, int] = (160, 192)) -> np.ndarray:
    """A smooth random texture (H,W) float32 in [0, 255], with structure at several scales for the flow."""
    rng = np.random.default_rng(seed)
    img = sum(cv2.GaussianBlur(rng.random(size, dtype=np.float32), (0, 0), s) * s for s in (1.5, 4.0, 10.0))
    img = (img - img.min()) / (img.max() - img.min())
    return 255 * img


def _video(texture: np.ndarray, step: tuple[float, float]) -> list[np.ndarray]:
    """FRAMES crops (H,W) uint8 of the texture, moving by step (dx, dy) pixels per frame (sub-pixel)."""
    h, w = SIZE
    frames = []
    for t in range(FRAMES):
        shift = np.float32([[1, 0, -(10 + t * step[0])], [0, 1, -(10 + t * step[1])]])
        frames.append(np.rint(cv2.warpAffine(texture, shift, (w, h), flags=cv2.INTER_LINEAR)).astype(np.uint8))
    return frames


def _scene(step: tuple[float, float]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """An infrared and a visible video of one scene moving by step: two textures warped alike."""
    return _video(_texture(1), step), _video(_texture(2), step)


def _average(ir: list[np.ndarray], vis: list[np.ndarray]) -> list[np.ndarray]:
    return [((a.astype(np.float32) + b) / 2).astype(np.uint8) for a, b in zip(ir, vis, strict=True)]


def test_static_scene_has_no_warping_error() -> None:
    ir, vis = _scene((0.0, 0.0))
    result = flicker(_average(ir, vis), [ir, vis])
    assert result.fused == pytest.approx(0.0, abs=1e-6)
    assert result.sources == pytest.approx((0.0, 0.0), abs=1e-6)
    assert result.ratio == 1.0 and result.valid_fraction > 0.99


def test_translating_scene_fused_coherently_has_ratio_near_one() -> None:
    ir, vis = _scene((1.6, -0.7))
    motion = estimate_motion(vis)
    flow = np.median(np.stack(motion.backward), axis=(0, 1, 2))  # (2,) (x, y)
    assert flow == pytest.approx((1.6, -0.7), abs=0.1)  # the crop moves by step: p in frame t was p + step
    assert 0.9 < motion.valid_fraction < 1.0  # the strip entering the frame is masked out
    # Any rendering of the scene that moves with it, as the sources are rendered (sub-pixel shifts, uint8).
    result = flicker(_video(_texture(3), (1.6, -0.7)), [ir, vis], motion=motion)
    assert result.sources[1] < 2.0  # gray levels: the flow warps the visible video onto itself
    assert 0.9 < result.ratio < 1.1
    # Averaging two sources also averages their independent residuals (interpolation, rounding): about 1/√2.
    assert 0.6 < flicker(_average(ir, vis), [ir, vis], motion=motion).ratio < 0.8


def test_unwarped_comparison_would_be_far_larger() -> None:
    # The metric follows the motion: comparing the same frames without the flow gives a much larger error.
    ir, vis = _scene((1.6, -0.7))
    still = estimate_motion([vis[0]] * FRAMES)
    assert warping_error(vis, still) > 5 * warping_error(vis, estimate_motion(vis))


@pytest.mark.parametrize("kind", ["noise", "brightness"])
def test_per_frame_flicker_raises_the_ratio_above_one(kind: str) -> None:
    ir, vis = _scene((1.6, -0.7))
    rng = np.random.default_rng(0)
    fused = []
    for t, frame in enumerate(_average(ir, vis)):
        if kind == "noise":
            change = rng.normal(0, 4, frame.shape)  # fresh noise every frame
        else:
            change = np.full(frame.shape, 6.0 if t % 2 else -6.0)  # alternating global brightness
        fused.append(np.clip(frame + change, 0, 255).astype(np.uint8))
    motion = estimate_motion(vis)
    steady = flicker(_average(ir, vis), [ir, vis], motion=motion)
    flickering = flicker(fused, [ir, vis], motion=motion)
    assert flickering.ratio > 1.5 * steady.ratio and flickering.ratio > 1.5


def test_squared_form_and_colour_frames() -> None:
    ir, vis = _scene((1.0, 0.5))
    vis_bgr = [cv2.cvtColor(v, cv2.COLOR_GRAY2BGR) for v in vis]
    motion = estimate_motion(vis_bgr)
    assert warping_error(vis_bgr, motion) == pytest.approx(warping_error(vis, motion), rel=1e-4)
    assert warping_error(vis, motion, squared=True) >= warping_error(vis, motion) ** 2  # Jensen


def test_only_the_fused_video_changing_gives_infinite_ratio_and_bad_input_is_an_error() -> None:
    ir, vis = _scene((0.0, 0.0))
    noisy = [
        np.clip(v + np.random.default_rng(t).normal(0, 5, v.shape), 0, 255).astype(np.uint8) for t, v in enumerate(vis)
    ]
    assert math.isinf(flicker(noisy, [ir, vis]).ratio)
    with pytest.raises(ValueError, match="two frames"):
        estimate_motion(vis[:1])
    with pytest.raises(ValueError, match="frames for motion"):
        warping_error(vis[:3], estimate_motion(vis))
    with pytest.raises(ValueError, match="must all be"):
        warping_error([cv2.resize(v, (64, 48)) for v in vis], estimate_motion(vis))


def test_video_evaluation_script_writes_its_table(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util
    import sys

    script = Path(__file__).resolve().parents[1] / "scripts" / "make_video_evaluation.py"
    spec = importlib.util.spec_from_file_location("make_video_evaluation", script)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)  # dataclasses look their module up there
    spec.loader.exec_module(module)
    ir, vis = _scene((1.0, 0.5))
    seq = tmp_path / "sequences" / "synthetic"
    for sub, frames in (("ir", ir), ("vis", vis)):
        (seq / sub).mkdir(parents=True)
        for i, frame in enumerate(frames):
            cv2.imwrite(str(seq / sub / f"{i:03d}.png"), frame)
    out = tmp_path / "VIDEO.md"
    argv = ["--data", str(tmp_path), "--methods", "average,gff,dig-video", "--max-frames", "4", "--out", str(out)]
    assert module.main(argv + ["--prior", "wiener"]) == 0
    text = out.read_text()
    assert "### synthetic" in text and "| average | 4 | - |" in text and "| gff | 4 | - |" in text
    assert "| dig-video | 4 | 3/4 |" in text  # the first frame runs in full, the others warm-start
    assert module.main(["--data", str(tmp_path), "--methods", "nope", "--out", str(out)]) == 2
