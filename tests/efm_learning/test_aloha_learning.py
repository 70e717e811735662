"""Learning on ALOHA (issue 14 item 3; paper Appendices B, D.3, E.2): the stacked camera
pair, the 70-token / 301-bin backend, the 10 Hz data path from the ALOHA recording
layout, and a tiny Stage 1 run with the "trained past best BC" policy checkpoint."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from efm_learning.aloha_data import (
    chunk_actions,
    policy_frames,
    policy_observation,
    read_policy_episode,
)
from efm_learning.checkpoint import load_checkpoint
from efm_learning.config import ExperimentConfig, from_dict, load_config
from efm_learning.data import EpisodePool, iter_episodes, list_episode_files
from efm_learning.models import available_backends, make_model, model_config_from_dict
from efm_learning.models.modeling_aloha_efm import JOINT_TOKENS, AlohaEFM
from efm_learning.sft import train_sft
from efm_sim import keys
from efm_sim.aloha_dataset import AlohaEpisode, write_aloha_episode
from efm_sim.aloha_layout import (
    JOINT_HIGH,
    JOINT_LOW,
    OBS_IMAGES,
    VIEW_ORDER,
    normalize_joints,
    stack_aloha_views,
    unnormalize_joints,
)

REPO = Path(__file__).resolve().parents[2]
TINY = {"type": "aloha_efm", "image_size": 16, "band_px": 2, "channels": [8, 8],
        "hidden_size": 32, "joint_embed_dim": 4}
#: a constant colour per camera, so each view can be told apart in a stacked image
COLOURS = {"cam_high": (200, 0, 0), "cam_low": (0, 200, 0),
           "cam_left_wrist": (0, 0, 200), "cam_right_wrist": (200, 200, 0)}


def _views(shape=(12, 16)) -> dict[str, np.ndarray]:
    return {cam: np.full((*shape, 3), colour, np.uint8) for cam, colour in COLOURS.items()}


def _fake_episode(length: int, size: int = 12, seed: int = 0, **attrs) -> AlohaEpisode:
    """ALOHA-layout episode whose values encode the 50 Hz frame index t: qpos = t / 100
    (plus the joint index), action = qpos + 1 / 1000, every camera frame filled with t."""
    t = np.arange(length, dtype=np.float32)[:, None]
    qpos = 0.01 * t + 0.001 * np.arange(14, dtype=np.float32)
    images = {cam: np.broadcast_to(np.arange(length, dtype=np.uint8)[:, None, None, None] + i,
                                   (length, size, size, 3)).copy()
              for i, cam in enumerate(VIEW_ORDER)}
    return AlohaEpisode(qpos=qpos, qvel=np.zeros_like(qpos), action=qpos + 1e-3,
                        images=images, attrs={"seed": seed, "success": True, **attrs})


# -- the stacked pair (Appendix D.3) ---------------------------------------------------
def test_stacked_pair_has_each_view_in_its_quadrant_and_a_black_band():
    stacked = stack_aloha_views(_views(), size=32, band=4)
    assert stacked.shape == (2, 32, 32, 3) and stacked.dtype == np.uint8
    upper = (32 - 4) // 2  # 14 rows per view
    for image, (top, bottom) in enumerate([("cam_high", "cam_low"),
                                           ("cam_left_wrist", "cam_right_wrist")]):
        np.testing.assert_array_equal(stacked[image, :upper], np.broadcast_to(
            COLOURS[top], (upper, 32, 3)))
        assert not stacked[image, upper:upper + 4].any()  # the black band
        np.testing.assert_array_equal(stacked[image, upper + 4:], np.broadcast_to(
            COLOURS[bottom], (32 - upper - 4, 32, 3)))


def test_stacking_keeps_each_views_orientation_and_leading_axes():
    views = _views((8, 8))
    views["cam_high"][:4] = (255, 255, 255)  # top half white: stays at the top
    frames = {cam: np.stack([v, v, v]) for cam, v in views.items()}  # a time axis
    stacked = stack_aloha_views(frames, size=20, band=2)
    assert stacked.shape == (3, 2, 20, 20, 3)
    assert (stacked[0, 0, :4] == 255).all() and (stacked[0, 0, 5:9] == (200, 0, 0)).all()
    with pytest.raises(ValueError, match="cam_low"):
        stack_aloha_views({k: v for k, v in views.items() if k != "cam_low"}, 20, 2)


def test_joint_normalisation_is_the_envs_action_bounds():
    from efm_sim.aloha import AlohaInsertionEnv

    env = AlohaInsertionEnv(cameras=())
    np.testing.assert_allclose(env.action_space.low, JOINT_LOW, atol=1e-5)
    np.testing.assert_allclose(env.action_space.high, JOINT_HIGH, atol=1e-5)
    np.testing.assert_allclose(normalize_joints(np.array([JOINT_LOW, JOINT_HIGH])),
                               [[-1.0] * 14, [1.0] * 14], atol=1e-6)
    q = np.random.default_rng(0).uniform(JOINT_LOW, JOINT_HIGH, (5, 14))
    np.testing.assert_allclose(unnormalize_joints(normalize_joints(q)), q, atol=1e-5)
    env.close()


# -- the backend -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_model() -> AlohaEFM:
    torch.manual_seed(0)
    return make_model(dict(TINY)).eval()


def test_backend_emits_70_action_tokens_and_301_steps_to_go_bins(tiny_model):
    assert "aloha_efm" in available_backends()
    obs = tiny_model.example_observations(3)
    batch = tiny_model.prepare_observations(obs)
    assert batch[OBS_IMAGES].shape == (3, 2, 16, 16, 3)
    assert batch[JOINT_TOKENS].shape == (3, 14) and int(batch[JOINT_TOKENS].max()) < 256
    assert tiny_model.action_logits(batch).shape == (3, 70, 256)
    assert tiny_model.steps_to_go_logits(batch).shape == (3, 301)
    np.testing.assert_array_equal(tiny_model.steps_tokenizer.bin_values, np.arange(301))
    tokens, actions = tiny_model.act(obs, greedy=True)
    assert tokens.shape == (3, 70) and actions.shape == (3, 5, 14)
    assert (actions >= np.asarray(JOINT_LOW) - 1e-5).all()
    assert (actions <= np.asarray(JOINT_HIGH) + 1e-5).all()


@pytest.mark.parametrize("image", [0, 1])
def test_backend_sees_both_stacked_images(tiny_model, image):
    obs = tiny_model.example_observations(2)
    batch = tiny_model.prepare_observations(obs)
    changed = {**obs, OBS_IMAGES: obs[OBS_IMAGES].copy()}
    changed[OBS_IMAGES][:, image] = 255 - changed[OBS_IMAGES][:, image]  # e.g. the wrists
    other = tiny_model.prepare_observations(changed)
    with torch.no_grad():
        for head in (tiny_model.action_logits, tiny_model.steps_to_go_logits):
            assert not torch.allclose(head(batch), head(other))


def test_backend_sees_the_joints_and_stacks_four_raw_views_itself(tiny_model):
    obs = tiny_model.example_observations(2)
    moved = {**obs, keys.OBS_STATE: obs[keys.OBS_STATE] * 0.5}
    with torch.no_grad():
        a = tiny_model.steps_to_go_logits(tiny_model.prepare_observations(obs))
        b = tiny_model.steps_to_go_logits(tiny_model.prepare_observations(moved))
    assert not torch.allclose(a, b)
    views = {cam: np.stack([_views()[cam]] * 2) for cam in VIEW_ORDER}
    raw = {keys.OBS_STATE: obs[keys.OBS_STATE],
           OBS_IMAGES: np.stack([views[c] for c in VIEW_ORDER], axis=1)}  # (B, 4, H, W, 3)
    np.testing.assert_array_equal(tiny_model.stacked_images(raw),
                                  stack_aloha_views(views, 16, 2))


def test_chunk_tokens_round_trip_to_half_a_bin(tiny_model):
    rng = np.random.default_rng(1)
    chunks = rng.uniform(JOINT_LOW, JOINT_HIGH, (4, 5, 14)).astype(np.float32)
    tokens = tiny_model.encode_actions(chunks)
    assert tokens.shape == (4, 70) and tokens.dtype == np.int64
    np.testing.assert_array_equal(tokens, tiny_model.encode_actions(chunks.reshape(4, 70)))
    np.testing.assert_array_equal(tokens.reshape(4, 5, 14)[:, 1], tiny_model.encode_actions(
        np.repeat(chunks[:, 1:2], 5, axis=1)).reshape(4, 5, 14)[:, 0])  # step-major order
    decoded = tiny_model.decode_actions(torch.as_tensor(tokens))
    half_bin = (np.asarray(JOINT_HIGH) - np.asarray(JOINT_LOW)) / 256 / 2
    assert decoded.shape == (4, 5, 14)
    assert (np.abs(decoded - chunks) <= half_bin + 1e-5).all()


# -- HDF5 recordings -> the 10 Hz Stage 1 pool -------------------------------------------
def test_recording_becomes_10hz_steps_with_5_action_chunks(tmp_path):
    source = _fake_episode(23)
    path = write_aloha_episode(tmp_path / "episode_0.hdf5", source)
    episode = read_policy_episode(path)
    frames = [0, 5, 10, 15, 20, 22]  # every 5th frame, then the last recorded frame
    np.testing.assert_array_equal(policy_frames(23), frames)
    assert episode.length == 5 == math.ceil(23 / 5)
    np.testing.assert_allclose(episode.states, source.qpos[frames])
    chunks = episode.actions.reshape(5, 5, 14)
    for k in range(4):
        np.testing.assert_allclose(chunks[k], source.action[5 * k:5 * k + 5])
    np.testing.assert_allclose(chunks[4], source.action[[20, 21, 22, 22, 22]])  # padded
    for i, cam in enumerate(VIEW_ORDER):
        assert episode.views[cam].shape == (6, 12, 12, 3)
        np.testing.assert_array_equal(episode.views[cam][:, 0, 0, 0], np.add(frames, i))
    assert read_policy_episode(path, load_images=False).views == {}
    np.testing.assert_array_equal(chunk_actions(np.arange(7)[:, None] * np.ones(14))[:, ::14],
                                  [[0, 1, 2, 3, 4], [5, 6, 6, 6, 6]])


def test_recordings_past_success_are_cut_and_pool_labels_count_policy_steps(tmp_path):
    write_aloha_episode(tmp_path / "episode_0.hdf5", _fake_episode(40, success_step=12))
    write_aloha_episode(tmp_path / "episode_1.hdf5", _fake_episode(21))
    paths = list_episode_files(tmp_path)
    assert [p.name for p in paths] == ["episode_0.hdf5", "episode_1.hdf5"]
    episodes = list(iter_episodes(paths, None, load_images=True, repeat=False))
    assert [e.length for e in episodes] == [3, 5]  # ceil(12 / 5), ceil(21 / 5)
    last_frame = 0.01 * 11 + 0.001 * np.arange(14)  # frame 11 = success_step - 1
    np.testing.assert_allclose(episodes[0].states[-1], last_frame, rtol=1e-5)
    model = make_model(dict(TINY))
    pool = EpisodePool(model.featurizer())
    for episode in episodes:
        pool.add(episode)
    assert pool.all_observations(OBS_IMAGES).shape == (4 + 6, 2, 16, 16, 3)
    rng = np.random.default_rng(0)
    stg = pool.sample("steps_to_go", 256, rng)
    assert set(stg[keys.STEPS_TO_GO]) == {0, 1, 2, 3, 4, 5}  # 10 Hz steps to the goal
    bc = pool.sample("bc", 8, rng)
    assert bc[keys.ACTION].shape == (8, 70) and bc[OBS_IMAGES].shape == (8, 2, 16, 16, 3)


def test_policy_observation_from_the_env_drives_the_model(tiny_model):
    from efm_sim.aloha import AlohaInsertionEnv

    env = AlohaInsertionEnv(image_size=(12, 16))
    obs, _ = env.reset(seed=0)
    batch = policy_observation(obs, tiny_model.config.image_size, tiny_model.config.band_px)
    assert batch[OBS_IMAGES].shape == (1, 2, 16, 16, 3)
    _, chunk = tiny_model.act(batch)
    for action in chunk[0]:  # a chunk of 5 joint targets the env accepts
        env.step(action)
    env.close()


# -- Stage 1 on ALOHA recordings -----------------------------------------------------------
def test_config_aloha_yaml_builds_the_paper_shapes():
    cfg = load_config(REPO / "config" / "aloha.yaml")
    model_cfg = model_config_from_dict(cfg.model)
    assert model_cfg.type == "aloha_efm" and cfg.sft.policy_checkpoint == "last"
    tok = model_cfg.action_tokenizer.build()
    assert tok.tokens_per_action == 70 and tok.vocab_sizes[0] == 256
    assert model_cfg.steps_to_go.build().num_bins == 301


def test_tiny_stage1_on_aloha_recordings_keeps_a_loadable_policy(tmp_path):
    data = tmp_path / "data"
    for i, length in enumerate((31, 27, 36)):
        write_aloha_episode(data / f"episode_{i}.hdf5", _fake_episode(length, seed=i))
    cfg = from_dict(ExperimentConfig, {
        "env": "aloha_insertion", "run_dir": str(tmp_path / "run"), "num_threads": 1,
        "data": {"dir": str(data), "val_fraction": 0.34},
        "model": dict(TINY, random_shift=1),
        "sft": {"steps": 4, "batch_size": 8, "eval_every": 2, "checkpoint_every": 2,
                "log_every": 2, "val_batches": 1, "policy_checkpoint": "last"},
    })
    result = train_sft(cfg, resume=False, progress=False)
    assert result.checkpoints["policy"] == tmp_path / "run" / "sft" / "last"
    policy, meta = load_checkpoint(result.checkpoints["policy"])
    assert isinstance(policy, AlohaEFM) and meta["step"] == 4
    reward, _ = load_checkpoint(result.checkpoints["best_steps_to_go"])
    obs = policy.example_observations(1)
    assert policy.act(obs)[1].shape == (1, 5, 14)
    assert reward.predict_steps_to_go(obs).shape == (1,)


def test_evaluation_executes_each_chunk_at_50hz(tiny_model):
    from efm_learning.aloha_eval import grasp_distances, run_policy_episode
    from efm_sim.aloha import AlohaInsertionEnv

    env = AlohaInsertionEnv(image_size=(12, 16), max_episode_steps=12)
    calls = []
    act = tiny_model.act

    def counting_act(*args, **kwargs):
        calls.append(1)
        return act(*args, **kwargs)

    tiny_model.act = counting_act
    try:
        result = run_policy_episode(env, tiny_model, seed=0)
    finally:
        del tiny_model.act
    env.reset(seed=0)
    start = grasp_distances(env)  # where each gripper started, ~26 cm from its object
    env.close()
    assert result["steps"] == 12 and len(calls) == 3  # 10 Hz policy, 5 driver steps each
    assert not result["success"] and 0 <= result["max_stage"] <= 4
    # the closest approach is no farther than where each gripper started
    assert min(start) > 0.15
    assert 0 < result["closest_left_to_socket_m"] <= start[0] + 1e-4
    assert 0 < result["closest_right_to_peg_m"] <= start[1] + 1e-4
