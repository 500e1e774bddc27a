"""A loaded YOLOv5 model with its thresholds: BGR frame in, Detections in original pixels out."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch

from ..device import resolve_device
from .decode import Detections, decode_head, letterbox, scale_boxes, select, to_tensor
from .yolov5 import YoloV5, load_model


@dataclass
class DetectorConfig:
    """Detector settings (the detector node declares its parameters from these defaults)."""

    model_path: str = ""  # folder written by dig2dig-convert-yolov5 (model.safetensors + model.json)
    confidence: float = 0.25  # minimum objectness · class score
    iou: float = 0.45  # NMS IoU threshold
    classes: list[str] = field(default_factory=lambda: ["person"])  # names or ids to keep; empty = all
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    input_size: int = 640  # long side of the letterboxed network input
    max_det: int = 300  # most boxes per frame


def resolve_classes(classes: Sequence[str | int], names: Sequence[str]) -> list[int] | None:
    """Class names or ids (ints or digit strings) → sorted ids; None (all) for an empty list.

    Raises ValueError naming the unknown entries.
    """
    if not classes:
        return None
    ids, unknown = set(), []
    for item in classes:
        text = str(item).strip()
        if text.isdigit() and int(text) < len(names):
            ids.add(int(text))
        elif text in names:
            ids.add(list(names).index(text))
        else:
            unknown.append(text)
    if unknown:
        raise ValueError(f"unknown classes {unknown}; the model has {len(names)} classes, e.g. {list(names[:5])}")
    return sorted(ids)


class Detector:
    """YOLOv5 inference on single frames."""

    def __init__(self, cfg: DetectorConfig, model: YoloV5 | None = None) -> None:
        self.cfg = cfg
        self.device = resolve_device(cfg.device)
        self.model = (model if model is not None else load_model(Path(cfg.model_path))).to(self.device).eval()
        self.names = self.model.cfg.class_names()
        self.class_ids = resolve_classes(cfg.classes, self.names)
        self.stride = int(max(self.model.cfg.strides))

    @torch.inference_mode()
    def __call__(self, bgr: np.ndarray) -> Detections:
        """bgr: (H,W,3) uint8 (a (H,W) gray frame is replicated)."""
        if bgr.ndim == 2:
            bgr = cv2.cvtColor(bgr, cv2.COLOR_GRAY2BGR)
        padded, lb = letterbox(bgr, self.cfg.input_size, self.stride)
        x = to_tensor(padded).to(self.device)  # (1,3,H',W')
        pred = decode_head(self.model(x), self.model.anchors, self.model.cfg.strides)[0]  # (N,5+nc)
        boxes, scores, class_ids = select(
            pred.float().cpu().numpy(), self.cfg.confidence, self.cfg.iou, self.class_ids, self.cfg.max_det
        )
        return Detections(scale_boxes(boxes, lb), scores, class_ids, self.names)


# Box colours (BGR) for tracked boxes, picked by track id: a track keeps its colour from frame to frame.
TRACK_COLOURS = [(0, 255, 0), (255, 128, 0), (0, 128, 255), (255, 0, 255), (0, 255, 255), (255, 255, 0),
                 (128, 0, 255), (0, 0, 255), (255, 0, 128), (128, 255, 0)]
UNTRACKED_COLOUR = (0, 255, 0)


def draw(bgr: np.ndarray, dets: Detections) -> np.ndarray:
    """A copy of bgr (H,W,3) uint8 with each box and its label drawn: "name score", or "#id name score" in the
    track's own colour when dets carry track ids (a tentative track's box is drawn thinner)."""
    out = np.ascontiguousarray(bgr).copy()
    thickness = max(1, round(max(out.shape[:2]) / 500))
    ids = dets.track_ids if dets.track_ids is not None else [None] * len(dets)
    confirmed = dets.confirmed if dets.confirmed is not None else [True] * len(dets)
    for (x1, y1, x2, y2), score, name, tid, sure in zip(
        dets.boxes, dets.scores, dets.class_names(), ids, confirmed, strict=True
    ):
        p1, p2 = (int(x1), int(y1)), (int(x2), int(y2))
        colour = UNTRACKED_COLOUR if tid is None else TRACK_COLOURS[int(tid) % len(TRACK_COLOURS)]
        label = f"{name} {score:.2f}" if tid is None else f"#{int(tid)} {name} {score:.2f}"
        box_thickness = thickness if sure else max(1, thickness // 2)
        cv2.rectangle(out, p1, p2, colour, box_thickness, cv2.LINE_AA)
        cv2.putText(
            out,
            label,
            (p1[0], max(p1[1] - 4, 12)),
            cv2.FONT_HERSHEY_SIMPLEX,
            0.4 * thickness,
            colour,
            thickness,
            cv2.LINE_AA,
        )
    return out
