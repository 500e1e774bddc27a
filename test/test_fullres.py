"""The full-resolution step: weights along the sources' edges, detail from the sources, noise shrinkage."""

import math
import threading

import cv2
import numpy as np
import pytest

from dig2dig_ros.core.config import FullResConfig, FusionConfig, with_overrides
from dig2dig_ros.core.diffusion.priors.wiener import WienerPrior
from dig2dig_ros.core.frame.classical import guided_coefficients
from dig2dig_ros.core.frame.fullres import mask_weights, reconstruct, shrink, upsample_weights
from dig2dig_ros.core.frame.fusion import Fuser
from dig2dig_ros.core.frame.imaging import noise_sigma, scratch


def _scene(h=128, w=160, seed=0):
    """A hot square in a dark infrared frame and a textured visible frame, (2,H,W) float32 in [0,1]."""
    rng = np.random.default_rng(seed)
    ir = np.full((h, w), 0.1, np.float32)
    ir[40:88, 60:100] = 0.9
    vis = cv2.GaussianBlur(rng.random((h, w)).astype(np.float32), (0, 0), 1.5) * 0.6 + 0.2
    return np.stack([ir, vis])


def test_upsampled_weights_stay_a_partition_of_unity_where_cubic_resizing_overshoots():
    sources = _scene()
    small = np.stack([cv2.resize(c, (40, 32), interpolation=cv2.INTER_AREA) for c in sources])
    w0 = (small[0] > 0.5).astype(np.float32) * 0.9 + 0.05  # a sharp weight map at the working size
    weights = np.stack([w0, 1 - w0])
    cubic = cv2.resize(w0, (160, 128), interpolation=cv2.INTER_CUBIC)
    assert cubic.min() < 0 or cubic.max() > 1  # what the old resize did
    up = upsample_weights(weights, small, sources, FullResConfig())
    assert up.shape == (2, 128, 160)
    assert up.min() >= 0 and up.max() <= 1
    np.testing.assert_allclose(up.sum(0), 1, atol=1e-5)


def test_weights_follow_the_sources_edges_so_a_hot_target_has_no_halo():
    sources = (_scene() * 255).astype(np.uint8)
    ring = np.zeros((128, 160), bool)
    ring[34:94, 54:106] = True
    ring[40:88, 60:100] = False  # a 6-pixel ring just outside the hot square
    inside = {}
    for radius in (0, 8):  # without and with the guided refinement of the DIG weights at the working size
        settings = {"method": "dig", "max_side": 80, "sampler.steps": 4, "dig.interval": 2, "dig.refine_radius": radius,
                    "dig.temperature": 2.0}  # sharp weights: the halo is what refinement must remove
        fuser = Fuser(with_overrides(FusionConfig(), settings), prior=WienerPrior(), device="cpu")
        out = fuser(list(sources))
        inside[radius] = (out.weights[0][ring].mean(), out.weights[0][44:84, 64:96].mean())
    assert inside[8][0] < 0.75 * inside[0][0]  # less infrared weight around the target ...
    assert inside[8][1] > inside[8][0] + 0.1  # ... while the target itself keeps it


def test_reconstruction_carries_the_input_resolution_detail():
    sources = _scene()
    small = np.stack([cv2.resize(c, (40, 32), interpolation=cv2.INTER_AREA) for c in sources])
    weights = np.full((2, 32, 40), 0.5, np.float32)
    fused_small = small.mean(0)
    fused, up = reconstruct(fused_small, weights, sources, FullResConfig())
    naive = cv2.resize(fused_small, (160, 128), interpolation=cv2.INTER_LINEAR)

    def edge_energy(x):
        return float(np.abs(cv2.Laplacian(x, cv2.CV_32F)).mean())

    assert fused.shape == (128, 160) and up.shape == (2, 128, 160)
    assert edge_energy(fused) > 2 * edge_energy(naive)
    assert edge_energy(fused) > 0.7 * max(edge_energy(s) for s in sources)


