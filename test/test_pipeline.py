"""The fusion pipeline: a frame in two halves (VideoFuser.front / back) on two threads (TwoStageWorker).

The halves of consecutive frames interleaved as the node runs them (front of t+1 before back of t) give the same
video, bit for bit, as one frame at a time, and as the stages assembled by hand; the back sees every front
result in order; a failure in either half is counted and the node keeps fusing; stop() ends both threads.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from dig2dig_ros.core.config import FusionConfig, with_overrides
from dig2dig_ros.core.diffusion.priors.wiener import WienerPrior
from dig2dig_ros.core.frame.fusion import Fuser, with_detail
from dig2dig_ros.core.video import temporal
from dig2dig_ros.core.video.fuser import VideoFuser

SEQUENCE = "sequences/m3svd_0117_1605"


def _panning(n: int = 5, shift: int = 2, size: tuple[int, int] = (48, 64)) -> list[list[np.ndarray]]:
    """n frames of a textured pair panning ``shift`` px per frame: [infrared (H,W), visible (H,W,3)] uint8."""
    rng = np.random.default_rng(5)
    h, w = size

    def texture(sigma: float) -> np.ndarray:
        return cv2.normalize(cv2.GaussianBlur(rng.random((h, w + n * shift)), (0, 0), sigma), None, 0, 255,
                             cv2.NORM_MINMAX).astype(np.uint8)

    ir, vis = texture(3.0), cv2.cvtColor(texture(1.5), cv2.COLOR_GRAY2BGR)
    return [[ir[:, i * shift: i * shift + w], vis[:, i * shift: i * shift + w]] for i in range(n)]


def _real(folder: Path, n: int) -> list[list[np.ndarray]]:
    """The first n frames of a shared sequence at its native size: [infrared (H,W), visible (H,W,3)] uint8."""
    names = sorted(p.name for p in (folder / "ir").iterdir())[:n]
    return [[cv2.imread(str(folder / "ir" / name), cv2.IMREAD_GRAYSCALE),
             cv2.imread(str(folder / "vis" / name), cv2.IMREAD_COLOR)] for name in names]


def _video(settings: dict | None = None, dig_every: int = 1) -> VideoFuser:
    """dig-blend (or ``settings``) in video mode at a 32 px working size, DIG measured every ``dig_every`` frames."""
    config = with_overrides(FusionConfig(max_side=32), {"method": "dig-blend", "video.enabled": True,
                                                        "video.dig_every": dig_every, **(settings or {})})
    return VideoFuser(Fuser(config, prior=WienerPrior(), device="cpu"))


def _serial(video: VideoFuser, frames: list[list[np.ndarray]]) -> list:
    """One frame at a time (VideoFuser.__call__)."""
    return [video(list(f), stamp=0.04 * i) for i, f in enumerate(frames)]


def _interleaved(video: VideoFuser, frames: list[list[np.ndarray]], skip: int | None = None) -> list:
    """The node's order: front of frame t, then back of frame t-1 (two frames in flight), and the back of frame
    ``skip`` never run (a failure between the halves). The results in frame order (None for the skipped one)."""
    out, pending = [], None
    for i, images in enumerate([*frames, None]):
        nxt = video.front(list(images), stamp=0.04 * i) if images is not None else None
        if pending is not None:
            out.append(None if len(out) == skip else video.back(pending))
        pending = nxt
    return out


def _by_hand(fuser: Fuser, frames: list[list[np.ndarray]]) -> list[np.ndarray]:
    """The video dig-blend with DIG measured on every frame gives, assembled from the stages: each frame's blend
    solved on its own, stabilised at its solve size against the last frame's stabilised blend, along the flow
    between their sources' mean (temporal.py), then the detail up to the input size, then composed. The
    published frames (uint8)."""
    cfg = fuser.config.video
    motion = temporal.MotionCompensator()
    published, last = [], None
    for images in frames:
        prep = fuser.prepare(images)
        timer = fuser.timer()
        # no warm start: with DIG measured on every frame the gain is this frame's own
        own = fuser.method.before_detail(fuser, prep, timer, None)  # the blend at its solve size
        if last is not None:
            size = prep.solve.shape[1:]
            coords = motion.coordinates(temporal.flow_guide(prep.sources), temporal.flow_guide(last[2]), size)
            bound = temporal.source_change(prep.solve, last[1], *coords)
            own.luminance = temporal.stabilise(own.luminance, last[0], *coords, cfg.temporal_strength,
                                               cfg.temporal_sigma, bound)
        last = (own.luminance, prep.solve, prep.sources)
        full = with_detail(fuser, prep, timer, own)
        published.append(fuser.compose(prep, full.luminance, full.weights))
    return published


def test_the_halves_interleaved_give_the_video_of_one_frame_at_a_time_and_of_the_stages_by_hand():
    frames = _panning()
    fixed = {"fullres.solve_side": 48, "fullres.solve_noise": 0.0}  # solved at 36x48 on every frame, then detail
    serial = _serial(_video(fixed), frames)
    piped = _interleaved(_video(fixed), frames)
    for a, b in zip(serial, piped, strict=True):
        assert np.array_equal(a.fused, b.fused) and np.array_equal(a.luminance, b.luminance)
        assert np.array_equal(a.weights, b.weights)
    hand = _by_hand(_video(fixed).fuser, frames)
    assert all(np.array_equal(a.fused, h) for a, h in zip(piped, hand, strict=True))
    assert not np.array_equal(piped[-1].fused, _video(fixed).fuser(list(frames[-1])).fused)  # stabilised


@pytest.mark.parametrize("solve_side", [0, 48])
def test_the_blend_is_solved_in_the_back_where_the_front_carries_more(solve_side):
    # The back solves where there is no detail step (solve_side 0: solved at the input size, 64 px) and on a frame
    # that measures DIG (the prior call makes its front the longer half); the front solves on a frame that reuses
    # the gain when the back runs the detail (48: solved smaller than the input).
    settings = {"fullres.solve_side": solve_side, "fullres.solve_noise": 0.0}  # no noise cap on the solve size
    frames = _panning(6)
    video = _video(settings, dig_every=3)
    solved_in_back = []
    for i, images in enumerate(frames):
        pending = video.front(list(images), stamp=0.04 * i)
        assert (pending.result.luminance.size == 0) == (pending.grid is not None)  # nothing solved yet in the front
        solved_in_back.append(pending.grid is not None)
        video.back(pending)
    measured = [True, False, False, True, False, False]  # the first frame, then every third
    assert solved_in_back == ([True] * 6 if solve_side == 0 else measured)
    serial = _serial(_video(settings, dig_every=3), frames)
    piped = _interleaved(_video(settings, dig_every=3), frames)
    assert all(np.array_equal(a.fused, b.fused) for a, b in zip(serial, piped, strict=True))


def test_with_balance_the_back_also_solves_while_the_front_has_been_the_longer_half():
    # On two threads (the node, fuse-dir --sequence) the halves' recent times decide where a frame that reuses
    # the gain is solved; the video is the same bit for bit wherever it is.
    settings = {"fullres.solve_side": 48, "fullres.solve_noise": 0.0}
    frames = _panning(4)
    video = _video(settings, dig_every=3)
    video.balance = True
    video.back(video.front(list(frames[0]), stamp=0.0))  # the first frame: solved in the back anyway
    where = []
    for i, (front_s, back_s) in enumerate([(1.0, 0.0), (0.0, 1.0)], start=1):
        video._front_s, video._back_s = front_s, back_s  # the front (then the back) has been the longer half
        pending = video.front(list(frames[i]), stamp=0.04 * i)
        where.append(pending.grid is not None)
        video.back(pending)
    assert where == [True, False]
    both = _video(settings, dig_every=3)
    both.balance = True
    balanced = _interleaved(both, frames)
    assert all(np.array_equal(a.fused, b.fused)
               for a, b in zip(_serial(_video(settings, dig_every=3), frames), balanced, strict=True))


def test_the_halves_interleaved_with_a_reused_gain_and_the_sampler():
    frames = _panning(6)
    for settings in ({"video.dig_every": 3}, {"method": "dig", "sampler.steps": 4, "video.start_step": 2}):
        serial = _serial(_video(settings), frames)
        piped = _interleaved(_video(settings), frames)
        assert [r.prior_calls for r in piped] == [r.prior_calls for r in serial]
        assert all(np.array_equal(a.fused, b.fused) for a, b in zip(serial, piped, strict=True)), settings


def test_on_a_real_sequence_the_halves_interleaved_are_the_video_bit_for_bit(shared_data):
    folder = shared_data / SEQUENCE
    if not folder.is_dir():
        pytest.skip(f"{folder} not found")
    frames = _real(folder, 5)
    config = with_overrides(FusionConfig(max_side=320), {"video.enabled": True, "video.dig_every": 1})
    fuser = Fuser(config, prior=WienerPrior(), device="cpu")
    serial = VideoFuser(fuser)
    expected = [serial(list(f), stamp=0.04 * i) for i, f in enumerate(frames)]
    assert serial.last_reason == "warm"
    piped = _interleaved(VideoFuser(fuser), frames)
    assert all(np.array_equal(a.fused, b.fused) and np.array_equal(a.weights, b.weights)
               for a, b in zip(expected, piped, strict=True))
    hand = _by_hand(fuser, frames[:3])
    assert all(np.array_equal(a.fused, h) for a, h in zip(piped, hand, strict=False))


def test_a_frame_whose_back_never_ran_is_not_the_next_ones_previous_output():
    frames = _panning(4)
    piped = _interleaved(_video(), frames, skip=1)
    assert piped[1] is None
    # frame 2's motion was measured to frame 1, whose output was never made: it is published unstabilised
    alone = _video().fuser(list(frames[2]))
    assert np.array_equal(piped[2].luminance, alone.luminance)
    serial = _serial(_video(), frames)
    assert not np.array_equal(serial[2].luminance, alone.luminance)  # where frame 1 was published it is
    # and frame 3 is stabilised against frame 2 again
    assert not np.array_equal(piped[3].luminance, _video().fuser(list(frames[3])).luminance)


def test_a_cold_front_result_restarts_the_back():
    frames = _panning(4)
    other = [255 - x for x in frames[2]]  # another scene
    video = _video()
    piped = _interleaved(video, [frames[0], frames[1], other, frames[3]])
    assert video.last_reason.startswith("scene changed")
    assert np.array_equal(piped[2].luminance, video.fuser(other).luminance)  # fused on its own, not stabilised
    assert not np.array_equal(piped[1].luminance, video.fuser(list(frames[1])).luminance)  # as frame 1 was


# -- the worker ---------------------------------------------------------------------------------------------

rclpy = pytest.importorskip("rclpy")

from dig2dig_ros.ros.node_support import TwoStageWorker  # noqa: E402


def _wait(predicate, timeout: float = 5.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end and not predicate():
        time.sleep(0.005)
    return predicate()


def test_the_back_finishes_every_front_result_in_order_while_the_front_runs_the_next():
    fronts, backs, spans = [], [], {"front": [], "back": []}  # spans: (start, end) of each call

    def front(item):
        start = time.monotonic()
        fronts.append(item)
        time.sleep(0.01)
        spans["front"].append((start, time.monotonic()))
        return item

    def back(item):
        start = time.monotonic()
        time.sleep(0.03)  # slower than the front: the front waits, and the newest-wins slot drops
        backs.append(item)
        spans["back"].append((start, time.monotonic()))

    worker = TwoStageWorker(front, back, "test")
    dropped = 0
    try:
        for i in range(40):
            dropped += worker.submit(i)
            time.sleep(0.004)
        assert _wait(lambda: len(backs) == len(fronts) and not worker._waiting)
    finally:
        assert worker.stop()
    assert backs == fronts  # every front result, in order: nothing dropped between the halves
    assert fronts == sorted(fronts) and fronts[-1] == 39  # the newest pair always taken
    assert dropped == 40 - len(fronts) > 0  # what arrived while both were busy, counted as drops
    # the front of item k+1 ran while the back of item k did
    overlapping = sum(f[0] < b[1] and b[0] < f[1] for f, b in zip(spans["front"][1:], spans["back"], strict=False))
    assert overlapping >= len(fronts) - 2


def test_a_front_result_waits_while_the_back_is_busy_and_stop_ends_both_threads():
    release, backs, fronts = threading.Event(), [], []

    def back(item):
        release.wait(10)
        backs.append(item)

    worker = TwoStageWorker(lambda item: fronts.append(item) or item, back, "test")
    worker.submit(1)
    assert _wait(lambda: worker._handed_set)  # 1 is in the back
    worker.submit(2)
    assert _wait(lambda: fronts == [1, 2])  # 2 finished its front and waits for the back
    worker.submit(3)  # waits in the newest-wins slot
    assert worker._waiting and backs == []
    release.set()
    assert _wait(lambda: backs == [1, 2, 3])
    assert worker.stop(timeout=5)
    assert not worker._thread.is_alive() and not worker._back_thread.is_alive()


def test_stop_discards_a_front_result_still_waiting_for_the_back():
    release, backs = threading.Event(), []

    def back(item):
        release.wait(10)
        backs.append(item)

    worker = TwoStageWorker(lambda item: item, back, "test")
    worker.submit(1)
    assert _wait(lambda: worker._handed_set)
    worker.submit(2)
    time.sleep(0.05)  # 2's front is done, waiting on the hand-over
    stopper = threading.Thread(target=lambda: worker.stop(timeout=5))
    stopper.start()
    time.sleep(0.05)
    release.set()
    stopper.join(5)
    assert not worker.alive() and backs == [1]  # 2 was never finished after stop


def test_an_error_in_either_half_reaches_on_error_and_both_threads_go_on():
    errors, backs = [], []

    def front(item):
        if item == "bad front":
            raise RuntimeError("front exploded")
        return item

    def back(item):
        if item == "bad back":
            raise RuntimeError("back exploded")
        backs.append(item)

    worker = TwoStageWorker(front, back, "test", on_error=errors.append)
    try:
        for item in ("bad front", "a", "bad back", "b"):
            worker.submit(item)
            assert _wait(lambda: not worker._waiting and not worker._handed_set)
            time.sleep(0.02)
        assert _wait(lambda: backs == ["a", "b"])
    finally:
        assert worker.stop()
    assert [str(e) for e in errors] == ["front exploded", "back exploded"]


def test_not_pipelined_the_back_runs_on_the_front_thread():
    threads = []
    worker = TwoStageWorker(lambda item: item, lambda item: threads.append(threading.current_thread()), "test",
                            pipelined=False)
    worker.submit(1)
    assert _wait(lambda: threads)
    assert threads == [worker._thread] and not worker._back_thread.is_alive()
    assert worker.stop()


# -- the node ----------------------------------------------------------------------------------------------

from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402

from dig2dig_ros.ros.conversions import numpy_to_image  # noqa: E402
from dig2dig_ros.ros.fusion_node import FusionNode  # noqa: E402

QOS = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)


@pytest.fixture()
def node_rig(monkeypatch):
    monkeypatch.setenv("ROS_DOMAIN_ID", str(1 + (os.getpid() + 61) % 99))
    rclpy.init()
    made = []

    def make(**params):
        overrides = {"prior": "wiener", "device": "cpu", "working_size": 32, **params}
        node = FusionNode(parameter_overrides=[Parameter(k, value=v) for k, v in overrides.items()])
        peer = rclpy.create_node("test_pipeline_peer")
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        executor.add_node(peer)
        pubs = [peer.create_publisher(Image, topic, QOS) for topic in ("ir/image", "visible/image")]
        fused: list = []
        peer.create_subscription(Image, "fused/image", fused.append, QOS)
        made.append((node, peer))

        def spin(predicate, timeout: float = 20.0) -> bool:
            end = time.monotonic() + timeout
            while time.monotonic() < end and not predicate():
                executor.spin_once(timeout_sec=0.02)
            return predicate()

        def send(images, sec: int) -> None:
            for pub, img, enc in zip(pubs, images, ("mono8", "bgr8"), strict=True):
                msg = numpy_to_image(img, enc)
                msg.header.stamp.sec, msg.header.frame_id = sec, "camera"
                pub.publish(msg)

        assert spin(lambda: all(p.get_subscription_count() for p in pubs) and peer.count_publishers("fused/image"))
        return node, send, spin, fused

    yield make
    for node, peer in made:
        node.stop()
        node.destroy_node()
        peer.destroy_node()
    rclpy.shutdown()


def test_the_node_pipelined_publishes_every_frame_with_its_stamp_and_a_failed_back_is_counted(node_rig):
    node, send, spin, fused = node_rig(**{"video.enabled": True})
    assert node.worker.pipelined and node.worker._back_thread.is_alive()
    real_back = node.setup.video.back
    calls = []

    def flaky_back(pending, **kwargs):
        calls.append(pending.index)
        if len(calls) == 2:
            raise RuntimeError("detail exploded")
        return real_back(pending, **kwargs)

    node.setup.video.back = flaky_back
    frames = _panning(5, size=(48, 64))
    for sec, images in enumerate(frames, start=1):
        send(images, sec)
        assert spin(lambda n=sec: node.counts["fused"] + node.counts["failed"] == n)
    assert node.counts["failed"] == 1 and node.counts["fused"] == 4
    assert node.last_failure[1] == "fusion failed: detail exploded"  # counted by the node's back half
    assert [m.header.stamp.sec for m in fused] == [1, 3, 4, 5] and fused[0].header.frame_id == "camera"
    assert calls == sorted(calls) and len(calls) == 5
    assert node.worker.alive()


def test_the_node_counts_a_failed_front_and_fuses_the_next_pair(node_rig):
    node, send, spin, fused = node_rig(pipeline=False)
    assert not node.worker.pipelined and not node.worker._back_thread.is_alive()
    real_front = node.setup.video.front
    failing = [True]

    def front(*args, **kwargs):
        if failing.pop() if failing else False:
            raise RuntimeError("flow exploded")
        return real_front(*args, **kwargs)

    node.setup.video.front = front
    frames = _panning(2, size=(48, 64))
    send(frames[0], 1)
    assert spin(lambda: node.counts["failed"] == 1)
    send(frames[1], 2)
    assert spin(lambda: len(fused) == 1)
    assert node.counts["fused"] == 1 and fused[0].header.stamp.sec == 2


def test_a_parameter_change_never_mixes_frames_of_two_setups(node_rig):
    node, send, spin, fused = node_rig(**{"video.enabled": True})
    release, in_back, fronted = threading.Event(), threading.Event(), threading.Event()
    backs = []
    old = node.setup
    real_front, real_back = old.video.front, old.video.back

    def front(*args, **kwargs):
        out = real_front(*args, **kwargs)
        if out.index == 1:
            fronted.set()
        return out

    def held_back(pending, **kwargs):
        in_back.set()
        release.wait(10)
        backs.append(("old", pending.index))
        return real_back(pending, **kwargs)

    old.video.front, old.video.back = front, held_back
    frames = _panning(3, size=(48, 64))
    send(frames[0], 1)
    assert spin(in_back.is_set)
    send(frames[1], 2)
    assert spin(fronted.is_set)  # frame 2's front ran with the old setup; it waits for the back
    assert node.set_parameters([Parameter("video.temporal_strength", value=0.5)])[0].successful
    new = node.setup
    assert new is not old
    new_back = new.video.back
    new.video.back = lambda pending, **kwargs: backs.append(("new", pending.index)) or new_back(pending, **kwargs)
    release.set()
    assert spin(lambda: len(fused) == 2)
    send(frames[2], 3)
    assert spin(lambda: len(fused) == 3)
    assert backs == [("old", 0), ("old", 1), ("new", 0)]  # frame 2 finished by the setup it started with
    assert new.video.back_state.index == 0  # the new setup's first frame started its own sequence


def test_fuse_pipelined_gives_the_serial_video_in_order_and_raises_a_halfs_error():
    from dig2dig_ros.core.video.fuser import fuse_pipelined

    frames = _panning(6)
    serial = _serial(_video({"video.dig_every": 3}), frames)
    got: list[tuple[int, np.ndarray]] = []
    video = _video({"video.dig_every": 3})
    fuse_pipelined(video, ((list(f), 0.04 * i, None) for i, f in enumerate(frames)),
                   lambda i, r: got.append((i, r.fused)))
    assert [i for i, _ in got] == list(range(6))
    assert all(np.array_equal(a.fused, b) for a, (_, b) in zip(serial, got, strict=True))

    def fail_on_third(i: int, result) -> None:
        if i == 2:
            raise RuntimeError("disk full")
        got.append((i, result.fused))

    got.clear()
    with pytest.raises(RuntimeError, match="disk full"):
        fuse_pipelined(_video(), ((list(f), 0.04 * i, None) for i, f in enumerate(frames)), fail_on_third)
    assert [i for i, _ in got] == [0, 1]  # nothing after the failed frame is finished
