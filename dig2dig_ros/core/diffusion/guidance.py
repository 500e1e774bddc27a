"""The guidance step (ALGORITHM.md §3): pull the prior's luminance estimate toward the weighted sources.

Guidance energy, per pixel weighted by W_k (Σ_k W_k = 1):
    E(y) = Σ_k W_k·(y − c_k)² + μ·|∇y − g|²
with ∇ the Sobel gradient (normalised to unit slope: a central difference across, [1 2 1]/4 along; `sobel`) or
forward differences (`forward`), and g = Σ_k W_k·∇c_k (`weighted` gradient target) or s·∇c_k of the source k with
the largest W_k·|∇c_k|, that
score smoothed by a Gaussian of σ_sel so that neighbouring pixels take their edges from the same source
(`maxabs`). s = `grad_scale` < 1 draws the chosen edges slightly below their source's contrast: the fused image
then sits between the sources (SSIM against each) and keeps every chosen edge within the 0.7–1.4 contrast band
that counts as preserved (Qabf). μ and σ_sel are stated for a 640 px long side and scaled with the grid (μ by
the square of the size ratio), so the gradient term reaches the same share of the image at any size.
Its minimiser y* (:func:`guidance_target`) depends on the sources and weights only: the closed-form blend.

A step of the sampler must let the prior keep its say, so each guidance starts *from* the prior's estimate y0:

- :class:`ProximalGuidance` (`weighted`): y' = argmin_y ρ_t·‖y − y0‖² + E(y), with ρ_t = (σ_d/σ_t)², σ_t the
  sample's noise level √((1−ᾱ_t)/ᾱ_t) and σ_d the data's own uncertainty (a floor, raised to the sources'
  estimated noise level). Early (σ_t ≫ σ_d) the data decide; late, the prior's estimate does. This is the
  data-consistency step of plug-and-play diffusion restoration (DiffPIR, Zhu et al. CVPR 2023) with E as the
  data term. One FFT solve (screened Poisson, Neumann boundary) per step.
- :class:`DdfmGuidance` (`ddfm`): DDFM's one-step EM (Zhao et al. ICCV 2023): reweighted ℓ1 terms toward the
  infrared and visible sources and a total-variation prox, its state carried across steps; the two terms are
  scaled by 2·W_k, so W = ½ reproduces DDFM.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import cv2
import numpy as np
import torch
from torch.nn import functional

from dig2dig_ros.core.config import GuidanceConfig
from dig2dig_ros.core.diffusion.dig import gaussian_blur
from dig2dig_ros.core.frame import imaging

# Guidance works on luminance in [−1,1]: σ_d in grey levels of [0,1] doubles there.
UNIT_TO_SIGNED = 2.0
REFERENCE_SIDE = 640  # grad_weight and select_sigma are stated for a grid of this long side
Array = torch.Tensor | np.ndarray  # the Sobel stencil, the edge choice and the refit run on either


def grid_scale(h: int, w: int) -> float:
    """The grid's long side relative to REFERENCE_SIDE."""
    return max(h, w) / REFERENCE_SIDE


def grad_weight(config: GuidanceConfig, h: int, w: int) -> float:
    """μ on an (h, w) grid: grad_weight at REFERENCE_SIDE, times the squared size ratio."""
    return config.grad_weight * grid_scale(h, w) ** 2


