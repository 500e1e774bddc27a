"""The fusion node on a robot rig, in-process: registration, camera_info, output geometry, honest diagnostics,
thermal input on every path, remapped compressed topics, QoS overrides, threads, outputs built only for
subscribers, and cancellation at shutdown."""

from __future__ import annotations

import os
import threading
import time

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import CameraInfo, CompressedImage, Image  # noqa: E402

from dig2dig_ros.core.frame.registration import warp_into  # noqa: E402
from dig2dig_ros.core.sample_scene import make_sample_pair  # noqa: E402
from dig2dig_ros.ros import fusion_node as fusion_module  # noqa: E402
from dig2dig_ros.ros.conversions import image_to_numpy, numpy_to_compressed, numpy_to_image  # noqa: E402
from dig2dig_ros.ros.fusion_node import FusionNode, scaled_camera_info  # noqa: E402

QOS = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
FAST = {"prior": "wiener", "device": "cpu", "working_size": 64, "sampler.steps": 3}


class Rig:
    """A fusion node, a peer node with publishers and subscriptions, and one executor that spins both."""

    def __init__(self, params: dict, cli_args: list[str] | None = None, ir_topic: str = "ir/image",
                 vis_topic: str = "visible/image", msg_type=Image) -> None:
        overrides = [Parameter(k, value=v) for k, v in {**FAST, **params}.items()]
        self.fusion = FusionNode(parameter_overrides=overrides, cli_args=cli_args)
        self.peer = rclpy.create_node("test_robot_peer")
        self.executor = SingleThreadedExecutor()
        self.executor.add_node(self.fusion)
        self.executor.add_node(self.peer)
        self.pub_ir = self.peer.create_publisher(msg_type, ir_topic, QOS)
        self.pub_vis = self.peer.create_publisher(msg_type, vis_topic, QOS)
        self.got: dict[str, list] = {}

    def listen(self, topic: str, msg_type=Image) -> list:
        self.got[topic] = []
        self.peer.create_subscription(msg_type, topic, self.got[topic].append, QOS)
        return self.got[topic]

    def spin(self, predicate=lambda: False, timeout: float = 30.0) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end and not predicate():
            self.executor.spin_once(timeout_sec=0.02)
        return predicate()

    def connected(self) -> bool:
        return self.spin(lambda: self.pub_ir.get_subscription_count() and self.pub_vis.get_subscription_count()
                         and all(self.peer.count_publishers(t) for t in self.got))

    def send(self, ir_msg, vis_msg, sec: int, nanosec: int = 0, ir: bool = True, vis: bool = True) -> None:
        for msg, frame in ((ir_msg, "ir_camera"), (vis_msg, "visible_camera")):
            msg.header.stamp.sec, msg.header.stamp.nanosec = sec, nanosec
            msg.header.frame_id = frame
        if ir:
            self.pub_ir.publish(ir_msg)
        if vis:
            self.pub_vis.publish(vis_msg)

    def close(self) -> None:
        self.fusion.stop()
        self.fusion.destroy_node()
        self.peer.destroy_node()


@pytest.fixture()
def rig(monkeypatch):
    monkeypatch.setenv("ROS_DOMAIN_ID", str(1 + (os.getpid() + 30) % 99))
    made = []
    rclpy.init()

    def make(params: dict | None = None, **kwargs) -> Rig:
        made.append(Rig(params or {}, **kwargs))
        return made[-1]

    yield make
    for r in made:
        r.close()
    rclpy.shutdown()


def pair(size=(64, 80)):
    ir, vis = make_sample_pair(size=size)
    return ir, vis


def luma(msg) -> np.ndarray:
    arr = image_to_numpy(msg).astype(np.float64)
    return arr.mean(axis=2) if arr.ndim == 3 else arr


# -- defect 1: inverted ranges are refused, anything the worker catches is counted ----------------------------

