"""A diffusers ``UNet2DModel`` saved in a local folder, as a prior (``load_prior("diffusers:/path/folder")``).

The folder is either a saved model (``config.json`` + weights, as ``UNet2DModel.save_pretrained`` writes) or a
saved pipeline (``unet/`` and ``scheduler/`` subfolders). The schedule comes from the scheduler config next to
it (``scheduler/scheduler_config.json`` or ``scheduler_config.json``): its ᾱ is the scheduler's own
``alphas_cumprod``, so any beta schedule works. Its length is the scheduler's ``num_train_timesteps``; the
sampler takes the number of training timesteps from ``len(prior.alphas_cumprod)``, so a model trained on
other than 1000 steps needs nothing special. Models that predict ``v_prediction`` or ``sample`` are converted
to ε. Never touches the network: ``local_files_only``. diffusers is an optional extra, imported lazily.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from dig2dig_ros.core.diffusion.priors import register_prior
from dig2dig_ros.core.diffusion.priors.base import Prior, PriorError

DIFFUSERS_PIN = "0.42.1"  # the version requirements-dev.txt installs (a test keeps the two equal)
PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")
COMPUTE_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
_SCHEDULER_CONFIGS = ("scheduler/scheduler_config.json", "scheduler_config.json")


def import_diffusers() -> Any:
    """The diffusers module, or a PriorError saying how to install it."""
    try:
        import diffusers
    except ImportError as exc:
        raise PriorError(
            f"the diffusers prior needs the optional package diffusers: pip install diffusers=={DIFFUSERS_PIN}"
        ) from exc
    return diffusers


def read_scheduler_config(folder: Path) -> dict[str, Any]:
    """The scheduler config saved in ``folder`` (pipeline layout first), as a dict."""
    for name in _SCHEDULER_CONFIGS:
        path = folder / name
        if path.is_file():
            try:
                return json.loads(path.read_text())
            except (OSError, ValueError) as exc:
                raise PriorError(f"scheduler config {path} could not be read: {exc}") from exc
    raise PriorError(f"no scheduler config in {folder} (looked for {' and '.join(_SCHEDULER_CONFIGS)})")


def scheduler_alphas_cumprod(config: dict[str, Any]) -> torch.Tensor:
    """ᾱ (float64, (num_train_timesteps,)) exactly as the diffusers scheduler named in ``config`` computes it."""
    diffusers = import_diffusers()
    name = config.get("_class_name", "DDPMScheduler")
    cls = getattr(diffusers, name, None)
    if cls is None or not hasattr(cls, "from_config"):
        raise PriorError(f"unknown diffusers scheduler {name!r}")
    scheduler = cls.from_config(config)
    ac = getattr(scheduler, "alphas_cumprod", None)
    if not isinstance(ac, torch.Tensor):
        raise PriorError(f"scheduler {name} has no alphas_cumprod: not a DDPM-style (ε / v / x0) schedule")
    return ac.detach().to(torch.float64).cpu()


def _unet_subfolder(folder: Path) -> str | None:
    """``unet`` for a saved pipeline, None for a saved model."""
    return "unet" if (folder / "unet" / "config.json").is_file() else None


class DiffusersPrior(Prior):
    """ε̂ from a diffusers UNet2DModel; ``channels`` = its in_channels, ``multiple`` = 2^(downsampling blocks).

    ``dtype`` is the compute precision on CUDA (autocast); the CPU always computes in float32.
    """

    def __init__(
        self,
        unet: torch.nn.Module,
        alphas_cumprod: torch.Tensor,
        prediction_type: str = "epsilon",
        dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__(alphas_cumprod)
        cfg = unet.config
        if prediction_type not in PREDICTION_TYPES:
            raise PriorError(f"prediction_type {prediction_type!r} is not one of {PREDICTION_TYPES}")
        if getattr(cfg, "num_class_embeds", None) is not None or getattr(cfg, "class_embed_type", None):
            raise PriorError("class-conditional UNet2DModels are not supported (the prior is unconditional)")
        if getattr(cfg, "time_embedding_type", "positional") != "positional":
            raise PriorError(f"time_embedding_type {cfg.time_embedding_type!r}: only integer-timestep UNets fit")
        if cfg.out_channels not in (cfg.in_channels, 2 * cfg.in_channels):
            raise PriorError(
                f"UNet maps {cfg.in_channels} to {cfg.out_channels} channels; expected the same or twice "
                "(learned variance)"
            )
        if dtype not in COMPUTE_DTYPES:
            raise ValueError(f"compute dtype must be one of {COMPUTE_DTYPES}, got {dtype}")
        self.unet = unet
        self.channels = int(cfg.in_channels)
        self.multiple = 2 ** sum(1 for block in unet.down_blocks if getattr(block, "downsamplers", None))
        self.prediction_type = prediction_type
        self.compute_dtype = dtype

    def forward(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """ε̂ (B,C,H,W) for x_t (B,C,H,W) at timesteps t (B,), in x_t's dtype."""
        self.check_size(x_t.shape[-2], x_t.shape[-1])
        reduced = x_t.is_cuda and self.compute_dtype != torch.float32
        with torch.autocast(x_t.device.type, dtype=self.compute_dtype, enabled=reduced):
            out = self.unet(x_t.float(), t, return_dict=False)[0]  # (B,C or 2C,H,W)
        out = out[:, : self.channels].float()  # (B,C,H,W)
        if self.prediction_type != "epsilon":
            ac = self.alphas_cumprod.to(x_t.device)[t].float()[:, None, None, None]  # (B,1,1,1)
            x = x_t.float()
            if self.prediction_type == "v_prediction":  # v = √ᾱ·ε − √(1−ᾱ)·x0
                out = ac.sqrt() * out + (1 - ac).sqrt() * x
            else:  # "sample": the network predicts x0
                out = (x - ac.sqrt() * out) / (1 - ac).sqrt()
        return out.to(x_t.dtype)


def load_diffusers(
    folder: str | Path, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32
) -> DiffusersPrior:
    """A DiffusersPrior from a local folder (UNet2DModel weights + scheduler config); no hub access."""
    folder = Path(folder)
    if not folder.is_dir():
        raise PriorError(f"diffusers model folder not found: {folder}")
    diffusers = import_diffusers()
    sched_cfg = read_scheduler_config(folder)
    try:
        unet = diffusers.UNet2DModel.from_pretrained(
            str(folder), subfolder=_unet_subfolder(folder), local_files_only=True, torch_dtype=torch.float32
        )
    except Exception as exc:  # missing/corrupt weights or config: diffusers raises OSError, ValueError, ...
        raise PriorError(f"UNet2DModel in {folder} could not be loaded: {exc}") from exc
    prior = DiffusersPrior(
        unet,
        scheduler_alphas_cumprod(sched_cfg),
        sched_cfg.get("prediction_type", "epsilon"),
        dtype,
    )
    return prior.to(device).eval()


@register_prior("diffusers")
def _diffusers_factory(arg: str | None, device: torch.device) -> Prior:
    """``diffusers:/path/folder``."""
    if not arg:
        raise PriorError("the diffusers prior needs a model folder: diffusers:/path/folder")
    return load_diffusers(arg, device=device)


__all__ = [
    "DIFFUSERS_PIN",
    "DiffusersPrior",
    "import_diffusers",
    "load_diffusers",
    "read_scheduler_config",
    "scheduler_alphas_cumprod",
]
