"""`dig2dig_detector`: YOLOv5 detections on fused frames, each with a track id.

subscribe `fused/image` (sensor_msgs/Image, reliability matching its publishers) → keep the newest frame →
worker: convert → detect (dig2dig_ros.core.detection) → track (core.detection.tracker) → publish, each output
with the input frame's header (stamp, frame_id):

* `detections`: vision_msgs/Detection2DArray, when `vision_msgs.msg` is importable (a ROS 2 install has it from
  its distribution; here it is built with colcon from ../shared/ros2_msgs). One Detection2D per box: `id` the
  box's track id, one ObjectHypothesisWithPose (`class_id` the class name, `score`), the bbox centre and size in
  pixels of the input image. With it, `detections/label_info`: vision_msgs/LabelInfo (the classes kept, with
  the model's class ids, and the confidence threshold), transient local, published at start-up and again when
  `confidence` changes.
* `detections/json`, **instead of `detections`** where vision_msgs cannot be imported (pip-only: it is not on
  PyPI): std_msgs/String holding the same content as JSON::

    {"header": {"stamp": {"sec": S, "nanosec": N}, "frame_id": "..."},
     "image": {"width": W, "height": H},
     "detections": [{"id": "7", "confirmed": true, "class_id": 0, "class_name": "person", "score": 0.87,
                     "bbox": {"center_x": cx, "center_y": cy, "size_x": w, "size_y": h}}, ...]}

  Exactly one of the two topics exists, chosen at start-up.
* `detections/image`: the frame as bgr8 with the boxes drawn, labelled "#id class score" in the track's colour.

Track ids: every published detection carries the id of its track, also while the track is tentative (not yet
matched on `tracker.min_hits` frames; `confirmed` false in the JSON, a thinner box in the image). A stamp
going back or a gap longer than `tracker.max_gap` resets the tracker (logged; ids are never reused).

Frames that arrive while the worker is busy replace the waiting one (newest wins) and are counted as dropped;
counters go to /diagnostics. A missing or corrupt model folder at start-up prints one error line and exits 1.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections import deque
from typing import Any

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rcl_interfaces.msg import SetParametersResult
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image
from std_msgs.msg import Header, String

from dig2dig_ros.core.detection import (
    Detections,
    Detector,
    DetectorConfig,
    ModelFormatError,
    Tracker,
    TrackerConfig,
    draw,
)
from dig2dig_ros.ros import conversions
from dig2dig_ros.ros.node_support import (
    CountsFailures,
    NewestWorker,
    StartupError,
    descriptor,
    diagnostics,
    run_node,
    steady_timer,
)
from dig2dig_ros.ros.params import RELIABILITY_CHOICES, ParamSpec, check_value
from dig2dig_ros.ros.qos_match import REFRESH_S, MatchedInput

try:  # a ROS 2 install (or vision_msgs built with colcon)
    from vision_msgs.msg import Detection2D, Detection2DArray, LabelInfo, ObjectHypothesisWithPose, VisionClass
except ImportError:  # pip-only: publish JSON on detections/json instead
    Detection2D = Detection2DArray = LabelInfo = ObjectHypothesisWithPose = VisionClass = None

HAVE_VISION_MSGS = Detection2DArray is not None
RECENT_S = 3.0  # the window recent losses and failures are taken over
WORKER_STOP_S = 10.0
_DEFAULTS = DetectorConfig()
_TRACKER = TrackerConfig()
TRACKER_PARAMS = {"tracker.match_iou": "match_iou", "tracker.high_score": "high_score",
                  "tracker.min_hits": "min_hits", "tracker.max_age": "max_age", "tracker.max_gap": "max_gap"}

PARAMS: list[ParamSpec] = [
    ParamSpec("model_path", _DEFAULTS.model_path, "folder written by dig2dig-convert-yolov5 "
              "(model.safetensors + model.json)", read_only=True),
    ParamSpec("confidence", _DEFAULTS.confidence, "minimum score (objectness x class probability)", low=0.0, high=1.0),
    ParamSpec("iou", _DEFAULTS.iou, "IoU above which NMS suppresses a lower-scored box of the same class",
              low=0.0, high=1.0),
    ParamSpec("classes", _DEFAULTS.classes, "class names or ids to keep (empty = all)", read_only=True),
    ParamSpec("device", _DEFAULTS.device, "auto (CUDA when available), cpu, cuda or cuda:N", read_only=True),
    ParamSpec("input_size", _DEFAULTS.input_size, "long side of the network input in pixels (multiple of 32)",
              low=32, high=4096, read_only=True),
    ParamSpec("max_det", _DEFAULTS.max_det, "most boxes per frame", low=1, high=10000, read_only=True),
    ParamSpec("tracker.match_iou", _TRACKER.match_iou, "least IoU of a track's predicted box and a detection "
              "for the detection to continue the track", low=0.0, high=1.0),
    ParamSpec("tracker.high_score", _TRACKER.high_score, "detections scored at least this are matched to tracks "
              "first; weaker ones only take the tracks left over (ByteTrack's second pass)", low=0.0, high=1.0),
    ParamSpec("tracker.min_hits", _TRACKER.min_hits, "birth: consecutive matched frames before a track is "
              "confirmed (a tentative track that misses one frame is deleted)", low=1, high=1000),
    ParamSpec("tracker.max_age", _TRACKER.max_age, "death: processed frames a confirmed track may go unmatched "
              "(coasting on its motion model) before it is deleted", low=0, high=1000),
    ParamSpec("tracker.max_gap", _TRACKER.max_gap, "seconds between frames beyond which the tracker starts "
              "afresh, as a stamp going back does (0 = never)", low=0.0, high=3600.0),
    ParamSpec("qos.input_depth", 2, "subscription queue depth", low=1, high=100, read_only=True),
    ParamSpec("qos.input_reliability", "auto", "fused/image subscription: auto = reliable when every publisher is, "
              "best effort otherwise (followed as publishers come and go); reliable or best_effort fix it",
              RELIABILITY_CHOICES, read_only=True),
    ParamSpec("qos.output_depth", 2, "publisher queue depth (reliable)", low=1, high=100, read_only=True),
    ParamSpec("diagnostics_period", 1.0, "seconds between /diagnostics messages", low=0.1, high=60.0,
              read_only=True),
]


class DetectorNode(CountsFailures, Node):
    """Thin ROS adapter around dig2dig_ros.core.detection.Detector."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__("dig2dig_detector", **kwargs)
        self.specs = {spec.name: spec for spec in PARAMS}
        for spec in PARAMS:
            self.declare_parameter(spec.name, spec.default, descriptor(spec))
        values = {name: self.get_parameter(name).value for name in self.specs}
        for spec in PARAMS:
            problem = check_value(spec, values[spec.name])
            if problem:
                raise StartupError(problem)
        if not values["model_path"]:
            raise StartupError("parameter model_path is empty: set it to a folder made by dig2dig-convert-yolov5")
        if values["input_size"] % 32:
            raise StartupError(f"input_size must be a multiple of 32, got {values['input_size']}")
        cfg = DetectorConfig(**{k: values[k] for k in DetectorConfig.__dataclass_fields__})
        cfg.classes = [str(c) for c in (cfg.classes or [])]
        try:
            self.tracker = Tracker(TrackerConfig(**{field: values[name] for name, field in TRACKER_PARAMS.items()}))
        except ValueError as exc:
            raise StartupError(f"tracker: {exc}") from exc
        try:
            self.detector = Detector(cfg)
        except (ModelFormatError, ValueError) as exc:
            raise StartupError(f"cannot load the detector from model_path={cfg.model_path!r}: {exc}") from exc
        self.add_on_set_parameters_callback(self._on_set)

        self.lock = threading.Lock()  # guards counts, latencies, the tracker and the detector's thresholds
        self.last_failure: tuple[float, str] | None = None
        self.counts = {"frames": 0, "processed": 0, "dropped_busy": 0, "bad_input": 0, "failed": 0, "boxes": 0,
                       "tracker_resets": 0}
        self.latencies: deque[float] = deque(maxlen=100)
        self.tracks = 0  # confirmed tracks after the latest frame

        out_qos = QoSProfile(depth=values["qos.output_depth"], reliability=ReliabilityPolicy.RELIABLE)
        self.pub_labels = None
        try:
            self.input = self._subscribe_input(values["qos.input_depth"], values["qos.input_reliability"])
        except ValueError as exc:
            raise StartupError(str(exc)) from exc
        if HAVE_VISION_MSGS:
            self.pub_det = self.create_publisher(Detection2DArray, "detections", out_qos)
            latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                                 durability=DurabilityPolicy.TRANSIENT_LOCAL)
            self.pub_labels = self.create_publisher(LabelInfo, "detections/label_info", latched)
            self._publish_label_info()
        else:
            self.pub_det = self.create_publisher(String, "detections/json", out_qos)
        self.pub_image = self.create_publisher(Image, "detections/image", out_qos)
        self.pub_diag = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        steady_timer(self, values["diagnostics_period"], self._publish_diagnostics)
        steady_timer(self, REFRESH_S, self.input.refresh)
        self.worker = NewestWorker(self._detect, "dig2dig_detector_worker", on_error=self._failed)
        self.get_logger().info(
            f"detecting on {self.input.topic} → {self.pub_det.topic_name}, {self.pub_image.topic_name}: "
            f"{len(self.detector.names)}-class YOLOv5 on {self.detector.device}, input {cfg.input_size}, "
            f"classes {cfg.classes or 'all'}, confidence {cfg.confidence}, iou {cfg.iou}; tracker min_hits "
            f"{self.tracker.cfg.min_hits}, max_age {self.tracker.cfg.max_age}"
            + ("" if HAVE_VISION_MSGS else " (vision_msgs not importable: JSON on detections/json)"))

    def _subscribe_input(self, depth: int, reliability: str) -> MatchedInput:
        """The fused/image subscription: its reliability follows the publishers (dig2dig_ros.ros.qos_match)."""
        return MatchedInput(self, Image, "fused/image", self._on_image, depth, reliability, "fused")

    def _publish_label_info(self) -> None:
        """detections/label_info: the classes this node reports and its confidence threshold (latched)."""
        ids = self.detector.class_ids if self.detector.class_ids is not None else range(len(self.detector.names))
        header = Header(stamp=self.get_clock().now().to_msg())
        msg = LabelInfo(header=header, threshold=float(self.detector.cfg.confidence))
        msg.class_map = [VisionClass(class_id=int(i), class_name=self.detector.names[i]) for i in ids]
        self.pub_labels.publish(msg)

    # -- parameters -------------------------------------------------------------------------------------------
    def _on_set(self, params: list) -> SetParametersResult:
        for param in params:
            spec = self.specs.get(param.name)
            if spec is None:
                continue
            if spec.read_only:
                return SetParametersResult(successful=False, reason=f"{param.name} is fixed at start-up")
            problem = check_value(spec, param.value)
            if problem:
                return SetParametersResult(successful=False, reason=problem)
        with self.lock:
            for param in params:
                if param.name in ("confidence", "iou"):
                    setattr(self.detector.cfg, param.name, float(param.value))
                elif param.name in TRACKER_PARAMS:
                    field = TRACKER_PARAMS[param.name]
                    setattr(self.tracker.cfg, field, type(getattr(self.tracker.cfg, field))(param.value))
        if self.pub_labels is not None and any(p.name == "confidence" for p in params):
            self._publish_label_info()
        return SetParametersResult(successful=True)

    # -- subscribe → keep newest -----------------------------------------------------------------------------
    def _on_image(self, msg: Image) -> None:
        self._count("frames")
        if self.worker.submit(msg):
            self._count("dropped_busy")

    # -- worker: convert → detect → publish ------------------------------------------------------------------
    def _detect(self, msg: Image) -> None:
        try:
            bgr = to_bgr8(msg)  # (H,W,3)
        except conversions.ConversionError as exc:
            self._count("bad_input")
            self.get_logger().warning(f"skipping frame: {exc}", throttle_duration_sec=5.0)
            return
        start = time.monotonic()
        try:
            dets = self.detector(bgr)
            with self.lock:
                dets = self.tracker.update(dets, self._stamp_s(msg))
                reset = self.tracker.last_reset
                if reset:
                    self.counts["tracker_resets"] += 1
                tracks = self.tracker.confirmed_count()
        except Exception as exc:  # noqa: BLE001 - one bad frame must not end the node
            self._failed(exc, "detection failed")
            return
        if reset:
            self.get_logger().info(f"{reset}: tracker reset")
        if HAVE_VISION_MSGS:
            self.pub_det.publish(to_detection2d_array(dets, msg.header))
        else:
            self.pub_det.publish(String(data=json.dumps(to_json_dict(dets, msg.header, bgr.shape))))
        self.pub_image.publish(conversions.numpy_to_image(draw(bgr, dets), "bgr8", msg.header))
        with self.lock:
            self.latencies.append(time.monotonic() - start)
            self.counts["processed"] += 1
            self.counts["boxes"] += len(dets)
            self.tracks = tracks

    def _stamp_s(self, msg: Image) -> float:
        """The frame's stamp in seconds (the node's clock for a frame without one)."""
        sec, nanosec = int(msg.header.stamp.sec), int(msg.header.stamp.nanosec)
        if sec == 0 and nanosec == 0:
            return self.get_clock().now().nanoseconds * 1e-9
        return sec + nanosec * 1e-9

    def _count(self, key: str) -> None:
        with self.lock:
            self.counts[key] += 1

    def _publish_diagnostics(self) -> None:
        with self.lock:
            counts = {**self.counts, "confirmed_tracks": self.tracks}
            latency = float(np.mean(self.latencies)) if self.latencies else 0.0
            failure = self.last_failure
        level, message = DiagnosticStatus.OK, f"running on {self.detector.device}"
        causes = []
        if counts["failed"] or counts["bad_input"]:
            causes.append("frames skipped (bad input or failed detection)")
        if failure is not None and time.monotonic() - failure[0] <= RECENT_S:
            causes.append(failure[1])
        lost = self.input.lost_since(time.monotonic() - RECENT_S)
        if lost:
            causes.append(self.input.loss_cause(lost, RECENT_S))
            self.get_logger().warning(causes[-1], throttle_duration_sec=10.0)
        if causes:
            level, message = DiagnosticStatus.WARN, "; ".join(causes)
        values = {**counts, "lost": self.input.lost, "latency_ms": 1000 * latency}
        self.pub_diag.publish(diagnostics(self, "detector", level, message, values))

    def stop(self) -> None:
        """Stop the worker thread (after the frame in progress)."""
        if not self.worker.stop(timeout=WORKER_STOP_S):
            self.get_logger().error(f"the detector worker did not stop within {WORKER_STOP_S:.0f} s; abandoned")


