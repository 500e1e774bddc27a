"""ADM (guided-diffusion UNet) prior: exact checkpoint layout, loading errors, attention ordering, sizes."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from dig2dig_ros.core.diffusion.priors import PriorError, load_prior
from dig2dig_ros.core.diffusion.priors.adm import (
    AdmConfig,
    AdmPrior,
    AdmUNet,
    load_adm,
    qkv_attention,
    timestep_embedding,
)

SMALL = AdmConfig(
    image_size=32,
    num_channels=32,
    num_res_blocks=1,
    channel_mult=(1, 2, 2),
    attention_resolutions="8",  # the lowest resolution (downsampling factor 4)
    num_head_channels=16,
)


def _small_unet(seed: int = 0) -> AdmUNet:
    """The small ADM with every weight random (the published init zeroes the output convs)."""
    torch.manual_seed(seed)
    unet = AdmUNet(SMALL)
    with torch.no_grad():
        for p in unet.parameters():
            p.normal_(0.0, 0.1)
    return unet.eval()


def _inputs(h: int = 32, w: int = 32, b: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randn(b, 3, h, w, generator=g), torch.tensor([999, 17][:b])


def test_full_model_matches_guided_diffusion_checkpoint_layout(shared_fixtures: Path) -> None:
    ref = json.loads((shared_fixtures / "adm256_uncond_state_dict_shapes.json").read_text())
    with torch.device("meta"):
        unet = AdmUNet(AdmConfig())
    shapes = {k: list(v.shape) for k, v in unet.state_dict().items()}
    assert shapes == ref["state_dict_shapes"]
    assert len(shapes) == 566
    assert sum(p.numel() for p in unet.parameters()) == ref["num_parameters"] == 552_814_086


def test_guided_diffusion_flags_build_the_same_model(shared_fixtures: Path) -> None:
    ref = json.loads((shared_fixtures / "adm256_uncond_state_dict_shapes.json").read_text())
    config = AdmConfig.from_dict(ref["config"])  # channel_mult "" -> the 256 default
    assert config == AdmConfig()
    assert config.out_channels == 6 and config.multiple == 32
    assert config.attention_ds == {8, 16, 32}


def test_from_dict_rejects_what_it_cannot_build() -> None:
    with pytest.raises(ValueError, match="class-conditional"):
        AdmConfig.from_dict({"class_cond": True})
    with pytest.raises(ValueError, match="num_chanels"):
        AdmConfig.from_dict({"num_chanels": 128})
    assert AdmConfig.from_dict({"channel_mult": "1,2"}).channel_mult == (1, 2)


def test_timestep_embedding_is_cos_then_sin() -> None:
    emb = timestep_embedding(torch.tensor([0, 5]), 8)  # (2,8)
    assert torch.equal(emb[0], torch.tensor([1.0] * 4 + [0.0] * 4))
    freqs = torch.exp(-math.log(10000.0) * torch.arange(4) / 4)
    torch.testing.assert_close(emb[1], torch.cat([torch.cos(5 * freqs), torch.sin(5 * freqs)]))


def _naive_attention(qkv: torch.Tensor, heads: int, legacy: bool) -> torch.Tensor:
    """softmax(QKᵀ/√d)V written out from guided-diffusion's two channel layouts."""
    b, width, t = qkv.shape
    ch = width // (3 * heads)
    if legacy:  # (B·heads, 3·ch, T): per head [q, k, v]
        q, k, v = qkv.reshape(b * heads, 3 * ch, t).split(ch, dim=1)
    else:  # [q all heads | k | v]
        q, k, v = (z.reshape(b * heads, ch, t) for z in qkv.chunk(3, dim=1))
    w = torch.softmax(torch.einsum("bct,bcs->bts", q, k) / math.sqrt(ch), dim=-1)  # (B·heads,T,T)
    return torch.einsum("bts,bcs->bct", w, v).reshape(b, heads * ch, t)


@pytest.mark.parametrize("legacy", [True, False])
def test_sdpa_attention_equals_naive_softmax_attention(legacy: bool) -> None:
    qkv = torch.randn(2, 3 * 4 * 8, 20, generator=torch.Generator().manual_seed(3))  # 4 heads of 8 channels
    torch.testing.assert_close(qkv_attention(qkv, 4, legacy), _naive_attention(qkv, 4, legacy))


def test_attention_block_of_the_released_model_uses_the_legacy_order() -> None:
    block = _small_unet().middle_block[1]  # (ResBlock, AttentionBlock, ResBlock)
    x = torch.randn(2, 64, 4, 6, generator=torch.Generator().manual_seed(5))  # (B,C,H,W)
    flat = x.reshape(2, 64, 24)
    want = flat + block.proj_out(_naive_attention(block.qkv(block.norm(flat)), 4, legacy=True))
    with torch.no_grad():
        torch.testing.assert_close(block(x), want.reshape(2, 64, 4, 6))


