"""One fused frame from K ≥ 2 source images: colour split, working size, sampling, and the full-resolution step.

`Fuser` loads its prior once and is then called per frame. Fusion (DIG and the sampler) runs at the working
size; `dig-blend` then solves its closed-form blend again at `fullres.solve_side` under the DIG weights brought
up along the sources' edges, and the fused luminance is rebuilt at the input size from the sources' own detail
(fullres.py), so the published frame has the input resolution. `FusionResult` carries the fused image, the
final DIG weight maps at the input size, and the per-update maps and cumulative DIG at the working size.

Methods: `dig` (the sampler with DIG weights), `static` (the sampler with W = 1/K), `ddfm` (DDFM's EM guidance
with W = ½: the paper's fixed-guidance baseline), `dig-blend` (the closed-form minimiser of the guidance energy
under DIG weights measured by one batched prior call at `dig.blend_probe_t`: no sampling), and the classical
methods.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from dig2dig_ros.core import fullres, imaging
from dig2dig_ros.core.config import FusionConfig
from dig2dig_ros.core.device import resolve_device
from dig2dig_ros.core.dig import DigWeighting, mask_weights
from dig2dig_ros.core.guidance import guidance_target, make_guidance
from dig2dig_ros.core.priors import Prior, load_prior
from dig2dig_ros.core.sampler import SamplingCancelled, make_weighting, noise_to, sample
from dig2dig_ros.core.schedule import NUM_TRAIN_TIMESTEPS, alpha_bar
from dig2dig_ros.core.schedule import timesteps as make_timesteps


class FusionError(ValueError):
    """A fusion request that cannot be served (bad sources, unknown method); the message says why."""


class FusionCancelled(RuntimeError):
    """The caller's ``should_stop`` stopped a fusion between two sampler steps or two of dig-blend's stages."""


def _stop_point(should_stop: Callable[[], bool] | None, before: str) -> None:
    """Raise FusionCancelled if ``should_stop`` says so; ``before`` names the stage that would run next."""
    if should_stop is not None and should_stop():
        raise FusionCancelled(f"stopped before {before}")


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
    sample: torch.Tensor | None = None  # (1,C,H',W') the sampler's final sample (padded working size)
    gain: torch.Tensor | None = None  # (K,1,H',W') dig-blend: the DIG gain the weights came from (padded)


@dataclass
class Prepared:
    """The sources as fusion takes them."""

    sources: np.ndarray  # (K,H,W) float32 luminance in [0,1] at the common (input) size
    small: np.ndarray  # (K,h,w) the same at the working size
    solve: np.ndarray  # (K,h2,w2) the same at the size dig-blend solves its blend at (``small`` if that is it)
    noise: list[float] | None  # per source, imaging.noise_sigma at the input size (None: not needed: no prior, or
    # a sampler method with the input at the working size)
    chromas: list[np.ndarray | None]  # per source (H,W,2) Cr,Cb or None
    valid: np.ndarray | None  # (K,H,W) float32 1 where a source has data, or None (all valid)
    valid_small: np.ndarray | None  # (K,h,w)

    @property
    def size(self) -> tuple[int, int]:
        """The input (H, W)."""
        return self.sources.shape[1], self.sources.shape[2]


@dataclass
class WarmStart:
    """What a video frame takes from the previous one.

    The sampler starts from ``sample`` noised to timesteps[start]; dig-blend takes the DIG gain from ``gain``
    instead of measuring it (``measure`` False), or measures it and mixes in ``momentum`` of ``gain``.
    """

    sample: torch.Tensor | None = None  # (1,C,H',W') a previous frame's final sample at the padded working size
    start: int = 0  # the sampler step to start at
    gain: torch.Tensor | None = None  # (K,1,H',W') a previous frame's DIG gain (dig-blend)
    measure: bool = True  # dig-blend: measure DIG on this frame (one prior call)
    momentum: float = 0.0  # dig-blend: share of ``gain`` in a new measurement


def _classical_methods() -> dict:
    from dig2dig_ros.core.classical import CLASSICAL_METHODS

    return CLASSICAL_METHODS


class Fuser:
    """Fuses source images with one prior and one configuration; reusable across frames."""

    def __init__(self, config: FusionConfig, prior: Prior | str = "bundled", device: str = "auto") -> None:
        self.config = config.validate()
        self.device = resolve_device(device)
        if config.method in ("dig", "static", "ddfm", "dig-blend"):
            self.prior = load_prior(prior, self.device) if isinstance(prior, str) else prior.to(self.device)
            num_train = len(self.prior.alphas_cumprod)  # a diffusers prior may not have 1000 steps
            self.timesteps = [int(t) for t in make_timesteps(config.sampler.steps, config.sampler.spacing, num_train)]
            # dig-blend's probe: dig.blend_probe_t of a 1000-step schedule on this prior's (exact for 1000 steps)
            self.blend_probe = round(config.dig.blend_probe_t * (num_train - 1) / (NUM_TRAIN_TIMESTEPS - 1))
        elif config.method in _classical_methods():
            self.prior, self.timesteps, self.blend_probe = None, [], 0
        else:
            names = ", ".join(["dig", "static", "ddfm", "dig-blend", *sorted(_classical_methods())])
            raise FusionError(f"unknown method {config.method!r}; available: {names}")

    def __call__(self, images: list[np.ndarray], valid: list[np.ndarray | None] | None = None,
                 should_stop: Callable[[], bool] | None = None, warm: WarmStart | None = None) -> FusionResult:
        """Fuse images ((H,W) gray or (H,W,3) BGR; uint8, uint16 or float in [0,1]); VIF: [infrared, visible].

        ``valid``: per source None or an (H,W) mask, nonzero where that source has data (e.g. a registered
        infrared frame's field of view); elsewhere its weight is 0. ``should_stop`` is checked between sampler
        steps and between dig-blend's stages (FusionCancelled). ``warm`` starts the sampler part-way from a
        previous frame's sample.
        """
        start = time.perf_counter()
        result = self.fuse_prepared(self.prepare(images, valid), should_stop, warm)
        result.seconds = time.perf_counter() - start
        return result

    def fuse_prepared(self, prep: Prepared, should_stop: Callable[[], bool] | None = None,
                      warm: WarmStart | None = None) -> FusionResult:
        """Fuse sources already prepared by :meth:`prepare`: fusion at the working size, then the input size."""
        start = time.perf_counter()
        result = self.fuse_input_size(prep, should_stop, warm)
        result.fused = self.compose(prep, result.luminance, result.weights)
        result.seconds = time.perf_counter() - start
        return result

    def fuse_input_size(self, prep: Prepared, should_stop: Callable[[], bool] | None = None,
                        warm: WarmStart | None = None) -> FusionResult:
        """The fused luminance and weights at the input size, not yet composed into the published frame."""
        if self.prior is None:  # classical methods run at the input size
            return FusionResult(fused=np.empty(0), luminance=self._classical(prep.sources), weights=None)
        in_step = self.blends_in_step(prep)
        result = self.fuse_luminance(prep.small, prep.valid_small, should_stop, warm, solve=not in_step,
                                     flatten=1.0 if in_step else self.noise_factor(prep))
        return self.to_input_size(prep, result, should_stop)

    def blends_in_step(self, prep: Prepared) -> bool:
        """Whether dig-blend solves its blend in the full-resolution step (:meth:`to_input_size`), not at the
        working size: wherever the input is larger than the working size."""
        return self.config.method == "dig-blend" and prep.small.shape != prep.sources.shape

    def noise_factor(self, prep: Prepared) -> float:
        """dig-blend: the factor on its DIG temperature for these sources' noise (fullres.noise_factor; 1: clean or
        no estimate), wherever it solves its blend."""
        cfg = self.config.fullres
        return fullres.noise_factor(prep.noise, cfg.solve_noise, cfg.noise_exponent)

    def to_input_size(self, prep: Prepared, result: FusionResult,
                      should_stop: Callable[[], bool] | None = None) -> FusionResult:
        """The full-resolution step: ``result`` of :meth:`fuse_luminance` at the working size → the input size.

        dig-blend, when ``result`` stops at the weights, solves its blend here: at the solve size, the weights
        flattened on noisy sources (:meth:`noise_factor`) and brought up to that size along the sources' edges;
        then the band above comes from the sources (fullres.reconstruct). ``should_stop`` is checked before the
        blend and before the detail (FusionCancelled).
        """
        fused, weights = result.luminance, result.weights  # (h,w), (K,h,w)
        cfg = self.config.fullres
        if fused.size == 0:  # dig-blend stopped at the weights
            _stop_point(should_stop, "the blend")
            weights = fullres.flatten_weights(weights, self.noise_factor(prep))
            if prep.solve is not prep.small:
                weights = fullres.upsample_weights(weights, prep.small, prep.solve, cfg)  # (K,h2,w2)
            fused = self.blend(prep.solve, weights)
        _stop_point(should_stop, "the full-resolution step")
        result.luminance, result.weights = fullres.reconstruct(fused, weights, prep.sources, cfg, prep.solve,
                                                               prep.noise)
        if prep.valid is not None:
            result.weights = mask_weights(torch.from_numpy(result.weights[:, None]),
                                          torch.from_numpy(prep.valid[:, None])).numpy()[:, 0]
        return result

    def compose(self, prep: Prepared, luminance: np.ndarray, weights: np.ndarray | None) -> np.ndarray:
        """The published frame (uint8, gray or BGR) from a fused luminance (H,W) in [0,1] and the sources' colour."""
        return imaging.merge_luma(luminance, self._chroma(prep.chromas, weights))

    def prepare(self, images: list[np.ndarray], valid: list[np.ndarray | None] | None = None) -> Prepared:
        """The sources' luminance at the input and working sizes, their chroma and validity masks.

        Where a source has no data its luminance is filled with the mean of the sources that have, so that no
        method (classical ones included) fuses the blank in.
        """
        if len(images) < 2:
            raise FusionError(f"need at least two source images, got {len(images)}")
        if valid is not None and len(valid) != len(images):
            raise FusionError(f"got {len(valid)} validity masks for {len(images)} sources")
        size = imaging.common_size(images, self.config.resize)
        lumas, chromas = zip(*(imaging.split_luma(imaging.resize(img, size)) for img in images), strict=True)
        sources = np.stack(lumas)  # (K,H,W) float32
        masks = None
        if valid is not None and any(v is not None for v in valid):
            masks = np.stack([np.ones(size, np.float32) if v is None else
                              (imaging.resize(np.asarray(v, np.float32), size) > 0.5).astype(np.float32)
                              for v in valid])  # (K,H,W)
            covered = masks.sum(0)
            fill = (sources * masks).sum(0) / np.maximum(covered, 1)  # mean of the sources with data
            sources = np.where(masks > 0, sources, np.where(covered > 0, fill, sources)).astype(np.float32)
        work = imaging.working_size(size, self.config.max_side)
        small = np.stack([imaging.resize(y, work) for y in sources])  # (K,h,w)
        solve, noise = small, None
        if self.prior is not None and (work != size or self.config.method == "dig-blend"):
            noise = [imaging.noise_sigma(y) for y in sources]  # the solve size, the detail's shrinkage and
            # dig-blend's flatter weights on noisy sources (at any size) need it
        if self.config.method == "dig-blend" and noise is not None:
            cfg = self.config.fullres
            side = fullres.solve_size(size, work, cfg.solve_side, max(noise), cfg.solve_noise)
            if side != work:
                solve = sources if side == size else np.stack([imaging.resize(y, side) for y in sources])
        masks_small = None if masks is None else np.stack([imaging.resize(m, work) for m in masks])
        return Prepared(sources, small, solve, noise, list(chromas), masks, masks_small)

    def _blend_target(self, sources: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """dig-blend's y* (1,1,h,w) for sources and weights (K,1,h,w): the guidance energy with the blend's own μ
        and gradient, and its refits."""
        cfg = self.config.guidance
        energy = replace(cfg, grad_weight=cfg.blend_grad_weight, gradient=cfg.blend_gradient)
        return guidance_target(sources, weights, energy, cfg.blend_refits)

    def blend(self, sources: np.ndarray, weights: np.ndarray) -> np.ndarray:
        """The closed-form blend y* (h,w) in [0,1] of sources (K,h,w) in [0,1] under weights (K,h,w)."""
        s = torch.from_numpy(sources).to(self.device).unsqueeze(1) * 2 - 1  # (K,1,h,w) in [−1,1]
        w = torch.from_numpy(weights).to(self.device).unsqueeze(1)
        y = self._blend_target(s, w)[0, 0].cpu().numpy()
        return imaging.to_output(y, self.config.output_range).astype(np.float32)

    def _classical(self, sources: np.ndarray) -> np.ndarray:
        return np.clip(_classical_methods()[self.config.method](list(sources)), 0, 1).astype(np.float32)

    def fuse_luminance(self, y: np.ndarray, valid: np.ndarray | None = None,
                       should_stop: Callable[[], bool] | None = None, warm: WarmStart | None = None,
                       solve: bool = True, flatten: float = 1.0) -> FusionResult:
        """Fuse luminance planes (K,h,w) in [0,1] at their size; returns luminance, weights and DIG history there.

        Classical methods return weights None (their result at this size is in ``luminance``). ``solve`` False:
        dig-blend stops at the weights (the caller solves the blend at another size; ``luminance`` is empty).
        ``flatten``: dig-blend solving here multiplies its DIG temperature by this first (:meth:`noise_factor`);
        the weights returned are those it solved with.
        """
        cfg = self.config
        if self.prior is None:
            return FusionResult(fused=np.empty(0), luminance=self._classical(y), weights=None)
        padded, (h, w) = imaging.pad_to_multiple(np.moveaxis(y, 0, -1), self.prior.multiple)  # (H',W',K)
        sources = torch.from_numpy(np.moveaxis(padded, -1, 0).copy()).to(self.device)  # (K,H',W')
        sources = (sources * 2 - 1).unsqueeze(1).float()  # (K,1,H',W') in [−1,1]
        valid_t = None
        if valid is not None:
            vp, _ = imaging.pad_to_multiple(np.moveaxis(valid, 0, -1), self.prior.multiple)
            valid_t = (torch.from_numpy(np.moveaxis(vp, -1, 0).copy()).to(self.device) > 0.5).float().unsqueeze(1)
        self.prior.check_size(*sources.shape[-2:])
        generator = torch.Generator(self.device).manual_seed(cfg.sampler.seed)
        if cfg.method == "dig-blend":
            out = self._blend(sources, generator, valid_t, warm, solve, flatten, should_stop)
        else:
            noise = max(imaging.noise_sigma(c) for c in y)  # the sources' noise σ, from the host copy
            out = self._sample(sources, generator, valid_t, should_stop, warm, noise)
        lum = np.empty(0, np.float32) if out["luminance"] is None else imaging.to_output(
            out["luminance"][0, 0, :h, :w].cpu().numpy(), cfg.output_range)
        history = out["history"]
        return FusionResult(
            fused=np.empty(0),
            luminance=lum.astype(np.float32),
            weights=out["weights"][:, 0, :h, :w].cpu().numpy().astype(np.float32),
            weight_history=[(r.step, r.timestep, r.weights[:, 0, :h, :w].cpu().numpy()) for r in history],
            gain_history=[(r.step, r.timestep, r.gain[:, 0, :h, :w].cpu().numpy()) for r in history],
            cumulative_dig=out["cumulative"][:, 0, :h, :w].cpu().numpy(),
            prior_calls=out["calls"],
            sample=out.get("sample"),
            gain=out.get("gain"),
        )

    def _sample(self, sources: torch.Tensor, generator: torch.Generator, valid: torch.Tensor | None,
                should_stop: Callable[[], bool] | None, warm: WarmStart | None, noise: float) -> dict:
        cfg = self.config
        guidance_cfg = replace(cfg.guidance, mode="ddfm") if cfg.method == "ddfm" else cfg.guidance
        c, (h, w) = self.prior.channels, sources.shape[-2:]
        x = torch.randn((1, c, h, w), generator=generator, device=self.device, dtype=sources.dtype)
        start = 0
        if (warm is not None and warm.sample is not None and warm.sample.shape == x.shape
                and 0 < warm.start < len(self.timesteps)):
            start = warm.start
            ab = alpha_bar(self.prior.alphas_host, self.timesteps[start])
            x = noise_to(warm.sample.to(self.device, sources.dtype), ab, generator)
        weighting = make_weighting(self.prior, sources, self.timesteps, cfg.dig, cfg.method == "dig", generator, valid)
        if start > 0 and isinstance(weighting, DigWeighting):
            weighting.skip_to(start)
        try:
            guidance = make_guidance(sources, guidance_cfg, noise)
            out = sample(self.prior, x, self.timesteps, weighting, guidance, start=start, eta=cfg.sampler.eta,
                         generator=generator, should_stop=should_stop)
        except SamplingCancelled as exc:
            raise FusionCancelled(str(exc)) from exc
        return {"luminance": out.luminance, "weights": out.weights, "history": out.history,
                "cumulative": out.cumulative_dig, "calls": out.prior_calls, "sample": out.sample}

    def _blend(self, sources: torch.Tensor, generator: torch.Generator, valid: torch.Tensor | None,
               warm: WarmStart | None = None, solve: bool = True, flatten: float = 1.0,
               should_stop: Callable[[], bool] | None = None) -> dict:
        """DIG weights from probes at dig.blend_probe_t (one batched prior call), then y* under them flattened by
        ``flatten`` (when ``solve``); ``should_stop`` is checked before each.

        With a warm start carrying a gain of this size, that gain is reused (no prior call) or, when this frame
        measures, mixed with the new one.
        """
        cfg = self.config
        _stop_point(should_stop, "the DIG weights")
        weighting = DigWeighting(cfg.dig, [self.blend_probe], sources, self.prior.alphas_host, self.prior.channels,
                                 generator, valid)
        last = 0  # the one weight update, at the probe timestep
        carried = warm.gain if warm is not None and warm.gain is not None else None
        if carried is not None and carried.shape != sources.shape:
            carried = None
        calls = 0
        if carried is not None and not warm.measure:
            weights = weighting.set_gain(last, carried)
        else:
            probes = weighting.probes(last)
            with torch.no_grad():
                eps = self.prior(*probes) if probes is not None else None
            calls = int(probes is not None)
            weights = weighting.update(last, eps)
            if carried is not None and warm.momentum > 0:
                weights = weighting.set_gain(last, warm.momentum * carried + (1 - warm.momentum) * weighting.gain)
        y = None
        if solve:
            _stop_point(should_stop, "the blend")
            if flatten != 1.0:  # the same flattening as in the full-resolution step, on the host
                weights = torch.from_numpy(fullres.flatten_weights(weights.cpu().numpy(), flatten)).to(weights)
            y = self._blend_target(sources, weights).clamp(-1, 1)
        return {"luminance": y, "weights": weights, "history": weighting.history,
                "cumulative": weighting.cumulative, "calls": calls, "gain": weighting.gain}

    def _chroma(self, chromas: list[np.ndarray | None], weights: np.ndarray | None) -> np.ndarray | None:
        """VIF: the visible source's Cr,Cb (never a thermal palette's). MEF/MFF: the weight-averaged Cr,Cb."""
        if self.config.task == "vif":
            return chromas[1] if len(chromas) > 1 else None
        coloured = [(k, c) for k, c in enumerate(chromas) if c is not None]
        if not coloured:
            return None
        planes = np.stack([c.astype(np.float32) * np.float32(1 / 255) if c.dtype == np.uint8 else c
                           for _, c in coloured])  # (Kc,H,W,2) in [0,1]
        if weights is None:
            return planes.mean(0)
        w = np.stack([weights[k] for k, _ in coloured])[..., None]  # (Kc,H,W,1)
        w = w / np.maximum(w.sum(0, keepdims=True), 1e-12)
        return (w * planes).sum(0)
