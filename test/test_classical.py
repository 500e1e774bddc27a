"""Classical fusion baselines: exact cases, identity on copies, detail kept from every source, input checks."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from dig2dig_ros.core import metrics as M
from dig2dig_ros.core.frame import classical as C

METHODS = sorted(C.CLASSICAL_METHODS)


def _smooth(shape: tuple[int, int], seed: int) -> np.ndarray:
    """A smooth random image in [0.1, 0.9]: float32 (H,W)."""
    x = cv2.GaussianBlur(np.random.default_rng(seed).random(shape), (0, 0), 3)
    x = (x - x.min()) / (x.max() - x.min())
    return (0.1 + 0.8 * x).astype(np.float32)


def _checker(shape: tuple[int, int], cell: int) -> np.ndarray:
    yy, xx = np.indices(shape)
    return np.where((yy // cell + xx // cell) % 2 == 0, 0.2, 0.8).astype(np.float32)  # (H,W)


def _split_pair(shape: tuple[int, int] = (64, 96)) -> tuple[np.ndarray, np.ndarray]:
    """A has a checkerboard in its left half, B a fine texture in its right half; elsewhere both are flat 0.5."""
    h, w = shape
    a = np.full(shape, 0.5, np.float32)
    b = np.full(shape, 0.5, np.float32)
    a[:, : w // 2] = _checker((h, w // 2), 4)
    rng = np.random.default_rng(0)
    b[:, w // 2 :] = np.clip(0.5 + 0.3 * rng.standard_normal((h, w - w // 2)), 0, 1)
    return a, b


def test_registry_names():
    assert set(C.CLASSICAL_METHODS) == {"average", "max", "laplacian", "gff"}


def test_average_of_two_images_is_exact():
    a, b = _smooth((20, 30), 1), _smooth((20, 30), 2)
    out = C.fuse_classical("average", [a, b])
    np.testing.assert_array_equal(out, (a + b) / np.float32(2))


def test_max_is_the_pixelwise_max():
    a, b, c = _smooth((20, 30), 1), _smooth((20, 30), 2), _smooth((20, 30), 3)
    np.testing.assert_array_equal(C.fuse_classical("max", [a, b, c]), np.maximum(np.maximum(a, b), c))


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("k", [2, 3])
def test_fusing_copies_of_one_image_returns_it(method, k):
    x = np.clip(_smooth((48, 70), 4) + 0.1 * (_checker((48, 70), 3) - 0.5), 0, 1)
    out = C.fuse_classical(method, [x.copy() for _ in range(k)])
    np.testing.assert_allclose(out, x, atol=1e-4, rtol=0)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("shape", [(37, 53), (5, 7), (64, 96)])
def test_output_has_the_input_shape_and_stays_in_range(method, shape):
    a, b = _split_pair(shape)
    out = C.fuse_classical(method, [a, b])
    assert out.shape == shape and out.dtype == np.float32
    assert out.min() >= 0.0 and out.max() <= 1.0


@pytest.mark.parametrize("method", ["laplacian", "gff"])
def test_multiscale_methods_keep_the_detail_of_each_source(method):
    a, b = _split_pair()
    fused = C.fuse_classical(method, [a, b]).astype(np.float64) * 255
    average = C.fuse_classical("average", [a, b]).astype(np.float64) * 255
    w = a.shape[1] // 2
    for half in (slice(2, w - 2), slice(w + 2, -2)):  # away from the seam between the halves
        assert M.ag(fused[:, half]) > 1.5 * M.ag(average[:, half])
    a255, b255 = a * 255.0, b * 255.0
    assert M.qabf(fused, a255, b255) > M.qabf(average, a255, b255) + 0.2


def test_three_sources_each_contribute_their_detail():
    shape, third = (48, 96), 32
    sources = []
    for i in range(3):
        img = np.full(shape, 0.5, np.float32)
        img[:, i * third : (i + 1) * third] = _checker((shape[0], third), 2 + i)
        sources.append(img)
    for method in ("laplacian", "gff"):
        fused = C.fuse_classical(method, sources).astype(np.float64) * 255
        average = C.fuse_classical("average", sources).astype(np.float64) * 255
        for i in range(3):
            part = slice(i * third + 3, (i + 1) * third - 3)
            assert M.ag(fused[:, part]) > 2.0 * M.ag(average[:, part]), (method, i)


def test_pyramid_levels_follow_the_image_size():
    assert C.pyramid_levels((512, 640)) == 5
    assert C.pyramid_levels((480, 640)) == 4
    assert C.pyramid_levels((37, 53)) == 1
    assert C.pyramid_levels((5, 7)) == 1


def test_guided_filter_properties():
    guide = _smooth((40, 50), 5).astype(np.float64)
    # a constant input stays constant, whatever the guide
    np.testing.assert_allclose(C.guided_filter(guide, np.full_like(guide, 0.3), 7, 1e-6), 0.3, atol=1e-9)
    # a tiny ε with the guide as input reproduces the guide (edge-preserving limit)
    np.testing.assert_allclose(C.guided_filter(guide, guide, 4, 1e-9), guide, atol=1e-4)
    # a huge ε degenerates to a double box mean: smooth, no longer follows the guide's edges
    step = np.zeros((40, 50))
    step[:, 25:] = 1.0
    smoothed = C.guided_filter(step, step, 4, 1e6)
    assert 0.1 < smoothed[20, 24] < 0.5 < smoothed[20, 25] < 0.9
    kept = C.guided_filter(step, step, 4, 1e-6)
    assert kept[20, 24] < 0.01 and kept[20, 25] > 0.99


def test_invalid_inputs_raise_value_error():
    a = _smooth((10, 12), 6)
    with pytest.raises(ValueError, match="average, gff, laplacian, max"):
        C.fuse_classical("wavelet", [a, a])
    with pytest.raises(ValueError, match="at least two"):
        C.fuse_classical("gff", [a])
    with pytest.raises(ValueError, match="shapes differ"):
        C.fuse_classical("laplacian", [a, a[:-1]])
    with pytest.raises(ValueError, match="gray"):
        C.fuse_classical("average", [np.stack([a] * 3, -1)] * 2)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        C.fuse_classical("gff", [a * 255, a * 255])
    with pytest.raises(ValueError, match="float"):
        C.fuse_classical("max", [(a * 255).astype(np.uint8)] * 2)


def test_gff_beats_averaging_on_a_real_tno_pair(shared_data):
    ir = cv2.imread(str(shared_data / "vif/tno/ir/01.png"), cv2.IMREAD_GRAYSCALE)
    vis = cv2.imread(str(shared_data / "vif/tno/vis/01.png"), cv2.IMREAD_GRAYSCALE)
    assert ir is not None and vis is not None
    sources = [ir.astype(np.float32) / 255, vis.astype(np.float32) / 255]
    a, b = ir.astype(np.float64), vis.astype(np.float64)
    scores = {
        name: M.qabf(np.round(C.fuse_classical(name, sources).astype(np.float64) * 255), a, b)
        for name in ("average", "gff")
    }
    assert scores["gff"] > scores["average"] + 0.15, scores  # measured: 0.64 vs 0.33


def _brute_force_coefficients(guide: np.ndarray, src: np.ndarray, r: int, eps: float) -> tuple[np.ndarray, np.ndarray]:
    """He et al.'s (ā, b̄) by explicit loops over the border-clipped windows, float64: an independent reference."""
    h, w = guide.shape
    a, b = np.zeros((h, w)), np.zeros((h, w))
    win = [[(slice(max(y - r, 0), y + r + 1), slice(max(x - r, 0), x + r + 1)) for x in range(w)] for y in range(h)]
    for y in range(h):
        for x in range(w):
            gi, pi = guide[win[y][x]], src[win[y][x]]
            a[y, x] = ((gi * pi).mean() - gi.mean() * pi.mean()) / (gi.var() + eps)
            b[y, x] = pi.mean() - a[y, x] * gi.mean()
    return (np.array([[a[win[y][x]].mean() for x in range(w)] for y in range(h)]),
            np.array([[b[win[y][x]].mean() for x in range(w)] for y in range(h)]))


@pytest.mark.parametrize("dtype, atol", [(np.float64, 1e-12), (np.float32, 5e-5)])  # float32: ~1e-7·E[I²]/(var+ε)
def test_guided_coefficients_match_the_windowed_definition_in_either_float_type(dtype, atol):
    guide = _smooth((14, 17), 3)  # float32 (H,W)
    src = np.random.default_rng(4).random((14, 17)).astype(np.float32)
    want = _brute_force_coefficients(guide.astype(np.float64), src.astype(np.float64), 2, 1e-3)
    got = C.guided_coefficients(guide, src, 2, 1e-3, dtype)
    for g, w in zip(got, want, strict=True):
        assert g.dtype == dtype and g.shape == (14, 17)
        np.testing.assert_allclose(g, w, atol=atol, rtol=0)
