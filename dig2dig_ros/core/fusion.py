"""One fused frame from K ≥ 2 source images: colour split, working size, padding, sampling, and back.

`Fuser` loads its prior once and is then called per frame; `FusionResult` carries the fused image, the final
DIG weight maps at the input size, and the per-update maps and cumulative DIG at the working size.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch

from dig2dig_ros.core import imaging
from dig2dig_ros.core.config import FusionConfig
from dig2dig_ros.core.device import resolve_device
from dig2dig_ros.core.priors import Prior, load_prior
from dig2dig_ros.core.sampler import sample_dig
from dig2dig_ros.core.schedule import timesteps as make_timesteps


class FusionError(ValueError):
    """A fusion request that cannot be served (bad sources, unknown method); the message says why."""


@dataclass
class FusionResult:
    """The fused frame and what DIG measured on the way."""

    fused: np.ndarray  # (H,W) gray or (H,W,3) BGR, uint8, the size of the inputs
    luminance: np.ndarray  # (H,W) float32 [0,1]
    weights: np.ndarray | None  # (K,H,W) float32 final weights in [0,1], None for classical methods
    weight_history: list[tuple[int, int, np.ndarray]] = field(default_factory=list)  # (step, t, (K,h,w))
    gain_history: list[tuple[int, int, np.ndarray]] = field(default_factory=list)  # (step, t, DIG (K,h,w))
    cumulative_dig: np.ndarray | None = None  # (K,h,w) at the working size
    seconds: float = 0.0
    prior_calls: int = 0


def _classical_methods() -> dict:
    from dig2dig_ros.core.classical import CLASSICAL_METHODS

    return CLASSICAL_METHODS


class Fuser:
    """Fuses source images with one prior and one configuration; reusable across frames."""

    def __init__(self, config: FusionConfig, prior: Prior | str = "bundled", device: str = "auto") -> None:
        self.config = config.validate()
        self.device = resolve_device(device)
        if config.method in ("dig", "static"):
            self.prior = load_prior(prior, self.device) if isinstance(prior, str) else prior.to(self.device)
            num_train = len(self.prior.alphas_cumprod)  # a diffusers prior may not have 1000 steps
            self.timesteps = [int(t) for t in make_timesteps(config.sampler.steps, config.sampler.spacing, num_train)]
        elif config.method in _classical_methods():
            self.prior, self.timesteps = None, []
        else:
            names = ", ".join(["dig", "static", *sorted(_classical_methods())])
            raise FusionError(f"unknown method {config.method!r}; available: {names}")

    def __call__(self, images: list[np.ndarray]) -> FusionResult:
        """Fuse images ((H,W) gray or (H,W,3) BGR; uint8, uint16 or float in [0,1]); VIF: [infrared, visible]."""
        start = time.perf_counter()
        y_work, size, chromas = self.prepare(images)
        result = self.fuse_luminance(y_work)
        y = imaging.resize(result.luminance, size)
        if result.weights is not None:
            result.weights = np.stack([imaging.resize(wk, size) for wk in result.weights])  # (K,H,W)
            result.weights /= np.maximum(result.weights.sum(0, keepdims=True), 1e-12)
        chroma = self._chroma(chromas, result.weights)
        result.luminance = y
        result.fused = imaging.to_uint8(imaging.merge_ycbcr(y, chroma))
        result.seconds = time.perf_counter() - start
        return result

    def prepare(self, images: list[np.ndarray]) -> tuple[np.ndarray, tuple[int, int], list[np.ndarray | None]]:
        """The sources' luminance at the working size (K,h,w) in [0,1], their common (H, W), and their chroma."""
        if len(images) < 2:
            raise FusionError(f"need at least two source images, got {len(images)}")
        size = imaging.common_size(images, self.config.resize)
        unit = [imaging.resize(imaging.to_unit(img), size) for img in images]
        lumas, chromas = zip(*(imaging.split_ycbcr(u) for u in unit), strict=True)
        work = imaging.working_size(size, self.config.max_side)
        return np.stack([imaging.resize(y, work) for y in lumas]), size, list(chromas)

    def fuse_luminance(self, y: np.ndarray) -> FusionResult:
        """Fuse luminance planes (K,h,w) in [0,1]; returns luminance, weights and DIG history at that size."""
        cfg = self.config
        if self.prior is None:
            fused = _classical_methods()[cfg.method](list(y))
            return FusionResult(fused=np.empty(0), luminance=np.clip(fused, 0, 1).astype(np.float32), weights=None)
        padded, (h, w) = imaging.pad_to_multiple(np.moveaxis(y, 0, -1), self.prior.multiple)  # (H',W',K)
        sources = torch.from_numpy(np.moveaxis(padded, -1, 0).copy()).to(self.device)  # (K,H',W')
        sources = (sources * 2 - 1).unsqueeze(1).float()  # (K,1,H',W') in [−1,1]
        generator = torch.Generator(self.device).manual_seed(cfg.sampler.seed)
        out = sample_dig(
            self.prior,
            sources,
            self.timesteps,
            cfg.dig,
            cfg.guidance,
            dynamic_weights=cfg.method == "dig",
            eta=cfg.sampler.eta,
            generator=generator,
        )
        lum = imaging.to_output(out.luminance[0, 0, :h, :w].cpu().numpy(), cfg.output_range)
        return FusionResult(
            fused=np.empty(0),
            luminance=lum.astype(np.float32),
            weights=out.weights[:, 0, :h, :w].cpu().numpy().astype(np.float32),
            weight_history=[(r.step, r.timestep, r.weights[:, 0, :h, :w].cpu().numpy()) for r in out.history],
            gain_history=[(r.step, r.timestep, r.gain[:, 0, :h, :w].cpu().numpy()) for r in out.history],
            cumulative_dig=out.cumulative_dig[:, 0, :h, :w].cpu().numpy(),
            prior_calls=out.prior_calls,
        )

    def _chroma(self, chromas: list[np.ndarray | None], weights: np.ndarray | None) -> np.ndarray | None:
        """VIF: the visible (first colour) source's Cr,Cb. MEF/MFF: the weight-averaged Cr,Cb of colour sources."""
        coloured = [(k, c) for k, c in enumerate(chromas) if c is not None]
        if not coloured:
            return None
        if self.config.task == "vif":
            return coloured[0][1]
        if weights is None:
            return np.mean([c for _, c in coloured], axis=0)
        w = np.stack([weights[k] for k, _ in coloured])[..., None]  # (Kc,H,W,1)
        w = w / np.maximum(w.sum(0, keepdims=True), 1e-12)
        return (w * np.stack([c for _, c in coloured])).sum(0)
