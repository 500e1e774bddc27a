"""Fusion metrics: hand-checkable values, symmetries, and Qabf/Nabf against per-pixel MATLAB transcriptions."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest

from dig2dig_ros.core import metrics as M


def _texture(seed: int, shape: tuple[int, int] = (48, 52)) -> np.ndarray:
    """Integer-valued random texture on the 255 scale."""
    return np.random.default_rng(seed).integers(0, 256, shape).astype(np.float64)  # (H,W)


# --- hand-computed values --------------------------------------------------------------------------------
def test_mse_and_psnr_match_hand_computation():
    f = np.full((4, 5), 10.0)
    a = np.zeros((4, 5))
    b = np.full((4, 5), 30.0)  # errors 10 and 20 → MSE_A = 100, MSE_B = 400
    assert M.mse(f, a, b) == pytest.approx(250.0)
    expected = 10 * math.log10(255**2 / 100) + 10 * math.log10(255**2 / 400)  # 28.13 + 22.11
    assert M.psnr(f, a, b) == pytest.approx(expected, rel=1e-12)
    assert M.psnr(f, a, b) == pytest.approx(28.1308 + 22.1102, abs=1e-4)


def test_identical_images():
    x = _texture(0)
    assert M.mse(x, x, x) == 0.0
    assert M.psnr(x, x, x) == math.inf
    assert M.ssim(x, x, x) == pytest.approx(2.0, abs=1e-12)
    assert M.cc(x, x, x) == pytest.approx(1.0, abs=1e-12)
    assert M.nabf(x, x, x) == 0.0  # no pixel of F has an edge stronger than both sources


def test_constant_image_has_no_spread_detail_or_information():
    c = np.full((20, 30), 117.0)
    assert M.sd(c) == 0.0
    assert M.sf(c) == 0.0
    assert M.ag(c) == 0.0
    assert M.ei(c) == 0.0
    assert M.en(c) == 0.0


def test_entropy_of_two_equally_frequent_values_is_one_bit():
    x = np.zeros((10, 10))
    x[:, :5] = 200.0
    assert M.en(x) == pytest.approx(1.0, abs=1e-12)
    x4 = np.tile(np.array([0.0, 50.0, 100.0, 150.0]), (8, 2))  # four levels, equally frequent
    assert M.en(x4) == pytest.approx(2.0, abs=1e-12)


def test_sd_sf_ag_ei_on_hand_checkable_images():
    stripes = np.tile(np.array([0.0, 10.0]), (6, 5))  # (6,10): horizontal neighbours differ by 10
    assert M.sd(stripes) == pytest.approx(5.0)
    assert M.sf(stripes) == pytest.approx(10.0)  # √(mean(dx²) + mean(dy²)) = √(100 + 0)
    ramp = np.tile(2.0 * np.arange(10.0), (7, 1))  # (7,10): Gx = 2 everywhere (one-sided at the ends too)
    assert M.ag(ramp) == pytest.approx(math.sqrt(2.0))  # √((4 + 0)/2)
    # Sobel x response to a slope of 2 is 4·2·2 = 16 inside; 0 in the two mirrored border columns
    assert M.ei(ramp) == pytest.approx(16.0 * 8 / 10)


def test_cc_is_nan_for_a_constant_image_and_minus_one_for_a_negative():
    x = _texture(1)
    assert math.isnan(M.cc(np.full_like(x, 3.0), x, x))
    assert M.cc(255.0 - x, x, x) == pytest.approx(-1.0)


# --- information ------------------------------------------------------------------------------------------
def test_mi_of_an_image_with_itself_is_its_entropy():
    x = np.clip(np.round(np.random.default_rng(2).normal(120, 30, (40, 50))), 0, 255)
    assert M.mi(x, x, x) == pytest.approx(2.0 * M.en(x), abs=1e-9)
    assert M.mi(x, x, _texture(3, x.shape)) < 2.0 * M.en(x)


def test_mi_of_a_fusion_exceeds_that_of_an_unrelated_image():
    rng = np.random.default_rng(4)
    a, b, other = (16.0 * rng.integers(0, 16, (128, 128)) for _ in range(3))  # 16 levels: small histogram bias
    unrelated = M.mi(other, a, b)
    assert unrelated < 0.05
    assert M.mi(np.round((a + b) / 2), a, b) > 1.0
    assert M.mi(a, a, b) == pytest.approx(M.en(a) + M.mi(a, b, b) / 2)  # F = A: all of A, and A's MI with B


# --- symmetry ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("metric", [M.mse, M.psnr, M.ssim, M.cc, M.mi, M.qabf, M.nabf])
def test_swapping_the_sources_leaves_the_metric_unchanged(metric):
    a, b = _texture(7), np.round(_texture(8) * 0.5 + 60)
    f = np.round(0.6 * a + 0.4 * b)
    assert metric(f, a, b) == pytest.approx(metric(f, b, a), rel=1e-12)


# --- Qabf / Nabf ------------------------------------------------------------------------------------------
def test_qabf_of_identical_images_is_close_to_one():
    x = _texture(9)
    assert M.qabf(x, x, x) > 0.96  # Γg·Γα·(sigmoid factors at G = A = 1) ≈ 0.975


def test_qabf_rewards_keeping_the_edges_of_both_sources():
    rng = np.random.default_rng(10)
    a = np.round(rng.uniform(0, 255, (64, 64)))
    b = np.round(rng.uniform(0, 255, (64, 64)))
    a[:, 16:] = 128.0  # A has texture in the left quarter only
    b[:, :16] = 128.0  # B, its own texture, in the rest
    stitched = np.where(np.arange(64) < 16, a, b)  # ideal fusion: every edge of both sources, full contrast
    average = np.round((a + b) / 2)  # every edge, at half contrast
    assert M.qabf(stitched, a, b) > 0.9
    assert M.qabf(a, a, b) < M.qabf(average, a, b) < M.qabf(stitched, a, b)
    assert M.qabf(b, a, b) > M.qabf(a, a, b)  # B holds more of the edge information


def test_nabf_grows_with_artifacts():
    a, b = _texture(11), np.round(_texture(12) * 0.3)
    f = np.round((a + b) / 2)
    noisy = np.clip(f + np.random.default_rng(13).normal(0, 25, f.shape), 0, 255)
    assert 0.0 <= M.nabf(f, a, b) < M.nabf(noisy, a, b)


def _conv2_same(x: np.ndarray, h: np.ndarray) -> np.ndarray:
    """MATLAB conv2(x, h, 'same') for a 3x3 h, written as loops."""
    hf, xp, out = h[::-1, ::-1], np.pad(x, 1), np.zeros_like(x)
    for i in range(x.shape[0]):
        for j in range(x.shape[1]):
            out[i, j] = np.sum(xp[i : i + 3, j : j + 3] * hf)
    return out


def _qabf_matlab(pa: np.ndarray, pb: np.ndarray, pf: np.ndarray) -> float:
    """Per-pixel transcription of the public analysis_Qabf.m (Xydeas–Petrović)."""
    h1 = np.array([[1, 2, 1], [0, 0, 0], [-1, -2, -1]], float)
    h3 = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], float)

    def edges(p):
        x, y = _conv2_same(p, h3), _conv2_same(p, h1)
        ang = np.vectorize(lambda xv, yv: math.pi / 2 if xv == 0 else math.atan(yv / xv))(x, y)
        return np.sqrt(x**2 + y**2), ang

    (ga, aa), (gb, ab), (gf, af) = edges(pa), edges(pb), edges(pf)

    def q(gx, ax):
        out = np.zeros_like(gx)
        for i, j in np.ndindex(gx.shape):
            if gx[i, j] > gf[i, j]:
                g = gf[i, j] / gx[i, j]
            elif gx[i, j] == gf[i, j]:
                g = gf[i, j]
            else:
                g = gx[i, j] / gf[i, j]
            al = 1 - abs(ax[i, j] - af[i, j]) / (math.pi / 2)
            out[i, j] = 0.9994 / (1 + math.exp(-15 * (g - 0.5))) * 0.9879 / (1 + math.exp(-22 * (al - 0.8)))
        return out

    return float(np.sum(q(ga, aa) * ga + q(gb, ab) * gb) / np.sum(ga + gb))


def _nabf_matlab(f: np.ndarray, i1: np.ndarray, i2: np.ndarray) -> float:
    """Per-pixel transcription of Kumar's objective_fusion_perform_fn.m, its NABF output."""
    vt = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]]) / 8
    ht = np.array([[-1, -2, -1], [0, 0, 0], [1, 2, 1]]) / 8

    def sobel_fn(x):
        p, q = x.shape
        e = np.zeros((p + 2, q + 2))
        e[1 : p + 1, 1 : q + 1] = x
        e[0, :], e[p + 1, :] = e[2, :], e[p - 1, :]  # per_extn_im_fn, wsize 3
        e[:, 0], e[:, q + 1] = e[:, 2], e[:, q - 1]
        gv, gh = np.zeros_like(x), np.zeros_like(x)
        for i, j in np.ndindex(x.shape):
            gv[i, j], gh[i, j] = np.sum(e[i : i + 3, j : j + 3] * vt), np.sum(e[i : i + 3, j : j + 3] * ht)
        return gv, gh

    def angle(v, h):
        if v == 0 and h == 0:
            return 0.0
        return math.atan(v / h) if h != 0 else math.copysign(math.pi / 2, v)

    def strength_angle(x):
        gv, gh = sobel_fn(x)
        return np.sqrt(gv**2 + gh**2), np.vectorize(angle)(gv, gh)

    (ga, aa), (gb, ab), (gf, af) = strength_angle(i1), strength_angle(i2), strength_angle(f)

    def q(gx, ax):
        rel = np.zeros_like(gx)
        for i, j in np.ndindex(gx.shape):
            if gx[i, j] != 0 and gf[i, j] != 0:
                rel[i, j] = gf[i, j] / gx[i, j] if gx[i, j] > gf[i, j] else gx[i, j] / gf[i, j]
        rel_a = np.abs(np.abs(ax - af) - math.pi / 2) * 2 / math.pi
        return np.sqrt(0.9999 / (1 + np.exp(-19 * (rel - 0.5))) * 0.9995 / (1 + np.exp(-22 * (rel_a - 0.5))))

    wa = np.where(ga >= 2, ga**1.5, 0.001)
    wb = np.where(gb >= 2, gb**1.5, 0.001)
    na = (gf > ga) & (gf > gb)
    return float(np.sum(na * ((1 - q(ga, aa)) * wa + (1 - q(gb, ab)) * wb)) / np.sum(wa + wb))


