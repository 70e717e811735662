"""The Self-Improvement reward (paper Eq. 2): progress in expected steps-to-go.

``r(o_t, a_t, o_{t+1}, g) = d(o_t, g) - d(o_{t+1}, g)``: how much closer the robot got
to the goal by taking ``a_t``, as judged by a frozen Stage 1 model. Section 3 shows this
is a shaped reward whose telescoping sum supplies its own baseline.
"""

from __future__ import annotations

import numpy as np

from efm_learning.validation import finite_array


def rewards_from_steps_to_go(steps_to_go: object) -> np.ndarray:
    """Rewards ``r_t = d_t - d_{t+1}`` from ``d_0 .. d_T`` (T + 1 values -> T rewards).

    An episode with one observation and no action (T = 0) has no rewards.
    """
    d = finite_array(steps_to_go, "steps_to_go", ndim=1)
    if d.shape[0] < 1:
        raise ValueError("steps_to_go needs at least one value (d of the first observation)")
    return d[:-1] - d[1:]
