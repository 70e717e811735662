"""vlm backend: a tiny random-initialised PaliGemma (never a download) as an RT-2 style
EFM: reserved-id heads, prompts, autoregressive action decoding, frozen vision tower,
checkpoints (tiny config and model_dir), a small overfit, Stage 1 and bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from efm_learning.checkpoint import load_checkpoint, save_checkpoint
from efm_learning.config import ConfigError, ExperimentConfig, from_dict
from efm_learning.models import make_model, model_config_from_dict
from efm_learning.models.base import ACTION_TOKENS, STEPS_TO_GO_BIN
from efm_learning.models.modeling_vlm import PIXELS, TEXT_IDS, HFTokenizer
from efm_learning.sft import train_sft
from efm_sim import keys
from efm_sim.dataset import Episode, episode_path, write_episode

pytest.importorskip("transformers")

TINY = {"type": "vlm", "tiny": {}, "steps_to_go": {"max_steps": 20, "num_bins": 21},
        "action_tokenizer": {"type": "language_table", "max_delta": 0.03}}
INSTRUCTIONS = ["push the red block left", "up"]


def _obs(n: int, seed: int = 0, size: int = 40) -> dict:
    rng = np.random.default_rng(seed)
    return {keys.OBS_IMAGE: rng.integers(0, 255, (n, size, size, 3), dtype=np.uint8),
            keys.OBS_PREV_IMAGE: rng.integers(0, 255, (n, size, size, 3), dtype=np.uint8),
            keys.OBS_STATE: rng.normal(size=(n, 2)).astype(np.float32),
            keys.INSTRUCTION: [INSTRUCTIONS[i % 2] for i in range(n)]}


def _model(**overrides):
    torch.manual_seed(0)
    return make_model({**TINY, **overrides}).eval()


@pytest.fixture(scope="module")
def model():
    return _model()


def _subset(batch: dict, rows) -> dict:
    return {k: v[rows] for k, v in batch.items()}


# -- heads, reserved ids and prompts -----------------------------------------------------
def test_shapes_and_reserved_vocabulary_ids(model):
    batch = model.prepare_observations(_obs(3))
    assert batch[PIXELS].shape == (3, 2, 3, 32, 32)  # two frames, resized to the ViT size
    vocab = model.vlm.config.text_config.vocab_size
    assert model._steps_ids.tolist() == list(range(vocab - 21, vocab))
    assert model._action_ids.tolist() == list(range(vocab - 32, vocab - 21))
    assert int(batch[TEXT_IDS].max()) < vocab - 32  # instruction bytes never hit them
    logits = model.action_logits(batch)
    assert logits.shape == (3, 4, 11)
    # LanguageTable tokens: (sign 2, magnitude 11) per axis; invalid ids are masked
    assert torch.all(logits[:, 0, 2:] <= -1e8) and torch.all(logits[:, 1] > -1e8)
    d = model.expected_steps_to_go(batch)
    assert model.steps_to_go_logits(batch).shape == (3, 21)
    assert d.shape == (3,) and torch.all((d >= 0) & (d <= 20))
    tokens, actions = model.act(_obs(2))
    assert tokens.shape == (2, 4) and np.all(np.abs(actions) <= 0.03)


def test_reserved_logits_match_the_full_paligemma_forward():
    """The backend's merged prefix equals transformers' own PaliGemma path (image
    placeholders + pixel_values + prefix token types), restricted to reserved ids."""
    m = _model(frames="side_by_side")
    obs = _obs(1)
    batch = m.prepare_observations(obs)
    assert batch[PIXELS].shape == (1, 1, 3, 32, 32)
    image_token = m.vlm.config.image_token_id
    ids = torch.cat([torch.full((1, m.tokens_per_image), image_token), m._prompt_steps[None],
                     batch[TEXT_IDS], m._sep[None]], 1)
    with torch.no_grad():
        full = m.vlm(input_ids=ids, pixel_values=batch[PIXELS][:, 0],
                     token_type_ids=torch.zeros_like(ids)).logits[:, -1]
        ours = m.steps_to_go_logits(batch)
    torch.testing.assert_close(ours, full[:, m._steps_ids], atol=1e-5, rtol=1e-5)


def test_prompts_tell_the_two_tasks_apart(model):
    assert model._prompt_action.tolist() != model._prompt_steps.tolist()
    batch = model.prepare_observations(_obs(2))
    with torch.no_grad():
        embeds, mask = model._prefix(batch, "action")
        hidden = model._decoder(embeds, mask, embeds.shape[1]).last_hidden_state[:, -1]
        steps_under_action_prompt = model._reserved_logits(hidden, model._steps_ids)
        assert not torch.allclose(steps_under_action_prompt, model.steps_to_go_logits(batch))


def test_padding_and_batching_do_not_change_outputs(model):
    obs = _obs(2)  # instructions of 23 and 2 bytes: the second row is padded
    batch = model.prepare_observations(obs)
    tokens = torch.tensor([[0, 3, 1, 7], [1, 10, 0, 0]])
    with torch.no_grad():
        both_steps = model.steps_to_go_logits(batch)
        both_lp = model.action_log_prob(batch, tokens)
        for i in range(2):
            alone = model.prepare_observations({k: v[i : i + 1] for k, v in obs.items()})
            torch.testing.assert_close(model.steps_to_go_logits(alone), both_steps[i : i + 1],
                                       atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(model.action_log_prob(alone, tokens[i : i + 1]),
                                       both_lp[i : i + 1], atol=1e-5, rtol=1e-5)


def test_instruction_and_state_tokens_change_the_answer():
    m = _model(state_bins=16)
    m.fit_to_data(np.random.default_rng(1).normal(size=(50, 2)))
    obs = _obs(1)
    with torch.no_grad():
        base = m.steps_to_go_logits(m.prepare_observations(obs))
        other_text = m.steps_to_go_logits(m.prepare_observations({**obs, "instruction": ["x"]}))
        moved = {**obs, keys.OBS_STATE: obs[keys.OBS_STATE] + 2.0}
        other_state = m.steps_to_go_logits(m.prepare_observations(moved))
    assert not torch.allclose(base, other_text) and not torch.allclose(base, other_state)
    ids = m.prepare_observations(obs)[TEXT_IDS][0, -2:]
    assert all(int(i) in m._state_ids.tolist() for i in ids)


# -- autoregressive actions ----------------------------------------------------------------
def test_autoregressive_log_prob_is_the_sum_of_stepwise_log_softmax(model):
    batch = model.prepare_observations(_obs(4, seed=3))
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        tokens, decode_lp, _ = model.decode(batch, generator=gen)
        teacher = model.action_log_prob(batch, tokens)
        logits = model.action_logits({**batch, ACTION_TOKENS: tokens})
        stepwise = F.log_softmax(logits, -1).gather(-1, tokens[..., None]).squeeze(-1)
    torch.testing.assert_close(teacher, stepwise.sum(-1))
    torch.testing.assert_close(decode_lp, teacher, atol=1e-5, rtol=1e-5)  # KV cache == full
    # causal: p(a_k | a_<k) ignores later tokens but depends on earlier ones
    other_last = tokens.clone()
    other_last[:, 3] = (tokens[:, 3] + 1) % 11
    other_first = tokens.clone()
    other_first[:, 0] = 1 - tokens[:, 0]
    with torch.no_grad():
        a = model.teacher_forced_action_logits(batch, other_last)
        b = model.teacher_forced_action_logits(batch, other_first)
    raw = model.teacher_forced_action_logits(batch, tokens).detach()
    torch.testing.assert_close(a, raw)
    torch.testing.assert_close(b[:, 0], raw[:, 0])
    assert not torch.allclose(b[:, 1], raw[:, 1])


def test_greedy_versus_sampling(model):
    obs = _obs(1, seed=5)
    batch = model.prepare_observations({k: np.repeat(v, 64, 0) if isinstance(v, np.ndarray)
                                        else v * 64 for k, v in obs.items()})
    greedy = model.sample_action_tokens(batch, greedy=True)
    assert torch.equal(greedy, model.sample_action_tokens(batch, greedy=True))
    assert len({tuple(r) for r in greedy.tolist()}) == 1
    with torch.no_grad():  # greedy = argmax of each conditional along its own path
        path = model.teacher_forced_action_logits(batch, greedy)
        masked = path.masked_fill(model._invalid_action_tokens, -1e9)
    assert torch.equal(masked.argmax(-1), greedy)
    s1 = model.sample_action_tokens(batch, generator=torch.Generator().manual_seed(1))
    s2 = model.sample_action_tokens(batch, generator=torch.Generator().manual_seed(1))
    assert torch.equal(s1, s2) and len({tuple(r) for r in s1.tolist()}) > 5
    sizes = torch.tensor(model.action_tokenizer.vocab_sizes)
    assert torch.all((s1 >= 0) & (s1 < sizes))


# -- training ------------------------------------------------------------------------------
def test_frozen_vision_tower_is_out_of_stage2_and_gets_no_grad():
    m = _model().train()
    vision = {id(p) for p in m.vision_tower.parameters()}
    assert vision and not any(id(p) in vision for p in m.stage2_parameters())
    batch = m.prepare_observations(_obs(2))
    batch[ACTION_TOKENS] = torch.tensor([[0, 3, 1, 7], [1, 10, 0, 0]])
    batch[STEPS_TO_GO_BIN] = torch.tensor([3, 0])
    (m.bc_loss(batch) + m.steps_to_go_loss(batch)).backward()
    assert all(p.grad is None for p in m.vision_tower.parameters())
    assert m.vlm.model.multi_modal_projector.linear.weight.grad is not None
    unfrozen = _model(freeze_vision=False).train()
    b2 = unfrozen.prepare_observations(_obs(2))
    b2[STEPS_TO_GO_BIN] = torch.tensor([3, 0])
    unfrozen.steps_to_go_loss(b2).backward()
    assert any(p.grad is not None for p in unfrozen.vision_tower.parameters())
    assert not any(id(p) in {id(q) for q in unfrozen.vision_tower.parameters()}
                   for p in unfrozen.stage2_parameters())


def test_small_overfit_lowers_bc_and_steps_to_go_losses():
    m = _model().train()
    obs = _obs(6, seed=11)
    rng = np.random.default_rng(2)
    batch = m.prepare_observations(obs)
    batch[ACTION_TOKENS] = torch.as_tensor(m.encode_actions(rng.uniform(-0.03, 0.03, (6, 2))))
    batch[STEPS_TO_GO_BIN] = torch.as_tensor(rng.integers(0, 21, 6))
    opt = torch.optim.AdamW(m.parameters(), lr=3e-3)
    first = None
    for _ in range(40):
        losses = m({"bc": batch, "steps_to_go": batch})
        if first is None:
            first = {k: float(v.detach()) for k, v in losses.items()}
        opt.zero_grad()
        (losses["bc"] + losses["steps_to_go"]).backward()
        opt.step()
    with torch.no_grad():
        last = {k: float(v) for k, v in m({"bc": batch, "steps_to_go": batch}).items()}
    assert last["bc"] < 0.3 * first["bc"], (first, last)
    assert last["steps_to_go"] < 0.3 * first["steps_to_go"], (first, last)


def test_stage1_runs_on_image_episodes(tmp_path):
    rng = np.random.default_rng(0)
    for i in range(6):
        t = int(rng.integers(6, 10))
        write_episode(episode_path(tmp_path / "data", i), Episode(
            env_name="pushtable", seed=i, instruction=INSTRUCTIONS[i % 2], task_family="push",
            success=True, states=rng.normal(size=(t + 1, 2)),
            actions=rng.uniform(-0.03, 0.03, (t, 2)),
            images=rng.integers(0, 255, (t + 1, 32, 32, 3), dtype=np.uint8)))
    cfg = from_dict(ExperimentConfig, {
        "env": "pushtable", "run_dir": str(tmp_path / "run"), "num_threads": 1,
        "data": {"dir": str(tmp_path / "data"), "val_fraction": 0.34},
        "model": {**TINY, "state_bins": 8},
        "sft": {"steps": 4, "batch_size": 8, "eval_every": 2, "checkpoint_every": 2,
                "log_every": 2, "val_batches": 1},
    })
    result = train_sft(cfg, progress=False)
    assert np.isfinite(result.best_val["bc"]) and np.isfinite(result.best_val["steps_to_go"])
    policy, _ = load_checkpoint(tmp_path / "run" / "sft" / "best_bc")
    assert float(policy.state_std.sum()) != 2.0  # fitted to the demos, stored
    assert policy.act(_obs(2))[0].shape == (2, 4)


# -- checkpoints -----------------------------------------------------------------------------
def test_checkpoint_round_trip_of_the_tiny_config(model, tmp_path):
    save_checkpoint(tmp_path / "ck", model)
    loaded, _ = load_checkpoint(tmp_path / "ck")
    config = json.loads((tmp_path / "ck" / "config.json").read_text())["model"]
    assert config["tiny"] == {} and config["model_dir"] is None
    obs = _obs(2, seed=4)
    a, b = model.prepare_observations(obs), loaded.prepare_observations(obs)
    tokens = torch.tensor([[1, 5, 1, 9], [0, 0, 1, 10]])
    with torch.no_grad():
        torch.testing.assert_close(model.steps_to_go_logits(a), loaded.steps_to_go_logits(b))
        torch.testing.assert_close(model.action_log_prob(a, tokens),
                                   loaded.action_log_prob(b, tokens))
    assert torch.equal(model.sample_action_tokens(a, greedy=True),
                       loaded.sample_action_tokens(b, greedy=True))


def _tiny_model_dir(path, source) -> None:
    """A local PaliGemma directory (save_pretrained) with a small word-level tokenizer."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = ["<pad>", "<eos>", "<bos>", "<unk>", "act:", "steps", "to", "go:", "push", "the",
             "red", "block", "left", "up"]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>",
                                   pad_token="<pad>", unk_token="<unk>")
    fast.add_tokens(["\n"])
    source.vlm.save_pretrained(path)
    fast.save_pretrained(path)