@pytest.mark.parametrize("seed", [0, 1])
def test_qabf_and_nabf_match_the_matlab_references(seed):
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 256, (17, 19)).astype(float)
    b = np.round(rng.uniform(0, 255, (17, 19)) * 0.5)
    a[4:8, :] = 90.0  # flat patches give zero gradients (the special cases of both codes)
    b[:, :6] = 40.0
    f = np.clip(np.round(0.5 * a + 0.5 * b + rng.normal(0, 20, a.shape)), 0, 255)
    f[11:14] = 60.0
    assert M.qabf(f, a, b) == pytest.approx(_qabf_matlab(a, b, f), abs=1e-12)
    assert M.nabf(f, a, b) == pytest.approx(_nabf_matlab(f, a, b), abs=1e-12)
    assert M.nabf(f, a, b) > 1e-3  # the case exercises the artifact term


# --- input handling and the bundle ------------------------------------------------------------------------
def test_to_gray255_scales_each_dtype_and_reduces_bgr_with_luma():
    assert M.to_gray255(np.array([[0, 255]], np.uint8)).tolist() == [[0.0, 255.0]]
    assert M.to_gray255(np.array([[65535]], np.uint16))[0, 0] == pytest.approx(255.0)
    assert M.to_gray255(np.array([[0.5]], np.float32))[0, 0] == pytest.approx(127.5)
    assert M.to_gray255(np.array([[100.0]]), float_max=255.0)[0, 0] == pytest.approx(100.0)
    bgr = np.zeros((1, 3, 3), np.uint8)
    bgr[0, 0, 0], bgr[0, 1, 1], bgr[0, 2, 2] = 255, 255, 255  # pure blue, green, red
    assert M.to_gray255(bgr)[0].tolist() == pytest.approx([0.114 * 255, 0.587 * 255, 0.299 * 255])
    assert M.to_gray255(np.full((2, 2, 4), 200, np.uint8))[0, 0] == pytest.approx(200.0)  # alpha ignored
    assert M.to_gray255(np.full((2, 2, 1), 9, np.uint8)).shape == (2, 2)
    with pytest.raises(ValueError):
        M.to_gray255(np.zeros((2, 2), np.int32))
    with pytest.raises(ValueError):
        M.to_gray255(np.zeros((2, 2, 2), np.uint8))