def test_noise_shrinkage_removes_noise_and_leaves_clean_detail_alone():
    sources = _scene()
    assert noise_sigma(sources[1]) < 0.01
    rng = np.random.default_rng(1)
    noisy = sources[1] + rng.normal(0, 5 / 255, sources[1].shape).astype(np.float32)
    assert abs(noise_sigma(noisy) - 5 / 255) < 0.006  # Donoho's estimate finds the added noise
    detail = noisy - cv2.GaussianBlur(noisy, (0, 0), 2.0)
    clean_detail = sources[1] - cv2.GaussianBlur(sources[1], (0, 0), 2.0)
    shrunk = shrink(detail, 2 * noise_sigma(noisy))
    assert np.abs(shrunk - clean_detail).mean() < np.abs(detail - clean_detail).mean()
    big = np.array([1.0, -1.0], np.float32)
    np.testing.assert_allclose(shrink(big, 0.01), big, rtol=1e-3)  # strong edges keep their size


def test_fuser_output_has_the_input_size_at_any_working_size():
    rng = np.random.default_rng(3)
    ir = (rng.random((100, 150)) * 255).astype(np.uint8)
    vis = (rng.random((100, 150, 3)) * 255).astype(np.uint8)
    config = with_overrides(FusionConfig(), {"method": "dig", "max_side": 48, "sampler.steps": 4})
    fuser = Fuser(config, prior=WienerPrior(), device="cpu")
    out = fuser([ir, vis])
    assert out.fused.shape == (100, 150, 3) and out.weights.shape == (2, 100, 150)
    assert out.weights.min() >= 0 and out.weights.max() <= 1
    np.testing.assert_allclose(out.weights.sum(0), 1, atol=1e-5)
    assert out.cumulative_dig.shape[-1] == 48  # DIG itself ran at the working size


def test_vif_colour_comes_from_the_visible_even_when_the_thermal_frame_is_a_false_colour_palette():
    rng = np.random.default_rng(4)
    ir = cv2.applyColorMap((rng.random((40, 48)) * 255).astype(np.uint8), cv2.COLORMAP_JET)  # bgr8 palette
    vis = np.dstack([np.full((40, 48), v, np.uint8) for v in (200, 100, 50)])  # one flat colour
    out = Fuser(with_overrides(FusionConfig(), {"method": "average"}), device="cpu")([ir, vis])
    hue = cv2.cvtColor(out.fused, cv2.COLOR_BGR2HSV)[..., 0]
    assert np.ptp(hue[hue > 0]) <= 2  # the palette's rainbow does not leak into the fused colour


def test_invalid_pixels_of_a_source_get_weight_zero():
    sources = (_scene() * 255).astype(np.uint8)
    valid = np.ones((128, 160), np.uint8)
    valid[:, :50] = 0  # the infrared camera does not see the left part
    config = with_overrides(FusionConfig(), {"method": "dig", "max_side": 64, "sampler.steps": 4})
    fuser = Fuser(config, prior=WienerPrior(), device="cpu")
    out = fuser([sources[0], sources[1]], valid=[valid, None])
    assert out.weights[0][:, :50].max() == 0
    np.testing.assert_allclose(out.weights.sum(0), 1, atol=1e-5)
    left = out.luminance[:, :40] * 255
    assert np.abs(left - sources[1][:, :40]).mean() < 6  # the visible fills in, no black infrared fused in


def test_detail_gain_scales_the_added_detail():
    sources = _scene()
    small = np.stack([cv2.resize(c, (40, 32), interpolation=cv2.INTER_AREA) for c in sources])
    weights = np.full((2, 32, 40), 0.5, np.float32)
    base = cv2.resize(small.mean(0), (160, 128), interpolation=cv2.INTER_LINEAR)
    added = {g: reconstruct(small.mean(0), weights, sources, FullResConfig(detail_gain=g, shrink=0))[0] - base
             for g in (1.0, 0.5)}
    inside = (slice(8, -8), slice(8, -8))  # away from the [0,1] clip at the borders
    np.testing.assert_allclose(added[0.5][inside], 0.5 * added[1.0][inside], atol=1e-5)


