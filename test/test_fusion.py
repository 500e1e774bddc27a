"""The fusion pipeline around the sampler: colour handling per task, padding, working size, classical methods."""

import cv2
import numpy as np
import pytest

from dig2dig_ros.core.config import FusionConfig, with_overrides
from dig2dig_ros.core.diffusion.priors.wiener import WienerPrior
from dig2dig_ros.core.frame.fusion import Fuser, FusionError
from dig2dig_ros.core.sample_scene import make_sample_pair


class _Stride32(WienerPrior):
    multiple = 32  # like ADM: inputs are reflect-padded to a multiple and cropped back


def _fuser(**kw) -> Fuser:
    return Fuser(FusionConfig(**kw), prior=_Stride32(), device="cpu")


def test_vif_keeps_the_visible_chroma_and_pads_to_the_prior_multiple():
    ir, vis = make_sample_pair(size=(50, 70))  # not multiples of 32
    out = _fuser(task="vif")([ir, vis])
    assert out.fused.shape == (50, 70, 3) and out.weights.shape == (2, 50, 70)
    # The visible frame's warm tint survives: blue < green < red where the lamp light is.
    lamp = out.fused[30:40, 45:55].reshape(-1, 3).mean(0)
    assert lamp[0] < lamp[1] < lamp[2]


def test_gray_visible_gives_a_gray_output():
    ir, vis = make_sample_pair(size=(48, 64))
    out = _fuser()([ir, vis.mean(axis=2).astype(np.uint8)])
    assert out.fused.shape == (48, 64)


def test_mef_chroma_is_the_weighted_average_of_the_sources():
    red = np.zeros((32, 32, 3), np.uint8)
    red[..., 2] = 200
    blue = np.zeros((32, 32, 3), np.uint8)
    blue[..., 0] = 200
    out = _fuser(task="mef", method="static")([red, blue])
    b, g, r = out.fused.reshape(-1, 3).mean(0)
    assert abs(float(b) - float(r)) < 25 and b > g and r > g  # equal parts red and blue: magenta-ish


def test_working_size_runs_smaller_and_returns_the_input_size():
    ir, vis = make_sample_pair(size=(128, 160))
    out = _fuser(max_side=64)([ir, vis])
    assert out.fused.shape == (128, 160, 3) and out.weights.shape == (2, 128, 160)
    assert out.cumulative_dig.shape == (2, 51, 64)  # the working size (padding cropped away)
    assert np.allclose(out.weights.sum(0), 1, atol=1e-5)


@pytest.mark.parametrize("method", ["average", "max", "laplacian", "gff"])
def test_classical_methods_run_through_the_same_pipeline(method):
    ir, vis = make_sample_pair(size=(48, 64))
    out = Fuser(FusionConfig(method=method), device="cpu")([ir, vis])
    assert out.fused.shape == (48, 64, 3) and out.weights is None


def test_unknown_method_is_refused():
    with pytest.raises(FusionError, match="unknown method 'nope'"):
        Fuser(FusionConfig(method="nope"), prior=WienerPrior(), device="cpu")


