"""Video mode: warm starts from the previous frame, and the fallbacks to a full run."""

import cv2
import numpy as np
import pytest
import torch

from dig2dig_ros.core.config import FusionConfig, with_overrides
from dig2dig_ros.core.diffusion.priors.wiener import WienerPrior
from dig2dig_ros.core.frame.fusion import Fuser, WarmStart
from dig2dig_ros.core.video import temporal
from dig2dig_ros.core.video.fuser import BackState, VideoFuser


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


def test_warm_frames_are_close_to_full_runs_of_the_same_frame():
    # two of 8 steps left and no temporal blend: what the warm start carries decides how close the frame gets
    config = with_overrides(FusionConfig(), {"method": "dig", "sampler.steps": 8, "video.start_step": 6,
                                            "video.enabled": True, "video.temporal_strength": 0.0})
    video = VideoFuser(Fuser(config, prior=WienerPrior(), device="cpu"))
    frames = _frames()
    first = video(list(frames[0]), stamp=0.0)
    warm = video(list(frames[1]), stamp=0.04)
    assert video.last_reason == "warm" and warm.prior_calls == 2
    full = video.fuser(list(frames[1]))

    def error(result) -> float:
        return float(np.abs(result.luminance - full.luminance).mean())

    unrelated = video.fuser(list(_frames(seed=9)[0])).sample
    for name, start in (("zeros", torch.zeros_like(first.sample)), ("an unrelated scene", unrelated)):
        broken = video.fuser(list(frames[1]), warm=WarmStart(sample=start, start=6))
        assert error(warm) < 0.6 * error(broken), name  # a warm start from the last frame beats a wrong one
    assert error(warm) < WARM_ERROR


WARM_ERROR = 0.01  # measured 0.0065; from zeros 0.0154, from an unrelated scene 0.0189 (2026-12-07)


def test_video_mode_off_fuses_every_frame_from_noise():
    config = with_overrides(FusionConfig(), {"method": "dig", "sampler.steps": 6, "video.enabled": False})
    video = VideoFuser(Fuser(config, prior=WienerPrior(), device="cpu"))
    for i, frame in enumerate(_frames(3)):
        assert video(list(frame), stamp=i * 0.04).prior_calls == 6


def _blend_video(extra: dict | None = None, **video_settings) -> VideoFuser:
    settings = {"method": "dig-blend", "video.enabled": True, **(extra or {}),
                **{f"video.{k}": v for k, v in video_settings.items()}}
    return VideoFuser(Fuser(with_overrides(FusionConfig(), settings), prior=WienerPrior(), device="cpu"))


def test_dig_blend_video_measures_dig_every_nth_frame_and_reuses_the_gain_between():
    video = _blend_video(dig_every=3)
    calls, reasons, weights = [], [], []
    for i, frame in enumerate(_frames(7)):
        out = video(list(frame), stamp=i * 0.04)
        calls.append(out.prior_calls)
        weights.append(out.weights)
        reasons.append(video.last_reason)
        assert np.allclose(out.weights.sum(0), 1, atol=1e-5)
    assert reasons == ["first frame"] + ["warm"] * 6
    assert calls == [1, 0, 0, 1, 0, 0, 1]
    # frame 5 reused frame 3's gain, carried along the motion: its weights are closer to a fresh measurement of
    # frame 5 than frame 3's own were (measured 0.0033 against 0.0085; without the warp 0.0074)
    fresh = video.fuser(list(_frames(7)[5])).weights
    assert np.abs(weights[5] - fresh).mean() < 0.6 * np.abs(weights[3] - fresh).mean()


def test_dig_blend_video_falls_back_to_a_measured_frame_on_a_scene_change():
    video = _blend_video(dig_every=100)
    frames = _frames()
    video(list(frames[0]), stamp=0.0)
    assert video(list(frames[1]), stamp=0.04).prior_calls == 0
    out = video(list(_frames(seed=9)[0]), stamp=0.08)
    assert video.last_reason.startswith("scene changed") and out.prior_calls == 1


def _noisy_static_scene(n=6, sigma=8.0, seed=0):
    """One scene, new sensor noise on every frame: anything that changes between frames is flicker."""
    rng = np.random.default_rng(seed)
    ir, vis = _frames(1, seed=seed)[0]
    return [tuple(np.clip(x + rng.normal(0, sigma, x.shape), 0, 255).astype(np.uint8) for x in (ir, vis))
            for _ in range(n)]


