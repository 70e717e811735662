"""conv_efm: shapes, instruction conditioning, frozen conv tower in Stage 2, camera-size
input, checkpoints, and that it really learns *where* things are from pixels."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from efm_learning.checkpoint import load_checkpoint, save_checkpoint
from efm_learning.config import ConfigError
from efm_learning.models import make_model
from efm_learning.models.base import ACTION_TOKENS, STEPS_TO_GO_BIN
from efm_learning.models.modeling_conv_efm import resize_frames
from efm_learning.models.modeling_small_efm import TextEncoder
from efm_learning.testing import random_image_observations

CONFIG = {"type": "conv_efm", "image_size": 32, "channels": [8, 16, 16], "num_keypoints": 8,
          "hidden_size": 64, "steps_to_go": {"max_steps": 30, "num_bins": 31},
          "action_tokenizer": {"type": "language_table", "max_delta": 0.03}}
INSTRUCTIONS = ["push the red moon to the blue cube", "push the blue cube to the red moon"]


def _obs(n: int, size: int = 32, seed: int = 0) -> dict:
    return random_image_observations(n, INSTRUCTIONS, size=size, seed=seed)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return make_model(CONFIG).eval()


def test_heads_and_stage2_keeps_the_conv_tower_frozen(model):
    batch = model.prepare_observations(_obs(3))
    assert batch["observation.image"].shape == (3, 32, 32, 6)
    assert model.action_logits(batch).shape == (3, 4, 11)
    d = model.expected_steps_to_go(batch)
    assert d.shape == (3,) and torch.all((d >= 0) & (d <= 30))
    stage2 = {id(p) for p in model.stage2_parameters()}
    assert not any(id(p) in stage2 for p in model.convs.parameters())
    assert not any(id(p) in stage2 for p in model.films.parameters())
    assert all(id(p) in stage2 for p in model.action_head.parameters())
    tokens, actions = model.act(_obs(2))
    assert tokens.shape == (2, 4) and np.all(np.abs(actions) <= 0.03)


def test_instruction_changes_the_outputs(model):
    obs = _obs(1)
    torch.nn.init.normal_(model.films[0].weight, std=0.5)  # FiLM starts as the identity
    a = model.steps_to_go_logits(model.prepare_observations(obs))
    b = model.steps_to_go_logits(model.prepare_observations({**obs, "instruction": ["dance"]}))
    assert not torch.allclose(a, b)


def test_scratch_text_encoder_is_random_seeded_and_leaves_the_caller_rng_alone(model):
    torch.manual_seed(3)
    expected = torch.rand(1)
    torch.manual_seed(3)
    TextEncoder(pretrained=False)
    assert torch.equal(torch.rand(1), expected)  # its random init did not consume our stream
    scratch = make_model({**CONFIG, "pretrained": False})
    pretrained_emb = model._text[0](INSTRUCTIONS)
    scratch_emb = scratch._text[0](INSTRUCTIONS)
    assert scratch_emb.shape == pretrained_emb.shape
    assert not torch.allclose(scratch_emb, pretrained_emb, atol=1e-3)
    again = make_model({**CONFIG, "pretrained": False})._text[0](INSTRUCTIONS)
    assert torch.allclose(again, scratch_emb)


def test_camera_frames_are_block_averaged_to_the_model_size(model):
    big = _obs(2, size=64, seed=3)
    small = {**big, "observation.image": resize_frames(big["observation.image"], 32),
             "observation.previous_image": resize_frames(big["observation.previous_image"], 32)}
    expected = big["observation.image"].reshape(2, 32, 2, 32, 2, 3).mean(axis=(2, 4))
    assert np.abs(small["observation.image"].astype(float) - expected).max() <= 0.5
    torch.testing.assert_close(model.steps_to_go_logits(model.prepare_observations(big)),
                               model.steps_to_go_logits(model.prepare_observations(small)))
    with pytest.raises(ValueError, match="previous frames"):
        model.prepare_observations(
            {**big, "observation.previous_image": small["observation.image"][:1]}
        )


def test_checkpoint_round_trip(model, tmp_path):
    save_checkpoint(tmp_path / "ck", model)
    loaded, _ = load_checkpoint(tmp_path / "ck")
    obs = _obs(2)
    torch.testing.assert_close(model.steps_to_go_logits(model.prepare_observations(obs)),
                               loaded.steps_to_go_logits(loaded.prepare_observations(obs)))


def test_bad_config_is_refused():
    with pytest.raises(ConfigError, match="channels"):
        make_model({**CONFIG, "channels": [8]})


def _dot_scene(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """A red dot at a random place on a grey board; returns images and the dot's x."""
    images = np.full((n, 32, 32, 3), 200, dtype=np.uint8)
    xy = rng.integers(3, 29, (n, 2))
    for i, (x, y) in enumerate(xy):
        images[i, y - 2 : y + 2, x - 2 : x + 2] = (220, 30, 30)
    return images, xy[:, 0]


