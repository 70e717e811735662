"""small_efm: pretrained encoders, two heads + instruction auxiliary, frozen-encoder
feature caching, Stage 1 on image episodes, and checkpoints without the text encoder."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from efm_learning.checkpoint import load_checkpoint, save_checkpoint
from efm_learning.config import ExperimentConfig, from_dict
from efm_learning.models import make_model
from efm_learning.models.modeling_small_efm import FEATURES
from efm_learning.sft import train_sft
from efm_learning.testing import random_image_observations
from efm_sim.dataset import Episode, episode_path, write_episode

CONFIG = {"type": "small_efm", "state_dim": 2, "d_model": 64, "num_heads": 4, "num_layers": 1,
          "steps_to_go": {"max_steps": 30, "num_bins": 31},
          "action_tokenizer": {"type": "language_table", "max_delta": 0.03}}
INSTRUCTIONS = ["push the red block left", "push the blue block up"]


def _obs(n: int, seed: int = 0) -> dict:
    return random_image_observations(n, INSTRUCTIONS, seed=seed)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return make_model(CONFIG).eval()


def test_heads_and_frozen_image_encoder(model):
    batch = model.prepare_observations(_obs(3))
    assert batch[FEATURES].shape == (3, 4, 1280)
    assert model.action_logits(batch).shape == (3, 4, 11)
    d = model.expected_steps_to_go(batch)
    assert d.shape == (3,) and torch.all((d >= 0) & (d <= 30))
    encoder = {id(p) for p in model.image_encoder.parameters()}
    assert not any(id(p) in encoder for p in model.stage2_parameters())
    assert all(not p.requires_grad for p in model.image_encoder.parameters())
    tokens, actions = model.act(_obs(2))
    assert tokens.shape == (2, 4) and np.all(np.abs(actions) <= 0.03)


def test_instruction_embedding_changes_the_policy(model):
    obs = _obs(1)
    a = model.action_logits(model.prepare_observations(obs))
    b = model.action_logits(model.prepare_observations({**obs, "instruction": ["dance"]}))
    assert not torch.allclose(a, b)


def test_previous_frame_features_are_reused(model, monkeypatch):
    calls = []
    original = model.encode_images
    monkeypatch.setattr(model, "encode_images", lambda x: calls.append(len(x)) or original(x))
    obs = _obs(1, seed=7)
    model.act(obs)
    step2 = {**obs, "observation.previous_image": obs["observation.image"],
             "observation.image": _obs(1, seed=8)["observation.image"]}
    model.act(step2)
    assert calls == [1, 1, 1]  # frame t, frame t-1, then only the new frame


def test_checkpoint_round_trip_without_text_encoder(model, tmp_path):
    save_checkpoint(tmp_path / "ck", model)
    loaded, _ = load_checkpoint(tmp_path / "ck")
    keys = loaded.state_dict().keys()
    assert any(k.startswith("image_encoder.") for k in keys)
    assert not any("embeddings.word_embeddings" in k for k in keys)  # MiniLM not stored
    batch_a, batch_b = model.prepare_observations(_obs(2)), loaded.prepare_observations(_obs(2))
    torch.testing.assert_close(
        model.steps_to_go_logits(batch_a), loaded.steps_to_go_logits(batch_b)
    )


def test_stage1_on_image_episodes_with_instruction_auxiliary(tmp_path):
    rng = np.random.default_rng(0)
    for i in range(8):
        t = int(rng.integers(8, 14))
        write_episode(episode_path(tmp_path / "data", i), Episode(
            env_name="pushtable", seed=i, instruction=INSTRUCTIONS[i % 2], task_family="push",
            success=True, states=rng.normal(size=(t + 1, 2)),
            actions=rng.uniform(-0.03, 0.03, (t, 2)),
            images=rng.integers(0, 255, (t + 1, 64, 64, 3), dtype=np.uint8)))
    cfg = from_dict(ExperimentConfig, {
        "env": "pushtable", "run_dir": str(tmp_path / "run"), "num_threads": 1,
        "data": {"dir": str(tmp_path / "data"), "val_fraction": 0.25},
        "model": CONFIG,
        "sft": {"steps": 6, "batch_size": 12, "objectives": ["bc", "steps_to_go", "instruction"],
                "eval_every": 3, "checkpoint_every": 3, "log_every": 3, "val_batches": 1},
    })
    result = train_sft(cfg, progress=False)
    assert np.isfinite(result.best_val["bc"]) and np.isfinite(result.best_val["steps_to_go"])
    policy, _ = load_checkpoint(tmp_path / "run" / "sft" / "best_bc")
    assert policy.config.instruction_vocab == sorted(INSTRUCTIONS)
    assert policy.instruction_logits(policy.prepare_observations(_obs(2))).shape == (2, 2)
