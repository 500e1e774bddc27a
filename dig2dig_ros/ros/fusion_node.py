"""`dig2dig_fusion`: synchronised infrared + visible in; fused image and DIG weight maps out.

subscribe (`ir/image`, `visible/image`) → synchronise (ApproximateTime) → keep the newest pair → worker:
convert → fuse (dig2dig_ros.core) → publish `fused/image`, `fused/dig/ir`, `fused/dig/visible` (32FC1 weights
in [0,1]) and `fused/dig/overlay`, each with the header of the reference input. Pairs that arrive while the
worker is busy replace the waiting one (newest wins) and are counted as dropped; bad frames are logged,
counted and skipped. Counters go to /diagnostics.
"""

from __future__ import annotations

import sys
import threading
import time
from collections import deque
from typing import Any

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rcl_interfaces.msg import SetParametersResult
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import CompressedImage, Image

from dig2dig_ros.core.fusion import Fuser, FusionResult
from dig2dig_ros.core.imaging import weight_overlay
from dig2dig_ros.core.priors import PriorError, load_prior
from dig2dig_ros.ros import conversions
from dig2dig_ros.ros.node_support import NewestWorker, StartupError, descriptor, diagnostics, run_node, steady_timer
from dig2dig_ros.ros.params import all_params, check_value, fusion_config
from dig2dig_ros.ros.sync import ApproximateTimeSynchronizer, Subscriber

# A stamp this far behind its input's previous one means time restarted (bag loop, camera restart).
TIME_JUMP_BACK_S = 1.0