@pytest.mark.parametrize("params,message", [
    ({"ir.range_low": 300.0, "ir.range_high": 200.0}, "range_low < range_high"),
    ({"ir.percentile_low": 99.0, "ir.percentile_high": 1.0}, "percentile_low < percentile_high"),
    ({"ir.homography": "1,2,3"}, "ir.homography"),
])
def test_inconsistent_parameters_stop_the_start(rig, params, message):
    from dig2dig_ros.ros.node_support import StartupError

    with pytest.raises(StartupError, match=message):
        rig(params)


def test_inverted_ranges_set_at_run_time_are_refused(rig):
    r = rig()
    before = r.fusion.setup
    for params, message in (
        ([Parameter("ir.range_low", value=70000.0)], "range_low < range_high"),
        ([Parameter("ir.range_low", value=300.0), Parameter("ir.range_high", value=200.0)], "range_low"),
        ([Parameter("ir.percentile_low", value=99.5)], "percentile_low < percentile_high"),
        ([Parameter("ir.homography", value=[1.0, 0.0])], "9 numbers"),
    ):
        result = r.fusion.set_parameters_atomically(params)
        assert not result.successful and message in result.reason
    assert r.fusion.setup is before
    ok = r.fusion.set_parameters_atomically([Parameter("ir.range_low", value=20000.0),
                                             Parameter("ir.range_high", value=30000.0)])
    assert ok.successful and r.fusion.setup.thermal.low == 20000.0


def test_a_fault_in_normalisation_is_counted_as_failed_not_as_bad_input(rig, monkeypatch):
    r = rig()
    fused = r.listen("fused/image")
    assert r.connected()

    def broken(*args, **kwargs):
        raise RuntimeError("normalisation exploded")  # a bug of ours, not a bad frame

    monkeypatch.setattr(fusion_module, "prepare_infrared", broken)
    ir, vis = pair()
    r.send(numpy_to_image(ir, "mono8"), numpy_to_image(vis, "bgr8"), 1)
    assert r.spin(lambda: r.fusion.counts["failed"] == 1)
    assert r.fusion.counts["bad_input"] == 0
    assert fused == [] and r.fusion.worker._thread.is_alive()
    level, message = r.fusion.health()
    assert level == DiagnosticStatus.WARN and "normalisation exploded" in message


def test_a_registration_error_is_bad_input(rig, monkeypatch):
    from dig2dig_ros.core.frame.registration import RegistrationError

    r = rig()
    assert r.connected()

    def refuse(*args, **kwargs):
        raise RegistrationError("cannot warp")

    monkeypatch.setattr(fusion_module, "prepare_infrared", refuse)
    ir, vis = pair()
    r.send(numpy_to_image(ir, "mono8"), numpy_to_image(vis, "bgr8"), 1)
    assert r.spin(lambda: r.fusion.counts["bad_input"] == 1)
    assert r.fusion.counts["failed"] == 0


def test_an_exception_while_publishing_is_counted_as_failed_and_shown(rig, monkeypatch):
    r = rig()
    fused = r.listen("fused/image")
    assert r.connected()

    def broken(*args, **kwargs):
        raise RuntimeError("publisher exploded")

    monkeypatch.setattr(r.fusion, "_publish", broken)
    ir, vis = pair()
    r.send(numpy_to_image(ir, "mono8"), numpy_to_image(vis, "bgr8"), 1)
    assert r.spin(lambda: r.fusion.counts["failed"] == 1)
    assert r.fusion.counts["fused"] == 0 and fused == [] and r.fusion.worker._thread.is_alive()
    level, message = r.fusion.health()
    assert level == DiagnosticStatus.WARN and "publisher exploded" in message


