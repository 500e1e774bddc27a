"""Fuzz: a few hundred malformed messages interleaved with good pairs. The node stays up, every message is
accounted for (synchroniser drops, bad input, fused), and every good pair is fused."""

from __future__ import annotations

import array
import os
import random
import time

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")

from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402

from dig2dig_ros.core.sample_scene import make_sample_pair  # noqa: E402
from dig2dig_ros.ros.conversions import numpy_to_image  # noqa: E402
from dig2dig_ros.ros.fusion_node import FusionNode  # noqa: E402

ROUNDS = 40
BAD_PER_ROUND = 8
QOS = QoSProfile(depth=500, reliability=ReliabilityPolicy.RELIABLE)
H, W = 48, 64


def _good() -> tuple[Image, Image]:
    ir, vis = make_sample_pair(size=(H, W))
    return numpy_to_image(ir, "mono8"), numpy_to_image(vis, "bgr8")


def _raw(encoding: str, width: int, height: int, step: int, data: bytes, bigendian: bool = False) -> Image:
    msg = Image(encoding=encoding, width=width, height=height, step=step, is_bigendian=int(bigendian))
    msg.data = array.array("B", data)
    return msg


def malformed(kind: str, rng: random.Random) -> Image:
    """One malformed infrared-or-visible message of the given kind."""
    n = W * H
    if kind == "unknown_encoding":
        return _raw(rng.choice(["nv24", "8SC1", "", "mono12", "64FC1", "\u00e9"]), W, H, W, bytes(n))
    if kind == "step_too_small":
        return _raw("mono8", W, H, W - rng.randint(1, W), bytes(n))
    if kind == "data_too_short":
        return _raw("bgr8", W, H, 3 * W, bytes(rng.randint(0, 3 * n - 1)))
    if kind == "zero_size":
        w, h = rng.choice([(0, H), (W, 0), (0, 0)])
        return _raw("mono8", w, h, w, bytes(n))
    if kind == "huge_claimed":
        w, h = rng.choice([(100_000, 100_000), (2**31 - 1, 1), (1, 2**31 - 1), (65_535, 65_535)])
        return _raw("mono16", w, h, 2 * w, bytes(rng.randint(0, 4096)))
    if kind == "nan_inf":
        f = np.full((H, W), 300.0, np.float32)
        f[rng.randrange(H), rng.randrange(W)] = rng.choice([np.nan, np.inf, -np.inf])
        return numpy_to_image(f, "32FC1")
    if kind == "bigendian_nan":
        # big-endian 32FC1 whose every value is a NaN bit pattern, whichever way it is read
        return _raw("32FC1", W, H, 4 * W, b"\xff\xff\xff\x7f" * n, bigendian=True)
    if kind == "bigendian_odd":
        return _raw("mono16", W, H, 2 * W, bytes(2 * n - 1), bigendian=True)
    raise AssertionError(kind)


KINDS = ["unknown_encoding", "step_too_small", "data_too_short", "zero_size", "huge_claimed", "nan_inf",
         "bigendian_nan", "bigendian_odd"]
# Whole-pair faults the synchroniser or the node sees: sizes that differ, a stamp going backwards (older
# than what its input already delivered), a message with no partner within slop.
PAIR_FAULTS = ["mismatched_sizes", "backwards", "unpartnered"]


@pytest.fixture()
def node(monkeypatch):
    monkeypatch.setenv("ROS_DOMAIN_ID", str(1 + (os.getpid() + 40) % 99))
    rclpy.init()
    overrides = [Parameter("prior", value="wiener"), Parameter("device", value="cpu"),
                 Parameter("working_size", value=32), Parameter("sampler.steps", value=2),
                 Parameter("qos.input_reliability", value="reliable"), Parameter("qos.input_depth", value=100),
                 Parameter("sync.max_wait", value=0.0), Parameter("log_every", value=100000)]
    fusion = FusionNode(parameter_overrides=overrides)
    peer = rclpy.create_node("fuzzer")
    executor = SingleThreadedExecutor()
    executor.add_node(fusion)
    executor.add_node(peer)
    try:
        yield fusion, peer, executor
    finally:
        fusion.stop()
        fusion.destroy_node()
        peer.destroy_node()
        rclpy.shutdown()


