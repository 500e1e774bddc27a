"""Our YOLOv5 (v6.x layout) in torch, built from a small config dict, and its code-free model format.

The layer list follows the published v6 yaml (Conv-BN-SiLU, C3, SPPF, nearest upsampling, Concat, Detect),
scaled by ``depth_multiple`` / ``width_multiple`` exactly as YOLOv5's ``parse_model`` does, so parameter
names and shapes match a YOLOv5 checkpoint one to one (``model.<i>.<sub>...``).

Model format (a folder; loading it executes no code):
  * ``model.safetensors``: float32 weights, keys as in the YOLOv5 state dict (anchors are not stored here);
  * ``model.json``: ``{"format": "dig2dig-yolov5", "version": 1, "config": {...}}`` where config holds
    nc, names, depth/width multiples, anchors (pixels, one flat list of w,h pairs per level), strides and
    the backbone/head layer lists.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

FORMAT_NAME = "dig2dig-yolov5"
FORMAT_VERSION = 1
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "model.json"

# The v6.0/v6.1 yolov5{n,s,m,l,x}.yaml layer lists: (from, repeats, module, args).
V6_BACKBONE: list[list[Any]] = [
    [-1, 1, "Conv", [64, 6, 2, 2]],
    [-1, 1, "Conv", [128, 3, 2]],
    [-1, 3, "C3", [128]],
    [-1, 1, "Conv", [256, 3, 2]],
    [-1, 6, "C3", [256]],
    [-1, 1, "Conv", [512, 3, 2]],
    [-1, 9, "C3", [512]],
    [-1, 1, "Conv", [1024, 3, 2]],
    [-1, 3, "C3", [1024]],
    [-1, 1, "SPPF", [1024, 5]],
]
V6_HEAD: list[list[Any]] = [
    [-1, 1, "Conv", [512, 1, 1]],
    [-1, 1, "nn.Upsample", [None, 2, "nearest"]],
    [[-1, 6], 1, "Concat", [1]],
    [-1, 3, "C3", [512, False]],
    [-1, 1, "Conv", [256, 1, 1]],
    [-1, 1, "nn.Upsample", [None, 2, "nearest"]],
    [[-1, 4], 1, "Concat", [1]],
    [-1, 3, "C3", [256, False]],
    [-1, 1, "Conv", [256, 3, 2]],
    [[-1, 14], 1, "Concat", [1]],
    [-1, 3, "C3", [512, False]],
    [-1, 1, "Conv", [512, 3, 2]],
    [[-1, 10], 1, "Concat", [1]],
    [-1, 3, "C3", [1024, False]],
    [[17, 20, 23], 1, "Detect", ["nc", "anchors"]],
]
V6_ANCHORS: list[list[float]] = [[10, 13, 16, 30, 33, 23], [30, 61, 62, 45, 59, 119], [116, 90, 156, 198, 373, 326]]
SCALES: dict[str, tuple[float, float]] = {  # name -> (depth_multiple, width_multiple)
    "n": (0.33, 0.25),
    "s": (0.33, 0.50),
    "m": (0.67, 0.75),
    "l": (1.0, 1.0),
    "x": (1.33, 1.25),
}


class ModelFormatError(ValueError):
    """A model folder that is missing, incomplete or does not match our YOLOv5 definition."""


@dataclass
class YoloV5Config:
    """Everything that defines a YOLOv5 network apart from its weights."""

    nc: int = 80
    names: list[str] = field(default_factory=list)  # class names, len == nc (empty: "0", "1", ...)
    depth_multiple: float = 0.33
    width_multiple: float = 0.25
    anchors: list[list[float]] = field(default_factory=lambda: [list(a) for a in V6_ANCHORS])  # pixels
    strides: list[int] = field(default_factory=lambda: [8, 16, 32])
    backbone: list[list[Any]] = field(default_factory=lambda: json.loads(json.dumps(V6_BACKBONE)))
    head: list[list[Any]] = field(default_factory=lambda: json.loads(json.dumps(V6_HEAD)))
    in_channels: int = 3

    @classmethod
    def for_scale(cls, scale: str = "n", **overrides: Any) -> YoloV5Config:
        """The standard v6 config of one size (n, s, m, l, x) with any field overridden."""
        depth, width = SCALES[scale]
        return cls(depth_multiple=depth, width_multiple=width, **overrides)

    def class_names(self) -> list[str]:
        """names, or "0".."nc-1" when no names are given."""
        return list(self.names) if self.names else [str(i) for i in range(self.nc)]

    def validate(self) -> None:
        """Raise ModelFormatError when the fields are inconsistent."""
        if self.nc < 1:
            raise ModelFormatError(f"nc must be >= 1, got {self.nc}")
        if self.names and len(self.names) != self.nc:
            raise ModelFormatError(f"{len(self.names)} class names for nc={self.nc}")
        if len(self.anchors) != len(self.strides) or not self.anchors:
            raise ModelFormatError(f"{len(self.anchors)} anchor levels but {len(self.strides)} strides")
        if any(len(a) % 2 or len(a) != len(self.anchors[0]) for a in self.anchors):
            raise ModelFormatError(f"anchors must be equal-length lists of w,h pairs, got {self.anchors}")


def make_divisible(x: float, divisor: int = 8) -> int:
    """The smallest multiple of divisor that is >= x (YOLOv5's channel rounding)."""
    return int(math.ceil(x / divisor) * divisor)


class Conv(nn.Module):
    """Conv2d (no bias) → BatchNorm2d → SiLU; padding k//2 unless given."""

    def __init__(self, c1: int, c2: int, k: int = 1, s: int = 1, p: int | None = None, g: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c1, c2, k, s, k // 2 if p is None else p, groups=g, bias=False)
        self.bn = nn.BatchNorm2d(c2, eps=1e-3, momentum=0.03)
        self.act = nn.SiLU()
        self.stride = s

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class Bottleneck(nn.Module):
    """1×1 then 3×3 Conv, with a residual when shapes allow and shortcut is on."""

    def __init__(self, c1: int, c2: int, shortcut: bool = True, e: float = 0.5) -> None:
        super().__init__()
        c_ = int(c2 * e)
        self.cv1 = Conv(c1, c_, 1, 1)
        self.cv2 = Conv(c_, c2, 3, 1)
        self.add = shortcut and c1 == c2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.cv2(self.cv1(x))
        return x + y if self.add else y


class C3(nn.Module):
    """CSP block with three Convs and n Bottlenecks."""

    def __init__(self, c1: int, c2: int, n: int = 1, shortcut: bool = True, e: float = 0.5) -> None:
        super().__init__()
        c_ = int(c2 * e)
        self.cv1 = Conv(c1, c_, 1, 1)
        self.cv2 = Conv(c1, c_, 1, 1)
        self.cv3 = Conv(2 * c_, c2, 1)
        self.m = nn.Sequential(*(Bottleneck(c_, c_, shortcut, e=1.0) for _ in range(n)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cv3(torch.cat((self.m(self.cv1(x)), self.cv2(x)), 1))


class SPPF(nn.Module):
    """Spatial pyramid pooling (fast): three chained k×k max-pools concatenated."""

    def __init__(self, c1: int, c2: int, k: int = 5) -> None:
        super().__init__()
        c_ = c1 // 2
        self.cv1 = Conv(c1, c_, 1, 1)
        self.cv2 = Conv(c_ * 4, c2, 1, 1)
        self.m = nn.MaxPool2d(kernel_size=k, stride=1, padding=k // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.cv1(x)
        y1 = self.m(x)
        y2 = self.m(y1)
        return self.cv2(torch.cat((x, y1, y2, self.m(y2)), 1))


class Concat(nn.Module):
    """Concatenate a list of tensors along a dimension."""

    def __init__(self, dimension: int = 1) -> None:
        super().__init__()
        self.d = dimension

    def forward(self, x: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat(x, self.d)


class Detect(nn.Module):
    """One 1×1 conv per level to na·(5+nc) raw outputs; decoding lives in decode.py."""

    def __init__(self, nc: int, anchors: list[list[float]], ch: list[int]) -> None:
        super().__init__()
        self.nc = nc
        self.no = nc + 5
        self.nl = len(anchors)
        self.na = len(anchors[0]) // 2
        self.m = nn.ModuleList(nn.Conv2d(c, self.no * self.na, 1) for c in ch)

    def forward(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        """Per level (B, na, ny, nx, 5+nc) logits."""
        out = []
        for i, conv in enumerate(self.m):
            y = conv(xs[i])  # (B, na*no, ny, nx)
            b, _, ny, nx = y.shape
            out.append(y.view(b, self.na, self.no, ny, nx).permute(0, 1, 3, 4, 2).contiguous())
        return out


def _layer(name: str, args: list[Any], ch: list[int], f: Any, n: int, cfg: YoloV5Config) -> tuple[nn.Module, int]:
    """One layer of the list (YOLOv5's parse_model rules for the modules we support) and its out channels."""
    if name in ("Conv", "C3", "SPPF"):
        c1, c2 = ch[f], make_divisible(args[0] * cfg.width_multiple, 8)
        if name == "Conv":
            return Conv(c1, c2, *args[1:]), c2
        if name == "SPPF":
            return SPPF(c1, c2, *args[1:]), c2
        return C3(c1, c2, n, *args[1:]), c2
    if name == "nn.Upsample":
        size, scale, mode = args
        if size is not None or mode != "nearest":
            raise ModelFormatError(f"only nearest upsampling by a scale factor is supported, got {args}")
        return nn.Upsample(scale_factor=float(scale), mode="nearest"), ch[f]
    if name == "Concat":
        return Concat(*args), sum(ch[x] for x in f)
    if name == "Detect":
        return Detect(cfg.nc, cfg.anchors, [ch[x] for x in f]), 0
    raise ModelFormatError(f"unsupported layer {name!r} (supported: Conv, C3, SPPF, nn.Upsample, Concat, Detect)")


class YoloV5(nn.Module):
    """YOLOv5 network; forward returns the Detect head's per-level logits (B, na, ny, nx, 5+nc)."""

    def __init__(self, cfg: YoloV5Config) -> None:
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        layers, self.froms, self.save = [], [], set()
        ch = [cfg.in_channels]
        level_strides = [1]  # total stride of each layer's output
        for i, (f, n, name, args) in enumerate(cfg.backbone + cfg.head):
            if n > 1 and name != "C3":
                raise ModelFormatError(f"layer {i} ({name}) repeats {n} times; only C3 takes repeats")
            n = max(round(n * cfg.depth_multiple), 1) if n > 1 else n
            module, c2 = _layer(name, list(args), ch, f, n, cfg)
            src = [f] if isinstance(f, int) else list(f)
            self.save.update(x % (i or 1) for x in src if x != -1)
            stride = max(level_strides[x + 1 if x >= 0 else len(level_strides) + x] for x in src)
            if isinstance(module, Conv):
                stride *= module.stride
            elif isinstance(module, nn.Upsample):
                stride = stride // int(module.scale_factor)
            layers.append(module)
            self.froms.append(f)
            if i == 0:
                ch = []
            ch.append(c2)
            level_strides.append(stride)
        if not isinstance(layers[-1], Detect):
            raise ModelFormatError("the last layer must be Detect")
        found = [level_strides[x + 1] for x in self.froms[-1]]
        if found != list(cfg.strides):
            raise ModelFormatError(f"config strides {cfg.strides} do not match the layer list's {found}")
        self.model = nn.ModuleList(layers)
        anchors = torch.tensor(cfg.anchors, dtype=torch.float32).view(len(cfg.anchors), -1, 2)  # (nl, na, 2)
        self.register_buffer("anchors", anchors, persistent=False)
        self.register_buffer("strides", torch.tensor(cfg.strides, dtype=torch.float32), persistent=False)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """x: (B, 3, H, W) RGB in [0,1], H and W multiples of the largest stride."""
        outputs: list[torch.Tensor | None] = []
        for i, (f, module) in enumerate(zip(self.froms, self.model, strict=True)):
            if f != -1:
                x = outputs[f] if isinstance(f, int) else [x if j == -1 else outputs[j] for j in f]
            x = module(x)
            outputs.append(x if i in self.save else None)
        return x


def save_model(model: YoloV5, out_dir: str | Path, extra: dict[str, Any] | None = None) -> Path:
    """Write model.safetensors (float32) and model.json into out_dir (created); returns out_dir."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in model.state_dict().items()}
    save_file(tensors, str(out / WEIGHTS_FILE), metadata={"format": FORMAT_NAME})
    doc = {"format": FORMAT_NAME, "version": FORMAT_VERSION, "config": asdict(model.cfg), **(extra or {})}
    (out / CONFIG_FILE).write_text(json.dumps(doc, indent=1))
    return out


def load_config(model_dir: str | Path) -> YoloV5Config:
    """The config in model_dir/model.json; ModelFormatError when absent or malformed."""
    path = Path(model_dir) / CONFIG_FILE
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ModelFormatError(f"cannot read YOLOv5 config {path}: {exc}") from exc
    if not isinstance(doc, dict) or doc.get("format") != FORMAT_NAME or doc.get("version") != FORMAT_VERSION:
        raise ModelFormatError(f"{path} is not a {FORMAT_NAME} v{FORMAT_VERSION} file")
    try:
        cfg = YoloV5Config(**doc["config"])
    except (KeyError, TypeError) as exc:
        raise ModelFormatError(f"bad config in {path}: {exc}") from exc
    cfg.validate()
    return cfg


def load_model(model_dir: str | Path, device: str | torch.device = "cpu") -> YoloV5:
    """Our YOLOv5 with the folder's weights (strict), in eval mode; ModelFormatError on any mismatch."""
    cfg = load_config(model_dir)
    model = YoloV5(cfg)
    path = Path(model_dir) / WEIGHTS_FILE
    try:
        state = load_file(str(path))
    except Exception as exc:  # safetensors raises its own error types for truncated/corrupt files
        raise ModelFormatError(f"cannot read YOLOv5 weights {path}: {exc}") from exc
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ModelFormatError(f"weights {path} do not fit the config: {str(exc)[:500]}") from exc
    return model.to(device).eval()