def to_bgr8(msg: Image) -> np.ndarray:
    """Any supported Image as (H,W,3) uint8 BGR (16-bit and float frames scaled from [0,1] to 8 bits)."""
    return conversions.to_bgr8(msg)  # (H,W,3); every camera encoding the fusion node takes


def to_json_dict(dets: Detections, header: Any, shape: tuple[int, ...]) -> dict[str, Any]:
    """The detections/json payload (see the module docstring)."""
    items = []
    for (x1, y1, x2, y2), score, cid, name, tid, sure in zip(
        dets.boxes, dets.scores, dets.class_ids, dets.class_names(), *_track_columns(dets), strict=True
    ):
        items.append({
            "id": tid, "confirmed": sure, "class_id": int(cid), "class_name": name, "score": round(float(score), 4),
            "bbox": {"center_x": round(float(x1 + x2) / 2, 2), "center_y": round(float(y1 + y2) / 2, 2),
                     "size_x": round(float(x2 - x1), 2), "size_y": round(float(y2 - y1), 2)},
        })
    return {
        "header": {"stamp": {"sec": int(header.stamp.sec), "nanosec": int(header.stamp.nanosec)},
                   "frame_id": header.frame_id},
        "image": {"width": int(shape[1]), "height": int(shape[0])},
        "detections": items,
    }


