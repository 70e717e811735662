"""Goal-relabelled steps-to-go negatives (data.steps_to_go_negatives, docs/PUSHTABLE.md)."""

from __future__ import annotations

import numpy as np
import pytest

from efm_learning.data import NEGATIVE_STEPS_TO_GO, NEGATIVE_TAIL, EpisodePool, task_key
from efm_sim import keys
from efm_sim.dataset import Episode

INSTRUCTIONS = [
    "move the red moon close to the blue cube",
    "push the blue cube to the red moon",  # the same pair: satisfied by the same scenes
    "move the green star close to the yellow pentagon",
]


def _episode(i: int, instruction: str, length: int = 10) -> Episode:
    states = np.full((length + 1, 2), float(i), dtype=np.float32)
    states[:, 1] = np.arange(length + 1)  # row t of episode i is (i, t)
    return Episode(env_name="pushtable", seed=i, instruction=instruction,
                   task_family="block2block", success=True, states=states,
                   actions=np.zeros((length, 2), np.float32))


def _pool(negatives: float) -> EpisodePool:
    pool = EpisodePool(lambda e: {keys.OBS_STATE: e.states}, True, negatives)
    for i, text in enumerate(INSTRUCTIONS * 4):
        pool.add(_episode(i, text))
    return pool


def test_task_key_is_symmetric_for_block2block() -> None:
    assert task_key(INSTRUCTIONS[0]) == task_key(INSTRUCTIONS[1])
    assert task_key(INSTRUCTIONS[0]) != task_key(INSTRUCTIONS[2])
    assert task_key("") is None


def test_negatives_are_final_scenes_with_another_task() -> None:
    pool = _pool(0.5)
    batch = pool.sample("steps_to_go", 4000, np.random.default_rng(0))
    neg = batch[keys.STEPS_TO_GO] == NEGATIVE_STEPS_TO_GO
    assert 0.45 < neg.mean() < 0.55
    states = batch[keys.OBS_STATE]
    # a negative shows one of the last NEGATIVE_TAIL observations of its episode ...
    assert np.all(states[neg, 1] >= 10 - (NEGATIVE_TAIL - 1))
    # ... under an instruction of another task (never the same pair of blocks)
    for row, text in zip(states[neg], np.asarray(batch[keys.INSTRUCTION])[neg], strict=True):
        own = INSTRUCTIONS[int(row[0]) % len(INSTRUCTIONS)]
        assert task_key(text) != task_key(own)
    # positives keep their true label T - t and their own instruction
    pos = ~neg
    np.testing.assert_array_equal(batch[keys.STEPS_TO_GO][pos], 10 - states[pos, 1])


def test_no_negatives_by_default() -> None:
    batch = _pool(0.0).sample("steps_to_go", 2000, np.random.default_rng(0))
    assert not np.any(batch[keys.STEPS_TO_GO] == NEGATIVE_STEPS_TO_GO)


def test_negatives_need_two_tasks() -> None:
    pool = EpisodePool(lambda e: {keys.OBS_STATE: e.states}, True, 0.3)
    pool.add(_episode(0, INSTRUCTIONS[0]))
    pool.add(_episode(1, INSTRUCTIONS[1]))
    with pytest.raises(ValueError, match="at least two tasks"):
        pool.sample("steps_to_go", 8, np.random.default_rng(0))
