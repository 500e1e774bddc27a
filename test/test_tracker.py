"""The multi-object tracker: synthetic boxes moving, crossing, missed and dropped; births and deaths; time jumps;
and a walker on a real held-out video sequence (M3SVD, when ../shared exists), on the visible and the fused frames.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from dig2dig_ros.core.detection import Detections, Detector, DetectorConfig, box_iou
from dig2dig_ros.core.detection.tracker import Tracker, TrackerConfig, greedy_match

NAMES = ["person", "car"]
FPS = 10.0


def frame(boxes, scores=None, classes=None) -> Detections:
    """Detections from a list of xyxy boxes (score 0.9, class person unless given)."""
    b = np.asarray(boxes, np.float32).reshape(-1, 4)  # (N,4)
    n = len(b)
    return Detections(b, np.asarray(scores if scores is not None else [0.9] * n, np.float32),
                      np.asarray(classes if classes is not None else [0] * n, np.int64), NAMES)


def walker(x: float, y: float = 50.0, w: float = 40.0, h: float = 80.0) -> list[float]:
    return [x, y, x + w, y + h]


# ------------------------------------------------------------------------------------------------ synthetic
def test_a_moving_box_keeps_its_id_and_is_confirmed_after_min_hits():
    tracker = Tracker(TrackerConfig(min_hits=3))
    ids, confirmed = [], []
    for k in range(10):
        out = tracker.update(frame([walker(10 + 12 * k)]), k / FPS)
        ids.append(int(out.track_ids[0]))
        confirmed.append(bool(out.confirmed[0]))
    assert ids == [ids[0]] * 10
    assert confirmed == [False, False] + [True] * 8


def test_two_walkers_crossing_keep_their_ids():
    """A walks right, B walks left, 10 px lower; at k = 5 their boxes overlap by 78 % (IoU). Rows are given in a
    shuffled order so the id cannot come from the row index."""
    tracker = Tracker()
    rng = np.random.default_rng(3)
    first = {}
    for k in range(11):
        boxes = {"A": walker(20 + 16 * k), "B": walker(180 - 16 * k, y=60)}
        order = list(rng.permutation(["A", "B"]))
        out = tracker.update(frame([boxes[name] for name in order]), k / FPS)
        got = {name: int(out.track_ids[i]) for i, name in enumerate(order)}
        first = first or got
        assert got == first, f"frame {k}: {got} (ids at the start {first})"
    assert first["A"] != first["B"]


def test_walkers_passing_each_other_between_two_frames_keep_their_ids():
    """Boxes that jump past each other: matching each new box to the nearest last box would hand A's id to B
    (checked below); the motion model predicts each past the other."""
    tracker = Tracker()
    first = None
    for k in range(8):
        a, b = walker(40 + 20 * k), walker(180 - 20 * k)  # cross between k = 3 and k = 4
        out = tracker.update(frame([a, b]), k / FPS)
        first = first if first is not None else out.track_ids.tolist()
        assert out.track_ids.tolist() == first, f"frame {k}"
    # The last boxes of A (k=3, x=100) and B (k=3, x=120) overlap the other's next box more than their own:
    last = np.array([walker(100), walker(120)])
    nxt = np.array([walker(120), walker(100)])
    iou = box_iou(last, nxt)
    assert iou[0, 1] > iou[0, 0] and iou[1, 0] > iou[1, 1]


def test_ids_survive_a_missed_detection_and_a_dropped_frame():
    tracker = Tracker(TrackerConfig(min_hits=2, max_age=3))
    ids = []
    for k in range(12):
        if k == 5:
            out = tracker.update(frame([]), k / FPS)  # processed, the detector missed the walker
            assert len(out) == 0
            continue
        if k == 8:
            continue  # never reached the tracker (dropped by a busy node): the next step is twice as long
        out = tracker.update(frame([walker(10 + 15 * k)]), k / FPS)
        ids.append(int(out.track_ids[0]))
    assert ids == [ids[0]] * 10


def test_a_confirmed_track_dies_after_max_age_misses_and_ids_are_never_reused():
    tracker = Tracker(TrackerConfig(min_hits=2, max_age=2))
    box = walker(50)
    for k in range(3):
        old = int(tracker.update(frame([box]), k / FPS).track_ids[0])
    for k in range(3, 5):  # two misses: still alive
        tracker.update(frame([]), k / FPS)
    assert int(tracker.update(frame([box]), 5 / FPS).track_ids[0]) == old
    for k in range(6, 9):  # three misses: gone
        tracker.update(frame([]), k / FPS)
    new = int(tracker.update(frame([box]), 9 / FPS).track_ids[0])
    assert new != old and new > old


def test_a_tentative_track_dies_on_its_first_miss():
    tracker = Tracker(TrackerConfig(min_hits=3, max_age=5))
    first = int(tracker.update(frame([walker(50)]), 0.0).track_ids[0])
    tracker.update(frame([]), 0.1)
    assert int(tracker.update(frame([walker(50)]), 0.2).track_ids[0]) != first


def test_every_detection_gets_an_id_and_ids_are_distinct_within_a_frame():
    tracker = Tracker()
    out = tracker.update(frame([walker(0), walker(100), walker(200, h=20)], scores=[0.9, 0.3, 0.26]), 0.0)
    assert out.track_ids is not None and len(set(out.track_ids.tolist())) == 3 and (out.track_ids > 0).all()
    assert out.confirmed.tolist() == [False] * 3


def test_a_low_scored_box_keeps_its_track_and_cannot_take_one_from_a_strong_box():
    tracker = Tracker(TrackerConfig(min_hits=1, high_score=0.5))
    out = tracker.update(frame([walker(100)], scores=[0.9]), 0.0)
    tid = int(out.track_ids[0])
    out = tracker.update(frame([walker(102)], scores=[0.3]), 0.1)  # the score dips: same person, same id
    assert int(out.track_ids[0]) == tid
    # A weak box overlapping more, a strong one overlapping less: the strong one is matched first.
    out = tracker.update(frame([walker(103), walker(110)], scores=[0.3, 0.9]), 0.2)
    assert int(out.track_ids[1]) == tid and int(out.track_ids[0]) != tid


def test_classes_do_not_share_tracks():
    tracker = Tracker(TrackerConfig(min_hits=1))
    person = int(tracker.update(frame([walker(50)], classes=[0]), 0.0).track_ids[0])
    car = int(tracker.update(frame([walker(50)], classes=[1]), 0.1).track_ids[0])
    assert car != person


@pytest.mark.parametrize(("stamp", "reason"), [(0.2, "time jumped back"), (30.0, "gap of")])
def test_a_time_jump_resets_the_tracker(stamp, reason):
    tracker = Tracker(TrackerConfig(min_hits=1, max_gap=5.0))
    for k in range(5):
        old = int(tracker.update(frame([walker(50)]), 1.0 + k / FPS).track_ids[0])
    new = int(tracker.update(frame([walker(50)]), stamp).track_ids[0])
    assert new != old and tracker.resets == 1 and tracker.last_reset.startswith(reason)
    assert int(tracker.update(frame([walker(50)]), stamp + 0.1).track_ids[0]) == new
    assert tracker.last_reset is None


def test_greedy_match_takes_the_best_pairs_first():
    iou = np.array([[0.9, 0.8], [0.85, 0.1]])
    assert sorted(greedy_match(iou, 0.3)) == [(0, 0)]  # (1,0) lost to (0,0); (1,1) is below the threshold
    assert greedy_match(np.zeros((0, 3)), 0.3) == []


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="min_hits"):
        Tracker(TrackerConfig(min_hits=0))
    with pytest.raises(ValueError, match="match_iou"):
        Tracker(TrackerConfig(match_iou=1.5))


# ------------------------------------------------------------------------------------------- real sequence
SEQUENCE = "sequences/m3svd_0117_1605"  # M3SVD test split, 30 fps: a walker enters on the right from frame 35
WALK = [f"{i:06d}" for i in range(38, 46)]  # 8 consecutive frames with the walker in view


@pytest.fixture(scope="module")
def yolov5n(shared_data, tmp_path_factory) -> Detector:
    from dig2dig_ros.core.detection.convert import convert

    weights = shared_data / "weights" / "yolov5n.pt"
    if not weights.is_file():
        pytest.skip(f"no YOLOv5n weights at {weights}")
    model = convert(weights, tmp_path_factory.mktemp("y5n") / "yolov5n")
    return Detector(DetectorConfig(model_path=str(model), device="cpu"))


def walker_ids(detector: Detector, frames: list[np.ndarray]) -> list[int | None]:
    """The track id of the walker in each frame (None where no box is the walker).

    The walker, told apart without the tracker: the only person box at least 250 px tall reaching the right third
    of the 640×480 frame (the other people in this scene are far away, under 60 px tall)."""
    tracker = Tracker()
    found: list[int | None] = []
    for k, bgr in enumerate(frames):
        dets = tracker.update(detector(bgr), k / 30.0)
        heights = dets.boxes[:, 3] - dets.boxes[:, 1]
        tall = np.flatnonzero((heights >= 250) & (dets.boxes[:, 2] >= 2 * bgr.shape[1] / 3))
        assert len(tall) <= 1, f"frame {k}: {len(tall)} walker boxes"
        found.append(int(dets.track_ids[tall[0]]) if len(tall) else None)
    return found


def one_id_share(found: list[int | None]) -> int:
    ids = [i for i in found if i is not None]
    return max((ids.count(i) for i in set(ids)), default=0)


def test_the_walker_keeps_one_id_on_the_visible_frames(shared_data, yolov5n):
    import cv2

    folder = shared_data / SEQUENCE / "vis"
    frames = [cv2.imread(str(folder / f"{stem}.png")) for stem in WALK]
    found = walker_ids(yolov5n, frames)
    assert one_id_share(found) >= 6, found


def test_the_walker_keeps_one_id_on_the_fused_frames(shared_data, yolov5n):
    """The frames the node sees: the default fusion (dig-blend at 320 px, video mode) of the same 8 pairs."""
    from dig2dig_ros.core.config import FusionConfig
    from dig2dig_ros.core.frame.fusion import Fuser
    from dig2dig_ros.core.frame.imaging import read_image
    from dig2dig_ros.core.video.fuser import VideoFuser

    root: Path = shared_data / SEQUENCE
    fuser = VideoFuser(Fuser(FusionConfig(max_side=320), prior="bundled", device="cpu"))
    fused = [fuser([read_image(root / "ir" / f"{s}.png"), read_image(root / "vis" / f"{s}.png")], stamp=k / 30.0).fused
             for k, s in enumerate(WALK)]
    found = walker_ids(yolov5n, fused)
    assert one_id_share(found) >= 6, found
