"""The in-process actor: episodes end on the learned detector, the step limit or an
abort; the simulator's ground truth is recorded but never ends a practice episode."""

from __future__ import annotations

import numpy as np
import pytest

from efm_learning.actor import EnvActor, VariableSource
from efm_learning.testing import DistanceStepsToGo, tiny_mlp


def _actor(detector, max_steps=20, num_envs=4, **kw):
    return EnvActor("pointmass", tiny_mlp(), detector, success_threshold=5.0,
                    max_episode_steps=max_steps, num_envs=num_envs, seed=0, **kw)


def test_ground_truth_never_ends_a_practice_episode():
    # d never drops below s: every episode runs to the step limit, even if the point
    # passes through the goal (ground-truth success is only recorded)
    actor = _actor(DistanceStepsToGo(offset=1e6), max_steps=15)
    episodes = actor.run(num_episodes=6)
    assert len(episodes) == 6
    assert {e.end_reason for e in episodes} == {"step_limit"}
    for e in episodes:
        assert e.length == 15 and len(e.gt_success) == 16 and len(e.steps_to_go) == 16
        assert e.observations["observation.state"].shape == (16, 6)


def test_learned_detector_ends_episodes():
    # d = distance / 0.1: fires within 0.5 of the goal (s = 5 steps)
    actor = _actor(DistanceStepsToGo(speed=0.1), max_steps=140)
    episodes = actor.run(num_episodes=8)
    detected = [e for e in episodes if e.end_reason == "success_detector"]
    assert detected, "the detector should end some episodes"
    for e in detected:
        assert e.steps_to_go[-1] <= 5.0 and np.all(e.steps_to_go[:-1] > 5.0)
    for e in episodes:
        assert e.end_reason in ("success_detector", "step_limit")


def test_detector_held_on_k_observations_ends_episodes_k_minus_1_steps_later():
    """success_consecutive = 3: an episode ends on the third observation in a row with
    d <= s, never on the first, and never while d jumped back above s in between."""
    from efm_learning.success_detector import held_for

    actor = _actor(DistanceStepsToGo(speed=0.1), max_steps=140, success_consecutive=3)
    episodes = actor.run(num_episodes=8)
    detected = [e for e in episodes if e.end_reason == "success_detector"]
    assert detected, "the detector should end some episodes"
    for e in detected:
        fired = e.steps_to_go <= 5.0
        assert fired[-3:].all() and held_for(fired, 3).sum() == 1 and held_for(fired, 3)[-1]
    with pytest.raises(ValueError, match="success_consecutive"):
        _actor(DistanceStepsToGo(speed=0.1), success_consecutive=0)
    assert held_for([True, False, True, True, True], 2).tolist() == [
        False, False, False, True, True]


def test_collect_stops_near_the_sample_target_with_whole_episodes():
    actor = _actor(DistanceStepsToGo(offset=1e6), max_steps=10, num_envs=3)
    episodes = actor.collect(95)
    total = sum(e.length for e in episodes)
    assert 95 <= total <= 95 + 3 * 10
    assert all(e.length == 10 for e in episodes)


def test_abort_and_weight_updates():
    actor = _actor(DistanceStepsToGo(offset=1e6), max_steps=30, num_envs=2)
    actor.request_abort(0)
    episodes = actor.run(num_episodes=2)
    reasons = sorted(e.end_reason for e in episodes)
    assert reasons == ["abort", "step_limit"]
    assert [e.length for e in episodes if e.end_reason == "abort"] == [1]
    learner = tiny_mlp(seed=5)
    source = VariableSource(learner)
    source.publish(learner)
    assert actor.update(source) == 1
    for a, b in zip(actor.policy.parameters(), learner.parameters(), strict=True):
        assert np.array_equal(a.detach().numpy(), b.detach().numpy())


def test_detector_actor_requires_a_steps_to_go_model():
    with pytest.raises(ValueError, match="frozen steps-to-go model"):
        EnvActor("pointmass", tiny_mlp(), None, 1.0, 10)
