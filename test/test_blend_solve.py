"""dig-blend's closed-form blend solved with cosine transforms on the image's own grid (guidance.py).

The cosine solve must give the minimiser the FFT solve on the mirror-extended grid gives: checked against a
dense least-squares solve built here from the Sobel stencil (an independent construction), against the FFT
path on random and real inputs, and for which path guidance_target takes on which tensors.
"""

from dataclasses import replace

import numpy as np
import pytest
import torch

from dig2dig_ros.core.config import GuidanceConfig
from dig2dig_ros.core.diffusion.dig import gaussian_blur
from dig2dig_ros.core.diffusion.guidance import (
    REFERENCE_SIDE,
    _mirrored_blur,
    cosine_applies,
    cosine_guidance_target,
    fft_guidance_target,
    grad_weight,
    gradient_target,
    guidance_target,
    mirror_extend,
    neumann_gradient_target,
)
from dig2dig_ros.core.frame import imaging

BLEND = replace(GuidanceConfig(), grad_weight=GuidanceConfig().blend_grad_weight,
                gradient=GuidanceConfig().blend_gradient)  # the energy dig-blend solves (stages.blend_target)


def _inputs(h: int, w: int, k: int = 2, seed: int = 0, dtype=torch.float64):
    """Smooth random sources (K,1,H,W) in [−1,1] and weights (K,1,H,W) summing to 1."""
    g = torch.Generator().manual_seed(seed)
    sources = gaussian_blur(torch.rand(k, 1, h, w, generator=g, dtype=torch.float64) * 2 - 1, 0.8)
    weights = torch.rand(k, 1, h, w, generator=g, dtype=torch.float64) + 0.1
    return sources.to(dtype), (weights / weights.sum(0, keepdim=True)).to(dtype)


def _on_grid(mu: float, side: int) -> float:
    """The grad_weight (stated at 640 px) that gives μ = mu on a grid of this long side."""
    return mu * (REFERENCE_SIDE / side) ** 2