def test_dig_blend_solved_above_the_working_size_keeps_more_of_the_sources_edges():
    from dig2dig_ros.core.metrics import qabf, ssim

    sources = (_scene() * 255).astype(np.uint8)
    a, b = sources[0].astype(np.float64), sources[1].astype(np.float64)
    scores = {}
    for solve_side in (40, 0):  # at the working size, or at the input size
        settings = {"method": "dig-blend", "max_side": 40, "fullres.solve_side": solve_side}
        fuser = Fuser(with_overrides(FusionConfig(), settings), prior=WienerPrior(), device="cpu")
        fused = fuser(list(sources)).luminance * 255  # (128,160)
        scores[solve_side] = (qabf(fused, a, b), ssim(fused, a, b))
    assert scores[0][0] > scores[40][0] + 0.008  # more edges carried over (0.754 against 0.726 at the defaults) ...
    assert scores[0][1] > scores[40][1] - 0.005  # ... at no cost in structure (SSIM 1.319 / 1.310)


def test_the_solve_size_backs_off_where_the_sources_are_noisy():
    from dig2dig_ros.core.frame.fullres import solve_size

    size, work = (1024, 1280), (256, 320)
    assert solve_size(size, work, 640, 0.0, 0.008) == (512, 640)  # clean: the configured size
    assert solve_size(size, work, 0, 0.0, 0.008) == size  # 0: the input size
    assert solve_size(size, work, 640, 0.02, 0.008) == (410, 512)  # σ 0.02 averaged over 2.5 pixels is 0.008
    assert solve_size(size, work, 640, 0.05, 0.008) == work  # never below the working size
    assert solve_size(size, work, 640, 0.05, 0.0) == (512, 640)  # limit off
    assert solve_size((240, 320), work, 640, 0.0, 0.008) == work  # input no larger than the working size


def test_fuser_solves_noisy_sources_at_a_smaller_size():
    sources = _scene(h=256, w=320)
    noisy = np.clip(sources + np.random.default_rng(0).normal(0, 0.02, sources.shape), 0, 1).astype(np.float32)
    fuser = Fuser(with_overrides(FusionConfig(), {"method": "dig-blend", "max_side": 64, "fullres.solve_side": 0}),
                  prior=WienerPrior(), device="cpu")
    assert fuser.prepare(list(sources)).solve.shape == (2, 256, 320)  # clean: at the input size
    small = fuser.prepare(list(noisy)).solve.shape
    assert 64 < max(small) < 320  # σ 0.02: averaged down to 0.008 over 2.5 pixels


def test_the_noise_factor_is_one_on_clean_sources_and_grows_with_the_noise_above_the_limit():
    from dig2dig_ros.core.frame.fullres import noise_factor

    assert noise_factor(None, 0.008, 3.0) == 1.0  # no estimate (input at the working size)
    assert noise_factor([0.002, 0.006], 0.008, 3.0) == 1.0  # below the limit
    assert noise_factor([0.002, 0.016], 0.008, 3.0) == 8.0  # the noisier source decides: 2³
    assert noise_factor([0.016], 0.008, 0.0) == 1.0  # exponent 0: off
    assert noise_factor([0.016], 0.0, 3.0) == 1.0  # limit 0: off


def test_flattened_weights_are_the_softmax_at_a_higher_temperature_and_keep_masked_zeros():
    import torch

    from dig2dig_ros.core.diffusion.dig import weights_from_gain
    from dig2dig_ros.core.frame.fullres import flatten_weights

    gain = torch.from_numpy(np.random.default_rng(1).normal(0, 1, (2, 1, 16, 20)).astype(np.float32))
    w8 = weights_from_gain(gain, 8.0)[:, 0].numpy()  # (2,16,20)
    w32 = weights_from_gain(gain, 32.0)[:, 0].numpy()
    np.testing.assert_allclose(flatten_weights(w8, 4.0), w32, atol=1e-5)
    assert np.abs(w32 - 0.5).max() < np.abs(w8 - 0.5).max()  # flatter
    assert flatten_weights(w8, 1.0) is w8
    masked = np.stack([np.zeros((4, 4), np.float32), np.ones((4, 4), np.float32)])
    np.testing.assert_array_equal(flatten_weights(masked, 4.0), masked)


