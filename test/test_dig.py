"""DIG weights, guidance and the sampler: the properties ALGORITHM.md §4 holds the implementation to."""

import numpy as np
import pytest
import torch

from dig2dig_ros.core.config import DigConfig, FusionConfig, GuidanceConfig
from dig2dig_ros.core.diffusion.dig import box_mean, gaussian_blur, weights_from_gain
from dig2dig_ros.core.diffusion.guidance import (
    GRADIENTS,
    REFERENCE_SIDE,
    ProximalGuidance,
    gradient_symbols,
    gradient_target,
    guidance_target,
    mirror_extend,
)
from dig2dig_ros.core.diffusion.priors.wiener import WienerPrior
from dig2dig_ros.core.diffusion.sampler import SamplerError, sample_dig
from dig2dig_ros.core.diffusion.schedule import timesteps
from dig2dig_ros.core.frame.fusion import Fuser

TS = [int(t) for t in timesteps(6)]


def _textured(h=48, w=64, seed=0):
    rng = np.random.default_rng(seed)
    img = gaussian_blur(torch.from_numpy(rng.normal(0, 1, (1, 1, h, w))).float(), 1.0)
    return (img / img.abs().max()).clamp(-1, 1)  # (1,1,H,W)


SHARP = 2.0  # a softmax temperature at which the weights clearly depart from uniform (the default is softer)


