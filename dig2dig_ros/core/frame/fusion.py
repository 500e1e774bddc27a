"""One fused frame from K ≥ 2 source images: colour split, working size, a method's stages, and the colour merge.

`Fuser` loads its prior once and is then called per frame. The frame is a short sequence of stages
(stages.py): prepare → DIG weights → weights to the solve size → solve → detail → (stabilise, video mode) →
compose. Each method is an object that says which of them it runs (:data:`METHODS`): fusion (DIG and the
sampler) runs at the working size; `dig-blend` solves its closed-form blend at `fullres.solve_side` under the DIG
weights brought up along the sources' edges, and the fused luminance is rebuilt at the input size from the
sources' own detail (fullres.py), so the published frame has the input resolution. `FusionResult` carries the
fused image, the final DIG weight maps at the input size, and the per-update maps and cumulative DIG at the
working size. `Fuser.profile`, when set to a dict, collects each stage's seconds by name.

Methods: `dig` (the sampler with DIG weights), `static` (the sampler with W = 1/K), `ddfm` (DDFM's EM guidance
with W = ½: the paper's fixed-guidance baseline), `dig-blend` (the closed-form minimiser of the guidance energy
under DIG weights measured by one batched prior call at `dig.blend_probe_t`: no sampling), and the classical
methods.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from dig2dig_ros.core.config import FusionConfig
from dig2dig_ros.core.device import resolve_device
from dig2dig_ros.core.diffusion.dig import DigRecord
from dig2dig_ros.core.diffusion.priors import Prior, load_prior
from dig2dig_ros.core.diffusion.schedule import NUM_TRAIN_TIMESTEPS
from dig2dig_ros.core.diffusion.schedule import timesteps as make_timesteps
from dig2dig_ros.core.frame import fullres, imaging, stages
from dig2dig_ros.core.frame.stages import FusionCancelled, Prepared, Solved, StageTimer, WarmStart, Working

__all__ = ["METHODS", "Fuser", "FusionCancelled", "FusionError", "FusionResult", "Prepared", "WarmStart"]


class FusionError(ValueError):
    """A fusion request that cannot be served (bad sources, unknown method); the message says why."""


@dataclass
class FusionResult:
    """The fused frame and what DIG measured on the way."""

    fused: np.ndarray  # (H,W) gray or (H,W,3) BGR, uint8, the size of the inputs (empty until composed)
    luminance: np.ndarray  # (H,W) float32 [0,1]
    weights: np.ndarray | None  # (K,H,W) float32 final weights in [0,1], None for classical methods
    weight_history: list[tuple[int, int, np.ndarray]] = field(default_factory=list)  # (step, t, (K,h,w))
    gain_history: list[tuple[int, int, np.ndarray]] = field(default_factory=list)  # (step, t, DIG (K,h,w))
    cumulative_dig: np.ndarray | None = None  # (K,h,w) at the working size
    seconds: float = 0.0
    prior_calls: int = 0
    sample: torch.Tensor | None = None  # (1,C,H',W') the sampler's final sample (padded working size)
    gain: torch.Tensor | None = None  # (K,1,H',W') dig-blend: the DIG gain the weights came from (padded)
    fit: fullres.WeightFit | None = None  # dig-blend, until the detail: the working-size fit of its weights


def _result(solved: Solved, working: Working | None = None, history: list[DigRecord] = (),
            cumulative: torch.Tensor | None = None, prior_calls: int = 0, sample: torch.Tensor | None = None,
            gain: torch.Tensor | None = None) -> FusionResult:
    """A FusionResult, not yet composed, from a solved luminance and what the working-size stages measured."""
    crop = working.crop if working is not None else None
    return FusionResult(
        fused=np.empty(0, np.uint8), luminance=solved.luminance, weights=solved.weights,
        weight_history=[(r.step, r.timestep, crop(r.weights)) for r in history],
        gain_history=[(r.step, r.timestep, crop(r.gain)) for r in history],
        cumulative_dig=None if cumulative is None else crop(cumulative),
        prior_calls=prior_calls, sample=sample, gain=gain)


class BlendMethod:
    """dig-blend: DIG weights from one prior call, the closed-form blend under them, then the detail."""

    stages = ("dig_weights", "to_solve_size", "solve", "detail")

    def run(self, fuser: Fuser, prep: Prepared, timer: StageTimer, warm: WarmStart | None) -> FusionResult:
        """The fused luminance and weights at the input size."""
        return with_detail(fuser, prep, timer, self.before_detail(fuser, prep, timer, warm))

    def before_detail(self, fuser: Fuser, prep: Prepared, timer: StageTimer, warm: WarmStart | None) -> FusionResult:
        """The stages up to the detail: the blend's luminance and weights at the size it was solved at."""
        return with_solve(fuser, timer, *self.before_solve(fuser, prep, timer, warm))

    def before_solve(self, fuser: Fuser, prep: Prepared, timer: StageTimer, warm: WarmStart | None
                     ) -> tuple[stages.SolveGrid, FusionResult]:
        """The stages up to the blend's solve: the grid it is solved on, and the result without its luminance
        and weights (:func:`with_solve` adds them)."""
        cfg = fuser.config
        working = timer("prepare", stages.to_working, prep.small, prep.valid_small, fuser.prior, fuser.device)
        measured = timer("dig_weights", stages.dig_weights, fuser.prior, working, cfg, fuser.blend_probe,
                         fuser.generator(), warm)
        grid = timer("to_solve_size", stages.to_solve_size, prep, working, measured.weights, cfg.fullres,
                     fuser.device)
        w = measured.weighting
        unsolved = Solved(np.empty(0, np.float32), np.empty(0, np.float32))
        return grid, _result(unsolved, working, w.history, w.cumulative, measured.prior_calls, gain=w.gain)

    def at_working_size(self, fuser: Fuser, working: Working, small: np.ndarray, timer: StageTimer,
                        warm: WarmStart | None) -> FusionResult:
        """The blend solved on the working grid itself, no flattening and no detail."""
        cfg = fuser.config
        measured = timer("dig_weights", stages.dig_weights, fuser.prior, working, cfg, fuser.blend_probe,
                         fuser.generator(), warm)
        grid = timer("to_solve_size", stages.working_grid, working, measured.weights, 1.0)
        solved = timer("solve", stages.solve, grid, cfg.guidance, cfg.output_range)
        w = measured.weighting
        return _result(solved, working, w.history, w.cumulative, measured.prior_calls, gain=w.gain)


