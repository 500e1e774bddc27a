"""The bundled prior: sizes, the Wiener starting point, the shipped weights and their safe loading."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from dig2dig_ros.core.diffusion.priors import PriorError, load_prior
from dig2dig_ros.core.diffusion.priors.bundled import (
    BUNDLED_WEIGHTS,
    BundledConfig,
    BundledPrior,
    check_input,
    fingerprint,
    load_bundled,
)
from dig2dig_ros.core.diffusion.priors.wiener import WienerPrior

REPO = Path(__file__).resolve().parents[1]
SMALL = BundledConfig(widths=(16, 24, 32), blocks=(1, 1, 1), heads=2, emb_dim=32)


def _trained_like(cfg: BundledConfig) -> BundledPrior:
    """A prior whose zero-initialised layers are perturbed, so its output differs from Wiener."""
    prior = BundledPrior(cfg)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in prior.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen))
    return prior.eval()


@pytest.mark.parametrize("size", [(48, 80), (16, 16), (112, 208)])
def test_runs_at_odd_multiples_of_its_stride(size: tuple[int, int]) -> None:
    prior = _trained_like(SMALL)
    assert prior.multiple == 16
    x = torch.randn(2, 1, *size)  # (B,1,H,W)
    with torch.inference_mode():
        eps = prior(x, torch.tensor([10, 900]))
    assert eps.shape == x.shape and eps.dtype == x.dtype and torch.isfinite(eps).all()


@pytest.mark.parametrize("size", [(50, 80), (48, 72), (8, 8)])
def test_rejects_sizes_that_are_not_multiples(size: tuple[int, int]) -> None:
    prior = BundledPrior(SMALL)
    with pytest.raises(ValueError, match="multiples of 16"):
        prior(torch.randn(1, 1, *size), torch.tensor([100]))


def test_untrained_network_is_exactly_its_wiener_estimate() -> None:
    wiener_params = {"alpha": 2.6, "std": 0.45, "mean": -0.3, "f0": 0.01}
    prior = BundledPrior(BundledConfig(widths=(16, 24, 32), emb_dim=32, heads=2, wiener=wiener_params)).eval()
    x = torch.randn(3, 1, 32, 48, dtype=torch.float64)
    t = torch.tensor([0, 400, 999])
    with torch.inference_mode():
        torch.testing.assert_close(prior.double()(x, t), WienerPrior(**wiener_params)(x, t))


def test_epsilon_and_x0_estimate_agree() -> None:
    prior = _trained_like(SMALL).double()
    x = torch.randn(2, 1, 32, 32, dtype=torch.float64)
    t = torch.tensor([250, 700])
    ab = prior.alphas_cumprod[t].view(-1, 1, 1, 1)
    with torch.inference_mode():
        x0 = (x - (1 - ab).sqrt() * prior(x, t)) / ab.sqrt()
        torch.testing.assert_close(x0, prior.x0_estimate(x, t))


def test_float32_forward_matches_the_float64_reference() -> None:
    # The Wiener part runs in float32 on float32 frames; the float64 prior is the reference it must stay near.
    prior = _trained_like(SMALL)
    reference = copy.deepcopy(prior).double()
    x = torch.randn(4, 1, 48, 64, generator=torch.Generator().manual_seed(3))  # (B,1,H,W)
    t = torch.tensor([0, 20, 500, 999])
    with torch.inference_mode():
        eps, eps64 = prior(x, t), reference(x.double(), t)
        x0, x064 = prior.x0_estimate(x, t), reference.x0_estimate(x.double(), t)
    assert eps.dtype == torch.float32
    torch.testing.assert_close(x0.double(), x064, rtol=0, atol=1e-5)
    torch.testing.assert_close(eps.double(), eps64, rtol=0, atol=1e-3)  # ÷ √(1−ᾱ) = 100 at t = 0
    assert (eps.double() - eps64)[1:].abs().max() < 1e-4


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_saved_weights_reload_and_reproduce_the_stored_fingerprint(tmp_path: Path, dtype: torch.dtype) -> None:
    from dig2dig_ros.commands.train_prior import save_weights

    prior = _trained_like(SMALL)
    out = tmp_path / "p.safetensors"
    save_weights(prior, SMALL, out, {"note": "test"}, dtype=dtype)
    assert next(iter(load_file(str(out)).values())).dtype == dtype
    loaded = load_prior(f"bundled:{out}")
    stored = json.loads(out.with_suffix(".json").read_text())["meta"]["check"]
    got = fingerprint(loaded)
    assert got["eps_values"] == pytest.approx(stored["eps_values"], rel=1e-6, abs=1e-7)
    assert got["eps_mean_abs"] == pytest.approx(stored["eps_mean_abs"], rel=1e-6)
    untrained = fingerprint(BundledPrior(SMALL))["eps_values"]
    assert max(abs(a - b) for a, b in zip(stored["eps_values"], untrained, strict=True)) > 1e-3


@pytest.fixture(scope="module")
def shipped() -> BundledPrior:
    if not BUNDLED_WEIGHTS.is_file():
        pytest.fail(f"the bundled prior weights are not shipped at {BUNDLED_WEIGHTS}")
    return load_prior("bundled")


def test_shipped_weights_are_the_default_prior_and_small(shipped: BundledPrior) -> None:
    assert isinstance(shipped, BundledPrior) and shipped.channels == 1 and shipped.multiple == 16
    assert not shipped.training
    assert BUNDLED_WEIGHTS.stat().st_size <= 20 * 1024 * 1024


def test_shipped_weights_reproduce_their_stored_epsilon(shipped: BundledPrior) -> None:
    stored = json.loads(BUNDLED_WEIGHTS.with_suffix(".json").read_text())["meta"]["check"]
    got = fingerprint(shipped)
    assert got["t"] == stored["t"]
    assert got["eps_values"] == pytest.approx(stored["eps_values"], rel=1e-4, abs=1e-5)
    assert got["eps_mean_abs"] == pytest.approx(stored["eps_mean_abs"], rel=1e-5)
    # and they are trained: the network's output is not the plain Wiener estimate
    with torch.inference_mode():
        wiener_x0 = shipped.wiener.x0_estimate(check_input(), torch.tensor([500]))
        gap = (shipped.x0_estimate(check_input(), torch.tensor([500])) - wiener_x0).abs().mean()
    assert gap > 1e-3


def _copy_shipped(tmp_path: Path) -> Path:
    out = tmp_path / "copy.safetensors"
    shutil.copy(BUNDLED_WEIGHTS, out)
    shutil.copy(BUNDLED_WEIGHTS.with_suffix(".json"), out.with_suffix(".json"))
    return out


def test_missing_weights_are_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(PriorError, match="missing"):
        load_prior(f"bundled:{tmp_path / 'absent.safetensors'}")


def test_damaged_weights_are_a_clear_error(tmp_path: Path, shipped: BundledPrior) -> None:
    out = _copy_shipped(tmp_path)
    data = bytearray(out.read_bytes())
    data[len(data) // 2] ^= 0xFF
    out.write_bytes(bytes(data))
    with pytest.raises(PriorError, match="damaged"):
        load_bundled(out)


def test_truncated_weights_without_checksum_are_a_clear_error(tmp_path: Path, shipped: BundledPrior) -> None:
    out = _copy_shipped(tmp_path)
    out.write_bytes(out.read_bytes()[:1000])
    cfg = json.loads(out.with_suffix(".json").read_text())
    cfg["weights_sha256"] = ""
    out.with_suffix(".json").write_text(json.dumps(cfg))
    with pytest.raises(PriorError, match="damaged"):
        load_bundled(out)


def test_config_that_does_not_match_the_weights_is_a_clear_error(tmp_path: Path, shipped: BundledPrior) -> None:
    out = _copy_shipped(tmp_path)
    cfg = json.loads(out.with_suffix(".json").read_text())
    cfg["widths"] = [32, 48, 64]
    out.with_suffix(".json").write_text(json.dumps(cfg))
    with pytest.raises(PriorError, match="do not match"):
        load_bundled(out)


def test_beats_the_default_wiener_prior_on_held_back_images(shared_data: Path, tmp_path: Path) -> None:
    from dig2dig_ros.commands.prior_eval import run_prior_eval

    # a quick subset (the first three held-back pairs, at 320 px); docs/PRIOR.md has the full table
    lines = (REPO / "data_splits" / "prior_validation.txt").read_text().splitlines()
    subset = tmp_path / "subset.txt"
    subset.write_text("\n".join([s for s in lines if s and not s.startswith("#")][:6]))
    kwargs = {"ts": (300, 700), "list_file": subset, "max_side": 320}
    ours = run_prior_eval(shared_data, "bundled", **kwargs)
    wiener = run_prior_eval(shared_data, "wiener", **kwargs)
    assert ours["images"] == wiener["images"] == 6
    assert ours["psnr"][300] >= wiener["psnr"][300] + 1.5
    assert ours["psnr"][700] >= wiener["psnr"][700]


def test_prior_eval_psnr_falls_with_noise_and_is_paired(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    import cv2
    import numpy as np

    from dig2dig_ros.commands.prior_eval import centre_crop, main, psnr_255, run_prior_eval

    assert psnr_255(torch.zeros(4), torch.full((4,), 2 / 255)) == pytest.approx(20 * np.log10(255))
    assert centre_crop(np.zeros((70, 100)), 32).shape == (64, 96)
    yy, xx = np.mgrid[0:70, 0:100]
    cv2.imwrite(str(tmp_path / "a.png"), (128 + 80 * np.sin(xx / 6.0) * np.cos(yy / 9.0)).astype(np.uint8))
    cv2.imwrite(str(tmp_path / "b.png"), (60 + 2 * xx).astype(np.uint8))
    first = run_prior_eval(tmp_path, "wiener", ts=(50, 400, 900), device="cpu")
    again = run_prior_eval(tmp_path, "wiener", ts=(50, 400, 900), device="cpu")
    assert first["images"] == 2 and first["psnr"] == again["psnr"]  # the noise is fixed per (image, t)
    assert first["psnr"][50] > first["psnr"][400] > first["psnr"][900]
    assert main(["--images", str(tmp_path), "--prior", "wiener", "--t", "100,300", "--device", "cpu"]) == 0
    assert "| 300 |" in capsys.readouterr().out
    assert main(["--images", str(tmp_path), "--prior", "wiener", "--t", "1000"]) == 2