def test_metrics_reject_mismatched_or_colour_inputs():
    x = _texture(14)
    with pytest.raises(ValueError, match="shapes differ"):
        M.ssim(x, x, x[:-1])
    with pytest.raises(ValueError, match="gray"):
        M.en(np.zeros((4, 4, 3)))


def test_compute_all_returns_every_metric_fast():
    rng = np.random.default_rng(15)
    a = np.round(rng.uniform(0, 255, (512, 640)))
    b = np.round(rng.uniform(0, 255, (512, 640)))
    f = np.round((a + b) / 2)
    start = time.perf_counter()
    out = M.compute_all(f, a, b)
    elapsed = time.perf_counter() - start
    assert list(out) == ["MSE", "PSNR", "SSIM", "CC", "Qabf", "Nabf", "SD", "SF", "AG", "EI", "EN", "MI"]
    assert all(math.isfinite(v) for v in out.values())
    assert out["MSE"] == pytest.approx(M.mse(f, a, b)) and out["Qabf"] == pytest.approx(M.qabf(f, a, b))
    assert elapsed < 6.0  # ≈0.15 s on one free core; generous for a shared 2-core machine


def test_lpips_is_not_computed_without_local_weights():
    x = _texture(16)
    assert M.lpips_metric(x, x, x) is None
