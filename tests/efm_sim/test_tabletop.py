"""PushTable and BananaTable envs (paper Appendix D.1, D.2): API, physics, tasks."""

from __future__ import annotations

import gymnasium as gym
import mujoco
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from hypothesis import given, settings
from hypothesis import strategies as st

import efm_sim
from efm_sim import tasks
from efm_sim.bananatable import BananaTableEnv
from efm_sim.pushtable import BLOCK2BLOCK_THRESHOLD, PushTableEnv
from efm_sim.tabletop import ACTION_LIMIT, EE_LIMIT, location_xy

SMALL = 32


@pytest.fixture(scope="module")
def push_env() -> PushTableEnv:
    env = efm_sim.make_env("pushtable", image_size=SMALL)
    yield env
    env.close()


@pytest.fixture(scope="module")
def banana_env() -> BananaTableEnv:
    env = efm_sim.make_env("bananatable", image_size=SMALL)
    yield env
    env.close()


def test_make_env_names() -> None:
    assert efm_sim.ENV_NAMES == ("pointmass", "pushtable", "bananatable")
    with pytest.raises(ValueError, match=r"pointmass.*pushtable.*bananatable"):
        efm_sim.make_env("languagetable")


@pytest.mark.parametrize("gym_id", ["efm/PushTable-v0", "efm/BananaTable-v0"])
def test_check_env_via_gymnasium_make(gym_id: str) -> None:
    env = gym.make(gym_id, image_size=SMALL, render_mode="rgb_array")
    check_env(env.unwrapped, skip_render_check=False)
    env.close()


def test_observation_layout(push_env: PushTableEnv) -> None:
    obs, info = push_env.reset(seed=0)
    assert set(obs) == {"image", "previous_image", "proprio"}
    assert obs["image"].shape == (SMALL, SMALL, 3) and obs["image"].dtype == np.uint8
    np.testing.assert_array_equal(obs["image"], obs["previous_image"])  # after reset
    assert obs["proprio"].dtype == np.float32
    np.testing.assert_allclose(obs["proprio"], push_env.ee_xy(), atol=1e-6)
    assert set(info) >= {"instruction", "task_family", "success"}
    assert push_env.instruction == info["instruction"]
    nxt, *_ = push_env.step(np.array([0.03, 0.0], np.float32))
    np.testing.assert_array_equal(nxt["previous_image"], obs["image"])
    assert not np.array_equal(nxt["image"], obs["image"])  # the end-effector moved


def test_configurable_resolution() -> None:
    env = efm_sim.make_env("pushtable", image_size=(40, 56))
    obs, _ = env.reset(seed=0)
    assert obs["image"].shape == (40, 56, 3)
    env.close()


@settings(max_examples=5, deadline=None)
@given(seed=st.integers(0, 2**31 - 1))
def test_seeded_episodes_are_deterministic(seed: int) -> None:
    runs = []
    for _ in range(2):
        env = efm_sim.make_env("pushtable", image_size=SMALL)
        obs, info = env.reset(seed=seed)
        rng = np.random.default_rng(seed)
        for _ in range(5):
            obs, *_ = env.step(rng.uniform(-ACTION_LIMIT, ACTION_LIMIT, 2))
        runs.append((info["instruction"], obs["image"], env.object_poses()))
        env.close()
    assert runs[0][0] == runs[1][0]
    np.testing.assert_array_equal(runs[0][1], runs[1][1])
    np.testing.assert_array_equal(runs[0][2], runs[1][2])


def test_blocks_placed_without_overlap(push_env: PushTableEnv) -> None:
    for seed in range(30):
        push_env.reset(seed=seed)
        xy = push_env.object_poses()[:, :2]
        d = np.linalg.norm(xy[:, None] - xy[None], axis=-1) + np.eye(8)
        assert d.min() > 0.06
        assert np.linalg.norm(xy - push_env.ee_xy(), axis=1).min() > 0.04
        mujoco.mj_forward(push_env.model, push_env.data)
        assert push_env.data.ncon == 0 or push_env.task.family == tasks.SEPARATE