# -- defect 2: thermal input on every path --------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["kelvin", "celsius", "png16"])
def test_thermal_frames_are_normalised_on_every_path(rig, kind):
    r = rig({"input_transport": "compressed"} if kind == "png16" else {},
            msg_type=CompressedImage if kind == "png16" else Image,
            ir_topic="ir/image/compressed" if kind == "png16" else "ir/image",
            vis_topic="visible/image/compressed" if kind == "png16" else "visible/image")
    fused = r.listen("fused/image")
    assert r.connected()
    ir, vis = pair()
    if kind == "png16":
        counts = (ir.astype(np.uint16) * 4 + 20000)
        msgs = numpy_to_compressed(counts, "png"), numpy_to_compressed(vis, "png")
    else:
        temps = (ir.astype(np.float32) / 255.0 * 30.0 + 5.0 + (273.15 if kind == "kelvin" else 0.0))
        msgs = numpy_to_image(temps, "32FC1"), numpy_to_image(vis, "bgr8")
    r.send(*msgs, 3)
    assert r.spin(lambda: len(fused) == 1)
    y = luma(fused[0])
    # the people are hot: bright after normalisation (before: a constant 1.0 frame, or counts / 65535 ≈ black)
    assert y[45:55, 18:22].mean() > y.mean() + 30


# -- defect 3: compressed transport follows remaps -------------------------------------------------------------

def test_compressed_transport_subscribes_to_the_remapped_base_topic(rig):
    r = rig({"input_transport": "compressed"}, msg_type=CompressedImage,
            cli_args=["--ros-args", "-r", "ir/image:=/thermal/image_raw"],
            ir_topic="/thermal/image_raw/compressed", vis_topic="visible/image/compressed")
    assert r.fusion.subs[0].resolved_topic == "/thermal/image_raw/compressed"
    assert r.fusion.subs[1].resolved_topic == "/visible/image/compressed"
    fused = r.listen("fused/image")
    assert r.connected()
    ir, vis = pair()
    r.send(numpy_to_compressed(ir, "png"), numpy_to_compressed(vis, "png"), 5)
    assert r.spin(lambda: len(fused) == 1)


# -- defect 4: diagnostics that tell the truth ------------------------------------------------------------------

def _status(diags: list) -> tuple[int, str, dict]:
    s = diags[-1].status[0]
    return int.from_bytes(s.level, "little") if isinstance(s.level, bytes) else int(s.level), s.message, \
        {kv.key: kv.value for kv in s.values}


def test_a_stopped_camera_turns_the_status_to_warn_within_3_s_and_back(rig):
    r = rig({"diagnostics_period": 0.5})
    diags = r.listen("/diagnostics", DiagnosticArray)
    fused = r.listen("fused/image")
    assert r.connected()
    ir, vis = pair()
    a, b = numpy_to_image(ir, "mono8"), numpy_to_image(vis, "bgr8")
    sec = [10]

    def stream(seconds: float, ir_on: bool = True) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            sec[0] += 1
            r.send(a, b, sec[0], ir=ir_on)
            r.spin(timeout=0.2)

    stream(2.5)
    assert fused and _status(diags)[0] == DiagnosticStatus.OK[0], _status(diags)
    level, _, values = _status(diags)
    assert float(values["ir_rate_hz"]) > 2 and float(values["age_last_ms"]) >= 0
    stopped = time.monotonic()
    warned = None
    while time.monotonic() - stopped < 4.0 and warned is None:
        stream(0.2, ir_on=False)
        level, message, _ = _status(diags)
        if level == DiagnosticStatus.WARN[0]:
            warned = (time.monotonic() - stopped, message)
    assert warned is not None and warned[0] <= 3.0 and "no infrared frames" in warned[1], warned
    stream(2.0)
    assert _status(diags)[0] == DiagnosticStatus.OK[0], _status(diags)
    # a dead camera's rate goes to 0 instead of keeping its last value
    assert r.fusion.health(time.monotonic() + 10)[0] == DiagnosticStatus.WARN
    assert fusion_module._rate(r.fusion.arrivals["ir"], time.monotonic() + 10, r.fusion.started) == 0.0