def test_temporal_stabilisation_reduces_frame_to_frame_change_and_off_changes_nothing():
    frames = _noisy_static_scene()
    change = {}
    for strength in (0.0, 0.6):
        video = _blend_video(dig_every=1, temporal_strength=strength, temporal_sigma=0.1)
        lum = [video(list(f), stamp=i * 0.04).luminance for i, f in enumerate(frames)]
        change[strength] = float(np.mean([np.abs(a - b).mean() for a, b in zip(lum[1:], lum[2:], strict=False)]))
        if strength == 0.0:
            per_frame = [video.fuser(list(f)).luminance for f in frames]
            assert all(np.array_equal(a, b) for a, b in zip(lum, per_frame, strict=True))
    assert change[0.6] < 0.7 * change[0.0]


def test_stabilise_follows_motion_and_lets_a_changed_region_through():
    rng = np.random.default_rng(1)
    scene = cv2.GaussianBlur(rng.random((64, 96)).astype(np.float32), (0, 0), 2)
    scene = cv2.normalize(scene, None, 0, 1, cv2.NORM_MINMAX)
    previous, current = scene[:, 4:68].copy(), scene[:, 0:64].copy()  # the camera panned 4 px left
    guide = [np.clip(x * 255, 0, 255).astype(np.uint8) for x in (current, previous)]
    map_x, map_y = temporal.MotionCompensator().coordinates(*guide)
    inner = (slice(8, -8), slice(12, -8))
    assert np.abs(map_x - np.arange(64)[None, :] + 4)[inner].mean() < 0.5  # where each pixel was: 4 px to the left
    out = temporal.stabilise(current, previous, map_x, map_y, strength=1.0, sigma=1.0)
    assert np.abs(out - current)[inner].mean() < 0.02  # warped along the motion: no ghost of the old position
    unwarped = temporal.stabilise(current, previous, *np.meshgrid(np.arange(64, dtype=np.float32),
                                                                  np.arange(64, dtype=np.float32)), 1.0, 1.0)
    assert np.abs(unwarped - current)[inner].mean() > 0.05  # what no motion compensation would do
    changed = np.ones_like(current)  # a frame that disagrees everywhere by far more than sigma
    out = temporal.stabilise(changed, 0.3 * previous, map_x, map_y, 1.0, 0.05)
    np.testing.assert_allclose(out, changed, atol=1e-3)


def test_warp_small_carries_working_size_maps_along_full_resolution_motion():
    maps = torch.zeros(2, 1, 40, 48)  # padded working size; the image is the top-left 32x48
    maps[0, 0, 10:20, 10:20] = 1.0
    full_x, full_y = np.meshgrid(np.arange(96, dtype=np.float32), np.arange(64, dtype=np.float32))
    moved = temporal.warp_small(maps, full_x - 8, full_y, (32, 48))  # the scene moved 8 px right at full size
    assert moved[0, 0, 10:20, 15:23].mean() > 0.95 and moved[0, 0, 10:20, 10:13].mean() < 0.05  # 4 px at half
    assert torch.equal(moved[..., 32:, :], maps[..., 32:, :])  # padding untouched


def _walking_target(n=5, step=4):
    """A hot square walking right in the infrared, a textured static visible: n frames (48,96) uint8."""
    rng = np.random.default_rng(3)
    vis = cv2.normalize(cv2.GaussianBlur(rng.random((48, 96)), (0, 0), 1.5), None, 40, 200, cv2.NORM_MINMAX)
    frames = []
    for i in range(n):
        ir = np.full((48, 96), 30.0)
        ir[16:32, 10 + i * step : 26 + i * step] = 230.0
        frames.append((ir.astype(np.uint8), vis.astype(np.uint8)))
    return frames


def test_a_reused_gain_follows_a_moving_hot_target():
    frames = _walking_target()
    # sharp weights, and not flattened as noisy: the visible's fine texture reads as σ 0.011 to the noise estimate
    video = _blend_video({"dig.temperature": 2.0, "fullres.noise_exponent": 0.0}, dig_every=100,
                         temporal_strength=0.0)
    for i, frame in enumerate(frames):
        out = video(list(frame), stamp=i * 0.04)
    assert out.prior_calls == 0  # frame 4 reused frame 0's gain
    fresh = video.fuser(list(frames[-1]))
    target = (slice(18, 30), slice(28, 40))  # where the square is now (x 26..42), away from where it started
    assert out.weights[0][target].mean() > 0.9 * fresh.weights[0][target].mean()
    assert fresh.weights[0][target].mean() > 0.55  # the target is the infrared's (without the warp: 0.37 here)