class _Recording(WienerPrior):
    """A Wiener prior that records the timesteps of every call it serves."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[set[int]] = []

    def forward(self, x_t, t):
        self.calls.append({int(s) for s in t})
        return super().forward(x_t, t)


def _hot_target(h=64, w=80):
    """A hot square in a dark infrared frame, a textured visible one: [infrared, visible] uint8 (H,W)."""
    rng = np.random.default_rng(5)
    ir = np.full((h, w), 25, np.uint8)
    ir[20:44, 28:52] = 230
    vis = (cv2.GaussianBlur(rng.random((h, w)), (0, 0), 1.5) * 150 + 50).astype(np.uint8)
    return [ir, vis]


def test_dig_blend_probes_at_its_own_timestep_whatever_the_sampler_settings():
    pair = _hot_target()
    outs, probed = {}, {}
    today = round(999 * (4 / 14) ** 2)  # DIG-15 (quadratic) updates its weights last at step 10: t = 82
    for name, settings in (("default", {}), ("interval 1", {"dig.interval": 1}),  # before: t = 0
                           ("25 uniform steps", {"sampler.steps": 25, "sampler.spacing": "uniform"})):
        prior = _Recording()
        config = with_overrides(FusionConfig(), {"method": "dig-blend", **settings})
        outs[name] = Fuser(config, prior=prior, device="cpu")(pair)
        probed[name] = prior.calls
    assert all(calls == [{today}] for calls in probed.values()), probed
    for name in ("interval 1", "25 uniform steps"):
        np.testing.assert_array_equal(outs[name].weights, outs["default"].weights)
        np.testing.assert_array_equal(outs[name].fused, outs["default"].fused)
    assert outs["default"].weights[0][24:40, 32:48].mean() > 0.55  # the target is the infrared's


def test_dig_blend_probe_timestep_is_a_setting_scaled_to_the_priors_schedule():
    from dig2dig_ros.core.diffusion.schedule import linear_alphas_cumprod, timesteps

    prior = _Recording()
    Fuser(with_overrides(FusionConfig(), {"method": "dig-blend", "dig.blend_probe_t": 300}), prior=prior,
          device="cpu")(_hot_target())
    assert prior.calls == [{300}]
    short = _Recording()
    short.alphas_cumprod = linear_alphas_cumprod(500)  # a prior trained with 500 steps
    Fuser(FusionConfig(method="dig-blend"), prior=short, device="cpu")(_hot_target())
    assert short.calls == [{int(timesteps(15, "quadratic", 500)[10])}] == [{41}]  # what it probed before


@pytest.mark.parametrize("max_side", [32, 0])  # the blend solved in the full-resolution step, or at the input size
@pytest.mark.parametrize("stop_at,stage,calls,blends,details", [
    (1, "the DIG weights", 0, 0, 0), (2, "the blend", 1, 0, 0), (3, "the full-resolution step", 1, 1, 0)])
def test_dig_blend_stops_between_its_stages(monkeypatch, max_side, stop_at, stage, calls, blends, details):
    from dig2dig_ros.core.frame import fullres, stages
    from dig2dig_ros.core.frame.fusion import FusionCancelled

    prior = _Recording()
    fuser = Fuser(FusionConfig(method="dig-blend", max_side=max_side), prior=prior, device="cpu")
    ran = {"blend": 0, "detail": 0}

    def counted(name, fn):
        def wrapper(*args, **kwargs):
            ran[name] += 1
            return fn(*args, **kwargs)
        return wrapper

    monkeypatch.setattr(stages, "blend_target", counted("blend", stages.blend_target))
    monkeypatch.setattr(fullres, "reconstruct", counted("detail", fullres.reconstruct))
    asked = []

    def should_stop() -> bool:
        asked.append(1)
        return len(asked) == stop_at

    with pytest.raises(FusionCancelled, match=f"before {stage}$"):
        fuser(_hot_target(), should_stop=should_stop)
    assert (len(prior.calls), ran["blend"], ran["detail"]) == (calls, blends, details)
    asked.clear()
    out = fuser(_hot_target(), should_stop=lambda: False)  # never asked to stop: every stage runs
    assert out.fused.shape == (64, 80) and ran == {"blend": blends + 1, "detail": details + 1}


def test_holes_are_filled_with_the_mean_of_the_sources_that_see_them_and_only_there():
    from dig2dig_ros.core.frame.fusion import _fill_holes

    rng = np.random.default_rng(5)
    sources = rng.random((3, 20, 30)).astype(np.float32)
    masks = (rng.random((3, 20, 30)) > 0.25).astype(np.float32)
    masks[:, 0, 0] = 0  # nobody sees it: unchanged
    covered = masks.sum(0)
    fill = (sources * masks).sum(0) / np.maximum(covered, 1)  # the formula as written before (independent)
    expected = np.where(masks > 0, sources, np.where(covered > 0, fill, sources)).astype(np.float32)
    assert _fill_holes(sources, masks, ["p0", "p1", "p2"]) == [None, None, None]
    np.testing.assert_array_equal(sources, expected)
    masks[1] = 1  # a source without holes keeps its 8-bit plane, and its luminance
    before = sources[1].copy()
    assert _fill_holes(sources, masks, ["p0", "p1", "p2"]) == [None, "p1", None]
    np.testing.assert_array_equal(sources[1], before)
