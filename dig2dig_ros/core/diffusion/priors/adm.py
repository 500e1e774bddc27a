"""ADM, the guided-diffusion UNet (Dhariwal & Nichol 2021), as a prior: the paper's 256x256 unconditional.

Our own implementation of the published architecture; its state-dict keys and shapes are guided-diffusion's,
so ``256x256_diffusion_uncond.pt`` loads as is (``load_adm`` or ``load_prior("adm:/path.pt")``). The prior is
RGB (``channels = 3``): the fusion pipeline replicates a gray source to 3 channels before calling it.
Attention goes through ``scaled_dot_product_attention`` (the original einsum needs 12.5 GiB at 1280x1024).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from dig2dig_ros.core.diffusion.priors import register_prior
from dig2dig_ros.core.diffusion.priors.base import Prior, PriorError

COMPUTE_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
_MAX_LISTED_KEYS = 5  # how many missing / unexpected / mismatched keys a load error names
# guided-diffusion's channel_mult for channel_mult="" (script_util.create_model), by image_size
_DEFAULT_CHANNEL_MULT = {256: (1, 1, 2, 2, 4, 4), 128: (1, 1, 2, 3, 4), 64: (1, 2, 3, 4)}


@dataclass(frozen=True)
class AdmConfig:
    """guided-diffusion's model flags; the defaults build ``256x256_diffusion_uncond.pt`` (ALGORITHM.md §1).

    ``attention_resolutions`` are feature-map sizes at ``image_size`` (guided-diffusion's convention:
    "32,16,8" means attention where the map is 32, 16 and 8 pixels wide at 256: downsampling by 8, 16, 32).
    The network itself is fully convolutional: any H, W that are multiples of ``multiple`` work.
    """

    image_size: int = 256
    in_channels: int = 3
    num_channels: int = 256
    num_res_blocks: int = 2
    attention_resolutions: str = "32,16,8"
    channel_mult: tuple[int, ...] = (1, 1, 2, 2, 4, 4)
    num_heads: int = 4
    num_head_channels: int = 64
    num_heads_upsample: int = -1
    dropout: float = 0.0
    learn_sigma: bool = True
    resblock_updown: bool = True
    use_scale_shift_norm: bool = True
    conv_resample: bool = True
    use_new_attention_order: bool = False
    use_fp16: bool = False  # guided-diffusion's flag; kept for config parity, use AdmPrior(dtype=...) instead

    @property
    def out_channels(self) -> int:
        """6 with learned variance (ε then the variance interpolation), else 3."""
        return 2 * self.in_channels if self.learn_sigma else self.in_channels

    @property
    def attention_ds(self) -> frozenset[int]:
        """Downsampling factors at which the UNet has attention blocks."""
        sizes = [int(r) for r in self.attention_resolutions.split(",") if r.strip()]
        return frozenset(self.image_size // r for r in sizes)

    @property
    def multiple(self) -> int:
        """H and W must be multiples of this (one halving per level below the top)."""
        return 2 ** (len(self.channel_mult) - 1)

    @classmethod
    def from_dict(cls, values: Mapping[str, object]) -> AdmConfig:
        """A config from guided-diffusion's model flags (``model_and_diffusion_defaults`` style).

        ``channel_mult`` may be a tuple, ``"1,1,2,2,4,4"`` or ``""`` (guided-diffusion's per-size default);
        ``use_checkpoint`` (training-time gradient checkpointing) is ignored; class-conditional models and
        unknown keys are an error.
        """
        values = dict(values)
        values.pop("use_checkpoint", None)
        if values.pop("class_cond", False):
            raise ValueError("class-conditional ADM models are not supported (the prior is unconditional)")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown ADM config keys: {', '.join(unknown)}")
        mult = values.get("channel_mult")
        if mult == "":
            size = int(values.get("image_size", cls.image_size))  # type: ignore[call-overload]
            if size not in _DEFAULT_CHANNEL_MULT:
                raise ValueError(f"no default channel_mult for image_size {size}; give channel_mult")
            values["channel_mult"] = _DEFAULT_CHANNEL_MULT[size]
        elif isinstance(mult, str):
            values["channel_mult"] = tuple(int(m) for m in mult.split(","))
        elif mult is not None:
            values["channel_mult"] = tuple(mult)  # type: ignore[call-overload]
        return cls(**values)  # type: ignore[arg-type]


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of timesteps t (B,) as (B, dim): [cos(t·f), sin(t·f)], f geometric from 1."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]  # (B, half)
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)  # (B, 2*half)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


class GroupNorm32(nn.GroupNorm):
    """GroupNorm over 32 groups, computed in float32 whatever the input dtype."""

    def __init__(self, channels: int) -> None:
        super().__init__(32, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = None if self.weight is None else self.weight.float()
        b = None if self.bias is None else self.bias.float()
        return F.group_norm(x.float(), self.num_groups, w, b, self.eps).to(x.dtype)


def _zero(module: nn.Module) -> nn.Module:
    """guided-diffusion's zero init (residual branches and the output start at 0)."""
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


class Downsample(nn.Module):
    """Halve H and W: a stride-2 conv (``op``) or average pooling."""

    def __init__(self, channels: int, use_conv: bool) -> None:
        super().__init__()
        self.op = nn.Conv2d(channels, channels, 3, stride=2, padding=1) if use_conv else nn.AvgPool2d(2, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class Upsample(nn.Module):
    """Double H and W (nearest), optionally followed by a 3x3 conv."""

    def __init__(self, channels: int, use_conv: bool) -> None:
        super().__init__()
        self.use_conv = use_conv
        if use_conv:
            self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2, mode="nearest")
        return self.conv(x) if self.use_conv else x


class ResBlock(nn.Module):
    """Residual block conditioned on the time embedding, optionally resampling (``up`` / ``down``)."""

    def __init__(
        self,
        channels: int,
        emb_channels: int,
        dropout: float,
        out_channels: int | None = None,
        use_scale_shift_norm: bool = False,
        up: bool = False,
        down: bool = False,
    ) -> None:
        super().__init__()
        out_ch = out_channels or channels
        self.use_scale_shift_norm = use_scale_shift_norm
        self.in_layers = nn.Sequential(
            GroupNorm32(channels), nn.SiLU(), nn.Conv2d(channels, out_ch, 3, padding=1)
        )
        self.updown = up or down
        if up:
            self.h_upd: nn.Module = Upsample(channels, False)
            self.x_upd: nn.Module = Upsample(channels, False)
        elif down:
            self.h_upd, self.x_upd = Downsample(channels, False), Downsample(channels, False)
        else:
            self.h_upd, self.x_upd = nn.Identity(), nn.Identity()
        self.emb_layers = nn.Sequential(
            nn.SiLU(), nn.Linear(emb_channels, 2 * out_ch if use_scale_shift_norm else out_ch)
        )
        self.out_layers = nn.Sequential(
            GroupNorm32(out_ch),
            nn.SiLU(),
            nn.Dropout(dropout),
            _zero(nn.Conv2d(out_ch, out_ch, 3, padding=1)),
        )
        self.skip_connection = nn.Identity() if out_ch == channels else nn.Conv2d(channels, out_ch, 1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        """x (B,C,H,W), emb (B,E) -> (B,C',H',W')."""
        if self.updown:
            h = self.in_layers[:-1](x)
            h = self.in_layers[-1](self.h_upd(h))
            x = self.x_upd(x)
        else:
            h = self.in_layers(x)
        e = self.emb_layers(emb).to(h.dtype)[..., None, None]  # (B,C' or 2C',1,1)
        if self.use_scale_shift_norm:
            scale, shift = e.chunk(2, dim=1)
            h = self.out_layers[0](h) * (1 + scale) + shift
            h = self.out_layers[1:](h)
        else:
            h = self.out_layers(h + e)
        return self.skip_connection(x) + h


def qkv_attention(qkv: torch.Tensor, num_heads: int, legacy: bool = True) -> torch.Tensor:
    """Multi-head self-attention on packed qkv (B, 3·C, T) -> (B, C, T), softmax(QKᵀ/√d)·V per head.

    ``legacy`` (guided-diffusion's QKVAttentionLegacy, used by the released 256x256 models): channels are
    grouped per head first, [head0: q k v, head1: q k v, ...]. Otherwise (QKVAttention): [q: all heads, k, v].
    """
    b, width, length = qkv.shape
    ch = width // (3 * num_heads)
    if legacy:
        q, k, v = qkv.reshape(b, num_heads, 3 * ch, length).split(ch, dim=2)  # each (B,heads,ch,T)
    else:
        q, k, v = (z.reshape(b, num_heads, ch, length) for z in qkv.chunk(3, dim=1))  # each (B,heads,ch,T)
    q, k, v = q.transpose(2, 3), k.transpose(2, 3), v.transpose(2, 3)  # each (B,heads,T,ch)
    out = F.scaled_dot_product_attention(q, k, v)  # (B,heads,T,ch); scale 1/√ch as in guided-diffusion
    return out.transpose(2, 3).reshape(b, num_heads * ch, length)


class AttentionBlock(nn.Module):
    """Spatial self-attention with a residual connection (norm, 1x1 qkv, attention, zero-init 1x1 proj)."""

    def __init__(self, channels: int, num_heads: int, num_head_channels: int, legacy: bool = True) -> None:
        super().__init__()
        if num_head_channels != -1:
            if channels % num_head_channels:
                raise ValueError(f"{channels} channels do not split into heads of {num_head_channels}")
            num_heads = channels // num_head_channels
        self.num_heads = num_heads
        self.legacy = legacy
        self.norm = GroupNorm32(channels)
        self.qkv = nn.Conv1d(channels, 3 * channels, 1)
        self.proj_out = _zero(nn.Conv1d(channels, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B,C,H,W) -> (B,C,H,W)."""
        b, c, height, width = x.shape
        flat = x.reshape(b, c, height * width)  # (B,C,T)
        h = qkv_attention(self.qkv(self.norm(flat)), self.num_heads, self.legacy)  # (B,C,T)
        return (flat + self.proj_out(h)).reshape(b, c, height, width)


class TimestepSequential(nn.Sequential):
    """Sequential that hands the time embedding to the ResBlocks in it."""

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        for layer in self:
            x = layer(x, emb) if isinstance(layer, ResBlock) else layer(x)
        return x


class AdmUNet(nn.Module):
    """guided-diffusion's UNetModel, unconditional: forward(x (B,C,H,W), t (B,)) -> (B,out_channels,H,W)."""

    def __init__(self, config: AdmConfig | None = None) -> None:
        super().__init__()
        cfg = config or AdmConfig()
        self.config = cfg
        mc = cfg.num_channels
        emb_dim = 4 * mc
        heads_up = cfg.num_heads if cfg.num_heads_upsample == -1 else cfg.num_heads_upsample
        legacy = not cfg.use_new_attention_order

        def res(ch_in: int, ch_out: int, up: bool = False, down: bool = False) -> ResBlock:
            return ResBlock(ch_in, emb_dim, cfg.dropout, ch_out, cfg.use_scale_shift_norm, up=up, down=down)

        self.time_embed = nn.Sequential(nn.Linear(mc, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        ch = input_ch = cfg.channel_mult[0] * mc
        self.input_blocks = nn.ModuleList([TimestepSequential(nn.Conv2d(cfg.in_channels, ch, 3, padding=1))])
        skip_chans = [ch]
        ds = 1
        for level, mult in enumerate(cfg.channel_mult):
            for _ in range(cfg.num_res_blocks):
                layers: list[nn.Module] = [res(ch, mult * mc)]
                ch = mult * mc
                if ds in cfg.attention_ds:
                    layers.append(AttentionBlock(ch, cfg.num_heads, cfg.num_head_channels, legacy))
                self.input_blocks.append(TimestepSequential(*layers))
                skip_chans.append(ch)
            if level != len(cfg.channel_mult) - 1:
                down = res(ch, ch, down=True) if cfg.resblock_updown else Downsample(ch, cfg.conv_resample)
                self.input_blocks.append(TimestepSequential(down))
                skip_chans.append(ch)
                ds *= 2

        self.middle_block = TimestepSequential(
            res(ch, ch), AttentionBlock(ch, cfg.num_heads, cfg.num_head_channels, legacy), res(ch, ch)
        )

        self.output_blocks = nn.ModuleList()
        for level, mult in reversed(list(enumerate(cfg.channel_mult))):
            for i in range(cfg.num_res_blocks + 1):
                layers = [res(ch + skip_chans.pop(), mult * mc)]
                ch = mult * mc
                if ds in cfg.attention_ds:
                    layers.append(AttentionBlock(ch, heads_up, cfg.num_head_channels, legacy))
                if level and i == cfg.num_res_blocks:
                    up = res(ch, ch, up=True) if cfg.resblock_updown else Upsample(ch, cfg.conv_resample)
                    layers.append(up)
                    ds //= 2
                self.output_blocks.append(TimestepSequential(*layers))

        self.out = nn.Sequential(
            GroupNorm32(ch), nn.SiLU(), _zero(nn.Conv2d(input_ch, cfg.out_channels, 3, padding=1))
        )

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """x (B,C,H,W) with H, W multiples of config.multiple; t (B,) -> (B,out_channels,H,W)."""
        emb = self.time_embed(timestep_embedding(t, self.config.num_channels))  # (B,4·mc)
        skips = []
        h = x
        for block in self.input_blocks:
            h = block(h, emb)
            skips.append(h)
        h = self.middle_block(h, emb)
        for block in self.output_blocks:
            h = block(torch.cat([h, skips.pop()], dim=1), emb)
        return self.out(h)


class AdmPrior(Prior):
    """ε̂ from an ADM UNet: the first ``in_channels`` (3) of its output channels; RGB in [−1, 1].

    ``dtype`` (float32, float16 or bfloat16) is the compute precision on CUDA (autocast; weights stay float32,
    GroupNorm and softmax run in float32). On CPU the prior always computes in float32. It can be changed
    after loading through the ``compute_dtype`` attribute. ``alphas_cumprod``: the linear schedule of §1.
    """

    def __init__(self, unet: AdmUNet, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        self.unet = unet
        self.channels = unet.config.in_channels
        self.multiple = unet.config.multiple
        self.compute_dtype = dtype

    @property
    def compute_dtype(self) -> torch.dtype:
        """Precision of the forward pass on CUDA."""
        return self._compute_dtype

    @compute_dtype.setter
    def compute_dtype(self, dtype: torch.dtype) -> None:
        if dtype not in COMPUTE_DTYPES:
            raise ValueError(f"compute dtype must be one of {COMPUTE_DTYPES}, got {dtype}")
        self._compute_dtype = dtype

    def forward(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """ε̂ (B,3,H,W) for x_t (B,3,H,W) at timesteps t (B,), in x_t's dtype."""
        self.check_size(x_t.shape[-2], x_t.shape[-1])
        reduced = x_t.is_cuda and self.compute_dtype != torch.float32
        with torch.autocast(x_t.device.type, dtype=self.compute_dtype, enabled=reduced):
            out = self.unet(x_t.float(), t)  # (B,out_channels,H,W)
        return out[:, : self.channels].to(x_t.dtype)


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a checkpoint (.pt/.pth via torch.load(weights_only=True), or .safetensors), on the CPU."""
    path = Path(path)
    if not path.is_file():
        raise PriorError(f"ADM checkpoint not found: {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path), device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated zip, bad pickle, non-tensor objects: all mean an unusable file
        raise PriorError(f"ADM checkpoint {path} could not be read (corrupt or truncated?): {exc}") from exc
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise PriorError(f"ADM checkpoint {path} is not a state dict of tensors")
    return dict(state)


def check_state_dict(model: nn.Module, state: Mapping[str, torch.Tensor], source: str) -> None:
    """Raise PriorError naming the first missing, unexpected and shape-mismatched keys, if any."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    mismatched = [
        f"{k} {tuple(state[k].shape)} != {expected[k]}"
        for k in expected
        if k in state and tuple(state[k].shape) != expected[k]
    ]
    if not (missing or unexpected or mismatched):
        return
    parts = []
    for label, keys in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", mismatched)):
        if keys:
            more = f" (+{len(keys) - _MAX_LISTED_KEYS} more)" if len(keys) > _MAX_LISTED_KEYS else ""
            parts.append(f"{len(keys)} {label}: {', '.join(keys[:_MAX_LISTED_KEYS])}{more}")
    raise PriorError(f"{source} does not match the ADM architecture: " + "; ".join(parts))


def load_adm(
    path: str | Path,
    config: AdmConfig | None = None,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> AdmPrior:
    """An AdmPrior with the weights at ``path``, checked key by key and shape by shape before loading.

    Raises PriorError for a missing, unreadable or mismatched checkpoint; the weights are never left random.
    """
    cfg = config or AdmConfig()
    state = read_state_dict(path)
    with torch.device("meta"):
        unet = AdmUNet(cfg)  # no memory, no random init: every tensor comes from the checkpoint
    check_state_dict(unet, state, f"ADM checkpoint {path}")
    unet.load_state_dict({k: v.float() for k, v in state.items()}, strict=True, assign=True)
    return AdmPrior(unet, dtype=dtype).to(device).eval()


@register_prior("adm")
def _adm_factory(arg: str | None, device: torch.device) -> Prior:
    """``adm:/path/256x256_diffusion_uncond.pt`` with the default (paper) config."""
    if not arg:
        raise PriorError("the adm prior needs a checkpoint path: adm:/path/256x256_diffusion_uncond.pt")
    return load_adm(arg, device=device)


__all__ = [
    "AdmConfig",
    "AdmPrior",
    "AdmUNet",
    "AttentionBlock",
    "ResBlock",
    "check_state_dict",
    "load_adm",
    "qkv_attention",
    "read_state_dict",
    "timestep_embedding",
]
