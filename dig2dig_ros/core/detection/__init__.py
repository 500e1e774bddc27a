"""Object detection on (fused) frames: our YOLOv5 v6 definition, its code-free model format, decoding, NMS;
and a small multi-object tracker that gives each box a track id.

No ROS here. The product loads only safetensors + JSON folders written by ``dig2dig-convert-yolov5``.
"""

from .decode import Detections, Letterbox, batched_nms, box_iou, decode_head, letterbox, nms, scale_boxes, select
from .detector import Detector, DetectorConfig, draw, resolve_classes
from .tracker import Tracker, TrackerConfig
from .yolov5 import ModelFormatError, YoloV5, YoloV5Config, load_model, save_model

__all__ = [
    "Detections",
    "Detector",
    "DetectorConfig",
    "Letterbox",
    "ModelFormatError",
    "YoloV5",
    "YoloV5Config",
    "batched_nms",
    "box_iou",
    "decode_head",
    "draw",
    "letterbox",
    "load_model",
    "nms",
    "resolve_classes",
    "save_model",
    "scale_boxes",
    "select",
    "Tracker",
    "TrackerConfig",
]
