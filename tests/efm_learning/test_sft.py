"""Stage 1 trainer: uniform batch split, held-out validation, separate best checkpoints,
resuming, streaming, and the NaN guard."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from efm_learning.checkpoint import load_checkpoint, load_trainer_state
from efm_learning.config import ConfigError, DataConfig, ExperimentConfig, from_dict
from efm_learning.data import (
    StreamingSampler,
    list_episode_files,
    split_train_val,
    state_featurizer,
    train_subset,
)
from efm_learning.metrics import read_metrics
from efm_learning.models.modeling_mlp import MLPEFM
from efm_learning.sft import NonFiniteLossError, split_batch, train_sft


def _cfg(data_dir, run_dir, steps=60, **sft) -> ExperimentConfig:
    return from_dict(ExperimentConfig, {
        "run_dir": str(run_dir), "num_threads": 1,
        "data": {"dir": str(data_dir), "val_fraction": 0.1},
        "model": {"type": "mlp", "hidden_size": 64, "num_layers": 2,
                  "action_tokenizer": {"bins": 32}, "steps_to_go": {"num_bins": 141}},
        "sft": {"steps": steps, "batch_size": 64, "lr": 1e-3, "eval_every": 20,
                "checkpoint_every": 20, "log_every": 10, "val_batches": 2, **sft},
    })


def test_batch_split_is_uniform():
    assert split_batch(128, ["bc", "steps_to_go"]) == {"bc": 64, "steps_to_go": 64}
    assert split_batch(128, ["bc", "steps_to_go", "instruction"]) == {
        "bc": 43, "steps_to_go": 43, "instruction": 42}


def test_train_val_split_is_disjoint_and_seeded(pointmass_data):
    paths = list_episode_files(pointmass_data)
    train, val = split_train_val(paths, 0.1, seed=0)
    assert len(val) == 12 and not set(train) & set(val) and len(train) + len(val) == 120
    assert split_train_val(paths, 0.1, seed=0) == (train, val)


def test_train_subsets_are_seeded_fractions_of_the_training_split(pointmass_data):
    train, _ = split_train_val(list_episode_files(pointmass_data), 0.1, seed=0)
    tenth = train_subset(train, 0.1, seed=0)
    assert len(tenth) == 11 and set(tenth) <= set(train)
    assert train_subset(train, 0.1, seed=0) == tenth
    assert train_subset(train, 0.1, seed=1) != tenth
    assert train_subset(train, 1.0, seed=0) == train
    assert len(train_subset(train, 0.001, seed=0)) == 1
    with pytest.raises(ConfigError, match="train_fraction"):
        DataConfig(train_fraction=0.0)


def test_sft_keeps_separate_best_checkpoints_and_learns(pointmass_data, tmp_path):
    result = train_sft(_cfg(pointmass_data, tmp_path), progress=False)
    out = tmp_path / "sft"
    for name in ("best_bc", "best_steps_to_go", "last"):
        assert (out / name / "SHA256SUMS").is_file()
    val = [r for r in read_metrics(out) if "val/bc_loss" in r]
    assert [r["step"] for r in val] == [20, 40, 60]
    assert val[-1]["val/bc_loss"] < val[0]["val/bc_loss"]
    assert val[-1]["val/steps_to_go_loss"] < val[0]["val/steps_to_go_loss"]
    _, bc_meta = load_checkpoint(out / "best_bc")
    _, stg_meta = load_checkpoint(out / "best_steps_to_go")
    assert bc_meta["val"]["val/bc_loss"] == pytest.approx(result.best_val["bc"])
    assert stg_meta["val"]["val/steps_to_go_loss"] == pytest.approx(result.best_val["steps_to_go"])
    config = json.loads((out / "best_bc" / "config.json").read_text())
    tokenizer = config["model"]["action_tokenizer"]
    low, high = tokenizer["low"], tokenizer["high"]
    assert low == -high and 1e-4 < high <= 1e-3  # fitted to the demos' accelerations
    assert (out / "learning_curve.png").stat().st_size > 1000


def test_resume_continues_from_the_last_checkpoint(pointmass_data, tmp_path):
    train_sft(_cfg(pointmass_data, tmp_path, steps=40), progress=False)
    assert load_trainer_state(tmp_path / "sft" / "last").values["step"] == 40
    train_sft(_cfg(pointmass_data, tmp_path, steps=60), progress=False)
    state = load_trainer_state(tmp_path / "sft" / "last")
    assert state.values["step"] == 60
    steps = [r["step"] for r in read_metrics(tmp_path / "sft") if "losses/bc" in r]
    assert steps == [10, 20, 30, 40, 50, 60]  # appended, nothing retrained


def test_validation_budget_ends_training_before_the_cap(pointmass_data, tmp_path):
    # lr so small that no validation loss can improve: the budget (patience 40 steps,
    # evaluations every 20) stops at step 60 of the 400-step cap, and a resume stays stopped
    cfg = _cfg(pointmass_data, tmp_path, steps=400, lr=1e-12, stop_patience_steps=40)
    result = train_sft(cfg, progress=False)
    assert result.steps == 60
    state = load_trainer_state(tmp_path / "sft" / "last")
    assert state.values["step"] == 60 and state.values["budget"]["stopped_at"] == 60
    again = train_sft(cfg, progress=False)
    assert again.steps == 60
    steps = [r["step"] for r in read_metrics(tmp_path / "sft") if "losses/bc" in r]
    assert steps == [10, 20, 30, 40, 50, 60]
    with pytest.raises(ConfigError, match="stop_patience_steps"):
        _cfg(pointmass_data, tmp_path, stop_patience_steps=-1)


def test_nan_loss_stops_training_and_keeps_last_good_checkpoint(
    pointmass_data, tmp_path, monkeypatch
):
    calls = {"n": 0}
    original = MLPEFM.steps_to_go_loss

    def flaky(self, batch):
        loss = original(self, batch)
        if not self.training:  # validation
            return loss
        calls["n"] += 1
        return loss * float("nan") if calls["n"] > 45 else loss

    monkeypatch.setattr(MLPEFM, "steps_to_go_loss", flaky)
    with pytest.raises(NonFiniteLossError, match=r"non-finite Stage 1 loss at step 45.*last"):
        train_sft(_cfg(pointmass_data, tmp_path, steps=100), progress=False)
    model, meta = load_checkpoint(tmp_path / "sft" / "last")
    assert meta["step"] == 40
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_streaming_sampler_cycles_episodes_through_a_small_pool(pointmass_data):
    paths = list_episode_files(pointmass_data)
    sampler = StreamingSampler(paths, state_featurizer, capacity=1500, refresh_fraction=0.5,
                               refresh_every=2, seed=0)
    assert sampler.streaming and sampler.pool.num_transitions < 2 * 1500
    before = sampler.pool.all_observations("observation.state").copy()
    for _ in range(4):
        sampler.step()
    after = sampler.pool.all_observations("observation.state")
    assert before.shape != after.shape or not np.array_equal(before, after)
    batch = sampler.sample("steps_to_go", 32)
    assert batch["observation.state"].shape == (32, 6) and batch["steps_to_go"].min() >= 0