def test_a_cancelled_dig_blend_frame_raises_and_leaves_the_sequence_as_it_was():
    from dig2dig_ros.core.frame.fusion import FusionCancelled

    video = _blend_video(dig_every=1)
    frames = _frames(3)
    video(list(frames[0]), stamp=0.0)
    state = video.state
    with pytest.raises(FusionCancelled, match="before the DIG weights"):
        video(list(frames[1]), stamp=0.04, should_stop=lambda: True)  # the node is shutting down
    assert video.state is state  # the next frame still starts from frame 0
    video(list(frames[2]), stamp=0.08, should_stop=lambda: False)
    assert video.last_reason == "warm"


def test_the_source_bound_keeps_a_flickering_fusion_within_its_sources_change():
    # a still scene: the sources change only by their noise (σ 0.005), while the fusion's own choice flips a
    # textured patch by ±0.1 every frame (an edge taken from one source, then the other)
    rng = np.random.default_rng(4)
    scene = rng.random((2, 32, 48)).astype(np.float32) * 0.5 + 0.25
    still_x, still_y = np.meshgrid(np.arange(48, dtype=np.float32), np.arange(32, dtype=np.float32))
    pattern = np.sign(rng.normal(size=(32, 48))).astype(np.float32) * 0.1
    fused = {False: [], True: []}
    sources = [scene + rng.normal(0, 0.005, scene.shape).astype(np.float32) for _ in range(8)]
    for bound in (False, True):
        out = 0.5 * sources[0].sum(0)
        for t in range(1, 8):
            own = 0.5 * sources[t].sum(0) + (pattern if t % 2 else -pattern)  # (H,W) the frame's own fusion
            b = temporal.source_change(sources[t], sources[t - 1], still_x, still_y) if bound else None
            out = temporal.stabilise(own, out, still_x, still_y, 0.3, 0.03, b)
            fused[bound].append(out)
    change = {k: float(np.mean([np.abs(x - y).mean() for x, y in zip(v[1:], v[:-1], strict=True)]))
              for k, v in fused.items()}
    yardstick = float(np.mean([np.abs(x - y).mean() for x, y in zip(sources[2:], sources[1:-1], strict=True)]))
    assert change[False] > 10 * yardstick  # the blend alone passes most of the flip (σ 0.03 < 0.2) ...
    assert change[True] <= yardstick  # ... the bound holds the output to the sources' mean change


def test_the_source_bound_lets_a_target_moving_in_one_camera_through():
    frames = _walking_target(n=6)
    video = _blend_video(dig_every=1)
    for i, frame in enumerate(frames):
        out = video(list(frame), stamp=i * 0.04)
    fresh = video.fuser(list(frames[-1])).luminance
    now, before = (slice(18, 30), slice(32, 40)), (slice(18, 30), slice(10, 20))  # square at x 30..46 now
    contrast = fresh[now].mean() - fresh[before].mean()
    assert contrast > 0.3
    # measured 0.006 and 0.011 against a contrast of 0.5: no trail where the square has been
    assert np.abs(out.luminance - fresh)[now].mean() < 0.05 * contrast
    assert np.abs(out.luminance - fresh)[before].mean() < 0.05 * contrast


def test_source_change_is_the_mean_change_and_a_lone_mover_in_full():
    rng = np.random.default_rng(2)
    previous = rng.normal(0.5, 0.01, (2, 32, 32)).astype(np.float32)  # two sources with noise σ 0.01
    current = rng.normal(0.5, 0.01, (2, 32, 32)).astype(np.float32)
    current[0, 8:16, 8:16] = 0.9  # source 0 alone changed here, far beyond its noise
    still_x, still_y = np.meshgrid(np.arange(32, dtype=np.float32), np.arange(32, dtype=np.float32))
    bound = temporal.source_change(current, previous, still_x, still_y)
    own = np.abs(current - previous)  # no motion: D_k by hand
    np.testing.assert_allclose(bound[8:16, 8:16], own[0, 8:16, 8:16], rtol=1e-6)
    quiet = np.ones((32, 32), bool)
    quiet[8:16, 8:16] = False
    lone = (own > 3 * np.median(own.reshape(2, -1), axis=1)[:, None, None] / 0.6745).sum(0) == 1
    np.testing.assert_allclose(bound[quiet & ~lone], own.mean(0)[quiet & ~lone], rtol=1e-6)