class FusionNode(Node):
    """Thin ROS adapter around dig2dig_ros.core.fusion.Fuser."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__("dig2dig_fusion", **kwargs)
        self.specs = {spec.name: spec for spec in all_params()}
        for spec in self.specs.values():
            self.declare_parameter(spec.name, spec.default, descriptor(spec))
        values = self.values = self._values()  # the current values, replaced as a whole on every change
        for spec in self.specs.values():
            problem = check_value(spec, values[spec.name])
            if problem:
                raise StartupError(problem)
        try:
            self.prior = load_prior(values["prior"], _device(values["device"]))
            self.fuser = Fuser(fusion_config(values), prior=self.prior, device=values["device"])
        except (PriorError, ValueError) as exc:
            raise StartupError(str(exc)) from exc
        self.add_on_set_parameters_callback(self._on_set)

        self.lock = threading.Lock()  # guards fuser, values, counts and the latency/skew windows
        self.counts = {"pairs": 0, "fused": 0, "dropped_busy": 0, "bad_input": 0, "failed": 0}
        self.latencies: deque[float] = deque(maxlen=100)
        self.skews: deque[float] = deque(maxlen=100)
        self.arrivals = {"ir": deque(maxlen=50), "visible": deque(maxlen=50)}
        self.last_stamps: dict[str, float] = {}

        depth = values["qos.input_depth"]
        in_qos = QoSProfile(depth=depth, reliability=ReliabilityPolicy.RELIABLE) if values["qos.reliable_inputs"] \
            else QoSProfile(**{**_qos_kwargs(qos_profile_sensor_data), "depth": depth})
        out_qos = QoSProfile(depth=values["qos.output_depth"], reliability=ReliabilityPolicy.RELIABLE)
        compressed = values["input_transport"] == "compressed"
        msg_type = CompressedImage if compressed else Image
        suffix = "/compressed" if compressed else ""
        self.subs = [Subscriber(self, msg_type, f"ir/image{suffix}", in_qos),
                     Subscriber(self, msg_type, f"visible/image{suffix}", in_qos)]
        for name, sub in zip(("ir", "visible"), self.subs, strict=True):
            sub.registerCallback(self._arrived, name)
        self.sync = ApproximateTimeSynchronizer(self.subs, values["sync.queue_size"], values["sync.slop"],
                                                values["sync.allow_headerless"])
        self.sync.registerCallback(self._on_pair)
        self.pub_fused = self.create_publisher(Image, "fused/image", out_qos)
        self.pub_dig = {"ir": self.create_publisher(Image, "fused/dig/ir", out_qos),
                        "visible": self.create_publisher(Image, "fused/dig/visible", out_qos)}
        self.pub_overlay = self.create_publisher(Image, "fused/dig/overlay", out_qos)
        self.pub_diag = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        steady_timer(self, values["diagnostics_period"], self._publish_diagnostics)
        self._warm_up()
        self.worker = NewestWorker(self._fuse_pair, "dig2dig_fusion_worker")
        cfg = self.fuser.config
        self.get_logger().info(
            f"fusing {self.subs[0].resolved_topic} + {self.subs[1].resolved_topic} → "
            f"{self.pub_fused.topic_name}: method {cfg.method}, prior {values['prior']} on {self.fuser.device}, "
            f"{cfg.sampler.steps} steps, working size {cfg.max_side or 'input'}, slop {values['sync.slop']} s")

    def _warm_up(self) -> None:
        """Fuse one small blank pair so the first real frame does not pay for lazy initialisation."""
        start = time.perf_counter()
        blank = np.zeros((64, 64), np.uint8)
        self.fuser([blank, blank])
        self.get_logger().info(f"warmed up in {time.perf_counter() - start:.2f} s")

    # -- parameters -------------------------------------------------------------------------------------------
    def _values(self) -> dict[str, Any]:
        return {name: self.get_parameter(name).value for name in self.specs}

    def _on_set(self, params: list) -> SetParametersResult:
        values = dict(self.values)
        for param in params:
            spec = self.specs.get(param.name)
            if spec is None:
                continue
            problem = check_value(spec, param.value)
            if problem:
                return SetParametersResult(successful=False, reason=problem)
            values[param.name] = param.value
        try:
            fuser = Fuser(fusion_config(values), prior=self.prior, device=values["device"])
        except ValueError as exc:
            return SetParametersResult(successful=False, reason=str(exc))
        with self.lock:
            self.fuser, self.values = fuser, values
        self.get_logger().info("parameters updated: " + ", ".join(f"{p.name}={p.value}" for p in params))
        return SetParametersResult(successful=True)

    # -- subscribe → synchronise → keep newest --------------------------------------------------------------
    def _arrived(self, msg: Any, name: str) -> None:
        self.arrivals[name].append(time.monotonic())
        stamp = _stamp_s(msg) if hasattr(msg, "header") else None
        last = self.last_stamps.get(name)
        if stamp is not None and last is not None and stamp < last - TIME_JUMP_BACK_S:
            # A bag replayed in a loop (or a restarted camera): start synchronising afresh.
            self.sync.reset()
            self.get_logger().info(f"{name} time jumped back {last - stamp:.1f} s: synchroniser reset")
        if stamp is not None:
            self.last_stamps[name] = stamp

    def _on_pair(self, ir_msg: Any, vis_msg: Any) -> None:
        problem = self._check_pair(ir_msg, vis_msg)
        self._count("pairs")
        if problem:  # a bad pair never displaces a good one waiting for the worker
            self._count("bad_input")
            self.get_logger().warning(f"skipping a pair: {problem}", throttle_duration_sec=5.0)
        elif self.worker.submit((ir_msg, vis_msg)):
            self._count("dropped_busy")

    def _check_pair(self, ir_msg: Any, vis_msg: Any) -> str | None:
        """What is wrong with a pair that can be told without decoding it, or None."""
        if isinstance(ir_msg, CompressedImage):
            return None
        for name, msg in (("infrared", ir_msg), ("visible", vis_msg)):
            if msg.encoding not in conversions.ENCODINGS:
                return f"{name} encoding {msg.encoding!r} is not supported ({', '.join(conversions.ENCODINGS)})"
            if msg.width == 0 or msg.height == 0:
                return f"{name} image is empty ({msg.width}x{msg.height})"
        sizes = (ir_msg.width, ir_msg.height), (vis_msg.width, vis_msg.height)
        if sizes[0] != sizes[1] and self.fuser.config.resize == "none":
            return (f"infrared {sizes[0][0]}x{sizes[0][1]} and visible {sizes[1][0]}x{sizes[1][1]} differ "
                    "(set the resize parameter to fuse them anyway)")
        return None

    # -- worker: convert → fuse → publish --------------------------------------------------------------------
    def _fuse_pair(self, pair: tuple[Any, Any]) -> None:
        start = time.perf_counter()
        ir_msg, vis_msg = pair
        with self.lock:
            fuser, values = self.fuser, self.values
        try:
            ir, vis = self._to_array(ir_msg, thermal=True), self._to_array(vis_msg, thermal=False)
            if ir.shape[:2] != vis.shape[:2] and fuser.config.resize == "none":  # compressed inputs
                raise conversions.ConversionError(
                    f"infrared {ir.shape[1]}x{ir.shape[0]} and visible {vis.shape[1]}x{vis.shape[0]} differ "
                    "(set the resize parameter to fuse them anyway)")
        except conversions.ConversionError as exc:
            self._count("bad_input")
            self.get_logger().warning(f"skipping a pair: {exc}", throttle_duration_sec=5.0)
            return
        try:
            result = fuser([ir, vis])
        except Exception as exc:  # keep running: one bad frame must not stop the node
            self._count("failed")
            self.get_logger().error(f"fusion failed, frame skipped: {exc}", throttle_duration_sec=5.0)
            return
        header = vis_msg.header if values["reference_frame"] == "visible" else ir_msg.header
        self._publish(result, header, values["overlay_source"])
        latency = time.perf_counter() - start
        skew = abs(_stamp_s(ir_msg) - _stamp_s(vis_msg))
        with self.lock:
            self.counts["fused"] += 1
            self.latencies.append(latency)
            self.skews.append(skew)
            fused = self.counts["fused"]
        if fused % values["log_every"] == 0 or fused == 1:
            c = self.counts
            self.get_logger().info(
                f"fused {fused} frames ({c['pairs']} pairs, {c['dropped_busy']} dropped while busy, "
                f"{c['bad_input']} bad, {c['failed']} failed); latency {1000 * np.median(self.latencies):.0f} ms")

    def _to_array(self, msg: Any, thermal: bool) -> np.ndarray:
        """Image message → uint8/uint16 gray or BGR, or float [0,1]; raises ConversionError on bad input."""
        if isinstance(msg, CompressedImage):
            arr = conversions.compressed_to_numpy(msg)
            return arr if arr.ndim == 2 else arr[..., :3]
        arr = conversions.image_to_numpy(msg)
        enc = msg.encoding
        if arr.dtype == np.float32 and not np.isfinite(arr).all():
            raise conversions.ConversionError(f"{enc} frame contains NaN or infinite values")
        if thermal and arr.dtype == np.uint16:
            v = self.values
            return conversions.normalize_thermal(arr, v["ir.normalization"], v["ir.range_low"], v["ir.range_high"],
                                                 (v["ir.percentile_low"], v["ir.percentile_high"]))
        if arr.ndim == 3:
            return conversions.to_bgr(arr, enc)
        return arr

    def _publish(self, result: FusionResult, header: Any, overlay_source: str) -> None:
        encoding = "bgr8" if result.fused.ndim == 3 else "mono8"
        self.pub_fused.publish(conversions.numpy_to_image(result.fused, encoding, header))
        if result.weights is None:  # a classical method: no DIG maps to show
            return
        for k, name in enumerate(("ir", "visible")):
            weight = result.weights[k].astype(np.float32)  # (H,W)
            self.pub_dig[name].publish(conversions.numpy_to_image(weight, "32FC1", header))
        shown = result.weights[0 if overlay_source == "ir" else 1]
        self.pub_overlay.publish(conversions.numpy_to_image(weight_overlay(result.fused, shown), "bgr8", header))

    def _count(self, key: str) -> None:
        with self.lock:
            self.counts[key] += 1

    # -- diagnostics ------------------------------------------------------------------------------------------
    def _publish_diagnostics(self) -> None:
        with self.lock:
            counts = dict(self.counts)
            latency = float(np.median(self.latencies)) if self.latencies else float("nan")
            p95 = float(np.percentile(self.latencies, 95)) if self.latencies else float("nan")
            skew = float(np.max(self.skews)) if self.skews else float("nan")
        stats = self.sync.stats
        values = {**counts, "latency_median_ms": 1000 * latency, "latency_p95_ms": 1000 * p95,
                  "pair_skew_max_ms": 1000 * skew, "ir_rate_hz": _rate(self.arrivals["ir"]),
                  "visible_rate_hz": _rate(self.arrivals["visible"]),
                  "ir_received": stats.received[0], "visible_received": stats.received[1],
                  "ir_sync_dropped": sum(stats.dropped[0].values()),
                  "visible_sync_dropped": sum(stats.dropped[1].values())}
        level = DiagnosticStatus.OK if counts["failed"] == 0 else DiagnosticStatus.WARN
        message = f"{counts['fused']} fused, {counts['dropped_busy']} dropped"
        self.pub_diag.publish(diagnostics(self, "fusion", level, message, values))

    def stop(self) -> None:
        """Stop the worker thread (after the frame in progress)."""
        self.worker.stop()


def _qos_kwargs(profile: QoSProfile) -> dict[str, Any]:
    return {"history": profile.history, "depth": profile.depth, "reliability": profile.reliability,
            "durability": profile.durability}


def _device(name: str):
    from dig2dig_ros.core.device import resolve_device

    return resolve_device(name)


def _stamp_s(msg: Any) -> float:
    stamp = msg.header.stamp
    return stamp.sec + stamp.nanosec * 1e-9


def _rate(times: deque) -> float:
    if len(times) < 2 or times[-1] == times[0]:
        return 0.0
    return (len(times) - 1) / (times[-1] - times[0])


def main(argv: list[str] | None = None) -> int:
    """Console entry point: run the node until shutdown; a bad start-up configuration exits 1 with one line."""
    return run_node(FusionNode, "dig2dig_fusion", argv)


if __name__ == "__main__":
    sys.exit(main())
