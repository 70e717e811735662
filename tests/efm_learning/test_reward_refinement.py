"""Labelled policy rollouts and the reward-model refinement (paper Section 6, a departure;
efm_learning.rollout_labels, efm_learning.reward_refinement)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from efm_learning.actor import PracticeEpisode
from efm_learning.checkpoint import load_checkpoint
from efm_learning.models import make_model, model_config_from_dict
from efm_learning.models.base import STEPS_TO_GO_BIN, STEPS_TO_GO_PAST_BIN
from efm_learning.reward_refinement import RefineConfig, refine_reward_model
from efm_learning.rollout_labels import LabelledRollouts, rollout_steps_to_go
from efm_sim import keys


def test_labels_count_to_the_next_success_and_censor_the_rest() -> None:
    labels, censored = rollout_steps_to_go(np.array([0, 0, 1, 0, 1, 0, 0], dtype=bool))
    np.testing.assert_array_equal(labels, [2, 1, 0, 1, 0, 1, 0])
    np.testing.assert_array_equal(censored, [0, 0, 0, 0, 0, 1, 1])
    labels, censored = rollout_steps_to_go(np.zeros(4, dtype=bool))  # a failed rollout
    np.testing.assert_array_equal(labels, [3, 2, 1, 0])
    assert censored.all()
    with pytest.raises(ValueError, match="bool"):
        rollout_steps_to_go(np.array([0.0, 1.0]))


def _model(seed: int = 0):
    torch.manual_seed(seed)
    cfg = model_config_from_dict({"type": "mlp", "state_dim": 2, "hidden_size": 32,
                                  "num_layers": 2,
                                  "action_tokenizer": {"bins": 8, "action_dim": 2,
                                                       "low": -1.0, "high": 1.0},
                                  "steps_to_go": {"max_steps": 100, "num_bins": 50}})
    return make_model(cfg)


def test_censored_rows_are_scored_by_the_mass_past_their_bin() -> None:
    model = _model()
    batch = model.prepare_observations({keys.OBS_STATE: np.random.default_rng(0).standard_normal(
        (6, 2)).astype(np.float32), keys.INSTRUCTION: ["go"] * 6})
    bins = torch.tensor([0, 3, 10, 0, 3, 49])
    logits = model.steps_to_go_logits(batch)
    log_p = torch.log_softmax(logits, -1)
    plain = model.steps_to_go_loss({**batch, STEPS_TO_GO_BIN: bins})
    assert torch.allclose(plain, torch.nn.functional.cross_entropy(logits, bins))
    flags = torch.tensor([False, False, False, True, True, True])
    mixed = model.steps_to_go_loss({**batch, STEPS_TO_GO_BIN: bins, STEPS_TO_GO_PAST_BIN: flags})
    expected = [-log_p[i, b] for i, b in enumerate(bins[:3].tolist())]
    expected.append(-torch.logsumexp(log_p[3, 1:], 0))   # past bin 0
    expected.append(-torch.logsumexp(log_p[4, 4:], 0))   # past bin 3
    expected.append(-log_p[5, 49])                        # the last bin counts as past
    assert torch.allclose(mixed, torch.stack(expected).mean(), atol=1e-6)


def _episode(state: tuple[float, float], success: list[bool], seed: int) -> PracticeEpisode:
    n = len(success)
    states = np.tile(np.asarray(state, np.float32), (n, 1))
    return PracticeEpisode(observations={keys.OBS_STATE: states},
                           action_tokens=np.zeros((n - 1, 2), np.int64),
                           actions=np.zeros((n - 1, 2), np.float32),
                           instruction="go", end_reason="step_limit", policy_version=0,
                           seed=seed, gt_success=np.asarray(success))


def test_refinement_learns_that_a_near_miss_is_not_done(tmp_path) -> None:
    """Demonstrations call the scene at (1, 1) done (label 0); the policy's rollouts sit
    there and never succeed (censored). Refined, d there leaves the success range; had the
    censored rows been read as exact labels (0 steps to go), d would stay near 1."""
    near_miss = np.array([[1.0, 1.0]], np.float32)
    rollouts = LabelledRollouts.from_episodes(
        [_episode((1.0, 1.0), [False] * 4, seed=i) for i in range(8)]
        + [_episode((-1.0, 0.5), [False] * 10 + [True], seed=100)])
    assert rollouts.censored.sum() == 32 and rollouts.summary()["success_observations"] == 1
    path = rollouts.save(tmp_path / "r.npz")
    again = LabelledRollouts.load(path)
    np.testing.assert_array_equal(again.labels, rollouts.labels)
    np.testing.assert_array_equal(again.censored, rollouts.censored)

    def demos(n: int, rng: np.random.Generator) -> dict:
        return {keys.OBS_STATE: np.repeat(near_miss, n, 0), keys.INSTRUCTION: ["go"] * n,
                keys.STEPS_TO_GO: np.zeros(n, np.int64)}

    def d_at(model, state) -> float:
        return float(model.predict_steps_to_go({keys.OBS_STATE: np.asarray([state], np.float32),
                                                keys.INSTRUCTION: ["go"]})[0])

    cfg = RefineConfig(steps=300, batch_size=32, lr=3e-3, rollout_share=0.75, log_every=100)
    model = _model()
    log = refine_reward_model(model, demos, rollouts, cfg, tmp_path / "refined",
                              held_out=rollouts, log=lambda _: None)
    assert d_at(model, (1.0, 1.0)) > 3.0
    assert abs(d_at(model, (-1.0, 0.5)) - 5.0) < 4.0  # exact labels 10..0 at that scene
    assert [r["step"] for r in log["history"]] == [0, 100, 200, 300]
    assert {"rollouts/exact_loss", "rollouts/censored_loss"} <= set(log["history"][-1])
    loaded, meta = load_checkpoint(tmp_path / "refined")  # safetensors + sha256 verified
    assert meta["stage"] == "reward_refinement"
    assert math.isclose(d_at(loaded, (1.0, 1.0)), d_at(model, (1.0, 1.0)), rel_tol=1e-5)

    # the same data with the censored flags dropped: exact "0 steps" labels keep d low
    exact = LabelledRollouts(rollouts.observations, list(rollouts.instructions),
                             rollouts.labels, np.zeros(len(rollouts), bool))
    control = _model()
    refine_reward_model(control, demos, exact, cfg, tmp_path / "control", log=lambda _: None)
    assert d_at(control, (1.0, 1.0)) < 2.0


def test_bad_rollouts_are_refused() -> None:
    with pytest.raises(ValueError, match="success"):
        LabelledRollouts.from_episodes([_episode((0, 0), [False] * 3, 0)], [np.zeros(2, bool)])
    with pytest.raises(ValueError, match="rollout_share"):
        RefineConfig(rollout_share=1.0)
