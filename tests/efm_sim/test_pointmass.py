"""PointMass (the paper's pointmass notebook): dynamics, env contract, demonstrators."""

from __future__ import annotations

import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from hypothesis import given, settings
from hypothesis import strategies as st

import efm_sim
from efm_sim import keys
from efm_sim import pointmass as pm


def test_check_env_passes() -> None:
    check_env(efm_sim.make_env("pointmass"), skip_render_check=False)


def test_registered_with_gymnasium() -> None:
    import gymnasium as gym

    env = gym.make("efm/PointMass-v0")
    obs, info = env.reset(seed=0)
    assert obs.shape == (6,)
    assert info["instruction"] == "go to the goal"


def test_reset_samples_start_and_goal_in_ranges() -> None:
    env = pm.PointMassEnv()
    for seed in range(200):
        obs, info = env.reset(seed=seed)
        assert np.all(np.abs(obs[0:2]) <= 1.0)
        assert np.all(obs[2:4] == 0.0)
        assert np.all(np.abs(obs[4:6]) <= 0.95)
        assert info["task_family"] == "reach_goal"
        assert isinstance(info["success"], bool)


def test_dynamics_are_ten_substeps_of_euler() -> None:
    env = pm.PointMassEnv()
    env.reset(seed=0, options={"start": [0.0, 0.0], "goal": [0.9, 0.9]})
    a = np.array([1e-4, -2e-4], dtype=np.float32)
    obs, *_ = env.step(a)
    # vel after 10 substeps = 10 a; pos = sum_{k=1..10} k a = 55 a
    np.testing.assert_allclose(obs[2:4], 10 * a.astype(np.float64), rtol=1e-6)
    np.testing.assert_allclose(obs[0:2], 55 * a.astype(np.float64), rtol=1e-6)


def test_success_terminates_and_is_ground_truth() -> None:
    env = pm.PointMassEnv()
    _, info = env.reset(seed=1, options={"start": [0.5, 0.5], "goal": [0.6, 0.5]})
    assert info["success"]  # already within 0.15
    _obs, reward, terminated, truncated, info = env.step(np.zeros(2, np.float32))
    assert terminated and not truncated and info["success"] and reward == 1.0


def test_termination_on_success_can_be_disabled() -> None:
    env = pm.PointMassEnv(terminate_on_success=False, max_episode_steps=3)
    env.reset(seed=1, options={"start": [0.5, 0.5], "goal": [0.6, 0.5]})
    flags = [env.step(np.zeros(2, np.float32))[2:4] for _ in range(3)]
    assert flags == [(False, False), (False, False), (False, True)]


def test_truncates_at_140_steps() -> None:
    env = pm.PointMassEnv()
    env.reset(seed=0, options={"start": [-0.9, -0.9], "goal": [0.9, 0.9]})
    for t in range(140):
        _, _, terminated, truncated, _ = env.step(np.zeros(2, np.float32))
        assert not terminated
        assert truncated == (t == 139)


@pytest.mark.parametrize(
    "bad", [np.array([np.nan, 0.0]), np.array([np.inf, 0.0]), np.zeros(3), np.zeros((1, 2)), "x"]
)
def test_bad_actions_raise(bad: object) -> None:
    env = pm.PointMassEnv()
    env.reset(seed=0)
    with pytest.raises(ValueError, match="action"):
        env.step(bad)


def test_out_of_range_action_is_clipped() -> None:
    env_a, env_b = pm.PointMassEnv(), pm.PointMassEnv()
    env_a.reset(seed=3)
    env_b.reset(seed=3)
    big = env_a.step(np.array([5.0, -5.0]))[0]
    clipped = env_b.step(env_b.action_space.high * np.array([1, -1]))[0]
    np.testing.assert_array_equal(big, clipped)


