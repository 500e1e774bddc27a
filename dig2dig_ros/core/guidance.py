"""The guidance step (ALGORITHM.md §3 `rectify`): pull the luminance estimate toward the weighted sources.

Target energy, per pixel weighted by W_k (Σ_k W_k = 1):
    E(y) = Σ_k W_k·(y − c_k)² + μ·|∇y − g|²
with g = Σ_k W_k·∇c_k (`weighted`; the same minimiser as Σ_k W_k·|∇y − ∇c_k|²) or, per pixel, the ∇c_k with
the largest W_k·|∇c_k| (`maxabs`). Its minimiser y* solves the screened Poisson equation
(1 + μ∇ᵀ∇)·y* = Σ_k W_k·c_k + μ∇ᵀg, solved exactly by FFT on the mirror-extended image (Neumann boundary).
The step relaxes toward it: y' = (1 − λ)·y + λ·y*. With μ = 0 that is y' = (1 − λ)·y + λ·Σ_k W_k·c_k.
"""

from __future__ import annotations

import torch

from dig2dig_ros.core.config import GuidanceConfig


def forward_gradient(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Periodic forward differences (∂x, ∂y) of x (...,H,W)."""
    return torch.roll(x, -1, dims=-1) - x, torch.roll(x, -1, dims=-2) - x


def gradient_adjoint(gx: torch.Tensor, gy: torch.Tensor) -> torch.Tensor:
    """∇ᵀ(gx, gy), the adjoint of :func:`forward_gradient` (minus the divergence)."""
    return (torch.roll(gx, 1, dims=-1) - gx) + (torch.roll(gy, 1, dims=-2) - gy)


def mirror_extend(x: torch.Tensor) -> torch.Tensor:
    """(...,H,W) → (...,2H,2W) even extension, so periodic operators act with Neumann boundaries."""
    x = torch.cat([x, x.flip(-1)], dim=-1)
    return torch.cat([x, x.flip(-2)], dim=-2)


def guidance_target(sources: torch.Tensor, weights: torch.Tensor, config: GuidanceConfig) -> torch.Tensor:
    """y*, the minimiser of E, for sources and weights (K,1,H,W); returns (1,1,H,W)."""
    h, w = sources.shape[-2:]
    intensity = (weights * sources).sum(dim=0, keepdim=True)  # (1,1,H,W)
    mu = config.grad_weight
    if mu == 0:
        return intensity
    c = mirror_extend(sources)  # (K,1,2H,2W)
    wt = mirror_extend(weights)
    gx, gy = forward_gradient(c)
    if config.grad_target == "weighted":
        tx, ty = (wt * gx).sum(0, keepdim=True), (wt * gy).sum(0, keepdim=True)
    else:  # maxabs: the strongest weighted edge wins, per pixel
        score = wt * torch.sqrt(gx**2 + gy**2)  # (K,1,2H,2W)
        best, tx, ty = score[:1], gx[:1], gy[:1]
        for k in range(1, score.shape[0]):  # elementwise running max: much faster than argmax over K
            wins = score[k : k + 1] > best
            best = torch.where(wins, score[k : k + 1], best)
            tx, ty = torch.where(wins, gx[k : k + 1], tx), torch.where(wins, gy[k : k + 1], ty)
    rhs = mirror_extend(intensity) + mu * gradient_adjoint(tx, ty)  # (1,1,2H,2W)
    fy = torch.fft.fftfreq(2 * h, device=sources.device, dtype=sources.dtype)[:, None]
    fx = torch.fft.rfftfreq(2 * w, device=sources.device, dtype=sources.dtype)[None, :]
    laplace = (2 - 2 * torch.cos(2 * torch.pi * fx)) + (2 - 2 * torch.cos(2 * torch.pi * fy))  # ∇ᵀ∇ symbol
    y = torch.fft.irfft2(torch.fft.rfft2(rhs) / (1 + mu * laplace), s=(2 * h, 2 * w))
    return y[..., :h, :w]


def rectify(y: torch.Tensor, target: torch.Tensor, config: GuidanceConfig) -> torch.Tensor:
    """One guidance step on the luminance estimate y (1,1,H,W) toward y* = guidance_target(...):
    y' = (1 − λ)·y + λ·y*. (y* depends on the sources and weights only, so the sampler computes it once per
    weight update.)"""
    lam = config.step_size
    return (1 - lam) * y + lam * target
