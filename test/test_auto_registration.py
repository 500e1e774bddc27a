"""ir.homography auto in the core: spaced pairs, a background estimate, refinement, and warnings that say why."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from dig2dig_ros.core.frame.auto_registration import AutoRegistration, AutoSettings, blend_homographies
from dig2dig_ros.core.frame.homography_estimate import grid_error, similarity
from dig2dig_ros.core.sample_scene import make_sample_pair

SIZE = (256, 320)  # (h, w) of the synthetic frames
G = similarity(SIZE, SIZE, 1.04, 2.0, (10.0, -7.0))  # where the rig's infrared sees the scene (visible → infrared)
TRUTH = np.linalg.inv(G) / np.linalg.inv(G)[2, 2]  # infrared → visible


def pairs(n: int, g: np.ndarray = G, start: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    out = []
    for k in range(start, start + n):
        ir, vis = make_sample_pair(k * 5, size=SIZE)
        out.append((cv2.warpPerspective(ir, g, SIZE[::-1], borderMode=cv2.BORDER_REPLICATE), vis))
    return out


def feed(auto: AutoRegistration, items, t0: float, step: float) -> float:
    t = t0
    for ir, vis in items:
        auto.offer(ir, vis, t)
        assert auto.wait(60)
        t += step
    return t


def test_pairs_closer_than_the_spacing_are_not_kept():
    auto = AutoRegistration(AutoSettings(pairs=3, spacing_s=1.0))
    (ir, vis), = pairs(1)
    assert auto.offer(ir, vis, 10.0)
    assert not auto.offer(ir, vis, 10.5)
    assert auto.offer(ir, vis, 11.0)
    assert auto.offer(ir, vis, 5.0)  # the stamps jumped back (a looped bag): the spacing starts afresh
    assert auto.status().pairs == 3


def test_the_first_estimate_runs_once_enough_pairs_are_held_and_recovers_the_rig():
    messages = []
    auto = AutoRegistration(AutoSettings(pairs=4, spacing_s=1.0), log=lambda m, w: messages.append((m, w)))
    feed(auto, pairs(3), 0.0, 1.0)
    assert auto.homography is None and auto.status().state == "collecting"
    assert "3 of 4" in auto.status().message and not auto.status().warn
    feed(auto, pairs(1, start=3), 3.0, 1.0)
    h = auto.homography
    assert h is not None
    mean, worst = grid_error(h, TRUTH, SIZE)
    assert mean < 1.0 and worst < 2.5, (mean, worst)
    status = auto.status()
    assert status.state == "aligned" and not status.warn and status.estimate.correlation > 0.25
    assert messages and messages[-1][0].startswith("registration estimated from 4 pairs") and not messages[-1][1]


def test_a_knocked_camera_is_re_estimated_and_named_and_a_small_drift_moves_h_part_way():
    messages = []
    auto = AutoRegistration(AutoSettings(pairs=3, spacing_s=1.0, refine_period_s=3.0, warn_px=6.0,
                                         warn_hold_s=5.0), log=lambda m, w: messages.append((m, w)))
    t = feed(auto, pairs(3), 0.0, 1.0)
    first = auto.homography
    knocked = similarity(SIZE, SIZE, 1.04, 2.0, (-14.0, 9.0))  # the infrared camera moved ~30 px
    truth2 = np.linalg.inv(knocked) / np.linalg.inv(knocked)[2, 2]
    t = feed(auto, pairs(3, knocked, start=3), t, 1.0)
    assert grid_error(auto.homography, truth2, SIZE)[0] < 1.0  # replaced, not blended
    status = auto.status()
    assert status.state == "changed" and status.warn and "was a camera moved" in status.message
    assert messages[-1][1] and "changed by" in messages[-1][0]
    assert grid_error(first, truth2, SIZE)[0] > 20
    # held for warn_hold_s, then OK again; a re-estimate of the same rig moves H by little and does not warn
    t = feed(auto, pairs(4, knocked, start=6), t + 5.0, 1.0)
    assert not auto.status().warn, auto.status()
    assert "refined" in messages[-1][0] and not messages[-1][1]


def test_pairs_without_shared_structure_are_refused_and_fused_unregistered():
    messages = []
    auto = AutoRegistration(AutoSettings(pairs=3, spacing_s=0.0), log=lambda m, w: messages.append((m, w)))
    rng = np.random.default_rng(0)
    noise = [(ir, rng.integers(0, 256, vis.shape, np.uint8)) for ir, vis in pairs(3)]
    feed(auto, noise, 0.0, 1.0)
    assert auto.homography is None
    status = auto.status()
    assert status.state == "refused" and status.warn and "fusing unregistered" in status.message
    assert status.pairs == 0  # it retries on fresh pairs
    assert messages[-1][1]


def test_blending_half_way_lands_half_way_on_the_grid():
    a, b = np.eye(3), similarity(SIZE, SIZE, 1.0, 0.0, (10.0, 0.0))
    half = blend_homographies(a, b, 0.5, SIZE, SIZE)
    assert grid_error(half, a, SIZE)[0] == pytest.approx(5.0, abs=1e-6)
    assert grid_error(half, b, SIZE)[0] == pytest.approx(5.0, abs=1e-6)


@pytest.mark.parametrize("bad", [{"pairs": 1}, {"refine_rate": 0.0}, {"warn_px": 0.0}, {"spacing_s": -1.0}])
def test_bad_settings_are_refused(bad):
    with pytest.raises(ValueError):
        AutoSettings(**bad).validate()


def test_an_estimator_fault_is_reported_and_retried_not_raised(monkeypatch):
    from dig2dig_ros.core.frame import auto_registration

    calls = []

    def broken(*args, **kwargs):
        calls.append(1)
        raise RuntimeError("ECC exploded")

    monkeypatch.setattr(auto_registration, "estimate_from_pairs", broken)
    messages = []
    auto = AutoRegistration(AutoSettings(pairs=2, spacing_s=0.0), log=lambda m, w: messages.append((m, w)))
    feed(auto, pairs(4), 0.0, 1.0)
    assert len(calls) == 2  # one try per two fresh pairs, not one per pair
    status = auto.status()
    assert status.warn and "failed (RuntimeError): ECC exploded" in status.message and auto.homography is None
    assert messages[-1] == (status.message, True)


def test_a_warning_is_held_on_the_new_stamps_after_they_jump_back():
    auto = AutoRegistration(AutoSettings(pairs=3, spacing_s=0.0, warn_hold_s=10.0))
    rng = np.random.default_rng(0)
    noise = [(ir, rng.integers(0, 256, vis.shape, np.uint8)) for ir, vis in pairs(4)]
    feed(auto, noise[:3], 100.0, 1.0)  # refused at stamp 102
    assert auto.status().warn
    feed(auto, noise[3:], 1.0, 1.0)  # the bag looped: stamps start again at 1
    assert auto.status().warn  # held from the jump on
    feed(auto, noise[3:], 12.0, 1.0)
    assert not auto.status().warn and auto.status().state == "collecting"
