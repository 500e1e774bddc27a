"""The Wiener prior is the exact MMSE denoiser of its own Gaussian model."""

import torch

from dig2dig_ros.core.diffusion.priors import load_prior
from dig2dig_ros.core.diffusion.priors.wiener import WienerPrior


def _noisy(prior, x0, t, generator):
    ab = prior.alphas_cumprod[t]
    return ab.sqrt() * x0 + (1 - ab).sqrt() * torch.randn(x0.shape, generator=generator, dtype=torch.float64)


def test_x0_estimate_beats_rescaling_and_matches_mmse():
    prior = WienerPrior()
    g = torch.Generator().manual_seed(0)
    x0 = prior.sample((16, 1, 48, 64), g)
    for t in (50, 200, 400, 600):
        x_t = _noisy(prior, x0, t, g)
        est = prior.x0_estimate(x_t, torch.full((16,), t))
        mse = ((est - x0) ** 2).mean().item()
        rescaled = ((x_t / prior.alphas_cumprod[t].sqrt() - x0) ** 2).mean().item()
        expected = prior.expected_mse(48, 64, t)
        assert mse < rescaled
        assert abs(mse - expected) / expected < 0.1, (t, mse, expected)


def test_any_other_linear_gain_is_worse():
    # Perturbing the optimal per-frequency gain (here: a different spectral slope) raises the error.
    prior, wrong = WienerPrior(alpha=2.0), WienerPrior(alpha=1.0)
    g = torch.Generator().manual_seed(1)
    x0 = prior.sample((16, 1, 48, 48), g)
    x_t = _noisy(prior, x0, 300, g)
    t = torch.full((16,), 300)
    right_mse = ((prior.x0_estimate(x_t, t) - x0) ** 2).mean()
    wrong_mse = ((wrong.x0_estimate(x_t, t) - x0) ** 2).mean()
    assert right_mse < wrong_mse


def test_eps_interface_is_consistent_with_x0():
    prior = load_prior("wiener")
    x_t = torch.randn(2, 1, 32, 40)
    t = torch.tensor([100, 700])
    eps = prior(x_t, t)
    ab = prior.alphas_cumprod[t].view(-1, 1, 1, 1).float()
    x0 = (x_t - (1 - ab).sqrt() * eps) / ab.sqrt()
    assert eps.shape == x_t.shape and eps.dtype == x_t.dtype
    assert torch.allclose(x0, prior.x0_estimate(x_t, t), atol=1e-3)


def test_float32_path_matches_float64_within_float32_tolerance():
    # The bundled prior runs the Wiener estimate on float32 frames: float32 arithmetic, float64 answers.
    prior = WienerPrior(mean=-0.2)
    g = torch.Generator().manual_seed(2)
    x64 = torch.randn(3, 1, 64, 80, generator=g, dtype=torch.float64)  # (B,1,H,W)
    for ts in ([0, 1, 10], [100, 500, 999]):
        t = torch.tensor(ts)
        x0_32, x0_64 = prior.x0_estimate(x64.float(), t), prior.x0_estimate(x64, t)
        eps_32, eps_64 = prior(x64.float(), t), prior(x64, t)
        assert x0_32.dtype == eps_32.dtype == torch.float32
        torch.testing.assert_close(x0_32.double(), x0_64, rtol=0, atol=2e-6)
        # ε divides by √(1−ᾱ) (0.01 at t = 0): an absolute 1e-4 there is a relative 1e-6 of x0.
        torch.testing.assert_close(eps_32.double(), eps_64, rtol=0, atol=1e-4)