def test_malformed_messages_are_counted_and_good_pairs_fused(node, capfd):
    fusion, peer, executor = node
    pub = {"ir": peer.create_publisher(Image, "ir/image", QOS),
           "vis": peer.create_publisher(Image, "visible/image", QOS)}
    fused = []
    peer.create_subscription(Image, "fused/image", fused.append, QoSProfile(depth=100))

    def spin(predicate, timeout=30.0) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end and not predicate():
            executor.spin_once(timeout_sec=0.01)
        return predicate()

    assert spin(lambda: pub["ir"].get_subscription_count() and pub["vis"].get_subscription_count()
                and peer.count_publishers("fused/image"))
    rng = random.Random(12)
    sent = {"ir": 0, "vis": 0}
    bad_sent = 0

    newest = {"ir": 0, "vis": 0}

    def send(side: str, msg: Image, sec: int, nanosec: int) -> None:
        msg.header.stamp.sec, msg.header.stamp.nanosec = sec, nanosec
        msg.header.frame_id = side
        pub[side].publish(msg)
        sent[side] += 1
        newest[side] = max(newest[side], sec * 1_000_000_000 + nanosec)

    good_ir, good_vis = _good()
    for k in range(ROUNDS):
        sec = 1000 + 2 * k
        send("ir", good_ir, sec, 0)
        send("vis", good_vis, sec, 0)
        assert spin(lambda n=k + 1: fusion.counts["fused"] == n), (k, fusion.counts, fusion.sync.stats)
        for i in range(1, BAD_PER_ROUND + 1):
            nano = i * 100_000_000  # between this good pair and the next, 100 ms apart (slop 50 ms)
            fault = rng.choice(KINDS + PAIR_FAULTS)
            if fault == "mismatched_sizes":
                small = numpy_to_image(np.zeros((H // 2, W), np.uint8), "mono8")
                send("ir", small, sec, nano)
                send("vis", _good()[1], sec, nano)
                bad_sent += 2
            elif fault == "backwards":
                # 50 ms older than the newest stamp each input delivered (a jump back of more than a second
                # would be a bag loop: the node then starts synchronising afresh)
                for side, msg in (("ir", _good()[0]), ("vis", _good()[1])):
                    back = newest[side] - 50_000_000
                    send(side, msg, back // 1_000_000_000, back % 1_000_000_000)
                bad_sent += 2
            elif fault == "unpartnered":
                send(rng.choice(["ir", "vis"]), _good()[0], sec, nano)
                bad_sent += 1
            else:  # one malformed message, its partner well formed
                side = rng.choice(["ir", "vis"])
                other = "vis" if side == "ir" else "ir"
                send(side, malformed(fault, rng), sec, nano)
                send(other, _good()[0 if other == "ir" else 1], sec, nano)
                bad_sent += 2

    def settled() -> bool:
        stats = fusion.sync.stats
        c = fusion.counts
        return stats.received == [sent["ir"], sent["vis"]] and \
            c["pairs"] == c["fused"] + c["bad_input"] + c["dropped_busy"] + c["failed"] and \
            not fusion.worker._waiting

    assert spin(settled, timeout=60), (fusion.counts, fusion.sync.stats, sent)
    spin(lambda: len(fused) == ROUNDS, timeout=10)
    stats, c = fusion.sync.stats, fusion.counts
    assert bad_sent >= 300
    # every good pair fused and published, nothing failed inside fusion, the node still runs
    assert c["fused"] == ROUNDS == len(fused) and c["failed"] == 0
    assert all(m.header.stamp.nanosec == 0 for m in fused)  # the good pairs' stamps
    assert fusion.worker._thread.is_alive()
    # every message accounted for: used in a set, dropped by the synchroniser with a reason, or still waiting
    pending = fusion.sync.pending()
    for j, side in enumerate(("ir", "vis")):
        assert stats.emitted + sum(stats.dropped[j].values()) + pending[j] == sent[side]
    # every set that was not a good pair was counted: as bad input, or (bad ones that look well formed until
    # decoded, e.g. NaN pixels) replaced by a newer pair while the worker was busy; never a good pair
    assert c["pairs"] == stats.emitted and c["bad_input"] + c["dropped_busy"] == stats.emitted - ROUNDS
    assert c["bad_input"] > 0
    assert sum(stats.dropped[0].values()) + sum(stats.dropped[1].values()) > 0
    dropped = {reason: stats.dropped[0][reason] + stats.dropped[1][reason] for reason in stats.dropped[0]}
    assert dropped["too_old"] > 0 and dropped["no_partner"] > 0
    assert "Traceback" not in capfd.readouterr().err
    print(f"\nfuzz: {bad_sent} malformed messages, {ROUNDS} good pairs: {c['bad_input']} bad pairs counted by "
          f"the node, {c['dropped_busy']} replaced while busy, synchroniser drops {dropped}, pending {pending}, "
          f"fused {c['fused']}")
