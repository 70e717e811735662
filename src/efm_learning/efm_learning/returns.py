"""Discounted Monte-Carlo returns and the REINFORCE constant (Algorithm 1, Appendix C).

``R_t = sum_{i=t}^{T} gamma^(i-t) r_i`` with ``gamma = 0.9`` in the paper (footnote 4).
The Stage 2 loss is ``-c * R_t * log pi(a_t | o_t, g)`` with ``c = 5e-2``; Appendix C
derives ``c = (1 - gamma) / N`` where ``N`` is the guessed per-step progress in steps
(the paper guesses ``|N| ~ 2``).
"""

from __future__ import annotations

import numpy as np

from efm_learning.validation import finite_array

#: discount used for Stage 2 returns (paper footnote 4)
PAPER_GAMMA = 0.9
#: REINFORCE multiplicative constant (paper footnote 4, Appendix C)
PAPER_REINFORCE_C = 5e-2


def _check_gamma(gamma: float) -> float:
    if not (np.isfinite(gamma) and 0.0 <= gamma <= 1.0):
        raise ValueError(f"gamma must be in [0, 1], got {gamma}")
    return float(gamma)


def discounted_returns(rewards: object, gamma: float = PAPER_GAMMA) -> np.ndarray:
    """Monte-Carlo returns for one episode's rewards ``r_0 .. r_{T-1}`` (Algorithm 1)."""
    r = finite_array(rewards, "rewards", ndim=1)
    g = _check_gamma(gamma)
    returns = np.empty_like(r)
    running = 0.0
    for t in range(r.shape[0] - 1, -1, -1):
        running = r[t] + g * running
        returns[t] = running
    return returns


def reinforce_constant(gamma: float = PAPER_GAMMA, progress_per_step: float = 2.0) -> float:
    """``c = (1 - gamma) / N`` (Appendix C): keeps ``c * R_t`` roughly within [-1, 1]
    when the policy gains about ``N`` steps of progress per step. Defaults give 5e-2."""
    g = _check_gamma(gamma)
    if not (np.isfinite(progress_per_step) and progress_per_step > 0):
        raise ValueError(f"progress_per_step must be a positive number, got {progress_per_step}")
    return (1.0 - g) / progress_per_step
