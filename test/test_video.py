"""Video mode: warm starts from the previous frame, and the fallbacks to a full run."""

import cv2
import numpy as np
import pytest

from dig2dig_ros.core.config import FusionConfig, with_overrides
from dig2dig_ros.core.fusion import Fuser
from dig2dig_ros.core.priors.wiener import WienerPrior
from dig2dig_ros.core.video import VideoFuser


def _frames(n=4, shift=1, seed=0):
    """A slowly panning textured pair: n frames of (infrared, visible) uint8 (48,64)."""
    rng = np.random.default_rng(seed)

    def texture():
        return cv2.normalize(cv2.GaussianBlur(rng.random((48, 64 + n * shift)), (0, 0), 3), None, 0, 255,
                             cv2.NORM_MINMAX)

    ir_wide, vis_wide = texture(), texture()
    return [(ir_wide[:, i * shift : i * shift + 64].astype(np.uint8), vis_wide[:, i * shift : i * shift + 64]
             .astype(np.uint8)) for i in range(n)]


@pytest.fixture
def video() -> VideoFuser:
    config = with_overrides(FusionConfig(), {"method": "dig", "sampler.steps": 8, "video.start_step": 5,
                                            "video.enabled": True})
    return VideoFuser(Fuser(config, prior=WienerPrior(), device="cpu"))


def test_first_frame_runs_in_full_and_the_next_ones_warm_with_fewer_prior_calls(video):
    frames = _frames()
    first = video(list(frames[0]), stamp=0.0)
    assert video.last_reason == "first frame" and first.prior_calls == 8
    second = video(list(frames[1]), stamp=0.04)
    assert video.last_reason == "warm" and second.prior_calls == 3  # steps 5, 6, 7 of 8
    assert second.fused.shape == first.fused.shape
    assert second.weights is not None and np.allclose(second.weights.sum(0), 1, atol=1e-5)


def test_a_time_jump_back_or_a_long_gap_runs_in_full(video):
    frames = _frames()
    video(list(frames[0]), stamp=10.0)
    video(list(frames[1]), stamp=9.0)
    assert video.last_reason.startswith("time jumped back")
    video(list(frames[2]), stamp=19.0)
    assert video.last_reason.startswith("gap of")
    video(list(frames[3]), stamp=19.04)
    assert video.last_reason == "warm"


def test_a_scene_change_runs_in_full(video):
    frames = _frames()
    video(list(frames[0]), stamp=0.0)
    other = _frames(seed=9)[0]
    out = video(list(other), stamp=0.04)
    assert video.last_reason.startswith("scene changed") and out.prior_calls == 8


def test_warm_frames_are_close_to_full_runs_of_the_same_frame(video):
    frames = _frames()
    video(list(frames[0]), stamp=0.0)
    warm = video(list(frames[1]), stamp=0.04)
    full = video.fuser(list(frames[1]))
    assert np.abs(warm.luminance - full.luminance).mean() < 0.03  # the data step keeps the frame its own


def test_video_mode_off_fuses_every_frame_from_noise():
    config = with_overrides(FusionConfig(), {"method": "dig", "sampler.steps": 6, "video.enabled": False})
    video = VideoFuser(Fuser(config, prior=WienerPrior(), device="cpu"))
    for i, frame in enumerate(_frames(3)):
        assert video(list(frame), stamp=i * 0.04).prior_calls == 6
