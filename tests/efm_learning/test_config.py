"""Config loading: every bad key or value is named, with what is allowed."""

from __future__ import annotations

from pathlib import Path

import pytest

from efm_learning.config import ConfigError, ExperimentConfig, from_dict, load_config
from efm_learning.models import model_config_from_dict

REPO = Path(__file__).resolve().parents[2]


def test_shipped_pointmass_config_loads():
    cfg = load_config(REPO / "config" / "pointmass.yaml")
    assert cfg.env == "pointmass"
    assert cfg.improve.updates_per_round == 16 and cfg.improve.batch_size == 64
    assert cfg.improve.gamma == 0.9 and cfg.improve.reinforce_c == 0.05
    model = model_config_from_dict(cfg.model)
    assert model.type == "mlp" and model.hidden_size == 256 and model.num_layers == 3


def test_unknown_key_is_named_with_allowed_keys():
    with pytest.raises(ConfigError, match=r"sft\.lrr.*allowed keys:.*\blr\b"):
        from_dict(ExperimentConfig, {"sft": {"lrr": 1e-3}})


def test_bad_enum_value_lists_allowed_values():
    with pytest.raises(ConfigError, match=r"improve\.selection_metric.*'detector', 'ground_truth'"):
        from_dict(ExperimentConfig, {"improve": {"selection_metric": "vibes"}})
    with pytest.raises(ConfigError, match=r"env: got 'mars'.*'pointmass'"):
        from_dict(ExperimentConfig, {"env": "mars"})


def test_bad_model_type_lists_backends():
    with pytest.raises(ConfigError, match=r"model\.type.*mlp.*small_efm.*vlm"):
        model_config_from_dict({"type": "resnet"})
    with pytest.raises(ConfigError, match=r"model\.hiden_size.*allowed keys"):
        model_config_from_dict({"type": "mlp", "hiden_size": 3})


def test_wrong_types_and_ranges_are_refused():
    with pytest.raises(ConfigError, match=r"sft\.steps: expected an integer"):
        from_dict(ExperimentConfig, {"sft": {"steps": "many"}})
    with pytest.raises(ConfigError, match=r"improve\.gamma"):
        from_dict(ExperimentConfig, {"improve": {"gamma": 1.5}})
    with pytest.raises(ConfigError, match=r"sft\.objectives\[1\].*allowed values"):
        from_dict(ExperimentConfig, {"sft": {"objectives": ["bc", "value"]}})


def test_overrides_and_yaml_numbers(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("sft:\n  lr: 3e-4\n")  # YAML reads 3e-4 as a string; accepted as a number
    cfg = load_config(path, ["sft.steps=7", "improve.num_envs=3"])
    assert cfg.sft.lr == pytest.approx(3e-4)
    assert cfg.sft.steps == 7 and cfg.improve.num_envs == 3
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")


def test_vlm_without_a_model_is_a_clear_config_error():
    with pytest.raises(ConfigError, match=r"model\.model_dir"):
        model_config_from_dict({"type": "vlm"})