class SamplerMethod:
    """dig, static, ddfm: the guided sampler at the working size (DIG weights measured between its steps), then the
    detail."""

    stages = ("sample", "detail")

    def run(self, fuser: Fuser, prep: Prepared, timer: StageTimer, warm: WarmStart | None) -> FusionResult:
        """The fused luminance and weights at the input size."""
        return with_detail(fuser, prep, timer, self.before_detail(fuser, prep, timer, warm))

    def before_detail(self, fuser: Fuser, prep: Prepared, timer: StageTimer, warm: WarmStart | None) -> FusionResult:
        """The stages up to the detail: the sampler's luminance and weights at the working size."""
        working = timer("prepare", stages.to_working, prep.small, prep.valid_small, fuser.prior, fuser.device)
        return self.at_working_size(fuser, working, prep.small, timer, warm)

    def at_working_size(self, fuser: Fuser, working: Working, small: np.ndarray, timer: StageTimer,
                        warm: WarmStart | None) -> FusionResult:
        """The sampler's output at the working size."""
        out = timer("sample", stages.sample, fuser.prior, working, small, fuser.timesteps, fuser.config,
                    fuser.generator(), warm, timer.should_stop)
        return _result(out.solved, working, out.history, out.cumulative, out.prior_calls, sample=out.sample)


class ClassicalMethod:
    """average, max, laplacian, gff: their rule on the sources at the input size (no prior, no weights)."""

    stages = ("solve",)

    def run(self, fuser: Fuser, prep: Prepared, timer: StageTimer, warm: WarmStart | None) -> FusionResult:
        """The fused luminance at the input size."""
        return FusionResult(fused=np.empty(0, np.uint8), weights=None,
                            luminance=timer("solve", stages.classical, prep.sources, fuser.config.method))


def with_solve(fuser: Fuser, timer: StageTimer, grid: stages.SolveGrid, out: FusionResult) -> FusionResult:
    """``out`` (BlendMethod.before_solve's) with the blend's luminance and weights solved on ``grid``."""
    solved = timer("solve", stages.solve, grid, fuser.config.guidance, fuser.config.output_range)
    out.luminance, out.weights, out.fit = solved.luminance, solved.weights, solved.fit
    return out


def with_detail(fuser: Fuser, prep: Prepared, timer: StageTimer, out: FusionResult) -> FusionResult:
    """``out`` (a method's ``before_detail``) with its luminance and weights brought to the input size
    (stages.detail)."""
    full = timer("detail", stages.detail, Solved(out.luminance, out.weights, out.fit), prep, fuser.config.fullres)
    out.luminance, out.weights, out.fit = full.luminance, full.weights, None
    return out