def test_dig_blend_flattens_its_weights_on_noisy_sources_only():
    sources = _scene(h=256, w=320)
    noisy = np.clip(sources + np.random.default_rng(0).normal(0, 0.02, sources.shape), 0, 1).astype(np.float32)
    out = {}
    for exponent in (0.0, 3.0):
        settings = {"method": "dig-blend", "max_side": 64, "dig.temperature": 2.0, "fullres.noise_exponent": exponent}
        fuser = Fuser(with_overrides(FusionConfig(), settings), prior=WienerPrior(), device="cpu")
        out[exponent] = {name: fuser(list(s)) for name, s in (("clean", sources), ("noisy", noisy))}
    clean0, clean3 = out[0.0]["clean"], out[3.0]["clean"]
    np.testing.assert_array_equal(clean0.fused, clean3.fused)  # σ below fullres.solve_noise: nothing changes
    spread = {e: float(np.abs(out[e]["noisy"].weights[0] - 0.5).mean()) for e in out}
    assert spread[3.0] < 0.5 * spread[0.0]  # σ 0.02 against the limit 0.008: a factor 15.6 on the temperature
    diff = np.abs(out[3.0]["noisy"].fused.astype(float) - out[0.0]["noisy"].fused.astype(float)).mean()
    assert diff > 0.5  # ... and the fused frame changes with them (grey levels)


@pytest.mark.parametrize("max_side", [160, 320, 0])  # the working size: the input's, above it, 0 (the input's)
def test_dig_blend_flattens_its_weights_on_noisy_sources_no_larger_than_the_working_size(max_side):
    sources = _scene()  # (2,128,160): no larger than the working size, so the blend is solved at the input size
    noisy = np.clip(sources + np.random.default_rng(0).normal(0, 0.02, sources.shape), 0, 1).astype(np.float32)
    out = {}
    for exponent in (0.0, 3.0):
        settings = {"method": "dig-blend", "max_side": max_side, "dig.temperature": 2.0,
                    "fullres.noise_exponent": exponent}
        fuser = Fuser(with_overrides(FusionConfig(), settings), prior=WienerPrior(), device="cpu")
        out[exponent] = {name: fuser(list(s)) for name, s in (("clean", sources), ("noisy", noisy))}
    for field in ("fused", "weights"):  # clean (σ 0.003, below fullres.solve_noise 0.008): nothing changes
        np.testing.assert_array_equal(getattr(out[0.0]["clean"], field), getattr(out[3.0]["clean"], field))
    factor = (max(noise_sigma(c) for c in noisy) / 0.008) ** 3  # σ 0.020: a factor 16 on the DIG temperature
    sharp = out[0.0]["noisy"].weights ** (1 / factor)  # the softmax at that temperature, from the unflattened
    np.testing.assert_allclose(out[3.0]["noisy"].weights, sharp / sharp.sum(0), atol=1e-5)
    spread = {e: float(np.abs(out[e]["noisy"].weights[0] - 0.5).mean()) for e in out}
    assert spread[3.0] < 0.2 * spread[0.0]
    np.testing.assert_allclose(out[3.0]["noisy"].luminance, fuser.blend(noisy, out[3.0]["noisy"].weights), atol=1e-5)


def test_the_fusers_full_resolution_step_is_the_one_these_tests_run():
    sources = _scene()
    fuser = Fuser(with_overrides(FusionConfig(), {"method": "dig", "max_side": 40, "sampler.steps": 4}),
                  prior=WienerPrior(), device="cpu")
    prep = fuser.prepare(list(sources))
    small = fuser.fuse_luminance(prep.small)
    fused, weights = reconstruct(small.luminance, small.weights, prep.sources, FullResConfig(), prep.small, prep.noise)
    out = fuser.fuse_input_size(prep)  # the sampler's stage, then the detail
    np.testing.assert_array_equal(out.luminance, fused)  # FullResConfig's defaults are the shipped step's
    np.testing.assert_array_equal(out.weights, weights)


