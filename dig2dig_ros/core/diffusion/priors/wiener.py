"""The exact MMSE denoiser of a stationary Gaussian image model with a 1/f^α power spectrum.

Needs no training: the test prior, and the fallback when no trained prior is available.

Model: x0 = m + g, g a zero-mean stationary Gaussian field whose orthonormal-DFT coefficients are independent
with variance P(f) = A / (|f|² + f0²)^(α/2) (f in cycles per pixel), A chosen so the pixel variance is std².
Given x_t = √ᾱ·x0 + √(1−ᾱ)·ε, each coefficient's posterior mean is
    X̂0(f) = m + √ᾱ·P(f) / (ᾱ·P(f) + 1 − ᾱ) · (X_t(f) − √ᾱ·m),
and the posterior variance, the expected squared error, is P(f)·(1 − ᾱ) / (ᾱ·P(f) + 1 − ᾱ).
"""

from __future__ import annotations

import torch

from dig2dig_ros.core.diffusion.priors import register_prior
from dig2dig_ros.core.diffusion.priors.base import Prior


class WienerPrior(Prior):
    """ε̂ from the closed-form Wiener (MMSE) estimate of x0 under a 1/f^α Gaussian model."""

    channels = 1
    multiple = 1

    def __init__(self, alpha: float = 2.0, std: float = 0.5, mean: float = 0.0, f0: float = 0.01) -> None:
        super().__init__()
        self.alpha, self.std, self.mean, self.f0 = alpha, std, mean, f0
        self._spectra: dict[tuple, torch.Tensor] = {}

    def spectrum(
        self, height: int, width: int, device: torch.device | None = None, dtype: torch.dtype = torch.float64
    ) -> torch.Tensor:
        """P(f) on the rfft2 grid, shape (H, W//2+1), in ``dtype``; its full-grid mean is std². Cached per size."""
        key = (height, width, str(device), dtype)
        if key not in self._spectra:
            full = self._spectra.get((height, width, str(device), torch.float64))
            if full is None:
                full = self._spectrum(height, width, device)  # computed in float64, then cast
            self._spectra[key] = full.to(dtype)
        return self._spectra[key]

    def _spectrum(self, height: int, width: int, device: torch.device | None) -> torch.Tensor:
        fy = torch.fft.fftfreq(height, device=device, dtype=torch.float64)[:, None]  # (H,1)
        fx = torch.fft.rfftfreq(width, device=device, dtype=torch.float64)[None, :]  # (1,W//2+1)
        shape = (fy**2 + fx**2 + self.f0**2) ** (-self.alpha / 2)  # (H,W//2+1)
        # The full-grid mean counts each rfft column except DC (and Nyquist for even W) twice.
        weight = torch.full_like(fx, 2.0)
        weight[..., 0] = 1.0
        if width % 2 == 0:
            weight[..., -1] = 1.0
        full_mean = (shape * weight).sum() / (height * width)
        return shape * (self.std**2 / full_mean)

    def x0_estimate(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The posterior mean E[x0 | x_t] for x_t (B,C,H,W) at timesteps t (B,), in x_t's dtype.

        Computed in float64 for a float64 x_t and in float32 otherwise (float16/bfloat16 inputs included: the
        FFT is not run in half precision).
        """
        h, w = x_t.shape[-2:]
        dtype = torch.float64 if x_t.dtype == torch.float64 else torch.float32
        ab = self.alphas_cumprod.to(x_t.device)[t.long()].view(-1, 1, 1, 1)  # (B,1,1,1) float64
        p = self.spectrum(h, w, x_t.device, dtype)  # (H,W//2+1)
        gain = (ab.sqrt() / (1 - ab)).to(dtype) * p / ((ab / (1 - ab)).to(dtype) * p + 1)  # (B,1,H,W//2+1)
        centred = x_t.to(dtype)
        if self.mean:
            centred = centred - (ab.sqrt() * self.mean).to(dtype)  # (B,C,H,W)
        x0 = torch.fft.irfft2(gain * torch.fft.rfft2(centred, norm="ortho"), s=(h, w), norm="ortho")
        if self.mean:
            x0 = x0 + self.mean
        return x0.to(x_t.dtype)

    def expected_mse(self, height: int, width: int, t: int) -> float:
        """The MMSE per pixel at timestep t: the mean posterior variance over the full frequency grid."""
        ab = float(self.alphas_cumprod[t])
        p = self.spectrum(height, width)  # (H,W//2+1)
        var = p * (1 - ab) / (ab * p + 1 - ab)
        weight = torch.full((width // 2 + 1,), 2.0, dtype=torch.float64)
        weight[0] = 1.0
        if width % 2 == 0:
            weight[-1] = 1.0
        return float((var * weight).sum() / (height * width))

    def sample(self, shape: tuple[int, ...], generator: torch.Generator | None = None) -> torch.Tensor:
        """Draw images (B,C,H,W) from the model itself, float64."""
        h, w = shape[-2:]
        white = torch.randn(shape, generator=generator, dtype=torch.float64)  # (B,C,H,W)
        coloured = torch.fft.rfft2(white, norm="ortho") * self.spectrum(h, w).sqrt()
        return self.mean + torch.fft.irfft2(coloured, s=(h, w), norm="ortho")

    def forward(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """ε̂ = (x_t − √ᾱ·x̂0) / √(1−ᾱ) for x_t (B,C,H,W), t (B,)."""
        ab = self.alphas_cumprod.to(x_t.device)[t.long()].view(-1, 1, 1, 1)  # (B,1,1,1) float64
        scale = (1 / (1 - ab).sqrt()).to(x_t.dtype)  # 1 − ᾱ in float64: ᾱ is within 1e-4 of 1 at t = 0
        return (x_t - ab.sqrt().to(x_t.dtype) * self.x0_estimate(x_t, t)) * scale


@register_prior("wiener")
def _wiener(arg: str | None, device: torch.device) -> Prior:
    """`wiener` or `wiener:ALPHA` (the spectral slope, default 2)."""
    return WienerPrior(alpha=float(arg)) if arg else WienerPrior()