def test_unknown_family_or_instruction_refused() -> None:
    env = pm.PointMassEnv()
    with pytest.raises(ValueError, match="reach_goal"):
        env.reset(options={"task_family": "stack"})
    with pytest.raises(ValueError, match="go to the goal"):
        env.reset(options={"instruction": "fly away"})
    with pytest.raises(ValueError, match="unknown reset options"):
        env.reset(options={"colour": "red"})


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**31 - 1))
def test_seeded_reset_is_deterministic(seed: int) -> None:
    a, b = pm.PointMassEnv(), pm.PointMassEnv()
    oa, _ = a.reset(seed=seed)
    ob, _ = b.reset(seed=seed)
    np.testing.assert_array_equal(oa, ob)
    act = np.array([3e-4, -1e-4], np.float32)
    np.testing.assert_array_equal(a.step(act)[0], b.step(act)[0])


def test_straight_pd_reference_reaches_goal_in_about_12_steps() -> None:
    eps = pm.generate_demos(300, seed=0, straight=True, min_length=0)
    stats = pm.summarize(eps)
    assert stats.success_rate == 1.0
    assert 10.0 < stats.mean_length < 15.0  # notebook reference: 12.5


def test_waypoint_demos_match_notebook_statistics() -> None:
    eps = pm.generate_demos(1000, seed=0)
    stats = pm.summarize(eps)
    assert stats.num_episodes == 1000
    assert stats.success_rate > 0.98
    assert 65.0 < stats.mean_length < 90.0  # notebook: mean 76-77 actions
    assert min(e.length for e in eps) >= pm.MIN_DEMO_LENGTH
    acts = np.concatenate([e.actions for e in eps])
    assert np.abs(acts).max() < pm.ACTION_LIMIT  # demos never clip


def test_vectorised_demos_replay_exactly_in_env() -> None:
    """The numpy-batched generator equals env + WaypointPDDemonstrator step by step."""
    env = pm.PointMassEnv()
    for ep in pm.generate_demos(20, seed=123):
        obs, _ = env.reset(seed=ep.seed)
        demo = pm.WaypointPDDemonstrator()
        demo.reset(obs, np.random.default_rng([ep.seed, 1]))
        np.testing.assert_array_equal(obs, ep.states[0])
        for t, action in enumerate(ep.actions):
            np.testing.assert_array_equal(demo.act(obs), action)
            obs, _, terminated, truncated, info = env.step(action)
            np.testing.assert_array_equal(obs, ep.states[t + 1])
        assert terminated or truncated
        assert info["success"] == ep.success


def test_generate_demos_is_seeded() -> None:
    a = pm.generate_demos(5, seed=7)
    b = pm.generate_demos(5, seed=7)
    c = pm.generate_demos(5, seed=8)
    assert [e.seed for e in a] == [e.seed for e in b]
    assert all(np.array_equal(x.actions, y.actions) for x, y in zip(a, b, strict=True))
    assert not np.array_equal(a[0].states[0], c[0].states[0])


def test_stack_transitions_steps_to_go() -> None:
    eps = pm.generate_demos(3, seed=0)
    flat = pm.stack_transitions(eps)
    n = sum(e.length for e in eps)
    assert flat[keys.OBS_STATE].shape == (n, 6)
    assert flat[keys.ACTION].shape == (n, 2)
    first = eps[0].length
    assert flat[keys.STEPS_TO_GO][0] == first and flat[keys.STEPS_TO_GO][first - 1] == 1
    assert flat[keys.DONE].sum() == 3


def test_render_shows_point_and_goal() -> None:
    env = pm.PointMassEnv(render_mode="rgb_array", image_size=64)
    env.reset(seed=0, options={"start": [-0.5, -0.5], "goal": [0.5, 0.5]})
    img = env.render()
    assert img is not None and img.shape == (64, 64, 3) and img.dtype == np.uint8
    red = (img[..., 0] > 180) & (img[..., 1] < 80)
    green = (img[..., 1] > 150) & (img[..., 0] < 100)
    assert red.any() and green.any()
    ys, xs = np.nonzero(red)
    assert xs.mean() < 32 and ys.mean() > 32  # bottom-left: +y is up in the image
