"""Steps-to-go tokenization and d(o, g) (paper Eq. 1, Appendix E)."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from efm_learning.steps_to_go import (
    StepsToGoTokenizer,
    aloha_steps_to_go,
    expected_steps_from_logits,
    language_table_steps_to_go,
    steps_to_go_labels,
)


def test_paper_configurations():
    lt = language_table_steps_to_go()
    assert lt.num_bins == 50 and lt.max_steps == 100
    aloha = aloha_steps_to_go()
    assert aloha.num_bins == 301
    np.testing.assert_array_equal(aloha.bin_values, np.arange(301))  # one token per step


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 400), st.data())
def test_every_count_lands_in_a_bin_whose_value_is_close(max_steps, data):
    num_bins = data.draw(st.integers(2, max_steps + 1))
    tok = StepsToGoTokenizer(max_steps=max_steps, num_bins=num_bins)
    steps = np.arange(max_steps + 1)
    bins = tok.encode(steps)
    assert bins.min() == 0 and bins.max() == num_bins - 1
    assert np.all(np.diff(bins) >= 0)  # monotone
    assert np.all(np.diff(tok.bin_values) > 0)
    assert np.all(np.abs(tok.decode(bins) - steps) <= tok.bin_width)


def test_counts_beyond_the_range_train_the_last_bin():
    # The public notebook passed raw counts as labels, so counts >= 50 trained nothing.
    tok = StepsToGoTokenizer(max_steps=140, num_bins=50)
    assert tok.encode([140, 141, 10_000]).tolist() == [49, 49, 49]


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 100))
def test_expected_steps_of_a_one_hot_is_the_bin_value(step):
    tok = language_table_steps_to_go()
    probs = np.zeros(tok.num_bins)
    probs[tok.encode(step)] = 1.0
    assert tok.expected_steps(probs) == pytest.approx(tok.decode(tok.encode(step)))
    assert abs(tok.expected_steps(probs) - step) <= tok.bin_width


def test_expected_steps_is_a_batched_mean():
    tok = StepsToGoTokenizer(max_steps=3, num_bins=4)
    probs = np.array([[0.5, 0.0, 0.0, 0.5], [0.0, 1.0, 0.0, 0.0]])
    np.testing.assert_allclose(tok.expected_steps(probs), [1.5, 1.0])
    logits = np.log(probs + 1e-30)
    np.testing.assert_allclose(expected_steps_from_logits(logits, tok.bin_values), [1.5, 1.0])


def test_labels_count_down_to_the_goal():
    assert steps_to_go_labels(3).tolist() == [3, 2, 1, 0]
    assert steps_to_go_labels(0).tolist() == [0]


@pytest.mark.parametrize(
    "probs, match",
    [
        (np.full(49, 1 / 49), "dimension 50"),
        (np.full(50, 0.1), "sum to 1"),
        (np.r_[np.nan, np.full(49, 1 / 49)], "NaN/inf"),
        (np.r_[-0.5, 1.5, np.zeros(48)], "non-negative"),
    ],
)
def test_bad_distributions_are_refused(probs, match):
    with pytest.raises(ValueError, match=match):
        language_table_steps_to_go().expected_steps(probs)


def test_bad_labels_and_configs_are_refused():
    tok = language_table_steps_to_go()
    with pytest.raises(ValueError, match=">= 0"):
        tok.encode([-1])
    with pytest.raises(ValueError, match="NaN/inf"):
        tok.encode([np.inf])
    with pytest.raises(ValueError, match="num_bins"):
        StepsToGoTokenizer(max_steps=10, num_bins=12)
    with pytest.raises(ValueError, match="bins must be"):
        tok.decode([50])


def test_in_range_expectation_ignores_the_last_bin_and_agrees_in_numpy_and_torch():
    """``expected_steps(in_range=True)``: the reward's d given that the goal is in range
    (docs/PUSHTABLE.md); the full expectation (Eq. 1) counts the last bin."""
    import torch

    from efm_learning.steps_to_go import expected_steps

    tok = language_table_steps_to_go()
    values = np.asarray(tok.bin_values)
    probs = np.zeros((2, tok.num_bins))
    probs[0, 0], probs[0, -1] = 0.5, 0.5  # half "done", half "far / not this goal"
    probs[1, 3] = 1.0
    full = expected_steps(probs, values)
    inside = expected_steps(probs, values, in_range=True)
    np.testing.assert_allclose(full, [0.5 * values[0] + 0.5 * values[-1], values[3]])
    np.testing.assert_allclose(inside, [values[0], values[3]])
    as_torch = expected_steps(torch.tensor(probs), torch.tensor(values), in_range=True)
    np.testing.assert_allclose(as_torch.numpy(), inside)