def test_dig_blend_weights_at_the_input_size_are_the_working_size_fit_applied_there():
    # dig-blend brings its DIG weights up once: the guided fit at the working size (each source's weight to that
    # source) is applied to the solve-size sources for the blend, and to the input-size sources for the detail,
    # not fitted a second time at the solve size. Reference: He's coefficients (classical.guided_coefficients),
    # brought up bilinearly and applied to the input-size sources by hand.
    sources = _scene()
    config = with_overrides(FusionConfig(), {"method": "dig-blend", "max_side": 40, "fullres.solve_side": 80,
                                            "fullres.solve_noise": 0.0})
    fuser = Fuser(config, prior=WienerPrior(), device="cpu")
    prep = fuser.prepare(list(sources))
    assert prep.small.shape[1:] == (32, 40) and prep.solve.shape[1:] == (64, 80)  # working < solve < input
    out = fuser(list(sources))
    dig = out.weight_history[-1][2]  # (K,32,40) the DIG weights at the working size
    params = FullResConfig()
    expected = np.empty(prep.sources.shape, np.float64)
    for k in range(2):
        a, b = guided_coefficients(prep.small[k], dig[k], params.radius, params.eps)  # float64
        up = [cv2.resize(x.astype(np.float32), (160, 128), interpolation=cv2.INTER_LINEAR) for x in (a, b)]
        expected[k] = np.clip(up[0] * prep.sources[k] + up[1], 0, 1)
    expected /= expected.sum(0)
    np.testing.assert_allclose(out.weights, expected, atol=2e-5)


def test_the_noise_estimate_of_8_bit_frames_follows_the_noise_between_the_8_bit_steps():
    rng = np.random.default_rng(0)
    base = cv2.GaussianBlur(rng.random((256, 320)).astype(np.float32), (0, 0), 8) * 0.5 + 0.25
    estimates = []
    for grey in (2.0, 2.25, 2.5, 2.75, 3.0):
        frame = np.clip(np.round((base + rng.normal(0, grey / 255, base.shape)) * 255), 0, 255).astype(np.uint8)
        estimates.append(noise_sigma(frame.astype(np.float32) / 255) * 255)
        assert abs(estimates[-1] - grey) < 0.15  # a plain median reads 2.22 at 2.0 to 2.5 and 2.97 at 2.75 to 3.0
    assert np.all(np.diff(estimates) > 0)  # ... and never moves in between


def test_the_8_bit_noise_estimate_is_finite_when_the_median_falls_between_two_steps():
    # A 2x4 8-bit frame whose two diagonal Haar coefficients are 2 and 3 steps (of 1/510): the median is 2.5 steps,
    # which no coefficient equals. Donoho's estimate is then 2.5/510/0.6745 less the rounding's share.
    x = np.zeros((2, 4), np.float32)
    x[1, 1], x[1, 3] = 2 / 255, 3 / 255  # |a - b - c + d| / 2 = 1 and 1.5 grey levels = 2 and 3 steps of 1/510
    expected = math.sqrt((2.5 / 510 / 0.6745) ** 2 - 1 / 12 / 255**2)
    assert math.isfinite(noise_sigma(x)) and abs(noise_sigma(x) - expected) < 1e-6


@pytest.mark.parametrize("detail", ["maxabs", "dig"])
def test_reconstruction_leaves_its_inputs_alone_and_its_weights_a_partition_of_unity(detail):
    sources = _scene()
    small = np.stack([cv2.resize(c, (40, 32), interpolation=cv2.INTER_AREA) for c in sources])
    w0 = (small[0] > 0.5).astype(np.float32) * 0.8 + 0.1
    weights = np.stack([w0, 1 - w0])
    kept = [a.copy() for a in (sources, small, weights)]
    fused, up = reconstruct(small.mean(0), weights, sources, FullResConfig(detail=detail), small, [0.01, 0.02])
    for a, b in zip((sources, small, weights), kept, strict=True):
        np.testing.assert_array_equal(a, b)  # the in-place arithmetic works on its own arrays only
    np.testing.assert_allclose(up.sum(0), 1, atol=1e-5)
    assert up.dtype == np.float32 and fused.shape == (128, 160)


