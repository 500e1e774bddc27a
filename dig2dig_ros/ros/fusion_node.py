"""`dig2dig_fusion`: synchronised infrared + visible in; fused image and DIG weight maps out.

subscribe (`ir/image`, `visible/image`) → synchronise (ApproximateTime) → keep the newest pair → worker:
convert → normalise the infrared frame (dig2dig_ros.core.frame.thermal) → register it into the reference camera's
geometry (`ir.homography`, dig2dig_ros.core.frame.registration) → fuse (dig2dig_ros.core) → publish `fused/image`,
`fused/dig/ir`, `fused/dig/visible` (32FC1 weights in [0,1]), `fused/dig/overlay` and `fused/camera_info`, each
with the header and size of the reference input. Outputs nobody subscribes to are not built. Pairs that
arrive while the worker is busy replace the waiting one (newest wins) and are counted as dropped; bad frames
are logged, counted and skipped. Counters and a health status go to /diagnostics.

With `pipeline` (the default) the worker has two threads (node_support.TwoStageWorker): the front converts the
pair and fuses it up to the blend solve (VideoFuser.front), the back runs the detail, the stabilisation, the
colour merge and publishing (VideoFuser.back) for every front result in order, while the front works on the
next pair.
"""

from __future__ import annotations

import sys
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rcl_interfaces.msg import SetParametersResult
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from rclpy.qos_overriding_options import QoSOverridingOptions
from sensor_msgs.msg import CameraInfo, CompressedImage, Image

from dig2dig_ros.core.diffusion.priors import PriorError, load_prior
from dig2dig_ros.core.frame import imaging
from dig2dig_ros.core.frame.auto_registration import AutoRegistration
from dig2dig_ros.core.frame.fusion import Fuser, FusionCancelled, FusionResult
from dig2dig_ros.core.frame.imaging import weight_overlay  # a module name: the subscriber-count test counts its calls
from dig2dig_ros.core.frame.registration import RegistrationError, register_pair
from dig2dig_ros.core.frame.thermal import ThermalSettings, prepare_infrared
from dig2dig_ros.core.video.fuser import Pending, VideoFuser
from dig2dig_ros.ros import conversions
from dig2dig_ros.ros.node_support import (
    CountsFailures,
    StartupError,
    TwoStageWorker,
    descriptor,
    diagnostics,
    run_node,
    steady_timer,
)
from dig2dig_ros.ros.params import (
    all_params,
    auto_settings,
    check_value,
    check_values,
    fusion_config,
    homography,
    is_auto_homography,
    thermal_settings,
)
from dig2dig_ros.ros.qos_match import REFRESH_S, MatchedSubscriber
from dig2dig_ros.ros.sync import ApproximateTimeSynchronizer

# A stamp this far behind its input's previous one means time restarted (bag loop, camera restart).
TIME_JUMP_BACK_S = 1.0
# Health (diagnostics): an input silent this long, or pairs arriving but none fused this long, is a WARN.
SILENT_S = 2.0
STALL_S = 2.0
RECENT_S = 3.0  # the window "recent" pairs, failures and rates are taken over
RATE_WINDOW_S = 5.0
WORKER_STOP_S = 10.0  # stop() waits this long for the frame in progress
# Aspect ratios that differ by more than this are stretched only with a warning.
ASPECT_TOLERANCE = 0.01
SOURCES = ("ir", "visible")
LABELS = {"ir": "infrared", "visible": "visible"}


class _Setup:
    """What the worker reads per frame; replaced as a whole on every accepted parameter change."""

    def __init__(self, fuser: Fuser, values: dict[str, Any], thermal: ThermalSettings, h: np.ndarray | None):
        self.fuser, self.values, self.thermal, self.homography = fuser, values, thermal, h
        # frames as a sequence (video.enabled); a new setup starts afresh. On two threads the solve goes to the half
        # that has had less to do
        self.video = VideoFuser(fuser, balance=bool(values["pipeline"]))


@dataclass
class _InFlight:
    """A pair between the worker's halves: fused up to the detail, with what publishing it needs."""

    setup: _Setup  # the one its front ran with: its back runs with the same (a parameter change never mixes)
    pending: Pending
    header: Any  # the reference input's header, copied onto every output
    skew: float  # seconds between the pair's stamps
    start: float  # perf_counter when the worker took the pair