def _sobel_matrices(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Dense (HW,HW) Sobel ∂x and ∂y (÷8) with the edge samples repeated beyond the borders (Neumann)."""
    gx, gy = np.zeros((h * w, h * w)), np.zeros((h * w, h * w))
    clamp_i, clamp_j = (lambda i: min(max(i, 0), h - 1)), (lambda j: min(max(j, 0), w - 1))
    for i in range(h):
        for j in range(w):
            row = i * w + j
            for d, smooth in ((-1, 1), (0, 2), (1, 1)):
                for sign in (-1, 1):  # the difference across, [1 2 1] along
                    gx[row, clamp_i(i + d) * w + clamp_j(j + sign)] += sign * smooth / 8
                    gy[row, clamp_i(i + sign) * w + clamp_j(j + d)] += sign * smooth / 8
    return gx, gy


@pytest.mark.parametrize("h,w,dtype,atol", [(6, 8, torch.float64, 1e-10), (7, 9, torch.float32, 2e-6)])
def test_cosine_solve_is_the_dense_minimiser_of_the_energy(h, w, dtype, atol):
    sources, weights = _inputs(h, w, seed=1, dtype=dtype)
    config = replace(BLEND, grad_target="weighted", grad_weight=_on_grid(5.0, w))
    mu = grad_weight(config, h, w)
    gx, gy = _sobel_matrices(h, w)
    c, wt = sources[:, 0].double().reshape(2, -1).numpy(), weights[:, 0].double().reshape(2, -1).numpy()  # (K,HW)
    tx, ty = (wt * (c @ gx.T)).sum(0), (wt * (c @ gy.T)).sum(0)  # g = Σ W_k ∇c_k
    lhs = np.eye(h * w) + mu * (gx.T @ gx + gy.T @ gy)
    expected = np.linalg.solve(lhs, (wt * c).sum(0) + mu * (gx.T @ tx + gy.T @ ty)).reshape(h, w)
    y = cosine_guidance_target(sources, weights, config)
    assert y.shape == (1, 1, h, w) and y.dtype == dtype
    assert np.abs(y[0, 0].double().numpy() - expected).max() < atol
    assert np.abs(expected - (wt * c).sum(0).reshape(h, w)).max() > 0.05  # the gradient term does move y


@pytest.mark.parametrize("target", ["maxabs", "weighted"])
@pytest.mark.parametrize("refits", [0, 2])
@pytest.mark.parametrize("h,w", [(12, 20), (34, 26)])
def test_cosine_and_fft_solves_agree(target, refits, h, w):
    sources, weights = _inputs(h, w, k=3, seed=h + refits)
    config = replace(BLEND, grad_target=target, grad_weight=_on_grid(5.0, max(h, w)), select_sigma=60.0)  # σ ≥ 1.7 px
    fft = fft_guidance_target(sources, weights, config, refits)
    cosine = cosine_guidance_target(sources, weights, config, refits)
    assert (fft - cosine).abs().max() < 1e-10
    assert (fft - (weights * sources).sum(0, keepdim=True)).abs().max() > 0.01  # not the trivial blend


@pytest.mark.parametrize("h,w", [(48, 64), (47, 65)])
def test_float32_solves_agree_to_rounding(h, w):
    sources, weights = _inputs(h, w, seed=4, dtype=torch.float32)
    for refits in (0, 1):
        diff = (fft_guidance_target(sources, weights, BLEND, refits)
                - cosine_guidance_target(sources, weights, BLEND, refits)).abs()
        # a refit's misfit test is a threshold: a pixel on it may go either way under float rounding
        assert diff.max() < 1e-5 if refits == 0 else diff.mean() < 1e-6


@pytest.mark.parametrize("sigma", [0.7, 2.0, 3.3])  # radius up to 10 on an 11-row grid
def test_mirrored_blur_is_the_extended_grids_blur_on_its_quarter(sigma):
    x = torch.rand(2, 1, 11, 16, generator=torch.Generator().manual_seed(5))
    expected = gaussian_blur(mirror_extend(x), sigma)[..., :11, :16]  # (2,1,11,16)
    assert np.abs(_mirrored_blur(x.numpy(), sigma) - expected.numpy()).max() < 1e-6


def test_neumann_gradient_target_is_the_extended_targets_quarter():
    sources, weights = _inputs(30, 40, k=3, seed=6, dtype=torch.float32)
    config = replace(BLEND, select_sigma=40.0)
    for quarter, own in zip(gradient_target(sources, weights, config),
                            neumann_gradient_target(sources.numpy(), weights.numpy(), config), strict=True):
        assert np.abs(quarter[..., :30, :40].numpy() - own).max() < 1e-6


def test_real_pair_solves_agree(shared_data):
    folder = shared_data / "vif" / "llvip"
    planes = [imaging.resize(imaging.to_unit(imaging.split_luma(imaging.read_image(folder / kind / "010003.jpg"))[0]),
                             (128, 160)) for kind in ("ir", "vis")]
    sources = torch.from_numpy(np.stack(planes))[:, None] * 2 - 1  # (2,1,128,160) float32 in [−1,1]
    weights = _inputs(128, 160, seed=7, dtype=torch.float32)[1]
    config = replace(BLEND, grad_weight=BLEND.grad_weight * 16)  # μ at 160 px as dig-blend's at 640 px
    assert cosine_applies(sources, config)
    for refits in (0, 1):
        diff = (fft_guidance_target(sources, weights, config, refits)
                - cosine_guidance_target(sources, weights, config, refits)).abs()
        assert diff.max() < 1e-5 if refits == 0 else diff.mean() < 1e-6


def test_guidance_target_takes_the_cosine_solve_where_it_applies():
    sources, weights = _inputs(16, 24, seed=8, dtype=torch.float32)
    assert cosine_applies(sources, BLEND)
    assert torch.equal(guidance_target(sources, weights, BLEND, 1), cosine_guidance_target(sources, weights, BLEND, 1))
    forward = replace(BLEND, gradient="forward")  # the sampler's gradient: no cosine form here
    assert not cosine_applies(sources, forward)
    assert torch.equal(guidance_target(sources, weights, forward), fft_guidance_target(sources, weights, forward))
    assert not cosine_applies(sources.to("meta"), BLEND)  # not on the CPU: the FFT path
    assert not cosine_applies(_inputs(15, 24)[0], BLEND)  # OpenCV's float64 DCT takes even sizes only
    assert cosine_applies(_inputs(16, 24)[0], BLEND)
    assert not cosine_applies(sources, replace(BLEND, select_sigma=200.0))  # the edge-choice blur wider than the grid


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_solve_matches_the_cpu_one():
    sources, weights = _inputs(48, 64, seed=9, dtype=torch.float32)
    cpu = guidance_target(sources, weights, BLEND, 1)
    cuda = guidance_target(sources.cuda(), weights.cuda(), BLEND, 1)
    assert cuda.device.type == "cuda"
    assert (cuda.cpu() - cpu).abs().mean() < 1e-6
