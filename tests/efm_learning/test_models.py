"""The EFM interface on the mlp backend: two heads, log-probs, sampling, d(o, g)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from efm_learning.models import make_model
from efm_learning.models.base import ACTION_TOKENS, STEPS_TO_GO_BIN
from efm_learning.testing import tiny_mlp
from efm_sim import keys


def _batch(n: int = 5, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {keys.OBS_STATE: rng.uniform(-1, 1, size=(n, 6)).astype(np.float32)}


def test_heads_shapes_and_expected_steps_to_go():
    model = tiny_mlp()
    batch = model.prepare_observations(_batch())
    assert model.action_logits(batch).shape == (5, 2, 16)
    assert model.steps_to_go_logits(batch).shape == (5, 15)
    d = model.expected_steps_to_go(batch)
    probs = model.steps_to_go_probs(batch)
    manual = probs.detach().numpy() @ model.steps_tokenizer.bin_values
    np.testing.assert_allclose(d.detach().numpy(), manual, rtol=1e-5)
    assert torch.all((d >= 0) & (d <= 140))


def test_action_log_prob_matches_the_token_distributions():
    model = tiny_mlp()
    batch = model.prepare_observations(_batch())
    tokens = torch.tensor([[0, 15], [3, 4], [7, 7], [15, 0], [1, 2]])
    log_probs = torch.log_softmax(model.action_logits(batch), -1)
    rows = torch.arange(5)
    manual = log_probs[rows, 0, tokens[:, 0]] + log_probs[rows, 1, tokens[:, 1]]
    torch.testing.assert_close(model.action_log_prob(batch, tokens), manual)


def test_greedy_is_argmax_and_sampling_follows_probabilities():
    model = tiny_mlp()
    batch = model.prepare_observations(_batch(1))
    greedy = model.sample_action_tokens(batch, greedy=True)
    assert torch.equal(greedy, model.action_logits(batch).argmax(-1))
    big = {keys.OBS_STATE: batch[keys.OBS_STATE].repeat(4000, 1)}
    gen = torch.Generator().manual_seed(0)
    samples = model.sample_action_tokens(big, generator=gen)[:, 0]
    freq = torch.bincount(samples, minlength=16).float() / 4000
    probs = torch.softmax(model.action_logits(batch)[0, 0], -1)
    assert torch.max(torch.abs(freq - probs)) < 0.04


def test_act_decodes_bounded_actions():
    model = tiny_mlp()
    tokens, actions = model.act(_batch(8))
    assert tokens.shape == (8, 2) and actions.shape == (8, 2)
    assert np.all(np.abs(actions) <= 5e-4)
    np.testing.assert_allclose(actions, model.action_tokenizer.decode(tokens), rtol=1e-6)


def test_language_table_tokens_mask_invalid_classes():
    model = make_model({"type": "mlp", "state_dim": 6, "hidden_size": 16, "num_layers": 1,
                        "action_tokenizer": {"type": "language_table", "max_delta": 0.1}})
    batch = model.prepare_observations(_batch(300))
    tokens = model.sample_action_tokens(batch)
    assert model.action_tokenizer.vocab_sizes == (2, 11, 2, 11)
    assert tokens[:, 0].max() <= 1 and tokens[:, 2].max() <= 1
    assert tokens[:, 1].max() <= 10
    assert torch.isfinite(model.action_entropy(batch)).all()


def test_stage1_losses_fit_a_small_batch():
    model = tiny_mlp(hidden=64)
    obs = _batch(32)
    batch = model.prepare_observations(obs)
    batch[ACTION_TOKENS] = torch.randint(0, 16, (32, 2), generator=torch.Generator().manual_seed(1))
    batch[STEPS_TO_GO_BIN] = torch.randint(0, 15, (32,), generator=torch.Generator().manual_seed(2))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    first = None
    for _ in range(300):
        losses = model({"bc": batch, "steps_to_go": batch})
        loss = losses["bc"] + losses["steps_to_go"]
        first = first if first is not None else float(loss.detach())
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(loss.detach()) < 0.2 * first


def test_wrong_state_shape_is_refused():
    model = tiny_mlp()
    with pytest.raises(ValueError, match=r"observation.state must be \(B, 6\)"):
        model.prepare_observations({keys.OBS_STATE: np.zeros((3, 5))})
