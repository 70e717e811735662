"""Scripted PushTable demonstrators: success, human-like sub-optimality, recording."""

from __future__ import annotations

import numpy as np
import pytest

import efm_sim
from efm_sim import tasks
from efm_sim.demonstrators import PushTableDemonstrator, make_demonstrator
from efm_sim.rollout import record_episode


@pytest.fixture(scope="module")
def env():
    env = efm_sim.make_env("pushtable", image_size=32)
    yield env
    env.close()


def _run(env, q: float, family: str, seeds: range) -> list:
    demo = PushTableDemonstrator(suboptimality=q)
    return [record_episode(env, demo, s, options={"task_family": family}) for s in seeds]


def test_block2block_success_rate(env) -> None:
    """Full 200-episode number: benchmarks/sim_demonstrator.py (docs/SIM.md)."""
    eps = _run(env, 0.5, tasks.BLOCK2BLOCK, range(1000, 1030))
    assert np.mean([e.success for e in eps]) >= 0.85
    assert all(e.task_family == tasks.BLOCK2BLOCK for e in eps)


@pytest.mark.parametrize("family", [tasks.BLOCK2LOCATION, tasks.SEPARATE])
def test_other_families_mostly_succeed(env, family: str) -> None:
    eps = _run(env, 0.5, family, range(2000, 2012))
    assert np.mean([e.success for e in eps]) >= 0.7


def test_suboptimality_knob_makes_demos_slower_and_shakier(env) -> None:
    clean = _run(env, 0.0, tasks.BLOCK2BLOCK, range(20))
    human = _run(env, 1.0, tasks.BLOCK2BLOCK, range(20))
    assert np.mean([e.length for e in human]) > 1.2 * np.mean([e.length for e in clean])

    def jerk(eps: list) -> float:
        return float(np.mean([np.abs(np.diff(e.actions, axis=0)).mean() for e in eps]))

    assert jerk(human) > jerk(clean)


def test_demonstrations_are_seeded(env) -> None:
    a = _run(env, 0.7, tasks.BLOCK2BLOCK, range(3))
    b = _run(env, 0.7, tasks.BLOCK2BLOCK, range(3))
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x.actions, y.actions)
        np.testing.assert_array_equal(x.images, y.images)


def test_recorded_episode_layout(env) -> None:
    ep = _run(env, 0.5, tasks.BLOCK2BLOCK, range(5, 6))[0]
    t = ep.length
    assert ep.images.shape == (t + 1, 32, 32, 3)
    assert ep.states.shape == (t + 1, 2) and ep.actions.shape == (t, 2)
    assert ep.env_states.shape == (t + 1, 24)
    assert np.all(np.abs(ep.actions) <= env.action_space.high)
    assert ep.env_name == "pushtable"


def test_failures_are_marked() -> None:
    short = efm_sim.make_env("pushtable", image_size=32, max_episode_steps=3)
    ep = record_episode(short, PushTableDemonstrator(), 0, options={"task_family": "block2block"})
    assert ep.length == 3 and not ep.success
    short.close()


def test_bad_knob_and_unbound_use_refused() -> None:
    with pytest.raises(ValueError, match="suboptimality"):
        PushTableDemonstrator(suboptimality=1.5)
    with pytest.raises(RuntimeError, match="bind"):
        PushTableDemonstrator().reset(None, np.random.default_rng(0))
    with pytest.raises(TypeError, match="PushTableEnv"):
        PushTableDemonstrator().bind(efm_sim.make_env("pointmass"))


def test_no_demonstrator_for_bananatable() -> None:
    with pytest.raises(ValueError, match="novel task"):
        make_demonstrator("bananatable")
    assert isinstance(make_demonstrator("pushtable"), PushTableDemonstrator)


def test_block2block_on_a_four_block_board() -> None:
    env = efm_sim.make_env("pushtable", image_size=32, task_families=["block2block"],
                           blocks=["red moon", "blue cube", "green star", "yellow pentagon"])
    try:
        episodes = [record_episode(env, PushTableDemonstrator(), s) for s in range(20)]
    finally:
        env.close()
    assert np.mean([e.success for e in episodes]) >= 0.9