def test_weights_all_clipped_to_zero_fall_back_to_equal_shares():
    sources = _scene()
    small = np.stack([cv2.resize(c, (40, 32), interpolation=cv2.INTER_AREA) for c in sources])
    up = upsample_weights(np.full((2, 32, 40), -1.0, np.float32), small, sources, FullResConfig())
    np.testing.assert_array_equal(up, 0.5)


@pytest.mark.parametrize("shape,radius,eps", [((48, 64), 2, 1e-3), ((7, 5), 1, 1e-2), ((33, 40), 4, 1e-4)])
def test_guided_coefficients_in_scratch_buffers_are_the_fresh_float32_ones_bit_for_bit(shape, radius, eps):
    rng = np.random.default_rng(5)
    guide, src = rng.random(shape).astype(np.float32), rng.random(shape).astype(np.float32)
    expected = guided_coefficients(guide, src, radius, eps, np.float32)
    for _ in range(2):  # the scratch buffers are reused from one call to the next
        got = guided_coefficients(guide, src, radius, eps, np.float32, scratch)
        for a, b in zip(got, expected, strict=True):
            np.testing.assert_array_equal(a, b)


def test_scratch_arrays_are_kept_per_name_shape_and_thread():
    first = scratch("test.scratch", (4, 5))
    assert scratch("test.scratch", (4, 5)) is first and first.dtype == np.float32
    assert scratch("test.scratch", (5, 4)) is not first and scratch("test.other", (4, 5)) is not first
    assert scratch("test.scratch", (4, 5), np.uint8).dtype == np.uint8
    elsewhere = []
    thread = threading.Thread(target=lambda: elsewhere.append(scratch("test.scratch", (4, 5))))
    thread.start()
    thread.join()
    assert elsewhere[0] is not first  # the pipeline's two threads never share one


def test_reconstruction_is_the_same_twice_with_its_scratch_reused():
    sources = _scene()
    small = np.stack([cv2.resize(c, (40, 32), interpolation=cv2.INTER_AREA) for c in sources])
    w0 = (small[0] > 0.5).astype(np.float32) * 0.8 + 0.1
    weights = np.stack([w0, 1 - w0])
    first = reconstruct(small.mean(0), weights, sources, FullResConfig(), small, [0.0, 0.02])
    kept = [first[0].copy(), first[1].copy()]
    second = reconstruct(small.mean(0) * 0.5, weights[::-1].copy(), sources, FullResConfig(), small, [0.0, 0.02])
    assert not np.shares_memory(first[0], second[0]) and not np.shares_memory(first[1], second[1])
    np.testing.assert_array_equal(first[0], kept[0])  # a returned frame is never a scratch array
    np.testing.assert_array_equal(first[1], kept[1])


@pytest.mark.parametrize("k", [2, 3])
def test_full_size_mask_weights_equal_the_torch_version_bit_for_bit(k):
    import torch

    from dig2dig_ros.core.diffusion.dig import mask_weights as torch_mask_weights

    rng = np.random.default_rng(k)
    shape = (k, 37, 53)
    weights = rng.random(shape).astype(np.float32)
    weights /= weights.sum(0, keepdims=True)
    valid = (rng.random(shape) > 0.3).astype(np.float32)
    valid[:, :3, :4] = 0  # no source valid: the weights stay
    weights[:, 5, :] = 0  # every valid weight 0: equal shares of the valid sources
    weights[0, 7, 7] = np.nan
    expected = torch_mask_weights(torch.from_numpy(weights[:, None]), torch.from_numpy(valid[:, None])).numpy()[:, 0]
    got = mask_weights(weights.copy(), valid)
    np.testing.assert_array_equal(got, expected)  # NaN where the torch version has NaN