class FusionNode(CountsFailures, Node):
    """Thin ROS adapter around dig2dig_ros.core.frame.fusion.Fuser."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__("dig2dig_fusion", **kwargs)
        self.specs = {spec.name: spec for spec in all_params()}
        for spec in self.specs.values():
            self.declare_parameter(spec.name, spec.default, descriptor(spec))
        values = self._values()
        for spec in self.specs.values():
            problem = check_value(spec, values[spec.name])
            if problem:
                raise StartupError(problem)
        problem = check_values(values)
        if problem:
            raise StartupError(problem)
        if values["torch_threads"] > 0:
            import torch

            torch.set_num_threads(int(values["torch_threads"]))
        try:
            self.prior = load_prior(values["prior"], _device(values["device"]))
            self.setup = self._make_setup(values)
        except (PriorError, ValueError) as exc:
            raise StartupError(str(exc)) from exc
        self.auto = self._make_auto(values, None)  # ir.homography auto: kept across parameter changes
        self.add_on_set_parameters_callback(self._on_set)

        self.lock = threading.Lock()  # guards setup, counts and the windows below
        self.counts = {"pairs": 0, "fused": 0, "dropped_busy": 0, "bad_input": 0, "failed": 0, "stretched": 0,
                       "video_restarts": 0}
        self.latencies: deque[float] = deque(maxlen=100)
        self.ages: deque[float] = deque(maxlen=100)
        self.skews: deque[float] = deque(maxlen=100)
        self.started = time.monotonic()
        self.arrivals = {name: deque(maxlen=2000) for name in SOURCES}  # monotonic arrival times
        self.outcomes: deque[tuple[float, bool]] = deque(maxlen=500)  # (monotonic, pair was good)
        self.last_problem = ""  # why the latest bad pair was bad
        self.last_failure: tuple[float, str] | None = None
        self.losing = False  # health() saw transport losses in the last RECENT_S
        self.unfused_since: float | None = None  # first pair after the last fused frame
        self.last_stamps: dict[str, float] = {}
        self.camera_info: dict[str, CameraInfo] = {}
        self._stopping = threading.Event()
        self._publish_lock = threading.Lock()
        self._closed = False

        depth = values["qos.input_depth"]
        info_qos = QoSProfile(**{**_qos_kwargs(qos_profile_sensor_data), "depth": depth})  # matches any writer
        out_qos = QoSProfile(depth=values["qos.output_depth"], reliability=ReliabilityPolicy.RELIABLE)
        overrides = QoSOverridingOptions.with_default_policies
        compressed = values["input_transport"] == "compressed"
        msg_type = CompressedImage if compressed else Image
        # image_transport's rule: the compressed topic is the *resolved* base topic + /compressed, so remapping
        # ir/image moves both.
        topics = [self.resolve_topic_name(f"{name}/image") + ("/compressed" if compressed else "")
                  for name in SOURCES]
        # Reliability follows each topic's publishers (qos_match); a QoS override changes the profile object it
        # is given: one copy each.
        try:
            self.subs = [MatchedSubscriber(self, msg_type, topic, depth, values["qos.input_reliability"],
                                           LABELS[name]) for name, topic in zip(SOURCES, topics, strict=True)]
        except ValueError as exc:
            raise StartupError(str(exc)) from exc
        for name, sub in zip(SOURCES, self.subs, strict=True):
            sub.registerCallback(self._arrived, name)
        self.sync = ApproximateTimeSynchronizer(self.subs, values["sync.queue_size"], values["sync.slop"],
                                                values["sync.allow_headerless"],
                                                interval_bound=values["sync.interval_bound"])
        self.sync.registerCallback(self._on_pair)
        for name in SOURCES:
            self.create_subscription(CameraInfo, f"{name}/camera_info", lambda msg, n=name: self._on_info(n, msg),
                                     _copy(info_qos), qos_overriding_options=overrides())
        self.pub_fused = self.create_publisher(Image, "fused/image", _copy(out_qos), qos_overriding_options=overrides())
        self.pub_dig = {name: self.create_publisher(Image, f"fused/dig/{name}", _copy(out_qos),
                                                    qos_overriding_options=overrides()) for name in SOURCES}
        self.pub_overlay = self.create_publisher(Image, "fused/dig/overlay", _copy(out_qos),
                                                 qos_overriding_options=overrides())
        self.pub_info = self.create_publisher(CameraInfo, "fused/camera_info", _copy(out_qos),
                                              qos_overriding_options=overrides())
        self.pub_diag = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        steady_timer(self, values["diagnostics_period"], self._publish_diagnostics)
        steady_timer(self, REFRESH_S, self._match_publishers)
        if values["sync.max_wait"] > 0:
            wait = float(values["sync.max_wait"])
            steady_timer(self, max(0.02, wait / 4), lambda: self.sync.flush_stale(wait))
        self._warm_up()
        self.worker = TwoStageWorker(self._fuse_front, self._fuse_back, "dig2dig_fusion_worker",
                                     on_error=self._failed, pipelined=bool(values["pipeline"]))
        cfg = self.setup.fuser.config
        registered = ("registered by ir.homography" if self.setup.homography is not None else
                      "registered by ir.homography auto, estimated from the images" if self.auto else "aligned")
        self.get_logger().info(
            f"fusing {self.subs[0].resolved_topic} + {self.subs[1].resolved_topic} ({registered}) → "
            f"{self.pub_fused.topic_name}: method {cfg.method}, prior {values['prior']} on {self.setup.fuser.device}, "
            f"{cfg.sampler.steps} steps, working size {cfg.max_side or 'input'}, slop {values['sync.slop']} s, "
            f"{'pipelined on two threads' if values['pipeline'] else 'one frame at a time'}")

    def _make_setup(self, values: dict[str, Any]) -> _Setup:
        """Everything a frame needs from the parameters; raises ValueError naming what is wrong."""
        fuser = Fuser(fusion_config(values), prior=self.prior, device=values["device"])
        return _Setup(fuser, values, thermal_settings(values), homography(values))

    def _make_auto(self, values: dict[str, Any], current: AutoRegistration | None) -> AutoRegistration | None:
        """The estimator for ir.homography auto (the running one when there is one), or None."""
        if not is_auto_homography(values):
            return None
        if current is not None:
            return current
        return AutoRegistration(auto_settings(values), log=self._log_registration)

    def _log_registration(self, message: str, warn: bool) -> None:
        if warn:  # rclpy wants one severity per call site
            self.get_logger().warning(message)
        else:
            self.get_logger().info(message)

    def _warm_up(self) -> None:
        """Fuse one small blank pair so the first real frame does not pay for lazy initialisation."""
        start = time.perf_counter()
        blank = np.zeros((64, 64), np.uint8)
        self.setup.fuser([blank, blank])
        self.get_logger().info(f"warmed up in {time.perf_counter() - start:.2f} s")

    @property
    def fuser(self) -> Fuser:
        return self.setup.fuser

    @property
    def values(self) -> dict[str, Any]:
        return self.setup.values

    # -- parameters -------------------------------------------------------------------------------------------
    def _values(self) -> dict[str, Any]:
        return {name: self.get_parameter(name).value for name in self.specs}

    def _on_set(self, params: list) -> SetParametersResult:
        if not any(param.name in self.specs for param in params):
            return SetParametersResult(successful=True)  # e.g. qos_overrides.* declared by rclpy at start-up
        values = dict(self.setup.values)
        for param in params:
            spec = self.specs.get(param.name)
            if spec is None:
                continue
            problem = check_value(spec, param.value)
            if problem:
                return SetParametersResult(successful=False, reason=problem)
            values[param.name] = param.value
        problem = check_values(values)
        if problem:
            return SetParametersResult(successful=False, reason=problem)
        try:
            setup = self._make_setup(values)
        except ValueError as exc:
            return SetParametersResult(successful=False, reason=str(exc))
        auto = self._make_auto(values, self.auto)
        with self.lock:
            self.setup, self.auto = setup, auto
        self.get_logger().info("parameters updated: " + ", ".join(f"{p.name}={p.value}" for p in params))
        return SetParametersResult(successful=True)

    # -- subscribe → synchronise → keep newest --------------------------------------------------------------
    def _arrived(self, msg: Any, name: str) -> None:
        now = time.monotonic()
        with self.lock:
            self.arrivals[name].append(now)
        stamp = _stamp_s(msg) if hasattr(msg, "header") else None
        last = self.last_stamps.get(name)
        if stamp is not None and last is not None and stamp < last - TIME_JUMP_BACK_S:
            # A bag replayed in a loop (or a restarted camera): start synchronising afresh, once: the other
            # camera's first message after the jump must not reset again (that would drop this one).
            self.sync.reset()
            self.last_stamps.clear()
            self.get_logger().info(f"{name} time jumped back {last - stamp:.1f} s: synchroniser reset")
        if stamp is not None:
            self.last_stamps[name] = stamp

    def _on_info(self, name: str, msg: CameraInfo) -> None:
        with self.lock:
            self.camera_info[name] = msg

    def _on_pair(self, ir_msg: Any, vis_msg: Any) -> None:
        problem = self._check_pair(ir_msg, vis_msg)
        now = time.monotonic()
        with self.lock:
            self.counts["pairs"] += 1
            if self.unfused_since is None:
                self.unfused_since = now
        if problem:  # a bad pair never displaces a good one waiting for the worker
            self._bad(problem)
        elif self.worker.submit((ir_msg, vis_msg)):
            self._count("dropped_busy")

    def _check_pair(self, ir_msg: Any, vis_msg: Any) -> str | None:
        """What is wrong with a pair that can be told without decoding it, or None."""
        if isinstance(ir_msg, CompressedImage):
            return None
        for name, msg in (("infrared", ir_msg), ("visible", vis_msg)):
            problem = conversions.layout_problem(msg)
            if problem:
                return f"{name} image: {problem}"
        setup = self.setup
        sizes = (ir_msg.width, ir_msg.height), (vis_msg.width, vis_msg.height)
        if (sizes[0] != sizes[1] and setup.homography is None and self.auto is None
                and setup.fuser.config.resize == "none"):
            return _size_problem(sizes[0], sizes[1])
        return None

    # -- worker: convert → normalise → register → fuse (front) | finish → publish (back) -------------------------
    def _fuse_front(self, pair: tuple[Any, Any]) -> _InFlight | None:
        """The pair converted, normalised, registered and fused up to the detail; None when there is nothing to
        finish (a bad pair, a failure, the node stopping)."""
        start = time.perf_counter()
        ir_msg, vis_msg = pair
        with self.lock:
            setup = self.setup
        try:
            images, valid, stretched = self._prepare(ir_msg, vis_msg, setup)
        except (conversions.ConversionError, RegistrationError) as exc:  # a bad frame: counted and skipped
            self._bad(str(exc) or type(exc).__name__)
            return None
        except Exception as exc:  # noqa: BLE001 - a fault of ours (normalisation, registration), not of the frame
            self._failed(exc, "preparing the pair failed")
            return None
        if stretched:
            self._count("stretched")
            self.get_logger().warning(stretched, throttle_duration_sec=10.0)
        with self.lock:
            self.outcomes.append((time.monotonic(), True))
        header = vis_msg.header if setup.values["reference_frame"] == "visible" else ir_msg.header
        try:
            pending = setup.video.front(images, stamp=_stamp_ns(header) / 1e9, valid=valid,
                                        should_stop=self._stopping.is_set)
        except FusionCancelled:
            return None  # the node is stopping
        except Exception as exc:  # noqa: BLE001 - keep running: one bad frame must not stop the node
            self._failed(exc, "fusion failed")
            return None
        return _InFlight(setup, pending, header, abs(_stamp_s(ir_msg) - _stamp_s(vis_msg)), start)

    def _fuse_back(self, flight: _InFlight) -> None:
        """The rest of a front result: detail, stabilisation, colour merge; then publishing and the counters."""
        setup, values = flight.setup, flight.setup.values
        try:
            result = setup.video.back(flight.pending, should_stop=self._stopping.is_set)
        except FusionCancelled:
            return  # the node is stopping
        except Exception as exc:  # noqa: BLE001 - keep running: one bad frame must not stop the node
            self._failed(exc, "fusion failed")
            return
        reason = flight.pending.reason
        if reason not in ("warm", "first frame") and not reason.startswith("video mode off"):
            self._count("video_restarts")  # video mode fused this frame on its own: say why
            self.get_logger().info(f"video mode: frame fused on its own ({reason})", throttle_duration_sec=5.0)
        if not self._publish(result, flight.header, values):
            return
        latency = time.perf_counter() - flight.start  # from taking the pair to published, both halves and the wait
        age = (self.get_clock().now().nanoseconds - _stamp_ns(flight.header)) / 1e9
        with self.lock:
            self.counts["fused"] += 1
            self.latencies.append(latency)
            self.ages.append(age)
            self.skews.append(flight.skew)
            self.unfused_since = None
            fused = self.counts["fused"]
            c = dict(self.counts)
            median = float(np.median(self.latencies))
        if fused % values["log_every"] == 0 or fused == 1:
            lost = self.lost()
            self.get_logger().info(
                f"fused {fused} frames ({c['pairs']} pairs, {c['dropped_busy']} dropped while busy, "
                f"{c['bad_input']} bad, {c['failed']} failed; lost in transport: {lost['ir']} infrared, "
                f"{lost['visible']} visible); latency {1000 * median:.0f} ms, age {1000 * age:.0f} ms")

    def _prepare(self, ir_msg: Any, vis_msg: Any, setup: _Setup) -> tuple[list, list, str]:
        """Decoded, normalised and registered [ir, vis] in the reference camera's geometry, their validity masks,
        and a warning when a frame had to be stretched to another aspect ratio ("" otherwise)."""
        ir = prepare_infrared(self._to_array(ir_msg), setup.thermal)
        if ir.ndim == 3:  # a 3-channel (colour-mapped) infrared export: its luminance
            ir = cv2.cvtColor(ir, cv2.COLOR_BGR2GRAY)
        vis = self._to_array(vis_msg)
        reference = setup.values["reference_frame"]
        h = setup.homography
        auto = self.auto
        if auto is not None:  # keeps a spaced pair for its estimate; None until the first one is accepted
            auto.offer(ir, vis, _stamp_s(vis_msg))
            h = auto.homography
        if h is not None:
            ir, vis, valid = register_pair(ir, vis, h, reference)
            return [ir, vis], valid, ""
        if ir.shape[:2] == vis.shape[:2]:
            return [ir, vis], [None, None], ""
        (h_ir, w_ir), (h_vis, w_vis) = ir.shape[:2], vis.shape[:2]
        if setup.fuser.config.resize == "none":
            raise conversions.ConversionError(_size_problem((w_ir, h_ir), (w_vis, h_vis)))
        # The output always has the reference camera's size: the other frame is resized to it.
        if reference == "visible":
            target, other = (h_vis, w_vis), "infrared"
            ir = imaging.resize(ir, target, cv2.INTER_LINEAR)
        else:
            target, other = (h_ir, w_ir), "visible"
            vis = imaging.resize(vis, target, cv2.INTER_LINEAR)
        warning = ""
        if abs((w_ir / h_ir) / (w_vis / h_vis) - 1.0) > ASPECT_TOLERANCE:
            warning = (f"stretching the {other} frame to {target[1]}x{target[0]} (infrared {w_ir}x{h_ir}, visible "
                       f"{w_vis}x{h_vis}: the aspect ratios differ); set ir.homography to register the cameras")
        return [ir, vis], [None, None], warning

    @staticmethod
    def _to_array(msg: Any) -> np.ndarray:
        """Image message → uint8/uint16/float32 gray or uint8 BGR; raises on bad input."""
        if isinstance(msg, CompressedImage):
            arr = conversions.compressed_to_numpy(msg)
            return arr if arr.ndim == 2 else arr[..., :3]
        arr = conversions.decode_image(msg)  # gray as stored, or (H,W,3) BGR uint8
        if arr.dtype == np.float32 and not np.isfinite(arr).all():
            raise conversions.ConversionError(f"{msg.encoding} frame contains NaN or infinite values")
        return arr

    def _publish(self, result: FusionResult, header: Any, values: dict[str, Any]) -> bool:
        """Publish what has subscribers; False when the node is closing (nothing published)."""
        with self._publish_lock:
            if self._closed:
                return False
            if self.pub_fused.get_subscription_count():
                encoding = "bgr8" if result.fused.ndim == 3 else "mono8"
                self.pub_fused.publish(conversions.numpy_to_image(result.fused, encoding, header))
            with self.lock:
                info = self.camera_info.get(values["reference_frame"])
            if info is not None and self.pub_info.get_subscription_count():
                height, width = result.fused.shape[:2]
                self.pub_info.publish(scaled_camera_info(info, width, height, header))
            if result.weights is None:  # a classical method: no DIG maps to show
                return True
            for k, name in enumerate(SOURCES):
                if self.pub_dig[name].get_subscription_count():
                    weight = result.weights[k].astype(np.float32, copy=False)  # (H,W)
                    self.pub_dig[name].publish(conversions.numpy_to_image(weight, "32FC1", header))
            if self.pub_overlay.get_subscription_count():
                shown = result.weights[0 if values["overlay_source"] == "ir" else 1]
                self.pub_overlay.publish(
                    conversions.numpy_to_image(weight_overlay(result.fused, shown), "bgr8", header))
        return True

    def _count(self, key: str) -> None:
        with self.lock:
            self.counts[key] += 1

    # -- transport: QoS that matches the publishers, losses counted ------------------------------------------
    def _match_publishers(self) -> None:
        for sub in self.subs:
            sub.input.refresh()

    def lost(self) -> dict[str, int]:
        """Messages the middleware reported lost since start, per input."""
        return {name: sub.input.lost for name, sub in zip(SOURCES, self.subs, strict=True)}

    def _bad(self, problem: str) -> None:
        with self.lock:
            self.counts["bad_input"] += 1
            self.outcomes.append((time.monotonic(), False))
            self.last_problem = problem
        self.get_logger().warning(f"skipping a pair: {problem}", throttle_duration_sec=5.0)

    # -- diagnostics ------------------------------------------------------------------------------------------
    def health(self, now: float | None = None) -> tuple[bytes, str]:
        """The fusion status (OK or WARN) and a message naming every cause of a WARN."""
        now = time.monotonic() if now is None else now
        causes = []
        lossy = set()
        for name, sub in zip(SOURCES, self.subs, strict=True):
            lost = sub.input.lost_since(now - RECENT_S)
            if lost:  # frames are being published but do not arrive: say so, not "no frames"
                lossy.add(name)
                causes.append(sub.input.loss_cause(lost, RECENT_S))
        self.losing = bool(lossy)  # frames are being lost in transport (the diagnostics log it)
        with self.lock:
            for name in SOURCES:
                times = self.arrivals[name]
                if name in lossy:
                    continue
                if not times:
                    if now - self.started > SILENT_S:
                        causes.append(f"no {LABELS[name]} frames received yet ({now - self.started:.0f} s)")
                elif now - times[-1] > SILENT_S:
                    causes.append(f"no {LABELS[name]} frames for {now - times[-1]:.1f} s")
            recent = [good for t, good in self.outcomes if now - t <= RECENT_S]
            if recent and not any(recent):
                causes.append(f"every pair in the last {RECENT_S:.0f} s was bad ({len(recent)}): {self.last_problem}")
            latency = float(np.median(self.latencies)) if self.latencies else 0.0
            stall = max(STALL_S, 2.0 * latency)
            if self.unfused_since is not None and now - self.unfused_since > stall and recent and any(recent):
                reason = ""
                if self.last_failure is not None and now - self.last_failure[0] <= RECENT_S:
                    reason = f": {self.last_failure[1]}"
                causes.append(f"pairs arrive but none fused for {now - self.unfused_since:.1f} s{reason}")
            elif self.last_failure is not None and now - self.last_failure[0] <= RECENT_S:
                causes.append(self.last_failure[1])
            counts = dict(self.counts)
        auto = self.auto  # one read: a parameter change may replace it meanwhile
        registration = auto.status() if auto is not None else None
        if registration is not None and registration.warn:
            causes.append(registration.message)
        if causes:
            return DiagnosticStatus.WARN, "; ".join(causes)
        return DiagnosticStatus.OK, f"{counts['fused']} fused, {counts['dropped_busy']} dropped, " \
                                    f"{counts['bad_input']} bad" + (f"; {registration.message}" if registration else "")

    def _publish_diagnostics(self) -> None:
        now = time.monotonic()
        level, message = self.health(now)
        with self.lock:
            counts = dict(self.counts)
            latency = float(np.median(self.latencies)) if self.latencies else float("nan")
            p95 = float(np.percentile(self.latencies, 95)) if self.latencies else float("nan")
            age = float(np.median(self.ages)) if self.ages else float("nan")
            last_age = self.ages[-1] if self.ages else float("nan")
            skew = float(np.max(self.skews)) if self.skews else float("nan")
            rates = {name: _rate(self.arrivals[name], now, self.started) for name in SOURCES}
        stats = self.sync.stats
        values = {**counts, "latency_median_ms": 1000 * latency, "latency_p95_ms": 1000 * p95,
                  "age_median_ms": 1000 * age, "age_last_ms": 1000 * last_age,
                  "pair_skew_max_ms": 1000 * skew, "ir_rate_hz": rates["ir"], "visible_rate_hz": rates["visible"],
                  "ir_received": stats.received[0], "visible_received": stats.received[1],
                  **{f"{name}_lost": n for name, n in self.lost().items()},
                  "ir_sync_dropped": sum(stats.dropped[0].values()),
                  "visible_sync_dropped": sum(stats.dropped[1].values()),
                  "sync_flushed": stats.flushed, "sync_bound_violations": sum(stats.bound_violations),
                  **self._registration_values()}
        self.pub_diag.publish(diagnostics(self, "fusion", level, message, values))
        if self.losing:
            self.get_logger().warning(message, throttle_duration_sec=10.0)

    def _registration_values(self) -> dict[str, float]:
        """ir.homography auto's figures for /diagnostics (none otherwise); NaN before the first estimate."""
        auto = self.auto  # one read: a parameter change may replace it meanwhile
        if auto is None:
            return {}
        status = auto.status()
        est = status.estimate
        nan = float("nan")
        return {"registration_aligned": float(auto.homography is not None),
                "registration_pairs": float(status.pairs), "registration_estimates": float(status.estimates),
                "registration_correlation": est.correlation if est else nan,
                "registration_residual_px": est.residual_px if est else nan,
                "registration_overlap": est.overlap if est else nan}

    def stop(self) -> None:
        """Cancel the frames in progress (between sampler steps and stages), stop both of the worker's threads;
        nothing is published after."""
        self._stopping.set()
        with self._publish_lock:
            self._closed = True
        if not self.worker.stop(timeout=WORKER_STOP_S):
            self.get_logger().error(f"the fusion worker did not stop within {WORKER_STOP_S:.0f} s (a frame still "
                                    "running); it is abandoned")


