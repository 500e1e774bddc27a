"""The fusion pipeline around the sampler: colour handling per task, padding, working size, classical methods."""

import numpy as np
import pytest

from dig2dig_ros.core.config import FusionConfig
from dig2dig_ros.core.fusion import Fuser, FusionError
from dig2dig_ros.core.priors.wiener import WienerPrior
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