def test_reset_options_pick_family_and_instruction(push_env: PushTableEnv) -> None:
    for fam in tasks.PUSHTABLE_FAMILIES:
        _, info = push_env.reset(seed=1, options={"task_family": fam})
        assert info["task_family"] == fam and not info["success"]
    text = "slide the yellow star next to the green cube"
    _, info = push_env.reset(seed=2, options={"instruction": text})
    assert info["instruction"] == text and info["task_family"] == tasks.BLOCK2BLOCK


def test_family_weights_favour_block2block(push_env: PushTableEnv) -> None:
    fams = [push_env.reset(seed=s)[1]["task_family"] for s in range(200)]
    assert 0.35 < fams.count(tasks.BLOCK2BLOCK) / 200 < 0.65
    assert set(fams) == set(tasks.PUSHTABLE_FAMILIES)


def test_restricted_families() -> None:
    env = efm_sim.make_env("pushtable", image_size=SMALL, task_families=["separate"])
    assert {env.reset(seed=s)[1]["task_family"] for s in range(10)} == {"separate"}
    with pytest.raises(ValueError, match="valid families"):
        efm_sim.make_env("pushtable", image_size=SMALL, task_families=["stack"])


def test_bad_reset_options_refused(push_env: PushTableEnv) -> None:
    with pytest.raises(ValueError, match="valid families"):
        push_env.reset(options={"task_family": "stacking"})
    with pytest.raises(ValueError, match="valid forms"):
        push_env.reset(options={"instruction": "make me a sandwich"})
    with pytest.raises(ValueError, match="belongs to family"):
        push_env.reset(
            options={"task_family": "separate", "instruction": "push the red moon to the blue cube"}
        )
    with pytest.raises(ValueError, match="unknown reset options"):
        push_env.reset(options={"goal": [0, 0]})


@pytest.mark.parametrize(
    "bad", [np.array([np.nan, 0.0]), np.array([0.0, -np.inf]), np.zeros(3), np.zeros((2, 1))]
)
def test_bad_actions_raise(push_env: PushTableEnv, bad: np.ndarray) -> None:
    push_env.reset(seed=0)
    with pytest.raises(ValueError, match="action"):
        push_env.step(bad)


def test_large_actions_are_clipped_to_range_and_board(push_env: PushTableEnv) -> None:
    push_env.reset(seed=0)
    start = push_env.ee_xy()
    push_env.step(np.array([10.0, 0.0]))
    moved = push_env.ee_xy() - start
    assert moved[0] <= ACTION_LIMIT + 1e-3
    for _ in range(30):
        push_env.step(np.array([1.0, 1.0]))
    assert np.all(push_env.ee_xy() <= EE_LIMIT + 2e-3)


def test_step_limit_truncates() -> None:
    env = efm_sim.make_env("pushtable", image_size=SMALL, max_episode_steps=4)
    env.reset(seed=0)
    flags = [env.step(np.zeros(2, np.float32))[2:4] for _ in range(4)]
    assert flags[-1] == (False, True) and all(f == (False, False) for f in flags[:-1])


def test_block2block_ground_truth_success(push_env: PushTableEnv) -> None:
    push_env.reset(seed=0, options={"instruction": "push the red moon to the blue cube"})
    assert not push_env.task_success()
    q = push_env._obj_qpos
    cube = push_env.block_xy("blue cube")
    push_env.data.qpos[q[0, :2]] = cube + np.array([BLOCK2BLOCK_THRESHOLD - 0.01, 0.0])
    assert push_env.task_success()
    push_env.data.qpos[q[0, :2]] = cube + np.array([BLOCK2BLOCK_THRESHOLD + 0.01, 0.0])
    assert not push_env.task_success()


