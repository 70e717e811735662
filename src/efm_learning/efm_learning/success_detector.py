"""The learned success detector (paper Eq. 3): ``success(o, g) = 1[d(o, g) <= s]``.

``s`` is a small number of timesteps. The paper found this more reliable than a separate
success-classification objective (Section 2.2). It ends practice episodes; ground-truth
success from a simulator is for evaluation only and never replaces it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from efm_learning.validation import finite_array


@dataclass(frozen=True)
class SuccessDetector:
    """Thresholds expected steps-to-go: success when ``d <= threshold`` (Eq. 3)."""

    threshold: float

    def __post_init__(self) -> None:
        if not (np.isfinite(self.threshold) and self.threshold >= 0):
            raise ValueError(
                f"success threshold s must be a finite number >= 0, got {self.threshold}"
            )

    def __call__(self, expected_steps: object) -> np.ndarray:
        """Boolean success for each expected steps-to-go value."""
        d = finite_array(expected_steps, "expected_steps")
        return d <= self.threshold


def held_for(fired: object, k: int) -> np.ndarray:
    """True where the detector has fired on the last ``k`` observations in a row (along
    the last axis). ``k`` = 1 is Eq. 3 itself; ``k`` > 1 (``improve.success_consecutive``)
    is a departure from the paper that trades a few steps of delay for precision on
    near-miss scenes (docs/PUSHTABLE.md section 3)."""
    mask = np.asarray(fired, dtype=bool)
    if k < 1:
        raise ValueError(f"consecutive observations k must be >= 1, got {k}")
    held = mask.copy()
    for j in range(1, k):
        held[..., j:] &= mask[..., :-j]
        held[..., :j] = False
    return held


def precision_recall(predicted: object, actual: object) -> tuple[float, float]:
    """Precision and recall of detector decisions against ground truth (evaluation only).

    Returns NaN where undefined (no predicted or no actual positives).
    """
    p = np.asarray(predicted, dtype=bool)
    a = np.asarray(actual, dtype=bool)
    if p.shape != a.shape:
        raise ValueError(
            f"predicted and actual must have the same shape, got {p.shape} and {a.shape}"
        )
    true_pos = float(np.sum(p & a))
    precision = true_pos / p.sum() if p.sum() else float("nan")
    recall = true_pos / a.sum() if a.sum() else float("nan")
    return precision, recall
