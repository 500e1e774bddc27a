"""YOLOv5 pre- and post-processing: letterbox, head decoding, class-aware NMS, boxes back to the image.

Conventions: images are (H,W,3) uint8 BGR as cv2 gives them; boxes are xyxy pixels; a prediction row is
``[cx, cy, w, h, objectness, class scores...]`` after the sigmoid, in letterboxed-input pixels.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import torch

PAD_VALUE = 114  # YOLOv5's letterbox grey
MAX_WH = 7680  # class offset for class-aware NMS: larger than any box coordinate
MAX_NMS = 30000  # most candidates sent to NMS (highest scores first)


@dataclass
class Letterbox:
    """How an image was resized and padded: original = (letterboxed - pad) / ratio."""

    ratio: float
    pad: tuple[float, float]  # (left, top) in letterboxed pixels
    shape: tuple[int, int]  # original (H, W)


@dataclass
class Detections:
    """Boxes of one image in original-image pixels."""

    boxes: np.ndarray  # (N,4) float32 xyxy
    scores: np.ndarray  # (N,) float32 in [0,1]
    class_ids: np.ndarray  # (N,) int64
    names: list[str]  # class name per id (the model's full list)
    track_ids: np.ndarray | None = None  # (N,) int64, filled in by detection.tracker.Tracker
    confirmed: np.ndarray | None = None  # (N,) bool: the box's track is confirmed (not tentative)

    def __len__(self) -> int:
        return len(self.scores)

    def class_names(self) -> list[str]:
        """The name of each box's class."""
        return [self.names[int(c)] if 0 <= c < len(self.names) else str(int(c)) for c in self.class_ids]


def letterbox(img: np.ndarray, size: int = 640, stride: int = 32, auto: bool = True) -> tuple[np.ndarray, Letterbox]:
    """Resize so the long side is `size` (aspect kept), pad with grey to a stride multiple (auto) or a square.

    img: (H,W,C) uint8. Returns the padded image (H',W',C) and the transform. Never upscales by more than
    needed for the long side to equal size; H', W' are multiples of stride.
    """
    h, w = img.shape[:2]
    ratio = min(size / h, size / w)
    new_w, new_h = int(round(w * ratio)), int(round(h * ratio))
    if auto:
        out_w, out_h = -(-new_w // stride) * stride, -(-new_h // stride) * stride
    else:
        out_w = out_h = -(-size // stride) * stride
    dw, dh = (out_w - new_w) / 2, (out_h - new_h) / 2
    if (new_w, new_h) != (w, h):
        img = cv2.resize(img, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    top, bottom = int(round(dh - 0.1)), int(round(dh + 0.1))
    left, right = int(round(dw - 0.1)), int(round(dw + 0.1))
    padded = cv2.copyMakeBorder(img, top, bottom, left, right, cv2.BORDER_CONSTANT, value=(PAD_VALUE,) * 3)
    return padded, Letterbox(ratio=ratio, pad=(float(left), float(top)), shape=(h, w))


def to_tensor(img_bgr: np.ndarray) -> torch.Tensor:
    """(H,W,3) uint8 BGR → (1,3,H,W) float32 RGB in [0,1]."""
    rgb = np.ascontiguousarray(img_bgr[:, :, ::-1].transpose(2, 0, 1))  # (3,H,W)
    return torch.from_numpy(rgb).float().div_(255.0).unsqueeze(0)


def decode_head(levels: Sequence[torch.Tensor], anchors: torch.Tensor, strides: Sequence[float]) -> torch.Tensor:
    """YOLOv5 v6 box decoding of the head's logits into (B, N, 5+nc) prediction rows.

    levels[i]: (B, na, ny, nx, 5+nc) logits; anchors: (nl, na, 2) in pixels. After the sigmoid σ:
    cx = (2σ(tx) − 0.5 + x)·stride, cy likewise, w = (2σ(tw))²·anchor_w, h likewise; objectness and class
    scores are σ of their logits.
    """
    out = []
    for i, raw in enumerate(levels):
        b, na, ny, nx, no = raw.shape
        y = raw.sigmoid()
        gy, gx = torch.meshgrid(
            torch.arange(ny, device=raw.device, dtype=y.dtype),
            torch.arange(nx, device=raw.device, dtype=y.dtype),
            indexing="ij",
        )
        grid = torch.stack((gx, gy), -1).view(1, 1, ny, nx, 2)  # (1,1,ny,nx,2)
        anchor = anchors[i].to(y).view(1, na, 1, 1, 2)  # (1,na,1,1,2)
        xy = (y[..., 0:2] * 2 - 0.5 + grid) * float(strides[i])
        wh = (y[..., 2:4] * 2) ** 2 * anchor
        out.append(torch.cat((xy, wh, y[..., 4:]), -1).view(b, -1, no))
    return torch.cat(out, 1)


def xywh_to_xyxy(xywh: np.ndarray) -> np.ndarray:
    """(N,4) centre/size → (N,4) corners."""
    xy, half = xywh[:, :2], xywh[:, 2:4] / 2
    return np.concatenate((xy - half, xy + half), axis=1)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N,4) × (M,4) xyxy → (N,M) intersection over union (0 where the union is empty)."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])  # (N,M,2)
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])  # (N,M,2)
    inter = np.clip(rb - lt, 0, None).prod(axis=2)  # (N,M)
    area_a = np.clip(a[:, 2:] - a[:, :2], 0, None).prod(axis=1)  # (N,)
    area_b = np.clip(b[:, 2:] - b[:, :2], 0, None).prod(axis=1)  # (M,)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter, dtype=np.float64), where=union > 0)


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float, max_det: int = 300) -> np.ndarray:
    """Greedy non-maximum suppression: indices kept, highest score first.

    A box is suppressed when its IoU with a kept, higher-scored box exceeds iou_threshold; equal scores keep
    the lower index first.
    """
    order = np.argsort(-scores, kind="stable")
    keep: list[int] = []
    while order.size and len(keep) < max_det:
        i = int(order[0])
        keep.append(i)
        rest = order[1:]
        order = rest[box_iou(boxes[i : i + 1], boxes[rest])[0] <= iou_threshold]
    return np.asarray(keep, dtype=np.int64)


