"""Action tokenizers (paper Appendix E): round trips, ranges, bad input."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from efm_learning.tokenizers import (
    LanguageTableActionTokenizer,
    UniformActionTokenizer,
    aloha_action_tokenizer,
    aloha_joint_tokenizer,
)

finite = st.floats(-1.0, 1.0, allow_nan=False, allow_infinity=False)


def test_language_table_layout_is_sign_magnitude_sign_magnitude():
    tok = LanguageTableActionTokenizer(max_delta=0.1)
    assert tok.vocab_sizes == (2, 11, 2, 11)
    assert tok.tokens_per_action == 4
    np.testing.assert_array_equal(tok.encode([0.1, -0.03]), [0, 10, 1, 3])
    np.testing.assert_allclose(tok.decode([1, 5, 0, 0]), [-0.05, 0.0])


@settings(max_examples=200, deadline=None)
@given(hnp.arrays(np.float64, (7, 2), elements=finite))
def test_language_table_round_trip_within_half_a_step(actions):
    tok = LanguageTableActionTokenizer(max_delta=1.0)
    tokens = tok.encode(actions)
    assert tokens.shape == (7, 4)
    assert tokens[:, [0, 2]].max() <= 1 and tokens[:, [1, 3]].max() <= 10
    np.testing.assert_allclose(tok.decode(tokens), actions, atol=tok.resolution / 2 + 1e-12)


@settings(max_examples=100, deadline=None)
@given(finite, finite)
def test_language_table_encoding_is_monotone_in_each_axis(a, b):
    tok = LanguageTableActionTokenizer(max_delta=1.0)
    lo, hi = sorted((a, b))
    assert tok.decode(tok.encode([lo, 0.0]))[0] <= tok.decode(tok.encode([hi, 0.0]))[0]


def test_language_table_clips_out_of_range_actions():
    tok = LanguageTableActionTokenizer(max_delta=0.1)
    np.testing.assert_allclose(tok.decode(tok.encode([5.0, -5.0])), [0.1, -0.1])


@settings(max_examples=100, deadline=None)
@given(hnp.arrays(np.float64, (3, 5, 14), elements=finite))
def test_aloha_chunks_round_trip_to_half_a_bin(actions):
    tok = aloha_action_tokenizer()
    tokens = tok.encode(actions)
    assert tokens.shape == (3, 70) and tok.tokens_per_action == 70
    assert tokens.min() >= 0 and tokens.max() <= 255
    np.testing.assert_allclose(tok.decode(tokens), actions, atol=tok.bin_width / 2 + 1e-12)


def test_aloha_chunk_is_flattened_row_major_step_first():
    tok = aloha_action_tokenizer()
    chunk = np.full((5, 14), -1.0)
    chunk[1, 0] = 1.0  # second step, first joint -> token index 14
    tokens = tok.encode(chunk)
    assert tokens[14] == 255 and np.count_nonzero(tokens) == 1


def test_uniform_tokenizer_is_monotone_and_covers_every_bin():
    tok = UniformActionTokenizer(action_dim=1, bins=256)
    values = np.linspace(-1, 1, 10_001)[:, None]
    tokens = tok.encode(values)[:, 0]
    assert np.all(np.diff(tokens) >= 0)
    assert set(tokens.tolist()) == set(range(256))


def test_joint_tokenizer_gives_14_tokens():
    assert aloha_joint_tokenizer().encode(np.zeros(14)).shape == (14,)


@pytest.mark.parametrize("bad", [[np.nan, 0.0], [0.0, np.inf]])
def test_non_finite_actions_are_refused(bad):
    with pytest.raises(ValueError, match="NaN/inf"):
        LanguageTableActionTokenizer().encode(bad)


def test_wrong_shapes_are_refused_with_the_expected_shape():
    with pytest.raises(ValueError, match=r"\(5, 14\)"):
        aloha_action_tokenizer().encode(np.zeros((14, 5)))
    with pytest.raises(ValueError, match="dimension 4"):
        LanguageTableActionTokenizer().decode([0, 1, 0])
    with pytest.raises(ValueError, match="vocabulary"):
        LanguageTableActionTokenizer().decode([2, 1, 0, 1])  # sign token must be 0/1


@pytest.mark.parametrize(
    "kwargs",
    [dict(action_dim=0), dict(action_dim=2, bins=1), dict(action_dim=2, low=1.0, high=-1.0)],
)
def test_bad_uniform_configs_are_refused(kwargs):
    with pytest.raises(ValueError):
        UniformActionTokenizer(**kwargs)
