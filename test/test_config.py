"""config/fusion.yaml mirrors the core's defaults, so the two homes of a value cannot drift apart."""

from pathlib import Path

import pytest
import yaml

from dig2dig_ros.core.config import FusionConfig, flatten, with_overrides
from dig2dig_ros.ros.params import NODE_PARAMS, all_params

YAML = Path(__file__).resolve().parents[1] / "config" / "fusion.yaml"


def _flat(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def test_yaml_sets_every_fusion_node_parameter_to_its_declared_default():
    values = _flat(yaml.safe_load(YAML.read_text())["/**/dig2dig_fusion"]["ros__parameters"])
    declared = {spec.name: spec.default for spec in all_params()}
    assert set(values) == set(declared)
    for name, default in declared.items():
        assert values[name] == default, name


def test_node_parameters_take_the_core_defaults():
    core = flatten(FusionConfig())
    for spec in all_params():
        if spec.name in core:
            assert spec.default == core[spec.name], spec.name
    assert {spec.name for spec in NODE_PARAMS}.isdisjoint(core)


@pytest.mark.parametrize("name,value", [("video.dig_every", 0), ("video.temporal_strength", 1.5),
                                        ("video.temporal_strength", -0.1), ("video.temporal_sigma", 0.0)])
def test_bad_video_settings_are_refused_by_name(name, value):
    with pytest.raises(ValueError, match=name.replace(".", r"\.")):
        with_overrides(FusionConfig(), {name: value}).validate()


@pytest.mark.parametrize("value", [0, 1000])  # t = 0 is the clean source (ᾱ ≈ 1): nothing left to measure
def test_a_dig_blend_probe_timestep_outside_the_schedule_is_refused(value):
    with pytest.raises(ValueError, match=r"dig\.blend_probe_t must be in \[1, 999\]"):
        with_overrides(FusionConfig(), {"dig.blend_probe_t": value}).validate()
    ranges = {spec.name: (spec.low, spec.high) for spec in all_params()}
    assert ranges["dig.blend_probe_t"] == (1, 999)  # the node refuses the same values
