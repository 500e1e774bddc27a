"""The one interface every diffusion prior implements: (x_t, t) → ε̂, with its ᾱ schedule."""

from __future__ import annotations

import torch

from dig2dig_ros.core.diffusion.schedule import linear_alphas_cumprod


class PriorError(RuntimeError):
    """A prior could not be built or loaded (missing, corrupt or mismatched weights, unknown name)."""


class Prior(torch.nn.Module):
    """An ε-predicting denoiser on images in [−1, 1].

    Subclasses set ``channels`` (1 for luminance priors, 3 for RGB priors) and ``multiple`` (H and W given to
    ``forward`` must be multiples of it; the fusion pipeline reflect-pads to it), and implement ``forward``.
    ``alphas_cumprod`` (float64, (1000,)) is the schedule the prior was trained with.
    """

    channels: int = 1
    multiple: int = 1

    def __init__(self, alphas_cumprod: torch.Tensor | None = None) -> None:
        super().__init__()
        ac = linear_alphas_cumprod() if alphas_cumprod is None else alphas_cumprod.to(torch.float64)
        self.register_buffer("alphas_cumprod", ac, persistent=False)

    @property
    def alphas_host(self) -> torch.Tensor:
        """``alphas_cumprod`` as float64 on the CPU, copied once per prior: scalar ᾱ reads cost no device sync."""
        cached = self.__dict__.get("_alphas_host")
        if cached is None or cached.shape != self.alphas_cumprod.shape:
            cached = self.__dict__["_alphas_host"] = self.alphas_cumprod.detach().double().cpu()
        return cached

    def forward(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """ε̂ for x_t (B,C,H,W) at integer timesteps t (B,); returns (B,C,H,W) in x_t's dtype."""
        raise NotImplementedError

    def check_size(self, height: int, width: int) -> None:
        """Raise ValueError unless the size is a multiple of ``multiple``."""
        if height % self.multiple or width % self.multiple:
            raise ValueError(
                f"{type(self).__name__} needs height and width that are multiples of {self.multiple}, "
                f"got {height}x{width}"
            )
