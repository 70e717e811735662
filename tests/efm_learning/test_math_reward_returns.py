"""Reward (Eq. 2), Monte-Carlo returns and the REINFORCE constant (Algorithm 1, App. C),
and the success detector (Eq. 3)."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from efm_learning.returns import (
    PAPER_GAMMA,
    PAPER_REINFORCE_C,
    discounted_returns,
    reinforce_constant,
)
from efm_learning.reward import rewards_from_steps_to_go
from efm_learning.success_detector import SuccessDetector, precision_recall

steps = hnp.arrays(np.float64, st.integers(1, 60), elements=st.floats(0, 300, allow_nan=False))


def test_reward_is_progress_in_expected_steps():
    np.testing.assert_allclose(rewards_from_steps_to_go([10.0, 7.0, 8.0, 0.0]), [3.0, -1.0, 8.0])


def test_success_bonus_goes_to_the_last_reward_of_a_detected_success_only():
    """Section 4.1.3: a small constant when the success condition is met (here the
    learned detector's), on the action that met it; nothing for other episodes."""
    d = [10.0, 7.0, 8.0, 0.0]
    np.testing.assert_allclose(rewards_from_steps_to_go(d, 2.5, succeeded=True), [3, -1, 10.5])
    np.testing.assert_allclose(rewards_from_steps_to_go(d, 2.5, succeeded=False), [3, -1, 8])
    assert rewards_from_steps_to_go([4.0], 2.5, succeeded=True).size == 0
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="success_bonus"):
            rewards_from_steps_to_go(d, bad, succeeded=True)


def test_the_learner_checks_returns_with_its_own_success_bonus():
    """An actor's returns must include the bonus the learner was configured with: a
    mismatch (either way) is refused before anything enters the buffer."""
    from efm_learning.replay_buffer import EpisodeError, LabelledAdder, ReplayBuffer

    d = np.array([10.0, 7.0, 8.0, 0.0])
    tokens = np.zeros((3, 2), dtype=np.int64)
    obs = {"observation.state": np.zeros((3, 1), np.float32)}
    with_bonus = discounted_returns(rewards_from_steps_to_go(d, 2.0, True), 0.9)
    plain = discounted_returns(rewards_from_steps_to_go(d), 0.9)
    buffer = ReplayBuffer()
    adder = LabelledAdder(buffer, num_tokens=2, vocab=4, gamma=0.9, success_bonus=2.0)
    stats = adder.add(obs, tokens, d, with_bonus, 0.9, success=True)
    assert stats.rewards[-1] == pytest.approx(10.0) and len(buffer) == 3
    adder.add(obs, tokens, d, plain, 0.9, success=False)  # no success, no bonus
    with pytest.raises(EpisodeError, match=r"success bonus is 2\.0"):
        adder.add(obs, tokens, d, plain, 0.9, success=True)
    plain_learner = LabelledAdder(ReplayBuffer(), num_tokens=2, vocab=4, gamma=0.9)
    with pytest.raises(EpisodeError, match="do not match"):
        plain_learner.add(obs, tokens, d, with_bonus, 0.9, success=True)
    assert len(buffer) == 6 and adder.refused == 1 and plain_learner.refused == 1


@settings(max_examples=200, deadline=None)
@given(steps)
def test_undiscounted_return_telescopes_to_first_minus_last_d(d):
    rewards = rewards_from_steps_to_go(d)
    assert rewards.shape == (d.shape[0] - 1,)
    returns = discounted_returns(rewards, gamma=1.0)
    if rewards.size:
        assert returns[0] == pytest.approx(d[0] - d[-1], abs=1e-9)


@settings(max_examples=200, deadline=None)
@given(hnp.arrays(np.float64, st.integers(0, 50), elements=st.floats(-5, 5)), st.floats(0, 1))
def test_returns_satisfy_the_bellman_recursion(rewards, gamma):
    returns = discounted_returns(rewards, gamma)
    assert returns.shape == rewards.shape
    if rewards.size:
        assert returns[-1] == pytest.approx(rewards[-1])
        np.testing.assert_allclose(returns[:-1], rewards[:-1] + gamma * returns[1:], atol=1e-9)


def test_one_step_and_empty_episodes():
    assert rewards_from_steps_to_go([5.0]).size == 0  # one observation, no action
    assert discounted_returns([], PAPER_GAMMA).size == 0
    np.testing.assert_allclose(discounted_returns([2.0], PAPER_GAMMA), [2.0])


def test_returns_with_paper_gamma():
    np.testing.assert_allclose(discounted_returns([1.0, 1.0, 1.0]), [2.71, 1.9, 1.0])


def test_reinforce_constant_matches_appendix_c():
    assert reinforce_constant() == pytest.approx(PAPER_REINFORCE_C)
    assert reinforce_constant(gamma=0.9, progress_per_step=1.0) == pytest.approx(0.1)
    with pytest.raises(ValueError):
        reinforce_constant(progress_per_step=0.0)


def test_success_detector_thresholds_d():
    detector = SuccessDetector(threshold=2.0)
    np.testing.assert_array_equal(detector([0.0, 2.0, 2.01, 50.0]), [True, True, False, False])
    with pytest.raises(ValueError, match="NaN/inf"):
        detector([np.nan])
    with pytest.raises(ValueError):
        SuccessDetector(threshold=-1.0)


def test_precision_recall_against_ground_truth():
    p, r = precision_recall([1, 1, 0, 0], [1, 0, 1, 0])
    assert (p, r) == (0.5, 0.5)
    p, r = precision_recall([0, 0], [0, 0])
    assert np.isnan(p) and np.isnan(r)


@pytest.mark.parametrize(
    "call",
    [
        lambda: rewards_from_steps_to_go([1.0, np.nan]),
        lambda: rewards_from_steps_to_go([[1.0, 2.0]]),
        lambda: rewards_from_steps_to_go([]),
        lambda: discounted_returns([1.0, np.inf]),
        lambda: discounted_returns([1.0], gamma=1.5),
    ],
)
def test_bad_input_raises_value_error(call):
    with pytest.raises(ValueError):
        call()
