"""One-time converter: the published yolov5n.pt (a pickle) → our code-free format (safetensors + JSON).

``dig2dig-convert-yolov5 --pt yolov5n.pt --out DIR``

Safety: the file's sha256 must equal EXPECTED_SHA256 (anything else is refused before it is opened), and the
pickle is read by RestrictedUnpickler, whose find_class maps the YOLOv5 classes (models.yolo.*,
models.common.*) and torch.nn layers to inert stand-ins that only record their state, tensors to plain
numpy-backed tensors, and refuses every other global. No YOLOv5 code exists here and none is executed;
torch.load is not used.
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import io
import pickle
import sys
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .yolov5 import V6_BACKBONE, V6_HEAD, ModelFormatError, YoloV5, YoloV5Config, save_model

EXPECTED_SHA256 = "4f180cf23ba0717ada0badd6c685026d73d48f184d00fc159c2641284b2ac0a3"

_STORAGE_DTYPES = {
    "HalfStorage": np.float16,
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}
_STANDIN_MODULES = ("models.yolo", "models.common")  # any class name in these
_STANDIN_PREFIX = "torch.nn.modules."  # torch layers: also stand-ins (their code is not needed either)


class ConversionRefused(RuntimeError):
    """The checkpoint is not the expected file or holds something the restricted reader will not build."""


class StandIn:
    """An inert object in place of a pickled class: it keeps the pickled state and does nothing else."""

    qualname = "?"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args = args

    def __setstate__(self, state: Any) -> None:
        self.__dict__["state"] = state


class _Storage:
    """A storage type marker: the numpy dtype its bytes hold."""

    def __init__(self, name: str) -> None:
        self.name, self.dtype = name, np.dtype(_STORAGE_DTYPES[name]).newbyteorder("<")


def _rebuild_tensor(storage: np.ndarray, offset: int, size: tuple, stride: tuple, *_: Any) -> torch.Tensor:
    """torch._utils._rebuild_tensor_v2 stand-in: a strided view of the storage, copied into a tensor."""
    item = storage.dtype.itemsize
    if size and (offset + sum((n - 1) * s for n, s in zip(size, stride, strict=True)) >= storage.size):
        raise ConversionRefused(f"tensor {size} at offset {offset} overruns its storage ({storage.size})")
    view = np.lib.stride_tricks.as_strided(storage[offset:], shape=size, strides=[s * item for s in stride])
    return torch.from_numpy(np.array(view, dtype=storage.dtype.newbyteorder("=")))


def _rebuild_parameter(data: torch.Tensor, *_: Any) -> torch.Tensor:
    """torch._utils._rebuild_parameter stand-in: the plain tensor."""
    return data


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler of a torch zip checkpoint that builds only containers, tensors and inert stand-ins."""

    def __init__(self, data: bytes, archive: zipfile.ZipFile, prefix: str) -> None:
        super().__init__(io.BytesIO(data))
        self.archive, self.prefix = archive, prefix
        self.standins: dict[str, type] = {}

    def find_class(self, module: str, name: str) -> Any:
        full = f"{module}.{name}"
        if full in ("collections.OrderedDict",):
            return collections.OrderedDict
        if full in ("builtins.set", "__builtin__.set"):
            return set
        if full == "torch._utils._rebuild_tensor_v2":
            return _rebuild_tensor
        if full == "torch._utils._rebuild_parameter":
            return _rebuild_parameter
        if module == "torch" and name in _STORAGE_DTYPES:
            return _Storage(name)
        if module in _STANDIN_MODULES or module.startswith(_STANDIN_PREFIX):
            if full not in self.standins:
                self.standins[full] = type(name, (StandIn,), {"qualname": full})
            return self.standins[full]
        raise ConversionRefused(f"refusing to load global {full!r} from the checkpoint")

    def persistent_load(self, pid: Any) -> np.ndarray:
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage" and isinstance(pid[1], _Storage)):
            raise ConversionRefused(f"unexpected persistent id {pid!r:.100}")
        _, storage, key, _location, numel = pid
        raw = self.archive.read(f"{self.prefix}data/{key}")
        arr = np.frombuffer(raw, dtype=storage.dtype)
        if arr.size < int(numel):
            raise ConversionRefused(f"storage {key} holds {arr.size} values, expected {numel}")
        return arr


def sha256_of(path: str | Path) -> str:
    """Hex sha256 of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_checkpoint(path: str | Path, expected_sha256: str = EXPECTED_SHA256) -> dict[str, Any]:
    """The checkpoint's top-level dict, read with RestrictedUnpickler after the hash check."""
    found = sha256_of(path)
    if found != expected_sha256:
        raise ConversionRefused(f"{path}: sha256 {found} is not the expected {expected_sha256}; refusing to read it")
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile as exc:
        raise ConversionRefused(f"{path} is not a torch zip checkpoint: {exc}") from exc
    with archive:
        pkl = [n for n in archive.namelist() if n.endswith("/data.pkl")]
        if len(pkl) != 1:
            raise ConversionRefused(f"{path}: expected one data.pkl, found {pkl}")
        prefix = pkl[0][: -len("data.pkl")]
        obj = RestrictedUnpickler(archive.read(pkl[0]), archive, prefix).load()
    if not isinstance(obj, dict) or "model" not in obj:
        raise ConversionRefused(f"{path}: top level is not a YOLOv5 checkpoint dict")
    return obj