def batched_nms(
    boxes: np.ndarray, scores: np.ndarray, class_ids: np.ndarray, iou_threshold: float, max_det: int = 300
) -> np.ndarray:
    """Class-aware NMS: boxes of different classes never suppress each other."""
    if boxes.size == 0:
        return np.zeros(0, dtype=np.int64)
    shifted = boxes + class_ids[:, None].astype(boxes.dtype) * MAX_WH  # (N,4) classes far apart
    return nms(shifted, scores, iou_threshold, max_det)


def select(
    pred: np.ndarray,
    conf_threshold: float = 0.25,
    iou_threshold: float = 0.45,
    classes: Sequence[int] | None = None,
    max_det: int = 300,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One image's prediction rows (N, 5+nc) → kept (boxes xyxy (K,4), scores (K,), class ids (K,)).

    score = objectness · best class score (one label per box, as YOLOv5's default); rows with objectness or
    score ≤ conf_threshold are dropped, then `classes` (ids to keep, None = all), then class-aware NMS.
    """
    pred = pred[pred[:, 4] > conf_threshold]  # (n, 5+nc)
    cls_scores = pred[:, 5:] * pred[:, 4:5]  # (n, nc)
    class_ids = cls_scores.argmax(axis=1) if len(pred) else np.zeros(0, dtype=np.int64)  # (n,)
    scores = cls_scores[np.arange(len(pred)), class_ids]  # (n,)
    mask = scores > conf_threshold
    if classes is not None:
        mask &= np.isin(class_ids, np.asarray(list(classes), dtype=np.int64))
    boxes = xywh_to_xyxy(pred[mask, :4])
    scores, class_ids = scores[mask], class_ids[mask].astype(np.int64)
    if len(scores) > MAX_NMS:
        top = np.argsort(-scores, kind="stable")[:MAX_NMS]
        boxes, scores, class_ids = boxes[top], scores[top], class_ids[top]
    keep = batched_nms(boxes, scores, class_ids, iou_threshold, max_det)
    return boxes[keep].astype(np.float32), scores[keep].astype(np.float32), class_ids[keep]


def scale_boxes(boxes: np.ndarray, lb: Letterbox) -> np.ndarray:
    """(N,4) xyxy in letterboxed pixels → original pixels, clipped to the image."""
    out = boxes.astype(np.float32).copy()
    out[:, [0, 2]] = (out[:, [0, 2]] - lb.pad[0]) / lb.ratio
    out[:, [1, 3]] = (out[:, [1, 3]] - lb.pad[1]) / lb.ratio
    h, w = lb.shape
    out[:, [0, 2]] = out[:, [0, 2]].clip(0, w)
    out[:, [1, 3]] = out[:, [1, 3]].clip(0, h)
    return out