def _run(sources, dig=None, dynamic=True, seed=0, prior=None):
    return sample_dig(prior or WienerPrior(), sources, TS, dig or DigConfig(interval=2, temperature=SHARP),
                      GuidanceConfig(),
                      dynamic_weights=dynamic, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("space,direction,distance", [("x0", "ahead", "l2"), ("x0", "behind", "l1"),
                                                      ("xt", "ahead", "l2"), ("x0", "ahead", "ssim")])
def test_weights_are_a_partition_of_unity(space, direction, distance):
    sources = torch.cat([_textured(seed=1), _textured(seed=2) * 0.3])
    out = _run(sources, DigConfig(interval=2, space=space, direction=direction, distance=distance,
                              temperature=SHARP))
    w = out.weights
    assert w.shape == sources.shape
    assert torch.all(w >= 0) and torch.all(w <= 1)
    assert torch.allclose(w.sum(0), torch.ones_like(w[0]), atol=1e-5)
    assert len(out.history) == 3  # steps 0, 2, 4 of 6
    assert out.prior_calls == len(TS)  # the DIG probes ride in the sample's own forward: one call per step
    assert (w - 0.5).abs().max() > 0.05  # two different sources do not get uniform weights


def test_swapping_sources_swaps_weights():
    a, b = _textured(seed=3), _textured(seed=4) * 0.5
    w_ab = _run(torch.cat([a, b])).weights
    w_ba = _run(torch.cat([b, a])).weights
    assert torch.allclose(w_ab, w_ba.flip(0), atol=1e-4)


def test_blanked_region_goes_to_the_other_source():
    a, b = _textured(seed=5), _textured(seed=6)
    a[..., :, :32] = a[..., :, :32].mean()  # source 0 carries nothing in the left half
    w = _run(torch.cat([a, b])).weights
    left, right = w[0, 0, :, 4:24].mean(), w[0, 0, :, 40:60].mean()
    assert left < 0.35, left  # source 1 dominates where source 0 is blank
    assert right > left + 0.2


def test_static_mode_is_exactly_uniform_and_skips_probes():
    sources = torch.cat([_textured(seed=1), _textured(seed=2), _textured(seed=3)])
    out = _run(sources, dynamic=False)
    assert torch.equal(out.weights, torch.full_like(sources, 1 / 3))
    assert out.history == []


def test_weights_from_equal_gains_are_uniform():
    gain = torch.ones(2, 1, 4, 4)
    assert torch.equal(weights_from_gain(gain, 1.0), torch.full_like(gain, 0.5))


def test_proximal_guidance_without_gradient_term_weighs_prior_and_data_by_noise_level():
    src = torch.cat([_textured(seed=1), _textured(seed=2)])
    w = torch.rand(2, 1, 48, 64)
    w = w / w.sum(0, keepdim=True)
    y0 = _textured(seed=9)
    cfg = GuidanceConfig(grad_weight=0.0, data_sigma=0.05, noise_scale=0.0)
    guide = ProximalGuidance(src, cfg)
    blend = (w * src).sum(0, keepdim=True)
    ab = 0.5  # σ_t² = (1 − ᾱ)/ᾱ = 1, ρ = σ_d² / σ_t² = 0.1²
    rho = (2 * 0.05) ** 2
    assert torch.allclose(guide(y0, w, ab), (rho * y0 + blend) / (rho + 1), atol=1e-5)
    assert torch.allclose(guide(y0, w, 1e-6), blend, atol=1e-4)  # pure noise: the data decide
    assert torch.allclose(guide(y0, w, 1 - 1e-7), y0, atol=1e-3)  # almost clean: the prior's estimate stands


def _mu(mu_on_grid: float, side: int) -> float:
    """The grad_weight setting that gives μ = mu_on_grid on a grid of this long side (it is stated at 640 px)."""
    return mu_on_grid * (REFERENCE_SIDE / side) ** 2


@pytest.mark.parametrize("target", ["maxabs", "weighted"])
@pytest.mark.parametrize("gradient", sorted(GRADIENTS))
def test_guidance_target_of_identical_sources_is_that_source(target, gradient):
    c = _textured(seed=7)
    w = torch.full((2, 1, 48, 64), 0.5)
    cfg = GuidanceConfig(grad_weight=_mu(2.0, 64), grad_target=target, grad_scale=1.0, gradient=gradient)
    y = guidance_target(torch.cat([c, c]), w, cfg)
    assert torch.allclose(y, c, atol=1e-4)


@pytest.mark.parametrize("gradient", sorted(GRADIENTS))
def test_gradient_symbols_are_the_operators_transfer_functions(gradient):
    x = mirror_extend(_textured(h=12, w=20, seed=3)).double()  # (1,1,24,40): the grid the solve works on
    sx, sy = gradient_symbols(12, 20, gradient, x)
    gx, gy = GRADIENTS[gradient](x)
    spectrum = torch.fft.rfft2(x)
    assert torch.allclose(torch.fft.rfft2(gx), sx * spectrum, atol=1e-9)
    assert torch.allclose(torch.fft.rfft2(gy), sy * spectrum, atol=1e-9)


def test_sobel_gradient_of_a_unit_ramp_is_one():
    ramp = torch.arange(16.0).repeat(8, 1)[None, None]  # (1,1,8,16), slope 1 along x
    gx, gy = GRADIENTS["sobel"](ramp)
    assert torch.allclose(gx[..., 1:-1], torch.ones(1, 1, 8, 14)) and torch.allclose(gy, torch.zeros_like(gy))


def _step_across_edge(config: GuidanceConfig) -> float:
    """The blend's step across an edge (32×32) that only source 0 has, under equal weights."""
    edge = torch.zeros(1, 1, 32, 32)
    edge[..., 16:] = 1.0
    y = guidance_target(torch.cat([edge, torch.zeros_like(edge)]), torch.full((2, 1, 32, 32), 0.5), config)
    return float((y[..., 16] - y[..., 15]).mean())


def test_grad_scale_draws_the_chosen_edges_at_that_share_of_their_contrast():
    steps = {scale: _step_across_edge(GuidanceConfig(grad_weight=_mu(1e4, 32), grad_scale=scale, select_sigma=0.0))
             for scale in (1.0, 0.85)}
    assert steps[1.0] == pytest.approx(1.0, abs=0.02)  # a strong gradient term: the infrared's full step ...
    assert steps[0.85] == pytest.approx(0.85, abs=0.02)  # ... or 0.85 of it


def test_maxabs_keeps_an_edge_present_in_one_source_only():
    contrast = {target: _step_across_edge(GuidanceConfig(grad_weight=_mu(4.0, 32), grad_target=target))
                for target in ("maxabs", "weighted")}
    assert contrast["maxabs"] > contrast["weighted"] + 0.1


def test_the_gradient_term_reaches_the_same_share_of_the_image_at_any_size():
    profiles = []
    for side in (64, 128):
        ramp = torch.zeros(1, 1, side // 2, side)
        ramp[..., side // 2:] = 1.0
        flat = torch.zeros_like(ramp)
        w = torch.full((2, 1, side // 2, side), 0.5)
        y = guidance_target(torch.cat([ramp, flat]), w, GuidanceConfig(grad_weight=1600.0, select_sigma=0.0))
        profiles.append(y[0, 0].mean(0))  # (side,) the profile across the edge
    coarse, fine = profiles
    fine_on_coarse = fine.view(-1, 2).mean(1)  # the fine grid's profile at the coarse grid's pixels
    assert torch.allclose(fine_on_coarse, coarse, atol=0.03)


def test_edge_choice_is_smoothed_so_isolated_pixels_do_not_switch_source():
    line = torch.zeros(1, 1, 24, 24)
    line[..., 12:] = 1.0  # a long edge in source 0
    spikes = torch.zeros(1, 1, 24, 24)
    spikes[0, 0, 10, 11] = 0.75  # one pixel of source 1 whose gradient (|(−0.75, −0.75)|) beats the edge there
    w = torch.full((2, 1, 24, 24), 0.5)
    chosen = {}
    for sigma in (0.0, 2.0 * REFERENCE_SIDE / 24):  # σ of 2 pixels on this grid
        tx, _ = gradient_target(torch.cat([line, spikes]), w, GuidanceConfig(select_sigma=sigma, grad_scale=1.0))
        chosen[sigma] = float(tx[0, 0, 10, 11])  # ∂x at the spike, just left of the edge
    assert chosen[0.0] == pytest.approx(-0.75)  # hard per-pixel choice: the spike's gradient
    assert chosen[max(chosen)] == pytest.approx(1.0)  # smoothed choice: the edge's


class _NaNPrior(WienerPrior):
    def forward(self, x_t, t):
        out = super().forward(x_t, t)
        return out * float("nan") if int(t[0]) < 500 else out


def test_non_finite_values_stop_with_the_step_named():
    with pytest.raises(SamplerError, match=r"sampler step \d+ \(t=\d+\)"):
        _run(torch.cat([_textured(seed=1), _textured(seed=2)]), prior=_NaNPrior())


def test_fuser_is_seeded_and_handles_k3_colour_and_odd_sizes():
    rng = np.random.default_rng(0)
    ir = (rng.random((37, 53)) * 255).astype(np.uint8)
    vis = (rng.random((37, 53, 3)) * 255).astype(np.uint8)
    third = (rng.random((37, 53)) * 65535).astype(np.uint16)
    fuser = Fuser(FusionConfig(), prior=WienerPrior(), device="cpu")
    first, second = fuser([ir, vis, third]), fuser([ir, vis, third])
    assert first.fused.shape == (37, 53, 3) and first.fused.dtype == np.uint8
    assert np.array_equal(first.fused, second.fused)  # seeded per frame
    assert first.weights.shape == (3, 37, 53)
    assert np.allclose(first.weights.sum(0), 1, atol=1e-5)


def test_box_mean_on_the_cpu_matches_the_running_sum_path():
    x = torch.rand(2, 1, 37, 53)
    fast = box_mean(x, 5)  # OpenCV on the CPU
    slow = box_mean(x.double(), 5).float()  # the torch running sums (any device, any dtype)
    torch.testing.assert_close(fast, slow, atol=1e-5, rtol=0)


def test_gaussian_blur_on_the_cpu_matches_the_conv_path():
    x = torch.rand(3, 1, 41, 29)
    torch.testing.assert_close(gaussian_blur(x, 2.5), gaussian_blur(x.double(), 2.5).float(), atol=1e-5, rtol=0)


def test_a_refit_keeps_more_edges_where_the_chosen_edge_field_cannot_be_integrated():
    from dig2dig_ros.core.metrics import qabf

    g = torch.Generator().manual_seed(0)
    textures = [gaussian_blur(torch.randn(1, 1, 96, 128, generator=g), s) for s in (1.0, 2.0)]
    sources = torch.cat([t / t.abs().max() for t in textures])  # (2,1,96,128): edges everywhere, in both
    a, b = ((sources[:, 0].numpy() + 1) * 127.5).astype(np.float64)
    cfg = GuidanceConfig(grad_weight=_mu(128.0, 128), gradient="sobel")
    scores = {}
    for refits in (0, 1):
        y = guidance_target(sources, torch.full_like(sources, 0.5), cfg, refits)[0, 0].clamp(-1, 1)
        scores[refits] = qabf((y.numpy() + 1) * 127.5, a, b)
    assert scores[1] > scores[0] + 0.01  # measured 0.626 against 0.602
