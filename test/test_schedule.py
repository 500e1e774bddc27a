"""Timestep sequences and ᾱ: exact arrays, ordering, previous-step lookup."""

import numpy as np
import pytest

from dig2dig_ros.core.diffusion.schedule import alpha_bar, linear_alphas_cumprod, previous_timestep, timesteps


def test_quadratic_15_exact():
    # t_i = round(999 · (i/14)²), reversed.
    expected = [999, 861, 734, 617, 510, 413, 326, 250, 183, 127, 82, 46, 20, 5, 0]
    assert timesteps(15).tolist() == expected


def test_quadratic_25_exact():
    expected = [999, 917, 839, 765, 694, 626, 562, 501, 444, 390, 340, 293, 250, 210, 173, 140, 111, 85,
                62, 43, 28, 16, 7, 2, 0]
    assert timesteps(25).tolist() == expected


def test_quadratic_repeats_are_pushed_apart():
    # With many steps the formula repeats low timesteps; every step must still move.
    raw = np.round(999 * (np.arange(200) / 199) ** 2).astype(int)
    assert len(set(raw.tolist())) < 200
    ts = timesteps(200)
    assert len(set(ts.tolist())) == 200


def test_uniform_and_sections():
    assert timesteps(5, "uniform").tolist() == [999, 749, 500, 250, 0]
    ts = timesteps(6, "3,2,1")
    assert len(ts) == 6 and np.all(np.diff(ts) < 0)
    with pytest.raises(ValueError, match="add up"):
        timesteps(6, "3,2")
    with pytest.raises(ValueError, match="unknown spacing"):
        timesteps(6, "cosine")


@pytest.mark.parametrize("n", [2, 7, 15, 25, 30, 50, 333, 1000])
@pytest.mark.parametrize("spacing", ["quadratic", "uniform"])
def test_strictly_decreasing_and_in_range(n, spacing):
    ts = timesteps(n, spacing)
    assert len(ts) == n
    assert ts[0] <= 999 and ts[-1] >= 0
    assert np.all(np.diff(ts) < 0)


def test_previous_timestep_is_looked_up_not_computed():
    ts = timesteps(7, "uniform")  # 7 does not divide 1000: t − 1000//7 would be wrong
    assert [previous_timestep(ts, i) for i in range(7)] == [*ts[1:].tolist(), -1]
    assert previous_timestep(ts, 0) != ts[0] - 1000 // 7


def test_alpha_bar_linear_schedule():
    ac = linear_alphas_cumprod()
    assert ac.shape == (1000,)
    assert alpha_bar(ac, -1) == 1.0
    assert abs(alpha_bar(ac, 0) - (1 - 1e-4)) < 1e-12
    assert float(ac[-1]) < 1e-4  # nearly pure noise at t = 999
    assert np.all(np.diff(ac.numpy()) < 0)