def test_learns_where_the_object_is_from_pixels():
    """Steps-to-go = the dot's column, action sign = which half it is in: both need the
    dot's position, which only the pixels hold (a model that cannot see stays at ~50%)."""
    torch.manual_seed(0)
    torch.set_num_threads(1)
    model = make_model(CONFIG).train()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    rng = np.random.default_rng(0)

    def batch(n: int, seed_rng: np.random.Generator) -> dict:
        images, x = _dot_scene(seed_rng, n)
        b = model.prepare_observations({"observation.image": images,
                                        "observation.state": np.zeros((n, 2), np.float32),
                                        "instruction": [INSTRUCTIONS[0]] * n})
        actions = np.zeros((n, 2), np.float32)
        actions[:, 0] = np.where(x < 16, -0.02, 0.02)
        b[ACTION_TOKENS] = torch.as_tensor(model.encode_actions(actions))
        b[STEPS_TO_GO_BIN] = torch.as_tensor(model.encode_steps_to_go(x))
        return b

    for _ in range(300):
        b = batch(32, rng)
        loss = model.bc_loss(b) + model.steps_to_go_loss(b)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    test = batch(200, np.random.default_rng(99))
    with torch.no_grad():
        sign = model.sample_action_tokens(test, greedy=True)[:, 0]
        accuracy = (sign == test[ACTION_TOKENS][:, 0]).float().mean()
        error = (model.expected_steps_to_go(test) - model._steps_to_go_values[
            test[STEPS_TO_GO_BIN]]).abs().mean()
    assert accuracy > 0.9, accuracy
    assert error < 3.0, error  # the column spans 3..28 (a blind guess is ~6.5 off)


def test_current_frame_only_ignores_the_previous_frame():
    torch.manual_seed(0)
    model = make_model({**CONFIG, "previous_frame": False}).eval()
    obs = _obs(2)
    batch = model.prepare_observations(obs)
    assert batch["observation.image"].shape == (2, 32, 32, 3)
    other = {**obs, "observation.previous_image": obs["observation.image"][::-1].copy()}
    torch.testing.assert_close(model.action_logits(batch),
                               model.action_logits(model.prepare_observations(other)))
    # the default model does look at it
    default = make_model(CONFIG).eval()
    assert not torch.allclose(
        default.action_logits(default.prepare_observations(obs)),
        default.action_logits(default.prepare_observations(other)))


def test_random_shift_moves_both_frames_together_and_only_when_configured():
    model = make_model({**CONFIG, "random_shift": 3})
    batch = model.prepare_observations(_obs(16))
    gen = torch.Generator().manual_seed(0)
    shifted = model.augment(batch, gen)["observation.image"]
    original = batch["observation.image"]
    assert shifted.shape == original.shape and shifted.dtype == torch.uint8
    assert not torch.equal(shifted, original)
    # frame t and frame t-1 moved by the same offset: find it from frame t, check t-1
    for i in range(16):
        found = False
        for dy in range(-3, 4):
            for dx in range(-3, 4):
                h0, w0 = max(0, dy), max(0, dx)
                h1, w1 = 32 + min(0, dy), 32 + min(0, dx)
                src = original[i, h0:h1, w0:w1]
                dst = shifted[i, h0 - dy:h1 - dy, w0 - dx:w1 - dx]
                if torch.equal(src[..., :3], dst[..., :3]):
                    assert torch.equal(src[..., 3:], dst[..., 3:])
                    found = True
        assert found
    plain = make_model(CONFIG)
    assert plain.augment(batch, gen) is batch


