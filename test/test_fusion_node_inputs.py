"""The fusion node's input paths in-process: compressed transport, mono16 thermal, NaN frames."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")

from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import CompressedImage, Image  # noqa: E402

from dig2dig_ros.core.sample_scene import make_sample_pair  # noqa: E402
from dig2dig_ros.ros.conversions import image_to_numpy, numpy_to_compressed, numpy_to_image  # noqa: E402
from dig2dig_ros.ros.fusion_node import FusionNode  # noqa: E402

QOS = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)


@pytest.fixture()
def graph(monkeypatch):
    """make(transport) → (fusion node, peer node, executor); everything is torn down after the test."""
    monkeypatch.setenv("ROS_DOMAIN_ID", str(1 + (os.getpid() + 70) % 99))
    made = []

    def make(transport: str):
        rclpy.init()
        overrides = [Parameter("prior", value="wiener"), Parameter("device", value="cpu"),
                     Parameter("working_size", value=64), Parameter("sampler.steps", value=3),
                     Parameter("input_transport", value=transport)]
        try:
            fusion = FusionNode(parameter_overrides=overrides)
        except Exception:
            rclpy.shutdown()
            raise
        peer = rclpy.create_node("test_peer")
        executor = SingleThreadedExecutor()
        executor.add_node(fusion)
        executor.add_node(peer)
        made.append((fusion, peer))
        return fusion, peer, executor

    yield make
    for fusion, peer in made:
        fusion.stop()
        fusion.destroy_node()
        peer.destroy_node()
    if made:
        rclpy.shutdown()


def _spin(executor, predicate, timeout=30.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end and not predicate():
        executor.spin_once(timeout_sec=0.05)
    return predicate()


def _stamp(msg, sec: int) -> None:
    msg.header.stamp.sec = sec
    msg.header.frame_id = "cam"


def test_compressed_inputs_are_fused(graph):
    fusion, peer, executor = graph("compressed")
    pub_ir = peer.create_publisher(CompressedImage, "ir/image/compressed", QOS)
    pub_vis = peer.create_publisher(CompressedImage, "visible/image/compressed", QOS)
    fused = []
    peer.create_subscription(Image, "fused/image", fused.append, QOS)
    assert _spin(executor, lambda: pub_ir.get_subscription_count() and pub_vis.get_subscription_count())
    ir, vis = make_sample_pair(size=(64, 80))
    a, b = numpy_to_compressed(ir, "png"), numpy_to_compressed(vis, "png")
    _stamp(a, 7)
    _stamp(b, 7)
    pub_ir.publish(a)
    pub_vis.publish(b)
    assert _spin(executor, lambda: len(fused) == 1)
    assert fused[0].header.stamp.sec == 7 and (fused[0].width, fused[0].height) == (80, 64)
    assert fused[0].encoding == "bgr8"


def test_mono16_thermal_is_stretched_and_nan_frames_are_skipped(graph):
    fusion, peer, executor = graph("raw")
    pub_ir = peer.create_publisher(Image, "ir/image", QOS)
    pub_vis = peer.create_publisher(Image, "visible/image", QOS)
    fused = []
    peer.create_subscription(Image, "fused/image", fused.append, QOS)
    assert _spin(executor, lambda: pub_ir.get_subscription_count() and pub_vis.get_subscription_count())
    ir, vis = make_sample_pair(size=(64, 80))
    thermal = (ir.astype(np.uint16) * 4 + 20000)  # raw counts in a narrow band of the 16-bit range
    nan_vis = np.full((64, 80), np.nan, np.float32)
    for sec, (a, b) in enumerate([(numpy_to_image(thermal, "mono16"), numpy_to_image(nan_vis, "32FC1")),
                                  (numpy_to_image(thermal, "mono16"), numpy_to_image(vis, "bgr8"))], start=1):
        _stamp(a, sec)
        _stamp(b, sec)
        pub_ir.publish(a)
        pub_vis.publish(b)
        _spin(executor, lambda: False, timeout=1.0)
    assert _spin(executor, lambda: len(fused) == 1 and fusion.counts["bad_input"] == 1)
    assert fused[0].header.stamp.sec == 2
    # Percentile stretch: the people (hot) come out bright although the raw counts span a narrow band.
    luma = image_to_numpy(fused[0]).mean(axis=2)
    assert luma[45:55, 18:22].mean() > luma.mean() + 30


def test_switching_to_a_classical_method_at_run_time_publishes_fused_frames_only(graph):
    fusion, peer, executor = graph("raw")
    assert fusion.set_parameters([Parameter("method", value="gff")])[0].successful
    pub_ir = peer.create_publisher(Image, "ir/image", QOS)
    pub_vis = peer.create_publisher(Image, "visible/image", QOS)
    fused, dig = [], []
    peer.create_subscription(Image, "fused/image", fused.append, QOS)
    peer.create_subscription(Image, "fused/dig/ir", dig.append, QOS)
    assert _spin(executor, lambda: pub_ir.get_subscription_count() and pub_vis.get_subscription_count())
    ir, vis = make_sample_pair(size=(64, 80))
    for sec in (1, 2):
        a, b = numpy_to_image(ir, "mono8"), numpy_to_image(vis, "bgr8")
        _stamp(a, sec)
        _stamp(b, sec)
        pub_ir.publish(a)
        pub_vis.publish(b)
        assert _spin(executor, lambda n=sec: len(fused) == n)
    assert [m.header.stamp.sec for m in fused] == [1, 2] and dig == []
    assert fusion.counts["failed"] == 0