def test_bad_pairs_and_failing_fusion_are_named_in_the_status(rig, monkeypatch):
    r = rig()
    assert r.connected()
    ir, vis = pair()
    bad = numpy_to_image(ir, "mono8")
    bad.encoding = "yuv422"
    for sec in range(1, 4):
        r.send(bad, numpy_to_image(vis, "bgr8"), sec)
        r.spin(timeout=0.3)
    assert r.spin(lambda: r.fusion.counts["bad_input"] == 3)
    level, message = r.fusion.health()
    assert level == DiagnosticStatus.WARN and "every pair in the last 3 s was bad" in message and "yuv422" in message

    class Failing:
        config = r.fusion.setup.fuser.config

        def front(self, *args, **kwargs):
            raise RuntimeError("sampler diverged")

    monkeypatch.setattr(r.fusion.setup, "video", Failing())  # the worker fuses through the video fuser's halves
    start = time.monotonic()
    sec = 10
    while time.monotonic() - start < 3.0:
        sec += 1
        r.send(numpy_to_image(ir, "mono8"), numpy_to_image(vis, "bgr8"), sec)
        r.spin(timeout=0.2)
    level, message = r.fusion.health()
    assert level == DiagnosticStatus.WARN and "none fused" in message and "sampler diverged" in message
    assert r.fusion.counts["failed"] >= 5


# -- defect 5: the output has the reference camera's size and header ----------------------------------------

@pytest.mark.parametrize("reference,expected", [("visible", (128, 160)), ("ir", (64, 80))])
def test_output_takes_the_reference_cameras_size(rig, reference, expected):
    r = rig({"resize": "first", "reference_frame": reference})
    fused, dig = r.listen("fused/image"), r.listen("fused/dig/ir")
    assert r.connected()
    ir, _ = pair((64, 80))
    _, vis = pair((128, 160))
    r.send(numpy_to_image(ir, "mono8"), numpy_to_image(vis, "bgr8"), 4)
    assert r.spin(lambda: len(fused) == 1 and len(dig) == 1)
    assert (fused[0].height, fused[0].width) == expected == (dig[0].height, dig[0].width)
    assert fused[0].header.frame_id == f"{'visible' if reference == 'visible' else 'ir'}_camera"
    assert r.fusion.counts["stretched"] == 0


def test_a_different_aspect_ratio_is_stretched_only_with_a_warning(rig):
    r = rig({"resize": "smallest"})
    fused = r.listen("fused/image")
    assert r.connected()
    ir, vis = pair((64, 64))[0], pair((64, 80))[1]
    r.send(numpy_to_image(ir, "mono8"), numpy_to_image(vis, "bgr8"), 4)
    assert r.spin(lambda: len(fused) == 1)
    assert (fused[0].height, fused[0].width) == (64, 80) and r.fusion.counts["stretched"] == 1


# -- registration ----------------------------------------------------------------------------------------------

H_TRUE = np.array([[1.0, 0.0, -10.0], [0.0, 1.0, 6.0], [0.0, 0.0, 1.0]])  # visible → misaligned ir


def _registered_pair(rig):
    """Fuse an aligned pair, set ir.homography at run time, fuse the misaligned pair: the two fused frames and
    the second frame's infrared DIG weight."""
    h_true = H_TRUE
    r = rig({"method": "dig", "working_size": 0})
    fused, dig = r.listen("fused/image"), r.listen("fused/dig/ir")
    assert r.connected()
    ir, vis = pair((96, 128))
    misaligned, _ = warp_into(ir, h_true, ir.shape)
    r.send(numpy_to_image(ir, "mono8"), numpy_to_image(vis, "bgr8"), 1)
    assert r.spin(lambda: len(fused) == 1)
    assert r.fusion.set_parameters([Parameter("ir.homography",
                                              value=np.linalg.inv(h_true).reshape(-1).tolist())])[0].successful
    r.send(numpy_to_image(misaligned, "mono8"), numpy_to_image(vis, "bgr8"), 2)
    assert r.spin(lambda: len(fused) == 2 and len(dig) == 2)
    return luma(fused[0]), luma(fused[1]), image_to_numpy(dig[1])


