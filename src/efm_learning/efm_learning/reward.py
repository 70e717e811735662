"""The Self-Improvement reward (paper Eq. 2): progress in expected steps-to-go.

``r(o_t, a_t, o_{t+1}, g) = d(o_t, g) - d(o_{t+1}, g)``: how much closer the robot got
to the goal by taking ``a_t``, as judged by a frozen Stage 1 model. Section 3 shows this
is a shaped reward whose telescoping sum supplies its own baseline.

Section 4.1.3 (Aloha): the insertion's end is not visible in the cameras, so a small
positive constant is added to the reward when the success condition is met. The paper's
simulation could read that condition from the simulator; efm never learns from ground
truth, so here the condition is the learned success detector's (the episode ended because
``d <= s``, Eq. 3), and the bonus goes to the action that reached it (the last one).
"""

from __future__ import annotations

import numpy as np

from efm_learning.validation import finite_array


def rewards_from_steps_to_go(
    steps_to_go: object, success_bonus: float = 0.0, succeeded: bool = False
) -> np.ndarray:
    """Rewards ``r_t = d_t - d_{t+1}`` from ``d_0 .. d_T`` (T + 1 values -> T rewards),
    plus ``success_bonus`` on the last reward when ``succeeded`` (Section 4.1.3).

    An episode with one observation and no action (T = 0) has no rewards.
    """
    d = finite_array(steps_to_go, "steps_to_go", ndim=1)
    if d.shape[0] < 1:
        raise ValueError("steps_to_go needs at least one value (d of the first observation)")
    bonus = float(success_bonus)
    if not np.isfinite(bonus) or bonus < 0.0:
        raise ValueError(f"success_bonus must be a finite number >= 0, got {success_bonus!r}")
    rewards = d[:-1] - d[1:]
    if succeeded and rewards.size:
        rewards[-1] += bonus
    return rewards