def _track_columns(dets: Detections) -> tuple[list[str], list[bool]]:
    """Per box: the track id as a string ("" when dets were not tracked) and whether its track is confirmed."""
    if dets.track_ids is None:
        return [""] * len(dets), [False] * len(dets)
    confirmed = dets.confirmed if dets.confirmed is not None else [False] * len(dets)
    return [str(int(t)) for t in dets.track_ids], [bool(c) for c in confirmed]


def to_detection2d_array(dets: Detections, header: Any) -> Any:
    """vision_msgs/Detection2DArray (vision_msgs ≥ 3: hypothesis.class_id is the class name; id the track id)."""
    out = Detection2DArray(header=header)
    ids, _ = _track_columns(dets)
    for (x1, y1, x2, y2), score, name, tid in zip(dets.boxes, dets.scores, dets.class_names(), ids, strict=True):
        det = Detection2D(header=header, id=tid)
        hyp = ObjectHypothesisWithPose()
        hyp.hypothesis.class_id = name
        hyp.hypothesis.score = float(score)
        det.results.append(hyp)
        det.bbox.center.position.x = float(x1 + x2) / 2
        det.bbox.center.position.y = float(y1 + y2) / 2
        det.bbox.size_x = float(x2 - x1)
        det.bbox.size_y = float(y2 - y1)
        out.detections.append(det)
    return out


def main(argv: list[str] | None = None) -> int:
    """Console entry point: run the node until shutdown; a bad model or parameter exits 1 with one line."""
    return run_node(DetectorNode, "dig2dig_detector", argv)


if __name__ == "__main__":
    sys.exit(main())