def scaled_camera_info(info: CameraInfo, width: int, height: int, header: Any) -> CameraInfo:
    """A copy of info for an image of width × height with the given header: K and P scaled when the size
    differs from the calibrated one (binning and ROI reset: they are folded into the scaled matrices)."""
    out = CameraInfo()
    out.header = header
    out.width, out.height = int(width), int(height)
    out.distortion_model = info.distortion_model
    out.d = list(info.d)
    out.r = info.r
    k, p = np.array(info.k, np.float64), np.array(info.p, np.float64)
    if info.width and info.height and (info.width, info.height) != (width, height):
        sx, sy = width / info.width, height / info.height
        k[[0, 1, 2]] *= sx
        k[[4, 5]] *= sy
        p[[0, 1, 2, 3]] *= sx
        p[[5, 6, 7]] *= sy
    out.k, out.p = k, p
    return out


def _size_problem(ir: tuple[int, int], vis: tuple[int, int]) -> str:
    return (f"infrared {ir[0]}x{ir[1]} and visible {vis[0]}x{vis[1]} differ (set ir.homography to register "
            "the cameras, or the resize parameter to fuse them anyway)")


def _qos_kwargs(profile: QoSProfile) -> dict[str, Any]:
    return {"history": profile.history, "depth": profile.depth, "reliability": profile.reliability,
            "durability": profile.durability}


def _copy(profile: QoSProfile) -> QoSProfile:
    return QoSProfile(**_qos_kwargs(profile))


def _device(name: str):
    from dig2dig_ros.core.device import resolve_device

    return resolve_device(name)


def _stamp_s(msg: Any) -> float:
    stamp = msg.header.stamp
    return stamp.sec + stamp.nanosec * 1e-9


def _stamp_ns(header: Any) -> int:
    return int(header.stamp.sec) * 1_000_000_000 + int(header.stamp.nanosec)


def _rate(times: deque, now: float, started: float) -> float:
    """Arrivals per second over the last RATE_WINDOW_S seconds up to now (0 for a camera that stopped)."""
    window = min(RATE_WINDOW_S, max(now - started, 1e-3))
    return sum(1 for t in times if now - t <= window) / window


def main(argv: list[str] | None = None) -> int:
    """Console entry point: run the node until shutdown; a bad start-up configuration exits 1 with one line."""
    return run_node(FusionNode, "dig2dig_fusion", argv)


if __name__ == "__main__":
    sys.exit(main())