def _state(obj: Any) -> dict[str, Any]:
    if not isinstance(obj, StandIn) or not isinstance(obj.__dict__.get("state"), dict):
        raise ConversionRefused(f"expected a pickled module, found {type(obj).__name__}")
    return obj.__dict__["state"]


def module_tensors(module: Any, prefix: str = "") -> dict[str, torch.Tensor]:
    """A stand-in module tree's parameters and persistent buffers, keyed as torch's state_dict would."""
    st = _state(module)
    out: dict[str, torch.Tensor] = {}
    skip = st.get("_non_persistent_buffers_set") or set()
    for group in ("_parameters", "_buffers"):
        for name, value in (st.get(group) or {}).items():
            if value is not None and name not in skip:
                out[prefix + name] = value
    for name, child in (st.get("_modules") or {}).items():
        if child is not None:
            out.update(module_tensors(child, f"{prefix}{name}."))
    return out


def _find_modules(module: Any, qualname: str) -> list[dict[str, Any]]:
    """States of every stand-in of one class in the tree."""
    found = [_state(module)] if type(module).qualname == qualname else []
    for child in (_state(module).get("_modules") or {}).values():
        if child is not None:
            found += _find_modules(child, qualname)
    return found


def _layout(layers: list[list[Any]]) -> list[list[Any]]:
    """A yaml layer list in our normalized JSON form (tuples → lists, the string 'None' → None, as YOLOv5 evals it)."""
    return [
        [f if isinstance(f, int) else list(f), int(n), str(m), [None if x == "None" else x for x in a]]
        for f, n, m, a in layers
    ]


def extract(ckpt: dict[str, Any]) -> tuple[YoloV5Config, dict[str, torch.Tensor]]:
    """Our config and float32 state dict from a restricted-read YOLOv5 v6 checkpoint."""
    root = ckpt.get("ema") or ckpt["model"]
    top = _state(root)
    yaml = top.get("yaml")
    if not isinstance(yaml, dict):
        raise ConversionRefused("the checkpoint model has no yaml dict")
    backbone, head = _layout(yaml.get("backbone", [])), _layout(yaml.get("head", []))
    if backbone != V6_BACKBONE or head != V6_HEAD:
        raise ConversionRefused("the checkpoint's layer list is not the YOLOv5 v6 layout this converter knows")
    for bn in _find_modules(root, "torch.nn.modules.batchnorm.BatchNorm2d"):
        if abs(float(bn.get("eps", 0)) - 1e-3) > 1e-9:
            raise ConversionRefused(f"BatchNorm eps {bn.get('eps')} differs from YOLOv5's 1e-3")
    detect = _find_modules(root, "models.yolo.Detect")
    if len(detect) != 1:
        raise ConversionRefused(f"expected one Detect layer, found {len(detect)}")
    stride = top["stride"].double()  # (nl,)
    anchors = (detect[0]["_buffers"]["anchors"].double() * stride.view(-1, 1, 1)).view(len(stride), -1)  # (nl, 2na)
    names = top.get("names")
    names = [str(names[i]) for i in range(len(names))] if isinstance(names, dict) else [str(n) for n in names]
    cfg = YoloV5Config(
        nc=int(yaml["nc"]),
        names=names,
        depth_multiple=float(yaml["depth_multiple"]),
        width_multiple=float(yaml["width_multiple"]),
        anchors=[[round(float(v), 4) for v in level] for level in anchors],
        strides=[int(s) for s in stride.round().tolist()],
        backbone=backbone,
        head=head,
    )
    tensors = module_tensors(root)
    det_index = len(backbone) + len(head) - 1
    tensors.pop(f"model.{det_index}.anchors", None)  # anchors live in the config
    return cfg, {k: v.float() if v.is_floating_point() else v for k, v in tensors.items()}


def convert(pt: str | Path, out_dir: str | Path, expected_sha256: str = EXPECTED_SHA256) -> Path:
    """Convert the checkpoint at pt into out_dir; returns out_dir. Raises ConversionRefused / ModelFormatError."""
    cfg, tensors = extract(read_checkpoint(pt, expected_sha256))
    model = YoloV5(cfg)
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    if missing or unexpected:
        raise ModelFormatError(f"state dict mismatch: missing {missing[:5]}, unexpected {unexpected[:5]}")
    return save_model(model, out_dir, extra={"source": {"file": Path(pt).name, "sha256": expected_sha256}})


def main(argv: list[str] | None = None) -> int:
    """Console entry point `dig2dig-convert-yolov5`."""
    parser = argparse.ArgumentParser(description="Convert the YOLOv5n v6.1 .pt to safetensors + JSON (no code run).")
    parser.add_argument("--pt", required=True, help="path to yolov5n.pt")
    parser.add_argument("--out", required=True, help="output folder (model.safetensors, model.json)")
    args = parser.parse_args(argv)
    try:
        out = convert(args.pt, args.out)
    except (ConversionRefused, ModelFormatError, OSError) as exc:
        print(f"dig2dig-convert-yolov5: error: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
