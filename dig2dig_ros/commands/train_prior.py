"""``dig2dig-train-prior``: train the bundled luminance prior on every image found under some folders.

Random crops and flips of the luminance of every image (infrared and visible alike), x0 loss normalised per
noise level (EDM weighting: the target is the Wiener estimate's error divided by c_out), Adam with warmup and
cosine decay, an EMA of the weights, a progress bar with the loss. Deterministic for a seed on one thread.
Resumable: ``PATH.resume.safetensors`` holds weights, EMA, optimiser moments and the RNG state. Writes the
EMA weights to ``PATH`` (safetensors) and the network config to ``PATH`` with a ``.json`` suffix.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from dig2dig_ros.core.diffusion.priors.base import PriorError
from dig2dig_ros.core.diffusion.priors.bundled import BundledConfig, BundledPrior, fingerprint
from dig2dig_ros.core.diffusion.priors.wiener import WienerPrior
from dig2dig_ros.core.frame.imaging import IMAGE_SUFFIXES, read_image, resize, split_ycbcr, to_unit, working_size


@dataclass
class TrainSettings:
    """Training hyper-parameters (the command-line defaults)."""

    steps: int = 8000
    batch: int = 16
    crop: int = 128
    lr: float = 2e-4
    min_lr_ratio: float = 0.1  # cosine decay ends at lr · this
    warmup: int = 500
    ema: float = 0.999
    grad_clip: float = 1.0
    max_side: int = 640  # images are downscaled so the long side is at most this (the live working sizes)
    save_every: int = 500
    seed: int = 0
    threads: int = 1


def find_images(dirs: Sequence[str | Path]) -> list[Path]:
    """Every image file under the given folders (recursively), sorted."""
    found: set[Path] = set()
    for d in dirs:
        d = Path(d)
        if not d.is_dir():
            raise FileNotFoundError(f"no such folder: {d}")
        found.update(p for p in d.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    return sorted(found)


def read_list(path: str | Path) -> list[str]:
    """The relative paths listed in a split file (one a line; blank lines and ``#`` comments skipped)."""
    lines = Path(path).read_text().splitlines()
    return [s.strip() for s in lines if s.strip() and not s.lstrip().startswith("#")]


def is_listed(path: Path, entries: Sequence[str]) -> bool:
    """Whether ``path`` ends with one of the relative paths ``entries`` (whole path components)."""
    posix = "/" + path.resolve().as_posix()
    return any(posix.endswith("/" + e.strip("/")) for e in entries)


def read_luminance(path: str | Path, max_side: int | None = None) -> np.ndarray:
    """The luminance (BT.601 Y) of an image as float32 (H,W) in [−1, 1], area-downscaled to ``max_side``."""
    y, _ = split_ycbcr(to_unit(read_image(path)))  # (H,W) in [0,1]
    y = resize(y, working_size(y.shape, max_side or 0))
    return (y * 2.0 - 1.0).astype(np.float32)


def fit_wiener(images: Sequence[np.ndarray], crops: torch.Tensor) -> dict[str, float]:
    """Wiener model parameters for the data: mean and std of the pixels, α by grid search on x0 MSE."""
    pixels = np.concatenate([im.ravel() for im in images])
    mean, std = float(pixels.mean()), float(pixels.std())
    gen = torch.Generator().manual_seed(1)
    eps = torch.randn(crops.shape, generator=gen)  # (N,1,h,w)
    best: tuple[float, float] = (math.inf, 2.0)
    for alpha in np.arange(1.4, 3.61, 0.2):
        prior = WienerPrior(alpha=float(alpha), std=std, mean=mean)
        err = 0.0
        for t in (100, 300, 500, 700):
            ab = float(prior.alphas_cumprod[t])
            x_t = math.sqrt(ab) * crops + math.sqrt(1 - ab) * eps
            tt = torch.full((len(crops),), t)
            err += math.log(float(((prior.x0_estimate(x_t, tt) - crops) ** 2).mean()))
        best = min(best, (err, round(float(alpha), 2)))
    return {"alpha": best[1], "std": round(std, 4), "mean": round(mean, 4), "f0": 0.01}


class CropSampler:
    """Random square crops with random horizontal/vertical flips, drawn with one torch.Generator."""

    def __init__(self, images: Sequence[np.ndarray], crop: int, gen: torch.Generator) -> None:
        small = [i for i, im in enumerate(images) if min(im.shape) < crop]
        if small:
            raise ValueError(f"{len(small)} images are smaller than the {crop}px crop")
        self.images = [torch.from_numpy(im) for im in images]
        self.crop, self.gen = crop, gen

    def __call__(self, n: int) -> torch.Tensor:
        """n crops (n,1,crop,crop)."""
        out = []
        for i in torch.randint(len(self.images), (n,), generator=self.gen).tolist():
            im = self.images[i]  # (H,W)
            y = int(torch.randint(im.shape[0] - self.crop + 1, (1,), generator=self.gen))
            x = int(torch.randint(im.shape[1] - self.crop + 1, (1,), generator=self.gen))
            c = im[y : y + self.crop, x : x + self.crop]
            flips = torch.rand(2, generator=self.gen)
            if flips[0] < 0.5:
                c = c.flip(1)
            if flips[1] < 0.5:
                c = c.flip(0)
            out.append(c)
        return torch.stack(out)[:, None]  # (n,1,crop,crop)


def x0_loss(prior: BundledPrior, x0: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Mean squared error of the normalised x0 correction at random timesteps, for clean x0 (B,1,h,w)."""
    t = torch.randint(len(prior.alphas_cumprod), (x0.shape[0],), generator=gen)  # (B,)
    eps = torch.randn(x0.shape, generator=gen)  # (B,1,h,w)
    ab, _, _ = prior.scalings(t, x0.dtype)
    x_t = ab.sqrt() * x0 + (1 - ab).sqrt() * eps
    wiener_x0, c_out, raw = prior.x0_parts(x_t, t)
    return ((raw - (x0 - wiener_x0) / c_out) ** 2).mean()


def learning_rate(step: int, s: TrainSettings) -> float:
    """Linear warmup, then cosine decay to ``lr · min_lr_ratio`` at ``steps``."""
    if step < s.warmup:
        return s.lr * (step + 1) / s.warmup
    progress = min(1.0, (step - s.warmup) / max(1, s.steps - s.warmup))
    return s.lr * (s.min_lr_ratio + (1 - s.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def save_weights(ema: BundledPrior, cfg: BundledConfig, out: Path, meta: dict,
                 dtype: torch.dtype = torch.float32) -> None:
    """Write the EMA weights (safetensors, in ``dtype``) and the config JSON with the weights' sha256.

    The config's ε fingerprint is computed from the weights as stored (after any rounding to ``dtype``).
    """
    out.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to(dtype).contiguous() for k, v in ema.state_dict().items()}
    tmp = out.with_name(out.name + ".tmp")
    save_file(state, str(tmp))
    tmp.replace(out)
    stored = BundledPrior(cfg)
    stored.load_state_dict({k: v.float() for k, v in state.items()})
    cfg.weights_sha256 = hashlib.sha256(out.read_bytes()).hexdigest()
    cfg.meta = dict(meta, check=fingerprint(stored.eval()))
    out.with_suffix(".json").write_text(cfg.to_json() + "\n")


def _save_resume(path: Path, model: BundledPrior, ema: BundledPrior, opt: torch.optim.Optimizer,
                 gen: torch.Generator, step: int, cfg: BundledConfig) -> None:
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    tensors.update({f"ema.{k}": v for k, v in ema.state_dict().items()})
    state = opt.state_dict()
    for i, st in state["state"].items():
        tensors.update({f"opt.{i}.{k}": torch.as_tensor(v) for k, v in st.items()})
    tensors["rng"] = gen.get_state()
    meta = {"step": str(step), "config": cfg.to_json(), "param_groups": json.dumps(state["param_groups"])}
    tmp = path.with_name(path.name + ".tmp")
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp), metadata=meta)
    tmp.replace(path)


def _load_resume(path: Path, model: BundledPrior, ema: BundledPrior, opt: torch.optim.Optimizer,
                 gen: torch.Generator) -> int:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    tensors = load_file(str(path))
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    ema.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("ema.")})
    state: dict = {"state": {}, "param_groups": json.loads(meta["param_groups"])}
    for k, v in tensors.items():
        if k.startswith("opt."):
            _, i, name = k.split(".", 2)
            state["state"].setdefault(int(i), {})[name] = v
    opt.load_state_dict(state)
    gen.set_state(tensors["rng"])
    return int(meta["step"])


def train(images: Sequence[np.ndarray], out: Path, s: TrainSettings, cfg: BundledConfig | None = None,
          resume: Path | None = None, progress: bool = True, meta: dict | None = None) -> list[float]:
    """Train a bundled prior on luminance images (H,W) in [−1, 1]; returns the per-step losses of this run."""
    torch.set_num_threads(s.threads)
    torch.manual_seed(s.seed)
    gen = torch.Generator().manual_seed(s.seed)
    if cfg is None:
        sampler = CropSampler(images, min(s.crop, 128), torch.Generator().manual_seed(s.seed + 1))
        cfg = BundledConfig(wiener=fit_wiener(images, sampler(64)))
        cfg.sigma_data = cfg.wiener["std"]
    model = BundledPrior(cfg)
    ema = BundledPrior(cfg)
    ema.load_state_dict(model.state_dict())
    ema.requires_grad_(False)
    opt = torch.optim.Adam(model.parameters(), lr=s.lr)
    step = 0
    resume_path = out.with_name(out.name + ".resume.safetensors")
    if resume is not None:
        step = _load_resume(resume, model, ema, opt, gen)
    sampler = CropSampler(images, s.crop, gen)
    losses: list[float] = []
    meta = dict(meta or {}, seed=s.seed, batch=s.batch, crop=s.crop, max_side=s.max_side)
    bar = tqdm(total=s.steps, initial=step, disable=not progress, dynamic_ncols=True, desc="train prior")
    running = None
    while step < s.steps:
        for group in opt.param_groups:
            group["lr"] = learning_rate(step, s)
        loss = x0_loss(model, sampler(s.batch), gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), s.grad_clip)
        opt.step()
        decay = min(s.ema, (1 + step) / (10 + step))
        with torch.no_grad():
            for pe, pm in zip(ema.parameters(), model.parameters(), strict=True):
                pe.lerp_(pm, 1 - decay)
        step += 1
        losses.append(loss.item())
        running = losses[-1] if running is None else 0.98 * running + 0.02 * losses[-1]
        bar.update(1)
        bar.set_postfix(loss=f"{running:.4f}", lr=f"{opt.param_groups[0]['lr']:.1e}")
        if step % s.save_every == 0 or step == s.steps:
            save_weights(ema, cfg, out, dict(meta, steps=step))
            _save_resume(resume_path, model, ema, opt, gen, step, cfg)
    bar.close()
    return losses


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    d = TrainSettings()
    p = argparse.ArgumentParser(prog="dig2dig-train-prior", description=__doc__.split("\n")[0])
    p.add_argument("--data", nargs="+", required=True, help="folders searched recursively for images")
    p.add_argument("--out", required=True, type=Path, help="output .safetensors (config beside it as .json)")
    p.add_argument("--steps", type=int, default=d.steps)
    p.add_argument("--resume", type=Path, help="a PATH.resume.safetensors written by an earlier run")
    p.add_argument("--holdout", type=Path, help="split file of images to leave out (paths relative to data root)")
    p.add_argument("--batch", type=int, default=d.batch)
    p.add_argument("--crop", type=int, default=d.crop)
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--max-side", type=int, default=d.max_side)
    p.add_argument("--save-every", type=int, default=d.save_every)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--threads", type=int, default=d.threads, help="torch CPU threads (1 leaves cores free)")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point."""
    a = _parse(argv)
    s = TrainSettings(steps=a.steps, batch=a.batch, crop=a.crop, lr=a.lr, max_side=a.max_side,
                      save_every=a.save_every, seed=a.seed, threads=a.threads)
    paths = find_images(a.data)
    held = read_list(a.holdout) if a.holdout else []
    paths = [p for p in paths if not is_listed(p, held)]
    if not paths:
        print("no training images found", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    images = [read_luminance(p, s.max_side) for p in paths]
    print(f"{len(images)} images ({len(held)} held back) loaded in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
    cfg = None
    if a.resume is not None:
        from safetensors import safe_open

        try:
            with safe_open(str(a.resume), framework="pt") as f:
                cfg = BundledConfig.from_dict(json.loads(f.metadata()["config"]))
        except (OSError, KeyError, ValueError, PriorError) as exc:
            print(f"cannot resume from {a.resume}: {exc}", file=sys.stderr)
            return 2
    meta = {"images": len(images), "holdout": str(a.holdout) if a.holdout else None}
    train(images, a.out, s, cfg=cfg, resume=a.resume, meta=meta)
    print(f"wrote {a.out} and {a.out.with_suffix('.json')}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
