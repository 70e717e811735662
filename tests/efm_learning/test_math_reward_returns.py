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