def _mask_at(valid: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A validity mask (H',W') (nonzero where the source has data) as float32 0/1 at ``size``."""
    if valid.shape[:2] == tuple(size):
        return np.greater(valid, 0.5).astype(np.float32)
    return (imaging.resize(np.asarray(valid, np.float32), size) > 0.5).astype(np.float32)


def _fill_holes(sources: np.ndarray, masks: np.ndarray, planes: list[np.ndarray | None]) -> list[np.ndarray | None]:
    """Where a source has no data (masks (K,H,W) 0), its luminance in sources (K,H,W) becomes the mean of the
    sources that have (in place; unchanged where none has). Returns ``planes`` with None for every source
    filled in (its luminance is no longer n/255 of an 8-bit plane)."""
    holes = [np.flatnonzero(m == 0) for m in masks]  # (n_k,) flat indices: usually a border, or nothing
    if not any(h.size for h in holes):
        return planes
    covered = imaging.sum_planes(masks)  # (H,W)
    planes = list(planes)
    for k, idx in enumerate(holes):
        if not idx.size:
            continue
        total = sources[0].flat[idx] * masks[0].flat[idx]  # (n_k,) Σ_j c_j·m_j, in the order of j
        for c, m in zip(sources[1:], masks[1:], strict=True):
            total += c.flat[idx] * m.flat[idx]
        cover = covered.flat[idx]
        fill = total / np.maximum(cover, np.float32(1))  # mean of the sources with data
        sources[k].flat[idx] = np.where(cover > 0, fill, sources[k].flat[idx])
        planes[k] = None
    return planes


def _methods() -> dict[str, BlendMethod | SamplerMethod | ClassicalMethod]:
    from dig2dig_ros.core.frame.classical import CLASSICAL_METHODS

    sampler = SamplerMethod()
    return {"dig": sampler, "static": sampler, "ddfm": sampler, "dig-blend": BlendMethod(),
            **{name: ClassicalMethod() for name in CLASSICAL_METHODS}}


METHODS = _methods()  # method name → the object that runs its stages


class Fuser:
    """Fuses source images with one prior and one configuration; reusable across frames.

    ``profile``: None (default), or a dict that every frame adds its stages' seconds to, by name (stages.STAGES).
    """

    def __init__(self, config: FusionConfig, prior: Prior | str = "bundled", device: str = "auto") -> None:
        self.config = config.validate()
        self.device = resolve_device(device)
        self.profile: dict[str, float] | None = None
        self.method = METHODS.get(config.method)
        if self.method is None:
            names = ", ".join(["dig", "static", "ddfm", "dig-blend",
                               *sorted(n for n, m in METHODS.items() if isinstance(m, ClassicalMethod))])
            raise FusionError(f"unknown method {config.method!r}; available: {names}")
        if isinstance(self.method, ClassicalMethod):
            self.prior, self.timesteps, self.blend_probe = None, [], 0
        else:
            self.prior = load_prior(prior, self.device) if isinstance(prior, str) else prior.to(self.device)
            num_train = len(self.prior.alphas_cumprod)  # a diffusers prior may not have 1000 steps
            self.timesteps = [int(t) for t in make_timesteps(config.sampler.steps, config.sampler.spacing, num_train)]
            # dig-blend's probe: dig.blend_probe_t of a 1000-step schedule on this prior's (exact for 1000 steps)
            self.blend_probe = round(config.dig.blend_probe_t * (num_train - 1) / (NUM_TRAIN_TIMESTEPS - 1))

    @property
    def stages(self) -> tuple[str, ...]:
        """The stages one frame runs, in order (video mode adds ``stabilise`` before ``compose``)."""
        return ("prepare", *(("noise",) if self.prior is not None else ()), *self.method.stages, "compose")

    def timer(self, should_stop: Callable[[], bool] | None = None) -> StageTimer:
        """A StageTimer with ``should_stop`` that adds to :attr:`profile` (when set)."""
        return StageTimer(should_stop, self.profile)

    def generator(self) -> torch.Generator:
        """The frame's random generator (initial noise, DIG probes), seeded with sampler.seed."""
        return torch.Generator(self.device).manual_seed(self.config.sampler.seed)

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
        """Fuse sources already prepared by :meth:`prepare`: the method's stages, then the colour merge."""
        start = time.perf_counter()
        result = self.fuse_input_size(prep, should_stop, warm)
        result.fused = self.compose(prep, result.luminance, result.weights)
        result.seconds = time.perf_counter() - start
        return result

    def fuse_input_size(self, prep: Prepared, should_stop: Callable[[], bool] | None = None,
                        warm: WarmStart | None = None) -> FusionResult:
        """The method's stages: the fused luminance and weights at the input size, not yet composed."""
        return self.method.run(self, prep, self.timer(should_stop), warm)

    def blends_in_step(self, prep: Prepared) -> bool:
        """Whether dig-blend solves its blend at ``prep.solve`` after bringing its weights up, not on the working
        grid: wherever the input is larger than the working size."""
        return isinstance(self.method, BlendMethod) and prep.larger_than_working

    def noise_factor(self, prep: Prepared) -> float:
        """dig-blend: the factor on its DIG temperature for these sources' noise (fullres.noise_factor; 1: clean or
        no estimate), wherever it solves its blend."""
        return stages.noise_factor(prep, self.config.fullres)

    def compose(self, prep: Prepared, luminance: np.ndarray, weights: np.ndarray | None) -> np.ndarray:
        """The published frame (uint8, gray or BGR) from a fused luminance (H,W) in [0,1] and the sources' colour."""
        return self.timer()("compose", lambda: imaging.merge_luma(luminance, self._chroma(prep.chromas, weights)))

    def prepare(self, images: list[np.ndarray], valid: list[np.ndarray | None] | None = None) -> Prepared:
        """The sources' luminance at the input, working and solve sizes, their noise, chroma and validity masks.

        Where a source has no data its luminance is filled with the mean of the sources that have, so that no
        method (classical ones included) fuses the blank in.
        """
        if len(images) < 2:
            raise FusionError(f"need at least two source images, got {len(images)}")
        if valid is not None and len(valid) != len(images):
            raise FusionError(f"got {len(valid)} validity masks for {len(images)} sources")
        timer = self.timer()
        prep, planes = timer("prepare", self._split, images, valid)
        if self.prior is not None and (prep.larger_than_working or isinstance(self.method, BlendMethod)):
            # the solve size, the detail's shrinkage and dig-blend's flatter weights on noisy sources need it
            prep.noise = timer("noise", lambda: [imaging.noise_sigma(y) if n is None else imaging.noise_sigma_8bit(n)
                                                 for y, n in zip(prep.sources, planes, strict=True)])
        if isinstance(self.method, BlendMethod):
            prep.solve = timer("prepare", self._solve_sources, prep)
        return prep

    def _split(self, images: list[np.ndarray], valid: list[np.ndarray | None] | None
               ) -> tuple[Prepared, list[np.ndarray | None]]:
        """Luminance, chroma and masks at the input size, the luminance and masks at the working size; and per
        source the 8-bit plane its luminance is n/255 of, or None (imaging.split_luma_8bit: for its noise)."""
        size = imaging.common_size(images, self.config.resize)
        sources = np.empty((len(images), *size), np.float32)  # (K,H,W), each luminance written in place
        split = [imaging.split_luma_8bit(imaging.resize(img, size), out=y)
                 for img, y in zip(images, sources, strict=True)]
        chromas, planes = [c for _, c, _ in split], [n for _, _, n in split]
        masks = None
        if valid is not None and any(v is not None for v in valid):
            masks = np.stack([np.ones(size, np.float32) if v is None else _mask_at(v, size) for v in valid])  # (K,H,W)
            planes = _fill_holes(sources, masks, planes)
        work = imaging.working_size(size, self.config.max_side)
        small = imaging.resize_planes(sources, work)  # (K,h,w)
        masks_small = None if masks is None else np.stack([imaging.resize(m, work) for m in masks])
        return Prepared(sources, small, small, None, chromas, masks, masks_small), planes

    def _solve_sources(self, prep: Prepared) -> np.ndarray:
        """dig-blend: the sources at the size it solves its blend at (fullres.solve_size; ``prep.small`` if that)."""
        if prep.noise is None:
            return prep.small
        cfg = self.config.fullres
        side = fullres.solve_size(prep.size, prep.small.shape[1:], cfg.solve_side, max(prep.noise), cfg.solve_noise)
        if side == prep.small.shape[1:]:
            return prep.small
        return prep.sources if side == prep.size else imaging.resize_planes(prep.sources, side)

    def blend(self, sources: np.ndarray, weights: np.ndarray) -> np.ndarray:
        """The closed-form blend y* (h,w) in [0,1] of sources (K,h,w) in [0,1] under weights (K,h,w)."""
        grid = stages.SolveGrid(torch.from_numpy(sources).to(self.device).unsqueeze(1) * 2 - 1,
                                torch.from_numpy(weights).to(self.device).unsqueeze(1), sources.shape[1:], clamp=False)
        return stages.solve(grid, self.config.guidance, self.config.output_range).luminance

    def fuse_luminance(self, y: np.ndarray, valid: np.ndarray | None = None,
                       should_stop: Callable[[], bool] | None = None, warm: WarmStart | None = None) -> FusionResult:
        """Fuse luminance planes (K,h,w) in [0,1] at their size; returns luminance, weights and DIG history there.

        dig-blend solves its blend on the working grid (no noise flattening); classical methods return weights
        None.
        """
        timer = self.timer(should_stop)
        if self.prior is None:
            return self.method.run(self, Prepared(y, y, y, None, [None] * len(y), None, None), timer, warm)
        working = timer("prepare", stages.to_working, y, valid, self.prior, self.device)
        return self.method.at_working_size(self, working, y, timer, warm)

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