def test_relative_keypoints_feed_the_end_effector_position():
    torch.manual_seed(0)
    model = make_model({**CONFIG, "relative_keypoints": True}).eval()
    obs = _obs(1)
    moved = {**obs, "observation.state": obs["observation.state"] + 0.1}
    with torch.no_grad():
        model.state_proj.weight.zero_()  # only the relative keypoints carry the state now
        model.state_proj.bias.zero_()
        a = model.action_logits(model.prepare_observations(obs))
        b = model.action_logits(model.prepare_observations(moved))
    assert not torch.allclose(a, b)
    with pytest.raises(ConfigError, match="random_shift"):
        make_model({**CONFIG, "random_shift": 8})


def test_plain_encoder_reads_the_whole_map_and_freezes_it_in_stage2():
    torch.manual_seed(0)
    model = make_model({**CONFIG, "encoder": "plain", "previous_frame": False}).eval()
    obs = _obs(2)
    logits = model.action_logits(model.prepare_observations(obs))
    assert logits.shape == (2, 4, 11) and model.spatial_softmax is None
    stage2 = {id(p) for p in model.stage2_parameters()}
    assert not any(id(p) in stage2 for p in model.image_fc.parameters())
    assert all(id(p) in stage2 for p in model.trunk.parameters())
    flipped = {**obs, "observation.image": obs["observation.image"][:, ::-1].copy()}
    assert not torch.allclose(logits, model.action_logits(model.prepare_observations(flipped)))


def test_training_speed_ups_leave_outputs_and_checkpoints_unchanged(tmp_path, monkeypatch):
    """prepare_for_training (issue 13 item 6): channels-last weights give the same outputs
    and gradients and round-trip through a checkpoint; with compile the
    compiled trunk serves training steps only, never evaluation or no-grad acting."""
    torch.manual_seed(1)
    eager = make_model({**CONFIG, "early_keypoints": 4, "relative_keypoints": True}).train()
    fast = make_model({**CONFIG, "early_keypoints": 4, "relative_keypoints": True}).train()
    fast.load_state_dict(eager.state_dict())
    fast.prepare_for_training()
    assert fast.convs[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert not fast.convs[0].weight.is_contiguous()
    batch = fast.prepare_observations(_obs(4))
    batch[ACTION_TOKENS] = torch.zeros(4, 4, dtype=torch.long)
    losses = [m.bc_loss(batch) for m in (eager, fast)]
    torch.testing.assert_close(losses[0], losses[1], rtol=1e-5, atol=1e-5)
    for loss in losses:
        loss.backward()
    torch.testing.assert_close(eager.convs[0].weight.grad, fast.convs[0].weight.grad,
                               rtol=1e-4, atol=1e-5)
    save_checkpoint(tmp_path / "ck", fast)
    loaded, _ = load_checkpoint(tmp_path / "ck")
    torch.testing.assert_close(loaded.steps_to_go_logits(batch),
                               fast.eval().steps_to_go_logits(batch))

    calls = []
    fast.prepare_for_training(compile=True)
    monkeypatch.setattr(fast, "_compiled_trunk", lambda b: calls.append(1) or fast._eager_trunk(b))
    fast.train()
    fast.bc_loss(batch)
    assert calls == [1]
    fast.eval()
    fast.bc_loss(batch)
    fast.train()
    fast.act(_obs(2))  # no_grad: acting never uses the compiled graph
    assert calls == [1]
