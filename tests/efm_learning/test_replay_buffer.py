"""Adder + replay buffer: refusals before entry, frozen-model rewards, returns, and
minibatches without replacement."""

from __future__ import annotations

import numpy as np
import pytest

from efm_learning.actor import PracticeEpisode
from efm_learning.replay_buffer import Adder, EpisodeError, ReplayBuffer
from efm_learning.returns import discounted_returns
from efm_learning.testing import DistanceStepsToGo


def _episode(t: int, start: float = 0.0, obs_rows: int | None = None) -> PracticeEpisode:
    rows = t + 1 if obs_rows is None else obs_rows
    state = np.zeros((rows, 6), dtype=np.float32)
    state[:, 0] = start + np.linspace(1.0, 0.0, rows)  # moving towards the goal at 0
    return PracticeEpisode(
        observations={"observation.state": state, "instruction": ["go"] * rows},
        action_tokens=np.zeros((t, 2), dtype=np.int64),
        actions=np.zeros((t, 2), dtype=np.float32),
        instruction="go", end_reason="step_limit", policy_version=0, seed=0,
        gt_success=np.zeros(rows, dtype=bool),
    )


def test_rewards_come_from_the_frozen_model_and_returns_are_discounted():
    model = DistanceStepsToGo(speed=0.1)
    buffer = ReplayBuffer()
    stats = Adder(buffer, model, gamma=0.9).add(_episode(5))
    d = np.linspace(1.0, 0.0, 6) / 0.1
    np.testing.assert_allclose(stats.steps_to_go, d)
    np.testing.assert_allclose(stats.rewards, d[:-1] - d[1:])
    np.testing.assert_allclose(stats.returns, discounted_returns(d[:-1] - d[1:], 0.9))
    assert buffer.num_samples == 5 and model.calls == 1


@pytest.mark.parametrize(
    ("episode", "message"),
    [
        (_episode(5, obs_rows=5), "needs 6 observations"),
        (_episode(0), "no actions"),
    ],
)
def test_malformed_episodes_are_refused_before_entering(episode, message):
    buffer = ReplayBuffer()
    adder = Adder(buffer, DistanceStepsToGo(), gamma=0.9)
    with pytest.raises(EpisodeError, match=message):
        adder.add(episode)
    assert buffer.num_samples == 0 and adder.refused == 1


def test_other_mismatches_are_refused():
    adder = Adder(ReplayBuffer(), DistanceStepsToGo(), gamma=0.9)
    bad_actions = _episode(4)
    bad_actions.actions = bad_actions.actions[:3]
    bad_tokens = _episode(4)
    bad_tokens.action_tokens[0, 0] = 99
    nan_obs = _episode(4)
    nan_obs.observations["observation.state"][2, 1] = np.nan
    bad_gt = _episode(4)
    bad_gt.gt_success = bad_gt.gt_success[:2]
    for episode in (bad_actions, bad_tokens, nan_obs, bad_gt):
        with pytest.raises(EpisodeError):
            adder.add(episode)
    assert adder.buffer.num_samples == 0 and adder.refused == 4


def test_minibatches_without_replacement_then_clear():
    buffer = ReplayBuffer()
    adder = Adder(buffer, DistanceStepsToGo(), gamma=0.9)
    for i in range(7):
        adder.add(_episode(10, start=10.0 * i))  # every state row is distinct
    batches = list(buffer.minibatches(4, 16, np.random.default_rng(0)))
    assert len(batches) == 4 and all(len(b["returns"]) == 16 for b in batches)
    rows = np.concatenate([b["observation.state"][:, 0] for b in batches])
    assert len(np.unique(rows)) == 64
    first = next(iter(buffer.minibatches(1, 16, np.random.default_rng(1))))
    assert not np.array_equal(first["observation.state"], batches[0]["observation.state"])
    with pytest.raises(ValueError, match="needs 80"):
        next(buffer.minibatches(5, 16, np.random.default_rng(0)))
    buffer.clear()
    assert buffer.num_samples == 0


def test_in_range_rewards_use_the_in_range_steps_to_go(tmp_path):
    """Adder(in_range=True) labels with d over every bin but the last
    (improve.reward_steps_to_go: in_range); the default is the full expectation."""
    import torch

    from efm_learning.models import make_model

    torch.manual_seed(0)
    model = make_model({
        "type": "mlp", "state_dim": 6, "hidden_size": 16, "num_layers": 2,
        "action_tokenizer": {"type": "uniform", "action_dim": 2, "bins": 8, "low": -1.0,
                             "high": 1.0},
        "steps_to_go": {"max_steps": 20, "num_bins": 5},
    })
    episode = _episode(4)
    obs = episode.observations
    full = Adder(ReplayBuffer(), model, gamma=0.9).add(episode).steps_to_go
    inside = Adder(ReplayBuffer(), model, gamma=0.9, in_range=True).add(episode).steps_to_go
    np.testing.assert_allclose(full, model.predict_steps_to_go(obs))
    np.testing.assert_allclose(inside, model.predict_steps_to_go(obs, in_range=True))
    assert np.all(inside < full)  # the last bin holds the largest value
