"""Input QoS follows the publishers (rosbag2's rule), switches without a gap, and every reported loss is counted
and explained (issue 22)."""

from __future__ import annotations

import os
import time
from types import SimpleNamespace

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")

from diagnostic_msgs.msg import DiagnosticStatus  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402

from dig2dig_ros.ros.conversions import numpy_to_image  # noqa: E402
from dig2dig_ros.ros.fusion_node import FusionNode  # noqa: E402
from dig2dig_ros.ros.qos_match import MatchedInput, matched_reliability  # noqa: E402

R, BE = ReliabilityPolicy.RELIABLE, ReliabilityPolicy.BEST_EFFORT
RELIABLE = QoSProfile(depth=10, reliability=R)
FAST = {"prior": "wiener", "device": "cpu", "working_size": 64, "sampler.steps": 3}


@pytest.fixture()
def ros(monkeypatch):
    monkeypatch.setenv("ROS_DOMAIN_ID", str(1 + (os.getpid() + 50) % 99))
    rclpy.init()
    nodes = []
    yield nodes
    for node in nodes:
        if hasattr(node, "stop"):
            node.stop()
        node.destroy_node()
    rclpy.shutdown()


def _spin(executor, predicate, timeout: float = 10.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end and not predicate():
        executor.spin_once(timeout_sec=0.02)
    return bool(predicate())


def _reader_reliability(node, topic: str) -> ReliabilityPolicy:
    """The reliability of the node's current subscription on topic, as the ROS graph reports it."""
    (matched,) = [s.input for s in node.subs if s.input.topic == topic]
    graph = {info.qos_profile.reliability for info in node.get_subscriptions_info_by_topic(topic)}
    assert matched.subscription.qos_profile.reliability in graph  # (the one it replaces may still be there)
    return matched.subscription.qos_profile.reliability


def test_reliable_only_when_every_publisher_is():
    assert matched_reliability([]) == BE  # nobody yet: best effort matches whoever comes
    assert matched_reliability([R]) == R
    assert matched_reliability([R, R]) == R
    assert matched_reliability([R, BE]) == BE  # a reliable reader would get nothing from the best-effort one


def test_the_fusion_node_follows_publishers_that_come_and_go(ros):
    node = FusionNode(parameter_overrides=[Parameter(k, value=v) for k, v in FAST.items()])
    peer = rclpy.create_node("qos_peer")
    ros.extend([node, peer])
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    executor.add_node(peer)
    ir = node.subs[0].input
    assert ir.subscription is None and ir.reliability is None  # no publisher yet: no reader at all
    assert not node.get_subscriptions_info_by_topic("/ir/image")
    pub = peer.create_publisher(Image, "ir/image", RELIABLE)  # a camera that starts after the node
    assert _spin(executor, lambda: node.get_publishers_info_by_topic("/ir/image"))
    node._match_publishers()
    assert _reader_reliability(node, "/ir/image") == R
    # the first reader is the reliable one: no best-effort reader lost the camera's first frames meanwhile
    assert {info.qos_profile.reliability for info in node.get_subscriptions_info_by_topic("/ir/image")} == {R}
    assert node.subs[1].input.subscription is None  # the visible topic's publishers: none
    other = peer.create_publisher(Image, "ir/image", qos_profile_sensor_data)  # a second, best-effort driver
    assert _spin(executor, lambda: len(node.get_publishers_info_by_topic("/ir/image")) == 2)
    node._match_publishers()
    assert _reader_reliability(node, "/ir/image") == BE
    peer.destroy_publisher(other)
    assert _spin(executor, lambda: len(node.get_publishers_info_by_topic("/ir/image")) == 1)
    node._match_publishers()
    assert _reader_reliability(node, "/ir/image") == R
    assert pub.get_subscription_count() >= 1
    peer.destroy_publisher(pub)  # the camera stops: the reader stays as it was, for the camera's restart
    assert _spin(executor, lambda: not node.get_publishers_info_by_topic("/ir/image"))
    node._match_publishers()
    assert _reader_reliability(node, "/ir/image") == R


@pytest.mark.parametrize("params, offered, expected", [
    ({"qos.input_reliability": "best_effort"}, RELIABLE, BE),
    ({"qos.input_reliability": "reliable"}, qos_profile_sensor_data, R),  # no connection: the user chose it
    ({"qos_overrides./ir/image.subscription.reliability": "best_effort"}, RELIABLE, BE),
    ({"qos.input_reliability": "best_effort", "qos_overrides./ir/image.subscription.reliability": "reliable"},
     qos_profile_sensor_data, R),  # the per-topic override wins over the node's setting
])
def test_an_explicit_choice_always_wins(ros, params, offered, expected):
    node = FusionNode(parameter_overrides=[Parameter(k, value=v) for k, v in {**FAST, **params}.items()])
    peer = rclpy.create_node("qos_peer")
    ros.extend([node, peer])
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    executor.add_node(peer)
    peer.create_publisher(Image, "ir/image", offered)
    assert _spin(executor, lambda: node.get_publishers_info_by_topic("/ir/image"))
    node._match_publishers()
    assert _reader_reliability(node, "/ir/image") == expected


def test_a_switch_loses_and_repeats_no_frame(ros):
    """Frames published while the subscription changes from best effort to reliable (a best-effort driver left)
    arrive once each, in order."""
    node = rclpy.create_node("qos_switch")
    peer = rclpy.create_node("qos_peer")
    ros.extend([node, peer])
    got: list[int] = []
    matched = MatchedInput(node, Image, "cam/image", lambda msg: got.append(msg.header.stamp.sec), depth=10)
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    executor.add_node(peer)
    assert matched.subscription is None  # no publisher yet
    pub = peer.create_publisher(Image, "cam/image", RELIABLE)
    other = peer.create_publisher(Image, "cam/image", qos_profile_sensor_data)  # a best-effort driver as well
    assert _spin(executor, lambda: len(node.get_publishers_info_by_topic("/cam/image")) == 2)
    assert matched.refresh() and matched.reliability == BE
    assert _spin(executor, lambda: pub.get_subscription_count() == 1)
    frame = numpy_to_image(np.zeros((4, 4), np.uint8), "mono8")
    sent = []
    for k in range(1, 121):
        frame.header.stamp.sec = k
        pub.publish(frame)
        sent.append(k)
        if k == 30:  # the best-effort driver leaves: the reliable subscription is made while frames flow
            peer.destroy_publisher(other)
            assert _spin(executor, lambda: len(node.get_publishers_info_by_topic("/cam/image")) == 1)
            assert matched.refresh()
        elif k > 30 and k % 10 == 0:
            matched.refresh()  # the old one is destroyed once the new one delivers
        _spin(executor, lambda k=k: got and got[-1] == k, timeout=0.5)  # a camera slower than the callbacks
    assert _spin(executor, lambda: got and got[-1] == sent[-1])
    assert matched.reliability == R and matched.retiring is None
    assert got == sorted(set(got))  # no frame twice, none out of order
    assert len(got) >= len(sent) - 2  # small frames over one host: nothing lost in the switch


def test_losses_are_counted_shown_and_explained(ros):
    node = FusionNode(parameter_overrides=[Parameter(k, value=v) for k, v in FAST.items()])
    ros.append(node)
    ir = node.subs[0].input
    with ir.lock:
        ir.last_size, ir.offered = 1280 * 1024 * 3, [BE]
        ir.last_message = SimpleNamespace(width=1280, height=1024, encoding="bgr8")
    ir._on_lost(SimpleNamespace(total_count_change=3, total_count=3))  # what rmw's message_lost event reports
    assert node.lost() == {"ir": 3, "visible": 0}
    level, message = node.health()
    assert level == DiagnosticStatus.WARN
    assert "lost 3 infrared frames" in message and "/ir/image" in message
    assert "512 KB shared-memory segment" in message and "FASTRTPS_DEFAULT_PROFILES_FILE" in message
    assert "no infrared frames" not in message  # frames are sent but lost, not a silent camera
    ir.losses[-1] = (time.monotonic() - 10.0, 3, BE)  # long ago: the status recovers, the total stays
    assert "lost" not in node.health()[1]
    assert node.lost()["ir"] == 3


def test_losses_before_the_switch_to_a_reliable_publisher_are_explained_as_such(ros):
    node = FusionNode(parameter_overrides=[Parameter(k, value=v) for k, v in FAST.items()])
    ros.append(node)
    ir = node.subs[0].input
    ir._on_lost(SimpleNamespace(total_count_change=2, total_count=2), BE)  # lost by the best-effort one
    with ir.lock:
        ir.reliability, ir.offered = R, [R]  # ... which the switch has since replaced by a reliable one
    message = ir.loss_cause(2, 3.0)
    assert "subscribed best effort" in message and "still best effort" in message and "Remedy" not in message