def test_ir_homography_set_at_run_time_registers_the_infrared_frame(rig):
    aligned, registered, w_ir = _registered_pair(rig)
    inner = (slice(12, -12), slice(16, -16))
    assert np.abs(aligned[inner] - registered[inner]).mean() < 4.0
    assert w_ir[12:-12, 16:-16].mean() > 0.05


def test_outside_the_infrared_view_its_weight_is_zero(rig):
    _, _, w_ir = _registered_pair(rig)
    # visible (x, y) sees misaligned infrared (x − 10, y + 6): the left 10 columns and the bottom 6 rows have
    # no infrared data, and there the infrared weight is 0 (the visible frame fills in)
    assert w_ir[:, :8].max() < 1e-3 and w_ir[-4:, :].max() < 1e-3


# -- camera_info ----------------------------------------------------------------------------------------------

def test_fused_camera_info_follows_the_fused_image(rig):
    r = rig()
    fused, infos = r.listen("fused/image"), r.listen("fused/camera_info", CameraInfo)
    pub_info = r.peer.create_publisher(CameraInfo, "visible/camera_info", QOS)
    assert r.connected() and r.spin(lambda: pub_info.get_subscription_count())
    ir, vis = pair()
    r.send(numpy_to_image(ir, "mono8"), numpy_to_image(vis, "bgr8"), 1)
    assert r.spin(lambda: len(fused) == 1)
    r.spin(timeout=0.3)
    assert infos == []  # no input camera_info: nothing published there
    info = CameraInfo(width=160, height=128, distortion_model="plumb_bob", d=[0.1, 0.0, 0.0, 0.0, 0.0])
    info.k = [200.0, 0.0, 80.0, 0.0, 210.0, 64.0, 0.0, 0.0, 1.0]
    info.p = [200.0, 0.0, 80.0, -20.0, 0.0, 210.0, 64.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    pub_info.publish(info)
    r.spin(lambda: "visible" in r.fusion.camera_info, timeout=5)
    r.send(numpy_to_image(ir, "mono8"), numpy_to_image(vis, "bgr8"), 2, 5000)
    assert r.spin(lambda: len(infos) == 1 and len(fused) == 2)
    out = infos[0]
    assert (out.header.stamp.sec, out.header.stamp.nanosec) == (2, 5000) == \
        (fused[1].header.stamp.sec, fused[1].header.stamp.nanosec)
    assert out.header.frame_id == fused[1].header.frame_id == "visible_camera"
    assert (out.width, out.height) == (fused[1].width, fused[1].height) == (80, 64)
    np.testing.assert_allclose(out.k, [100.0, 0, 40.0, 0, 105.0, 32.0, 0, 0, 1])
    np.testing.assert_allclose(out.p, [100.0, 0, 40.0, -10.0, 0, 105.0, 32.0, 0, 0, 0, 1, 0])
    assert list(out.d) == list(info.d)


def test_camera_info_of_the_same_size_is_copied_unscaled():
    info = CameraInfo(width=80, height=64)
    info.k = [1.0, 0, 2.0, 0, 3.0, 4.0, 0, 0, 1]
    out = scaled_camera_info(info, 80, 64, info.header)
    assert list(out.k) == list(info.k)


# -- QoS overrides, torch threads ----------------------------------------------------------------------------

def test_qos_overrides_and_torch_threads(rig):
    import torch

    threads = torch.get_num_threads()
    try:
        r = rig({"qos_overrides./ir/image.subscription.reliability": "reliable",
                 "qos_overrides./fused/image.publisher.depth": 7, "torch_threads": 1})
        assert torch.get_num_threads() == 1
        (sub,) = r.fusion.get_subscriptions_info_by_topic("/ir/image")
        assert sub.qos_profile.reliability == ReliabilityPolicy.RELIABLE
        # the visible input follows its publishers: there are none, so there is no reader yet (a fixed one is made)
        assert not r.fusion.get_subscriptions_info_by_topic("/visible/image")
        assert r.fusion.pub_fused.qos_profile.depth == 7
        before = r.fusion.setup  # parameters that are not the node's own do not rebuild the fuser
        assert r.fusion.set_parameters([Parameter("use_sim_time", value=False)])[0].successful
        assert r.fusion.setup is before
    finally:
        torch.set_num_threads(threads)


# -- outputs nobody subscribes to are not built (issue 13) -------------------------------------------------

def test_outputs_without_subscribers_are_not_built(rig, monkeypatch):
    built = []
    real = fusion_module.weight_overlay
    monkeypatch.setattr(fusion_module, "weight_overlay", lambda *a: built.append(1) or real(*a))
    converted = []
    real_convert = fusion_module.conversions.numpy_to_image
    monkeypatch.setattr(fusion_module.conversions, "numpy_to_image",
                        lambda arr, enc, header=None: converted.append(enc) or real_convert(arr, enc, header))
    r = rig()
    fused = r.listen("fused/image")
    assert r.connected()
    ir, vis = pair()
    r.send(numpy_to_image(ir, "mono8"), numpy_to_image(vis, "bgr8"), 1)
    assert r.spin(lambda: len(fused) == 1)
    assert built == [] and converted.count("32FC1") == 0  # no overlay, no 32FC1 maps
    overlay = r.listen("fused/dig/overlay")
    assert r.spin(lambda: r.fusion.pub_overlay.get_subscription_count() == 1)
    r.send(numpy_to_image(ir, "mono8"), numpy_to_image(vis, "bgr8"), 2)
    assert r.spin(lambda: len(overlay) == 1)
    assert built == [1] and converted.count("32FC1") == 0


# -- defect 7: stopping cancels the frame in progress ------------------------------------------------------

def test_stop_cancels_a_long_frame_and_publishes_nothing_after(rig):
    r = rig({"method": "dig", "sampler.steps": 1000, "working_size": 160, "dig.interval": 1})
    fused = r.listen("fused/image")
    assert r.connected()
    started = threading.Event()
    real_video = r.fusion.setup.video  # the worker fuses through the video fuser

    class Watched:
        def front(self, *args, **kwargs):
            started.set()
            return real_video.front(*args, **kwargs)

        def back(self, *args, **kwargs):
            return real_video.back(*args, **kwargs)

    r.fusion.setup.video = Watched()
    ir, vis = pair((128, 160))
    r.send(numpy_to_image(ir, "mono8"), numpy_to_image(vis, "bgr8"), 1)
    assert r.spin(started.is_set)
    time.sleep(0.3)  # well inside the 1000-step frame
    t0 = time.monotonic()
    r.fusion.stop()
    took = time.monotonic() - t0
    assert took < 2.0, f"stop() waited {took:.1f} s for the frame to finish"
    assert not r.fusion.worker.alive()  # both threads of the pipeline
    r.spin(timeout=0.5)
    assert fused == [] and r.fusion.counts["fused"] == 0 and r.fusion.counts["failed"] == 0


def test_the_pair_after_a_time_jump_back_is_fused_and_counted_as_a_video_restart(rig):
    # Before: each camera's first message after the jump reset the synchroniser, the second reset dropping the
    # first camera's message, so that pair was lost.
    r = rig({"video.enabled": True})
    fused = r.listen("fused/image")
    assert r.connected()
    ir, vis = pair()
    ir_msg, vis_msg = numpy_to_image(ir, "mono8"), numpy_to_image(vis, "bgr8")
    for i, sec in enumerate((10, 11, 3)):  # first frame, a warm one, then the stamps jump back
        r.send(ir_msg, vis_msg, sec)
        assert r.spin(lambda n=i + 1: len(fused) >= n)
    assert r.fusion.counts["fused"] == 3
    assert r.fusion.counts["video_restarts"] == 1  # only the jump back; the first frame is not a restart


# -- ir.homography auto ---------------------------------------------------------------------------------------
AUTO = {"ir.homography": "auto", "ir.auto.pairs": 3, "ir.auto.spacing": 1.0, "ir.auto.refine_period": 3.0,
        "ir.auto.warn_hold": 60.0, "video.enabled": False, "diagnostics_period": 0.2}


def _auto_pair(k: int, g: np.ndarray, size=(256, 320)):
    ir, vis = make_sample_pair(k * 5, size=size)
    return numpy_to_image(warp_into(ir, g, ir.shape)[0], "mono8"), numpy_to_image(vis, "bgr8")


def test_ir_homography_auto_registers_a_misaligned_rig_and_names_a_knocked_camera(rig):
    from dig2dig_ros.core.frame.homography_estimate import grid_error

    r = rig(AUTO)
    fused, dig, diags = r.listen("fused/image"), r.listen("fused/dig/ir"), r.listen("/diagnostics", DiagnosticArray)
    assert r.connected()
    g = np.array([[1.0, 0.0, -12.0], [0.0, 1.0, 8.0], [0.0, 0.0, 1.0]])  # the infrared sees the scene shifted
    for k in range(3):  # three pairs a second apart: fused unregistered while the estimate collects them
        r.send(*_auto_pair(k, g), sec=k + 1)
        assert r.spin(lambda k=k: len(fused) == k + 1 and len(dig) == k + 1)
    assert r.spin(lambda: r.fusion.auto.homography is not None, timeout=60)
    assert grid_error(r.fusion.auto.homography, np.linalg.inv(g), (256, 320))[0] < 1.0
    unregistered = image_to_numpy(dig[-1])
    r.send(*_auto_pair(3, g), sec=4)
    assert r.spin(lambda: len(dig) == 4)
    registered = image_to_numpy(dig[-1])
    # registered, visible (x, y) sees the recorded infrared at (x − 12, y + 8): the left 12 columns and the bottom
    # 8 rows have no infrared data and the infrared weight there is 0; unregistered it was not
    assert registered[:, :10].max() < 1e-3 and registered[-6:, :].max() < 1e-3
    assert unregistered[:, :10].mean() > 0.05
    assert r.spin(lambda: _status(diags)[2].get("registration_aligned") == "1.00", timeout=5)
    level, message, values = _status(diags)
    assert level == DiagnosticStatus.OK[0] and "registration: correlation" in message, message
    assert float(values["registration_correlation"]) > 0.25 and float(values["registration_estimates"]) == 1

    knocked = np.array([[1.0, 0.0, 14.0], [0.0, 1.0, -10.0], [0.0, 0.0, 1.0]])  # the camera was knocked ~35 px
    for k in range(4, 8):
        r.send(*_auto_pair(k, knocked), sec=k + 1)
        assert r.spin(lambda k=k: len(dig) == k + 1)
    assert r.fusion.auto.wait(60)
    assert r.spin(lambda: _status(diags)[0] == DiagnosticStatus.WARN[0], timeout=5)
    level, message, _ = _status(diags)
    assert "was a camera moved" in message, message
    assert grid_error(r.fusion.auto.homography, np.linalg.inv(knocked), (256, 320))[0] < 1.0


def test_ir_homography_auto_at_run_time_and_back(rig):
    r = rig({"video.enabled": False})
    assert r.fusion.auto is None
    assert r.fusion.set_parameters([Parameter("ir.homography", value="auto")])[0].successful
    auto = r.fusion.auto
    assert auto is not None
    assert r.fusion.set_parameters([Parameter("log_every", value=5)])[0].successful
    assert r.fusion.auto is auto  # another parameter change keeps the estimate
    assert r.fusion.set_parameters([Parameter("ir.homography", value="")])[0].successful
    assert r.fusion.auto is None
