"""diffusers UNet2DModel prior: local loading, the scheduler's own ᾱ, ε conversion, clear errors."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

from dig2dig_ros.core.diffusion.priors import PriorError, load_prior
from dig2dig_ros.core.diffusion.priors.diffusers_prior import DIFFUSERS_PIN, DiffusersPrior
from dig2dig_ros.core.diffusion.schedule import linear_alphas_cumprod

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def diffusers() -> ModuleType:
    return pytest.importorskip("diffusers", reason=f"optional extra: pip install diffusers=={DIFFUSERS_PIN}")


def _tiny_unet(diffusers: ModuleType, channels: int, out_channels: int | None = None) -> torch.nn.Module:
    torch.manual_seed(0)
    return diffusers.UNet2DModel(
        sample_size=32,
        in_channels=channels,
        out_channels=out_channels or channels,
        block_out_channels=(16, 32),
        layers_per_block=1,
        norm_num_groups=8,
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
    ).eval()


def _inputs(channels: int, h: int = 32, w: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randn(2, channels, h, w, generator=g), torch.tensor([900, 3])


def test_saved_model_loads_with_the_schedulers_alphas_and_unets_output(
    diffusers: ModuleType, tmp_path: Path
) -> None:
    unet = _tiny_unet(diffusers, 1)
    scheduler = diffusers.DDPMScheduler(beta_schedule="squaredcos_cap_v2")
    unet.save_pretrained(tmp_path)
    scheduler.save_pretrained(tmp_path)  # scheduler_config.json next to config.json

    prior = load_prior(f"diffusers:{tmp_path}")
    assert isinstance(prior, DiffusersPrior)
    assert prior.channels == 1 and prior.multiple == 2 and not prior.training
    assert prior.alphas_cumprod.dtype == torch.float64
    assert torch.equal(prior.alphas_cumprod, scheduler.alphas_cumprod.double())
    assert not torch.allclose(prior.alphas_cumprod, linear_alphas_cumprod(), atol=1e-3)  # really not linear

    x, t = _inputs(1, 32, 64)
    with torch.no_grad():
        eps = prior(x, t)
        want = unet(x, t).sample
    assert eps.shape == (2, 1, 32, 64)
    assert torch.equal(eps, want)


def test_pipeline_layout_and_other_training_length(diffusers: ModuleType, tmp_path: Path) -> None:
    unet = _tiny_unet(diffusers, 3, out_channels=6)  # learned variance: ε is the first 3 channels
    scheduler = diffusers.DDIMScheduler(num_train_timesteps=500, beta_schedule="scaled_linear")
    unet.save_pretrained(tmp_path / "unet")
    scheduler.save_pretrained(tmp_path / "scheduler")

    prior = load_prior(f"diffusers:{tmp_path}")
    assert prior.channels == 3
    assert len(prior.alphas_cumprod) == 500  # the sampler takes T from len(alphas_cumprod)
    assert torch.equal(prior.alphas_cumprod, scheduler.alphas_cumprod.double())
    x, t = _inputs(3)
    t = torch.tensor([499, 0])
    with torch.no_grad():
        assert torch.equal(prior(x, t), unet(x, t).sample[:, :3])


def _prior_predicting(diffusers: ModuleType, prediction: torch.Tensor, prediction_type: str) -> DiffusersPrior:
    """A prior whose UNet returns ``prediction`` (B,C,H,W) whatever its input."""
    scheduler = diffusers.DDPMScheduler(beta_schedule="squaredcos_cap_v2")
    prior = DiffusersPrior(_tiny_unet(diffusers, 1), scheduler.alphas_cumprod, prediction_type)
    prior.unet.forward = lambda x, t, return_dict=False: (prediction,)
    return prior


def test_v_prediction_matches_the_formula_and_recovers_the_noise(diffusers: ModuleType) -> None:
    g = torch.Generator().manual_seed(2)
    x0, noise = torch.randn(2, 1, 8, 8, generator=g), torch.randn(2, 1, 8, 8, generator=g)
    t = torch.tensor([700, 40])
    scheduler = diffusers.DDPMScheduler(beta_schedule="squaredcos_cap_v2")
    x_t = scheduler.add_noise(x0, noise, t)
    v = scheduler.get_velocity(x0, noise, t)  # diffusers' own v target
    prior = _prior_predicting(diffusers, v, "v_prediction")
    eps = prior(x_t, t)
    ac = prior.alphas_cumprod[t].float()[:, None, None, None]  # (B,1,1,1)
    torch.testing.assert_close(eps, ac.sqrt() * v + (1 - ac).sqrt() * x_t)
    torch.testing.assert_close(eps, noise, atol=1e-5, rtol=1e-5)


def test_sample_prediction_recovers_the_noise(diffusers: ModuleType) -> None:
    g = torch.Generator().manual_seed(3)
    x0, noise = torch.randn(2, 1, 8, 8, generator=g), torch.randn(2, 1, 8, 8, generator=g)
    t = torch.tensor([999, 500])
    scheduler = diffusers.DDPMScheduler(beta_schedule="squaredcos_cap_v2")
    prior = _prior_predicting(diffusers, x0, "sample")
    torch.testing.assert_close(prior(scheduler.add_noise(x0, noise, t), t), noise, atol=1e-4, rtol=1e-4)


def test_size_that_is_not_a_multiple_is_a_value_error(diffusers: ModuleType) -> None:
    prior = DiffusersPrior(_tiny_unet(diffusers, 1), linear_alphas_cumprod())
    with pytest.raises(ValueError, match="multiples of 2"):
        prior(*_inputs(1, 31, 32))


def test_missing_folder_and_missing_scheduler_are_prior_errors(diffusers: ModuleType, tmp_path: Path) -> None:
    with pytest.raises(PriorError, match="not found.*nowhere"):
        load_prior(f"diffusers:{tmp_path / 'nowhere'}")
    _tiny_unet(diffusers, 1).save_pretrained(tmp_path)
    with pytest.raises(PriorError, match="no scheduler config"):
        load_prior(f"diffusers:{tmp_path}")
    with pytest.raises(PriorError, match="needs a model folder"):
        load_prior("diffusers")


def test_folder_without_weights_is_a_prior_error(diffusers: ModuleType, tmp_path: Path) -> None:
    diffusers.DDPMScheduler().save_pretrained(tmp_path)
    with pytest.raises(PriorError, match="could not be loaded"):
        load_prior(f"diffusers:{tmp_path}")


def test_without_diffusers_the_error_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setitem(sys.modules, "diffusers", None)  # makes `import diffusers` raise ImportError
    with pytest.raises(PriorError, match=re.escape(f"pip install diffusers=={DIFFUSERS_PIN}")):
        load_prior(f"diffusers:{tmp_path}")


def test_install_hint_matches_the_pinned_requirement() -> None:
    reqs = (REPO / "requirements-dev.txt").read_text()
    assert f"diffusers=={DIFFUSERS_PIN}" in reqs.split()