def test_isolated_noise_spikes_in_one_source_are_not_taken_for_motion():
    """One camera's pixels beyond 3σ that do not form a patch are the noise's tail: they stay bounded by the mean
    change, so a noisy camera cannot pass its spikes through the stabilisation as 'motion'."""
    rng = np.random.default_rng(3)
    previous = rng.normal(0.5, 0.01, (2, 48, 48)).astype(np.float32)
    current = previous + rng.normal(0.0, 0.002, (2, 48, 48)).astype(np.float32)
    spikes = np.zeros((48, 48), bool)
    spikes[4::8, 4::8] = True  # isolated pixels, 8 apart
    current[0][spikes] += 0.3  # far beyond source 0's noise, one pixel each
    current[0, 13:19, 29:35] += 0.3  # and a real 6x6 mover in source 0 alone, between the spikes
    still_x, still_y = np.meshgrid(np.arange(48, dtype=np.float32), np.arange(48, dtype=np.float32))
    bound = temporal.source_change(current, previous, still_x, still_y)
    own = np.abs(current - previous)
    np.testing.assert_allclose(bound[spikes], own.mean(0)[spikes], rtol=1e-6)  # a spike: the mean change
    np.testing.assert_allclose(bound[13:19, 29:35], own[0, 13:19, 29:35], rtol=1e-6)  # the mover: in full


def _textured_pair(h=96, w=128, seed=3):
    """A smooth textured (infrared, visible) uint8 pair (h,w)."""
    rng = np.random.default_rng(seed)
    planes = [cv2.normalize(cv2.GaussianBlur(rng.random((h, w)), (0, 0), 4), None, 60, 190, cv2.NORM_MINMAX)
              for _ in range(2)]
    return [p.astype(np.uint8) for p in planes]


def _fine_band(y):
    """Mean |y − up(down(y))| of a luminance (H,W) over its centre patch: the detail a half-size solve misses."""
    h, w = y.shape
    base = cv2.resize(cv2.resize(y, (w // 2, h // 2), interpolation=cv2.INTER_AREA), (w, h),
                      interpolation=cv2.INTER_LINEAR)
    return float(np.abs(y - base)[h // 4: 3 * h // 4, w // 4: 3 * w // 4].mean())


def test_dig_blend_video_adds_the_detail_above_its_solve_size_from_this_frame():
    # The blend is stabilised at the size it was solved at (half the input here), then the detail is added from
    # this frame's sources: a fine checkerboard (5 grey levels, one pixel, gone at half size) that appears on a
    # still scene shows in full at once, as in per-frame fusion. Stabilising the finished frame would hold back
    # about a fifth of it (the blend with the previous output where the two agree).
    settings = {"method": "dig-blend", "max_side": 32, "fullres.solve_side": 64, "fullres.solve_noise": 0.0,
                "video.enabled": True, "video.temporal_strength": 0.3}
    config = with_overrides(FusionConfig(), settings)
    still = _textured_pair()
    checker = (np.indices(still[0].shape).sum(0) % 2 * 5).astype(np.uint8)  # (H,W) 0/5
    patch = np.zeros_like(checker)
    patch[24:72, 32:96] = 1
    moved = [(img + checker * patch).astype(np.uint8) for img in still]
    video = VideoFuser(Fuser(config, prior=WienerPrior(), device="cpu"))
    video(list(still), stamp=0.0)
    warm = video(list(moved), stamp=0.04)
    assert video.last_reason == "warm"
    own = Fuser(config, prior=WienerPrior(), device="cpu")(list(moved))
    assert _fine_band(own.luminance) > 0.006  # the checkerboard is there (2.5/255 from its mean, times 0.85)
    assert _fine_band(warm.luminance) == pytest.approx(_fine_band(own.luminance), rel=0.03)


def test_a_solve_size_that_changes_between_frames_is_stabilised_at_the_new_size():
    # dig-blend's solve size follows the sources' noise estimate, so it can change from one frame to the next:
    # the last frame's blend and sources are brought to the new size before they are carried along the motion.
    # On a still scene whose sources did not change, the output then stays the last output (here 0.01 brighter
    # than this frame's blend), at the new size, not a crop of it.
    config = with_overrides(FusionConfig(), {"method": "dig-blend", "max_side": 32, "video.enabled": True})
    video = VideoFuser(Fuser(config, prior=WienerPrior(), device="cpu"))
    sources_full = video.fuser.prepare(_textured_pair()).sources  # (2,96,128)

    def at(size, planes):
        return np.stack([cv2.resize(p, size, interpolation=cv2.INTER_AREA) for p in planes])

    last, now = at((80, 60), sources_full), at((64, 48), sources_full)  # the solve sizes of two frames
    video.back_state = BackState(0, last.mean(0) + 0.01, last)
    ys, xs = np.indices(now.shape[1:], dtype=np.float32)  # no motion
    out = video._stabilise(now.mean(0), now, (xs, ys))
    assert out.shape == (48, 64)
    assert np.abs(out - (now.mean(0) + 0.01)).mean() < 0.003  # the resizes move it a little
