"""The detector rule of experiments.pushtable_reward_refinement (docs/PUSHTABLE.md 3.1):
the highest recall among the (k, s) with precision >= 0.8, read from synthetic traces."""

from __future__ import annotations

import numpy as np

from efm_learning.actor import PracticeEpisode
from experiments.pushtable_reward_refinement import choose_detector, detector_grid


def _episode(d: list[float], gt: list[bool], seed: int) -> PracticeEpisode:
    n = len(d) - 1
    return PracticeEpisode(observations={}, action_tokens=np.zeros((n, 2), np.int64),
                           actions=np.zeros((n, 2), np.float32), instruction="x",
                           end_reason="step_limit", policy_version=0, seed=seed,
                           steps_to_go=np.asarray(d), gt_success=np.asarray(gt))


def test_a_one_frame_dip_is_only_caught_by_the_single_frame_detector() -> None:
    # 4 successes that stay under 1.2 from t=3; 2 near misses that dip to 1.0 for one frame
    good = [_episode([9, 5, 3, 1.1, 1.0, 1.1, 1.0], [0, 0, 0, 1, 1, 1, 1], i) for i in range(4)]
    dips = [_episode([9, 5, 1.0, 5, 6, 6, 6], [0] * 7, 10 + i) for i in range(2)]
    grid = detector_grid(good + dips)
    row = {(r["consecutive"], r["s"]): r for r in grid}
    assert row[(1, 1.25)]["precision"] == 4 / 6 and row[(1, 1.25)]["recall"] == 1.0
    assert row[(2, 1.25)]["precision"] == 1.0 and row[(2, 1.25)]["recall"] == 1.0
    chosen = choose_detector(grid)
    assert chosen["precision"] >= 0.8 and chosen["recall"] == 1.0 and chosen["consecutive"] >= 2
    assert choose_detector(grid, min_precision=1.01) is None