def test_pushing_moves_a_block(push_env: PushTableEnv) -> None:
    push_env.reset(seed=0, options={"instruction": "push the red moon to the blue cube"})
    q = push_env._obj_qpos
    push_env.data.qpos[q[0]] = [0.0, 0.0, 0.0]
    for i in range(1, 8):
        push_env.data.qpos[q[i, :2]] = [-0.15 + 0.04 * i, 0.17]
    push_env.data.qpos[push_env._ee_qpos] = [-0.08, 0.0]
    push_env.data.ctrl[:] = [-0.08, 0.0]
    mujoco.mj_forward(push_env.model, push_env.data)
    for _ in range(6):
        push_env.step(np.array([0.02, 0.0], np.float32))
    x, y, _ = push_env.object_poses()[0]
    assert x > 0.03 and abs(y) < 0.02


def test_banana_env_layout(banana_env: BananaTableEnv) -> None:
    _obs, info = banana_env.reset(seed=0)
    assert info["task_family"] == tasks.BANANA2LOCATION
    assert info["instruction"].endswith("of the table")
    assert banana_env.object_poses().shape == (1, 3)
    with pytest.raises(ValueError, match="valid forms"):
        banana_env.reset(options={"instruction": "push the red moon to the blue cube"})


def _push_banana_at(env: BananaTableEnv, x0: float) -> np.ndarray:
    env.reset(seed=0, options={"instruction": "push the banana to the top center of the table"})
    env.data.qpos[env._obj_qpos[0]] = [0.0, 0.0, 0.0]
    env.data.qpos[env._ee_qpos] = [x0, -0.06]
    env.data.ctrl[:] = [x0, -0.06]
    mujoco.mj_forward(env.model, env.data)
    for _ in range(6):
        env.step(np.array([0.0, 0.02], np.float32))
    return env.banana_pose()


def test_banana_spins_when_pushed_off_centre(banana_env: BananaTableEnv) -> None:
    """Paper Section 4.3: inaccurate pushes rotate the banana instead of moving it."""
    middle = _push_banana_at(banana_env, 0.0)
    tip = _push_banana_at(banana_env, 0.07)
    assert middle[1] > 0.04 and abs(middle[2]) < 0.1  # translates
    assert abs(tip[2]) > 0.5 and tip[1] < middle[1] / 2  # spins, barely translates


def test_banana_success_at_location(banana_env: BananaTableEnv) -> None:
    banana_env.reset(seed=3, options={"instruction": "nudge the banana to the left of the table"})
    assert not banana_env.task_success()
    banana_env.data.qpos[banana_env._obj_qpos[0, :2]] = location_xy("left") + 0.02
    assert banana_env.task_success()


FOUR = ["red moon", "blue cube", "green star", "yellow pentagon"]


def test_pushtable_with_a_subset_of_the_blocks() -> None:
    """The CPU-scale board (one block per colour): only those blocks exist and are named."""
    env = efm_sim.make_env("pushtable", image_size=SMALL, blocks=list(reversed(FOUR)),
                           task_families=["block2block"])
    try:
        assert env.blocks == tuple(FOUR)  # canonical order whatever the order given
        env.reset(seed=0)
        assert env.object_state().shape == (12,)  # (x, y, yaw) of 4 blocks
        named = set()
        for seed in range(40):
            env.reset(seed=seed)
            named |= {env.task.block, env.task.target}
        assert named == set(FOUR)
        with pytest.raises(ValueError, match="not on this board"):
            env.reset(options={"instruction": "push the red pentagon to the blue cube"})
    finally:
        env.close()
    for bad, match in ((["red moon"], "at least 2"), (["red moon", "purple cube"], "unknown"),
                       (["red moon", "red moon"], "distinct")):
        with pytest.raises(ValueError, match=match):
            PushTableEnv(image_size=SMALL, blocks=bad)