def test_legacy_and_new_attention_orders_differ() -> None:
    qkv = torch.randn(1, 3 * 2 * 8, 10, generator=torch.Generator().manual_seed(4))
    assert not torch.allclose(qkv_attention(qkv, 2, True), qkv_attention(qkv, 2, False), atol=1e-3)


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_checkpoint_round_trip_gives_identical_outputs(tmp_path: Path, suffix: str) -> None:
    unet = _small_unet()
    path = tmp_path / f"adm{suffix}"
    if suffix == ".pt":
        torch.save(unet.state_dict(), path)
    else:
        save_file(unet.state_dict(), str(path))
    prior = load_adm(path, SMALL)
    x, t = _inputs()
    with torch.no_grad():
        want = unet(x, t)  # (2,6,32,32)
        got = prior(x, t)
    assert got.shape == (2, 3, 32, 32)
    assert want.abs().mean() > 1e-3  # the random weights really reach the output
    assert torch.equal(got, want[:, :3])
    assert not prior.training and prior.channels == 3 and prior.multiple == 4


def test_forward_at_non_square_multiple() -> None:
    prior = AdmPrior(_small_unet())
    x, t = _inputs(32, 64)
    with torch.no_grad():
        eps = prior(x, t)
    assert eps.shape == (2, 3, 32, 64) and eps.dtype == x.dtype
    assert torch.isfinite(eps).all()
    assert not torch.allclose(eps[0], eps[1])  # different inputs and timesteps


def test_size_that_is_not_a_multiple_is_a_clear_value_error() -> None:
    prior = AdmPrior(_small_unet())
    x, t = _inputs(30, 64)
    with pytest.raises(ValueError, match="multiples of 4.*30x64"):
        prior(x, t)


def test_compute_dtype_is_validated_and_cpu_stays_float32() -> None:
    prior = AdmPrior(_small_unet())
    x, t = _inputs()
    with torch.no_grad():
        ref = prior(x, t)
        prior.compute_dtype = torch.float16  # applies on CUDA only
        assert torch.equal(prior(x, t), ref)
    with pytest.raises(ValueError, match="compute dtype"):
        prior.compute_dtype = torch.float64


def test_missing_checkpoint_names_the_path(tmp_path: Path) -> None:
    path = tmp_path / "nope" / "256x256_diffusion_uncond.pt"
    with pytest.raises(PriorError, match="not found.*256x256_diffusion_uncond.pt"):
        load_adm(path, SMALL)


def test_truncated_checkpoint_is_reported_as_unreadable(tmp_path: Path) -> None:
    path = tmp_path / "adm.pt"
    torch.save(_small_unet().state_dict(), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(PriorError, match=f"{path}.*could not be read"):
        load_adm(path, SMALL)


def test_pickled_objects_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "adm.pt"
    torch.save({"model": _small_unet()}, path)  # a whole module: needs pickle, which we never enable
    with pytest.raises(PriorError, match="could not be read"):
        load_adm(path, SMALL)


def test_renamed_key_is_reported_as_missing_and_unexpected(tmp_path: Path) -> None:
    state = _small_unet().state_dict()
    state["middle_block.1.qkv_renamed.weight"] = state.pop("middle_block.1.qkv.weight")
    path = tmp_path / "adm.pt"
    torch.save(state, path)
    with pytest.raises(PriorError) as err:
        load_adm(path, SMALL)
    msg = str(err.value)
    assert "1 missing: middle_block.1.qkv.weight" in msg
    assert "1 unexpected: middle_block.1.qkv_renamed.weight" in msg
    assert str(path) in msg


def test_changed_shape_names_the_key_and_both_shapes(tmp_path: Path) -> None:
    state = _small_unet().state_dict()
    state["out.2.weight"] = torch.zeros(3, 32, 3, 3)  # learn_sigma=False layout against a 6-channel model
    path = tmp_path / "adm.pt"
    torch.save(state, path)
    want = r"shape mismatch: out\.2\.weight \(3, 32, 3, 3\) != \(6, 32, 3, 3\)"
    with pytest.raises(PriorError, match=want):
        load_adm(path, SMALL)


def test_checkpoint_of_another_architecture_lists_at_most_five_keys(tmp_path: Path) -> None:
    other = AdmUNet(replace(SMALL, num_res_blocks=2))
    path = tmp_path / "adm.pt"
    torch.save(other.state_dict(), path)
    with pytest.raises(PriorError) as err:
        load_adm(path, SMALL)
    msg = str(err.value)
    assert "unexpected:" in msg and "more)" in msg
    assert msg.count("input_blocks.") <= 15  # 5 per list at most


def test_registry_requires_a_path_and_reports_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(PriorError, match="needs a checkpoint path"):
        load_prior("adm")
    with pytest.raises(PriorError, match="not found.*missing.pt"):
        load_prior(f"adm:{tmp_path / 'missing.pt'}")