def test_model_dir_loads_locally_and_checkpoints_the_fine_tuned_weights(model, tmp_path):
    _tiny_model_dir(tmp_path / "pg", model)
    cfg = {k: v for k, v in TINY.items() if k != "tiny"}
    m = make_model({**cfg, "model_dir": str(tmp_path / "pg")}).eval()
    assert isinstance(m.tokenizer, HFTokenizer)
    assert m._prompt_action.tolist() == [2, 4]
    assert m.prepare_observations(_obs(1))[TEXT_IDS].tolist() == [[8, 9, 10, 11, 12]]
    for name, p in model.vlm.state_dict().items():
        torch.testing.assert_close(m.vlm.state_dict()[name], p, msg=name)
    with torch.no_grad():  # "fine-tune": the checkpoint must keep it, not model_dir's
        m.vlm.model.multi_modal_projector.linear.bias.add_(0.5)
    save_checkpoint(tmp_path / "ck", m)
    config = json.loads((tmp_path / "ck" / "config.json").read_text())["model"]
    assert config["model_dir"] == str(tmp_path / "pg") and config["tiny"] is None
    loaded, _ = load_checkpoint(tmp_path / "ck")
    obs = _obs(2, seed=9)
    with torch.no_grad():
        expected = m.steps_to_go_logits(m.prepare_observations(obs))
        torch.testing.assert_close(loaded.steps_to_go_logits(loaded.prepare_observations(obs)),
                                   expected)
        assert not torch.allclose(model.steps_to_go_logits(model.prepare_observations(obs)),
                                  expected)