def forward_gradient(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Periodic forward differences (∂x, ∂y) of x (...,H,W)."""
    return torch.roll(x, -1, dims=-1) - x, torch.roll(x, -1, dims=-2) - x


def _sobel_x(p: Array) -> Array:
    """The Sobel ∂x (N,C,H,W) of a grid padded by one sample (N,C,H+2,W+2), divided by 8 (tensor or array)."""
    along_y = p[..., :-2, :] + 2 * p[..., 1:-1, :] + p[..., 2:, :]  # [1 2 1] down the columns: (N,C,H,W+2)
    return (along_y[..., 2:] - along_y[..., :-2]) / 8


def _sobel_y(p: Array) -> Array:
    """The Sobel ∂y (N,C,H,W) of a grid padded by one sample (N,C,H+2,W+2), divided by 8 (tensor or array)."""
    along_x = p[..., :-2] + 2 * p[..., 1:-1] + p[..., 2:]  # [1 2 1] along the rows: (N,C,H+2,W)
    return (along_x[..., 2:, :] - along_x[..., :-2, :]) / 8


def _sobel(p: Array) -> tuple[Array, Array]:
    """Sobel responses (∂x, ∂y) (N,C,H,W) of a grid padded by one sample (N,C,H+2,W+2), divided by 8."""
    return _sobel_x(p), _sobel_y(p)


def sobel_gradient(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Periodic Sobel responses (∂x, ∂y) of x (N,C,H,W), divided by 8 so that a unit ramp gives 1."""
    return _sobel(functional.pad(x, (1, 1, 1, 1), mode="circular"))


Gradient = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
GRADIENTS: dict[str, Gradient] = {"sobel": sobel_gradient, "forward": forward_gradient}


def mirror_extend(x: torch.Tensor) -> torch.Tensor:
    """(...,H,W) → (...,2H,2W) even extension, so periodic operators act with Neumann boundaries."""
    x = torch.cat([x, x.flip(-1)], dim=-1)
    return torch.cat([x, x.flip(-2)], dim=-2)


@functools.lru_cache(maxsize=8)
def _symbols(h: int, w: int, kind: str, device: torch.device, dtype: torch.dtype
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(∂x, ∂y, |∂x|² + |∂y|²) symbols (2h, w+1), made once per grid: a video's frames share one size."""
    fy = 2 * torch.pi * torch.fft.fftfreq(2 * h, device=device, dtype=dtype)[:, None]
    fx = 2 * torch.pi * torch.fft.rfftfreq(2 * w, device=device, dtype=dtype)[None, :]
    if kind == "forward":  # x[n+1] − x[n]
        sx, sy = torch.polar(torch.ones_like(fx), fx) - 1, torch.polar(torch.ones_like(fy), fy) - 1
    else:  # (x[n+1] − x[n−1])/2 across, (x[n−1] + 2x[n] + x[n+1])/4 along
        sx, sy = 1j * torch.sin(fx) * (1 + torch.cos(fy)) / 2, 1j * torch.sin(fy) * (1 + torch.cos(fx)) / 2
    return sx, sy, sx.abs() ** 2 + sy.abs() ** 2


def gradient_symbols(h: int, w: int, kind: str, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The rfft2 symbols (2h, w+1) of the gradient `kind`'s ∂x and ∂y on the (2h, 2w) mirror-extended grid."""
    return _symbols(h, w, kind, like.device, like.dtype)[:2]


def gradient_power(h: int, w: int, kind: str, like: torch.Tensor) -> torch.Tensor:
    """|∂x|² + |∂y|², the symbol (2h, w+1) of ∇ᵀ∇ on the mirror-extended grid (the Laplacian's for `forward`)."""
    return _symbols(h, w, kind, like.device, like.dtype)[2]


def _magnitude(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """√(a² + b²), elementwise."""
    return torch.sqrt(a**2 + b**2)


def _choose_edges(gx: Array, gy: Array, weights: Array, config: GuidanceConfig, blur: Callable[[Array], Array],
                  magnitude: Callable[[Array, Array], Array] = _magnitude, where=torch.where
                  ) -> tuple[Array, Array]:
    """g = (gx, gy) (1,1,H,W) from the sources' gradients and weights (K,1,H,W), tensors or (with NumPy's
    ``where`` and a ``magnitude`` for arrays) arrays; ``blur`` smooths the maxabs edge score."""
    if config.grad_target == "weighted":
        return (weights * gx).sum(0)[None], (weights * gy).sum(0)[None]
    score = blur(weights * magnitude(gx, gy))  # maxabs: the strongest weighted edge in a neighbourhood wins
    best, tx, ty = score[:1], gx[:1], gy[:1]
    for k in range(1, score.shape[0]):  # elementwise running max: much faster than argmax over K
        wins = score[k : k + 1] > best
        best = where(wins, score[k : k + 1], best)
        tx, ty = where(wins, gx[k : k + 1], tx), where(wins, gy[k : k + 1], ty)
    return config.grad_scale * tx, config.grad_scale * ty


def gradient_target(sources: torch.Tensor, weights: torch.Tensor, config: GuidanceConfig
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """g = (gx, gy) (1,1,2H,2W) on the mirror-extended grid for sources and weights (K,1,H,W)."""
    sigma = config.select_sigma * grid_scale(*sources.shape[-2:])
    gx, gy = GRADIENTS[config.gradient](mirror_extend(sources))  # (K,1,2H,2W)
    return _choose_edges(gx, gy, mirror_extend(weights), config, lambda s: gaussian_blur(s, sigma))


def _intensity_term(sources: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """The rfft2 (1,1,2H,W+1) of Σ_k W_k·c_k on the mirror-extended grid."""
    return torch.fft.rfft2(mirror_extend((weights * sources).sum(dim=0, keepdim=True)))


def _gradient_term(tx: torch.Tensor, ty: torch.Tensor, symbols: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """The rfft2 (1,1,2H,W+1) of ∇ᵀg for g = (tx, ty) (1,1,2H,2W), with ∇'s symbols (sx, sy)."""
    sx, sy = symbols
    return sx.conj() * torch.fft.rfft2(tx) + sy.conj() * torch.fft.rfft2(ty)


def energy_rhs(sources: torch.Tensor, weights: torch.Tensor, config: GuidanceConfig) -> torch.Tensor:
    """The rfft2 (1,1,2H,W+1) of Σ_k W_k·c_k + μ∇ᵀg on the mirror-extended grid: E's linear term."""
    intensity = _intensity_term(sources, weights)
    h, w = sources.shape[-2:]
    mu = grad_weight(config, h, w)
    if mu == 0:
        return intensity
    symbols = gradient_symbols(h, w, config.gradient, sources)
    return intensity + mu * _gradient_term(*gradient_target(sources, weights, config), symbols)


def _refit(y: Array, tx: Array, ty: Array, gradient: Callable[[Array], tuple[Array, Array]], ratio: float,
           magnitude: Callable[[Array, Array], Array] = torch.hypot, where=torch.where) -> tuple[Array, Array]:
    """The target (tx, ty) with the pixels whose gradient of y misses it by more than ``ratio`` of its size
    given that gradient instead (all (1,1,H,W) on one grid; tensors, or arrays as in :func:`_choose_edges`)."""
    gx, gy = gradient(y)
    misfit = magnitude(gx - tx, gy - ty) > ratio * magnitude(tx, ty)
    return where(misfit, gx, tx), where(misfit, gy, ty)


def guidance_target(sources: torch.Tensor, weights: torch.Tensor, config: GuidanceConfig, refits: int = 0
                    ) -> torch.Tensor:
    """y*, the minimiser of E, for sources and weights (K,1,H,W); returns (1,1,H,W): the closed-form blend.

    refits > 0: after each solve, the pixels whose gradient misses the target by more than `refit_ratio` times
    the target's own size (where the chosen edges, switching between sources, cannot be integrated) take the
    solution's gradient as their target, and E is solved again: they stop pulling the other pixels' edges
    out of line (a truncated quadratic penalty, one reweighting step per refit).

    Where :func:`cosine_applies` (the Sobel gradient, on the CPU) it is solved on the (H,W) grid itself with
    cosine transforms (:func:`cosine_guidance_target`), elsewhere with FFTs on the mirror-extended grid
    (:func:`fft_guidance_target`): the same y* to float rounding.
    """
    h, w = sources.shape[-2:]
    if grad_weight(config, h, w) == 0:
        return (weights * sources).sum(dim=0, keepdim=True)
    if cosine_applies(sources, config) and not weights.requires_grad:
        return cosine_guidance_target(sources, weights, config, refits)
    return fft_guidance_target(sources, weights, config, refits)


def fft_guidance_target(sources: torch.Tensor, weights: torch.Tensor, config: GuidanceConfig, refits: int = 0
                        ) -> torch.Tensor:
    """:func:`guidance_target` (1,1,H,W) solved with FFTs on the (2H,2W) mirror-extended grid (any gradient,
    any device; μ > 0)."""
    h, w = sources.shape[-2:]
    mu = grad_weight(config, h, w)
    intensity = _intensity_term(sources, weights)  # (1,1,2H,W+1)
    symbols = gradient_symbols(h, w, config.gradient, sources)
    denominator = 1 + mu * gradient_power(h, w, config.gradient, sources)
    tx, ty = gradient_target(sources, weights, config)  # (1,1,2H,2W)

    def solve(tx: torch.Tensor, ty: torch.Tensor) -> torch.Tensor:  # (1,1,2H,2W) on the mirror-extended grid
        return torch.fft.irfft2((intensity + mu * _gradient_term(tx, ty, symbols)) / denominator, s=(2 * h, 2 * w))

    y = solve(tx, ty)
    for _ in range(refits):
        tx, ty = _refit(y, tx, ty, GRADIENTS[config.gradient], config.refit_ratio)
        y = solve(tx, ty)
    return y[..., :h, :w]


# The cosine-transform solve. On the mirror-extended grid every term of E's minimiser has a symmetry: the sources,
# weights and y are even about the half-sample points −½ and N−½ of each axis; a Sobel derivative across an axis is
# odd about them (even along the other), and so is the target g built from such derivatives. E's linear term
# Σ W c + μ∇ᵀg is then even again: ∇ᵀ = −∇ for the Sobel gradient (its kernels are odd), applied to g with g's own
# symmetry at the borders. The DFT (length 2N) of an even sequence is e^{iπk/2N}·C[k], C the DCT-II of its first N
# samples; ∇ᵀ∇'s symbol is real and even, so the phases cancel and
#     C[y*] = C[Σ W c + μ∇ᵀg] / (1 + μ(sx² + sy²)),  sx = sin ωx·(1 + cos ωy)/2, sy likewise, ω = πk/N (k < N),
# one DCT and one inverse DCT per solve on the (H,W) grid instead of FFTs on the (2H,2W) one.


def cosine_applies(sources: torch.Tensor, config: GuidanceConfig) -> bool:
    """Whether :func:`cosine_guidance_target` solves E for sources (K,1,H,W) under config: the Sobel gradient, a
    CPU tensor OpenCV's DCT takes (float32, or float64 of even sizes), the edge-choice blur narrower than the grid."""
    h, w = sources.shape[-2:]
    if config.gradient != "sobel" or sources.device.type != "cpu" or sources.requires_grad:
        return False
    if not (sources.dtype == torch.float32 or (sources.dtype == torch.float64 and h % 2 == 0 and w % 2 == 0)):
        return False
    sigma = config.select_sigma * grid_scale(h, w)
    return config.grad_target == "weighted" or sigma <= 0 or math.ceil(3 * sigma) < min(h, w)


@functools.lru_cache(maxsize=8)
def _cosine_denominator(h: int, w: int, mu: float, dtype: np.dtype) -> np.ndarray:
    """1 / (1 + μ(sx² + sy²)) (h,w): the inverse of E's operator at the DCT-II frequencies (Sobel gradient)."""
    fy, fx = np.pi * np.arange(h)[:, None] / h, np.pi * np.arange(w)[None, :] / w
    sx, sy = np.sin(fx) * (1 + np.cos(fy)) / 2, np.sin(fy) * (1 + np.cos(fx)) / 2  # (h,w)
    return (1 / (1 + mu * (sx**2 + sy**2))).astype(dtype)


_DIFFERENCE = np.array([-1, 0, 1]) / 8  # the Sobel stencil: the difference across (÷8) ...
_SMOOTHING = np.array([1.0, 2, 1])  # ... and the smoothing along


def _per_plane(x: np.ndarray, *others: np.ndarray, fn: Callable[..., np.ndarray]) -> np.ndarray:
    """An OpenCV function ``fn(*planes, dst)`` applied to each (H,W) plane of x (N,C,H,W) (and of ``others``,
    alike), written into an (N,C,H,W) array of x's type."""
    out = np.empty(x.shape, x.dtype)
    for i in range(x.shape[0]):
        for j in range(x.shape[1]):
            fn(*(np.ascontiguousarray(a[i, j]) for a in (x, *others)), out[i, j])
    return out


def _plane_magnitude(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """√(a² + b²) of arrays (N,C,H,W) (OpenCV)."""
    return _per_plane(a, b, fn=cv2.magnitude)


def _sobel_x_planes(x: np.ndarray, border: int) -> np.ndarray:
    """The Sobel response ∂x ÷ 8 of x (N,C,H,W), OpenCV's ``border`` beyond it."""
    return _per_plane(x, fn=lambda p, dst: cv2.sepFilter2D(p, -1, _DIFFERENCE, _SMOOTHING, dst, borderType=border))


def _sobel_y_planes(x: np.ndarray, border: int) -> np.ndarray:
    """The Sobel response ∂y ÷ 8 of x (N,C,H,W), OpenCV's ``border`` beyond it."""
    return _per_plane(x, fn=lambda p, dst: cv2.sepFilter2D(p, -1, _SMOOTHING, _DIFFERENCE, dst, borderType=border))


def _sobel_planes(x: np.ndarray, border: int) -> tuple[np.ndarray, np.ndarray]:
    """The Sobel responses (∂x, ∂y) ÷ 8 of x (N,C,H,W), OpenCV's ``border`` beyond it."""
    return _sobel_x_planes(x, border), _sobel_y_planes(x, border)


def neumann_sobel_gradient(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sobel responses (∂x, ∂y) of x (N,C,H,W) with its edge samples repeated: the top-left (H,W) of
    ``sobel_gradient(mirror_extend(x))``."""
    return _sobel_planes(x, cv2.BORDER_REFLECT)  # the extension repeats the edge sample


def neumann_sobel_divergence(tx: np.ndarray, ty: np.ndarray) -> np.ndarray:
    """∇ᵀg (1,1,H,W) for the Sobel gradient and g = (tx, ty) (1,1,H,W) odd across its own axis about the
    half-sample borders (as :func:`neumann_sobel_gradient`'s are): the top-left (H,W) of ∇ᵀg on the
    mirror-extended grid."""
    px, py = (np.pad(t, ((0, 0), (0, 0), (1, 1), (1, 1)), mode="edge") for t in (tx, ty))  # (1,1,H+2,W+2)
    px[..., [0, -1]] *= -1  # tx changes sign across the left and right borders
    py[..., [0, -1], :] *= -1  # ty across the top and bottom
    # each plane only along its own axis
    dx, dy = _sobel_x_planes(px, cv2.BORDER_REFLECT), _sobel_y_planes(py, cv2.BORDER_REFLECT)
    return -(dx + dy)[..., 1:-1, 1:-1]  # ∇ᵀ = −∇: the stencils are odd


def _mirrored_blur(x: np.ndarray, sigma: float) -> np.ndarray:
    """The top-left (H,W) of ``gaussian_blur(mirror_extend(x), sigma)`` for x (N,C,H,W), ⌈3σ⌉ < min(H, W):
    reflected about the edge sample at the top and left, as the extended grid's own border; the edge repeated
    at the bottom and right, where the extension continues."""
    if sigma <= 0:
        return x
    h, w = x.shape[-2:]
    r = math.ceil(3 * sigma)  # gaussian_blur's radius on either grid under that bound
    x = np.pad(x, ((0, 0), (0, 0), (0, r), (0, r)), mode="symmetric")  # (N,C,H+r,W+r): the extension's next samples
    return gaussian_blur(torch.from_numpy(x), sigma).numpy()[..., :h, :w]


def neumann_gradient_target(sources: np.ndarray, weights: np.ndarray, config: GuidanceConfig
                            ) -> tuple[np.ndarray, np.ndarray]:
    """The top-left (H,W) of :func:`gradient_target` (1,1,H,W) for the Sobel gradient, computed on the sources'
    own (H,W) grid (sources and weights (K,1,H,W) arrays, where :func:`cosine_applies`). The sources' gradients
    take :func:`sobel_gradient`'s own arithmetic: the edge choice is then the same to the last bit (OpenCV's
    filter rounds differently, and a near-tie of two sources' scores could go the other way)."""
    sigma = config.select_sigma * grid_scale(*sources.shape[-2:])
    gx, gy = _sobel(np.pad(sources, ((0, 0), (0, 0), (1, 1), (1, 1)), mode="edge"))  # (K,1,H,W)
    return _choose_edges(gx, gy, weights, config, lambda s: _mirrored_blur(s, sigma), _plane_magnitude, np.where)


def cosine_guidance_target(sources: torch.Tensor, weights: torch.Tensor, config: GuidanceConfig, refits: int = 0
                           ) -> torch.Tensor:
    """:func:`guidance_target` (1,1,H,W) solved on the sources' (H,W) grid with cosine transforms (the Sobel
    gradient, μ > 0, where :func:`cosine_applies`): a quarter of :func:`fft_guidance_target`'s samples, in
    NumPy and OpenCV."""
    h, w = sources.shape[-2:]
    mu = grad_weight(config, h, w)
    c, wt = sources.numpy(), weights.numpy()  # (K,1,H,W)
    denominator = _cosine_denominator(h, w, mu, c.dtype)
    intensity = (wt * c).sum(0)[None]  # (1,1,H,W)
    tx, ty = neumann_gradient_target(c, wt, config)  # (1,1,H,W)

    def solve(tx: np.ndarray, ty: np.ndarray) -> np.ndarray:  # (1,1,H,W)
        rhs = np.ascontiguousarray((intensity + mu * neumann_sobel_divergence(tx, ty))[0, 0])  # (H,W)
        return cv2.dct(cv2.dct(rhs) * denominator, flags=cv2.DCT_INVERSE)[None, None]

    y = solve(tx, ty)
    for _ in range(refits):
        tx, ty = _refit(y, tx, ty, neumann_sobel_gradient, config.refit_ratio, _plane_magnitude, np.where)
        y = solve(tx, ty)
    return torch.from_numpy(y)


class ProximalGuidance:
    """`weighted` guidance: the proximal step y' = argmin ρ_t‖y − y0‖² + E(y), anchored at the prior's estimate."""

    def __init__(self, sources: torch.Tensor, config: GuidanceConfig, noise_sigma: float | None = None) -> None:
        """noise_sigma: the sources' largest noise σ in [0,1] grey units (imaging.noise_sigma), if the caller
        has it on the host already; otherwise it is estimated here from the sources."""
        self.sources, self.config = sources, config  # (K,1,H,W) in [−1,1]
        h, w = sources.shape[-2:]
        self.size = (h, w)
        self.laplace = grad_weight(config, h, w) * gradient_power(h, w, config.gradient, sources)  # (2H, W+1)
        if noise_sigma is None and config.noise_scale > 0:
            host = ((sources[:, 0] + 1) / 2).cpu().numpy()  # (K,H,W) in [0,1]
            noise_sigma = max(imaging.noise_sigma(c) for c in host)
        estimated = config.noise_scale * UNIT_TO_SIGNED * (noise_sigma or 0.0)
        self.data_sigma = max(UNIT_TO_SIGNED * config.data_sigma, estimated)  # σ_d in [−1,1] units
        self._weights: torch.Tensor | None = None
        self._rhs: torch.Tensor | None = None  # rfft2 of E's linear term, refreshed with the weights

    def __call__(self, y0: torch.Tensor, weights: torch.Tensor, alpha_bar: float) -> torch.Tensor:
        """y' (1,1,H,W) from the prior's luminance estimate y0 (1,1,H,W), weights (K,1,H,W), ᾱ of the step."""
        if weights is not self._weights:
            self._weights, self._rhs = weights, energy_rhs(self.sources, weights, self.config)
        sigma_t2 = (1 - alpha_bar) / max(alpha_bar, 1e-12)
        rho = self.data_sigma**2 / max(sigma_t2, 1e-12)
        h, w = self.size
        spectrum = (rho * torch.fft.rfft2(mirror_extend(y0)) + self._rhs) / (rho + 1 + self.laplace)
        return torch.fft.irfft2(spectrum, s=(2 * h, 2 * w))[..., :h, :w]


class DdfmGuidance:
    """`ddfm` guidance: DDFM's EM rectification of the prior's estimate, its terms scaled by 2·W_k.

    Source 0 is the infrared (intensity term), source 1 the visible (its difference to the fused image is
    sparse and piecewise smooth). The EM state (reweighting scales, TV auxiliaries) is kept across steps.
    """

    LAMBDA, RHO = 0.5, 0.01  # DDFM's defaults

    def __init__(self, sources: torch.Tensor, config: GuidanceConfig, noise_sigma: float | None = None) -> None:
        if sources.shape[0] != 2:
            raise ValueError(f"ddfm guidance fuses exactly two sources (infrared, visible), got {sources.shape[0]}")
        self.ir, self.vis = sources[:1], sources[1:]  # (1,1,H,W)
        h, w = sources.shape[-2:]
        fy = torch.fft.fftfreq(h, device=sources.device, dtype=sources.dtype)[:, None]
        fx = torch.fft.fftfreq(w, device=sources.device, dtype=sources.dtype)[None, :]
        self.kx = 1 - torch.exp(-2j * torch.pi * fx)  # symbols of the periodic differences along x and y
        self.ky = 1 - torch.exp(-2j * torch.pi * fy)
        self.denominator = 1 + self.kx.abs() ** 2 + self.ky.abs() ** 2
        self.f1 = torch.zeros_like(self.ir)
        self.f2 = torch.zeros_like(self.ir)
        self.tau_a = self.tau_b = 1.0

    def __call__(self, y0: torch.Tensor, weights: torch.Tensor, alpha_bar: float) -> torch.Tensor:
        """y' (1,1,H,W): one EM step from the prior's estimate y0 (1,1,H,W) under weights (2,1,H,W)."""
        y = self.ir - self.vis  # the infrared's difference to the visible
        x = y0 - self.vis  # the estimate's
        # E-step: reweighting of the two ℓ1 terms (visible: D, infrared: C), then the noise scales.
        d = torch.sqrt(2 / self.tau_b / (x**2 + 1e-6))
        c = torch.sqrt(2 / self.tau_a / ((y - x + 1e-6) ** 2))
        d = torch.minimum(d, 2 * c)
        self.tau_b = float((1 / (d + 1e-10) + self.tau_b / 2).mean())
        self.tau_a = float((1 / (c + 1e-10) + self.tau_a / 2).mean())
        # In the M-step below, d pulls the result toward the infrared and c toward the visible: each is scaled by
        # twice its source's weight (W = ½: DDFM exactly).
        c, d = c * 2 * weights[1:2], d * 2 * weights[0:1]
        # M-step: TV prox of the residual, its auxiliaries, and the reweighted least-squares solution.
        spectrum = torch.fft.fft2(y - x) + self.kx.conj() * torch.fft.fft2(self.f1) + self.ky.conj() * torch.fft.fft2(
            self.f2)
        hsol = torch.fft.ifft2(spectrum / self.denominator).real
        shrink = self.RHO / (2 * self.LAMBDA + self.RHO)
        self.f1 = shrink * torch.cat([hsol[..., :-1] - hsol[..., 1:], hsol[..., -1:]], dim=-1)
        self.f2 = shrink * torch.cat([hsol[..., :-1, :] - hsol[..., 1:, :], hsol[..., -1:, :]], dim=-2)
        x = (2 * c * y + self.RHO * (y - hsol)) / (2 * c + 2 * d + self.RHO)
        return self.ir - x


GUIDANCE = {"weighted": ProximalGuidance, "ddfm": DdfmGuidance}


def make_guidance(sources: torch.Tensor, config: GuidanceConfig, noise_sigma: float | None = None):
    """The guidance object of config.mode for sources (K,1,H,W) in [−1,1] (noise_sigma: see ProximalGuidance)."""
    return GUIDANCE[config.mode](sources, config, noise_sigma)