# -- bad input and config errors -------------------------------------------------------------
def test_bad_input_is_a_value_error(model):
    obs = _obs(2)
    bad = [
        {**obs, keys.OBS_IMAGE: obs[keys.OBS_IMAGE].astype(np.float32)},
        {**obs, keys.OBS_IMAGE: obs[keys.OBS_IMAGE][..., :2]},
        {**obs, keys.OBS_PREV_IMAGE: obs[keys.OBS_PREV_IMAGE][:1]},
        {**obs, keys.OBS_PREV_IMAGE: obs[keys.OBS_PREV_IMAGE][:, :20]},
        {**obs, keys.INSTRUCTION: ["only one"]},
        {k: v for k, v in obs.items() if k != keys.OBS_IMAGE},
    ]
    for observations in bad:
        with pytest.raises(ValueError):
            model.prepare_observations(observations)
    batch = model.prepare_observations(obs)
    for tokens in (torch.tensor([[0, 11, 0, 0], [0, 0, 0, 0]]),  # magnitude 11 > 10
                   torch.tensor([[2, 0, 0, 0], [0, 0, 0, 0]]),  # sign 2 > 1
                   torch.zeros(2, 3, dtype=torch.long)):
        with pytest.raises(ValueError, match="action tokens"):
            model.action_log_prob(batch, tokens)
    with_state = _model(state_bins=4)
    with pytest.raises(ValueError, match=r"observation\.state"):
        with_state.prepare_observations({**obs, keys.OBS_STATE: np.zeros((2, 3), np.float32)})


def test_config_errors_name_the_key(tmp_path):
    with pytest.raises(ConfigError, match=r"model\.model_dir: give exactly one"):
        model_config_from_dict({"type": "vlm"})
    with pytest.raises(ConfigError, match=r"model\.model_dir: .*no config\.json"):
        model_config_from_dict({"type": "vlm", "model_dir": str(tmp_path / "missing")})
    (tmp_path / "bert").mkdir()
    (tmp_path / "bert" / "config.json").write_text('{"model_type": "bert"}')
    with pytest.raises(ConfigError, match=r"model\.model_dir: .*'bert'.*paligemma"):
        model_config_from_dict({"type": "vlm", "model_dir": str(tmp_path / "bert")})
    with pytest.raises(ConfigError, match=r"model\.action_prompt"):
        model_config_from_dict({**TINY, "steps_to_go_prompt": "act:"})
    with pytest.raises(ConfigError, match=r"model\.frames: got 'stacked'"):
        model_config_from_dict({**TINY, "frames": "stacked"})
    with pytest.raises(ConfigError, match="vocab_size 280 is too small"):
        make_model({**TINY, "tiny": {"text_config": {"vocab_size": 280}}})
