"""Steps-to-go: discretised remaining steps and the expected value d(o, g) (paper Eq. 1).

Stage 1 trains the EFM to predict, for an observation ``o_t`` and a goal reached at step
``t'``, a categorical distribution over ``t' - t`` (Section 2.1). Appendix E tokenizes the
count into bins:

* LanguageTable / BananaTable: the range 0..100 steps in 50 bins (E.1),
  :func:`language_table_steps_to_go`;
* ALOHA: one token per step 0..300 (E.2), :func:`aloha_steps_to_go`.

:class:`StepsToGoTokenizer` covers both: ``num_bins`` equal bins over the integer range
``0..max_steps``. Counts above ``max_steps`` fall in the last bin (so every label trains a
bin; the public pointmass notebook passed raw counts and left counts >= 50 untrained).
Each bin's value is the mean of the integer step counts it covers, so for one token per
step the value is the count itself and ``d`` is exact.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from efm_learning.validation import finite_array


def expected_steps(probs: Any, values: Any, in_range: bool = False) -> Any:
    """d(o, g) = E[steps-to-go] from bin probabilities ``(..., bins)`` (Eq. 1); numpy or
    torch alike.

    ``in_range``: the expectation given that the goal is within range, over every bin but
    the last. The last bin holds ">= max_steps" and, with goal-relabelled negatives
    (``data.steps_to_go_negatives``), "this scene is not on the way to g"; its mass
    flickers between frames, and as a reward (Eq. 2) it made the per-step reward noise of
    PushTable practice five times larger (docs/PUSHTABLE.md). A departure from Eq. 1,
    used only for the reward (``improve.reward_steps_to_go``); the success detector keeps
    the full expectation.
    """
    if not in_range:
        return probs @ values
    inside = probs[..., :-1]
    return (inside @ values[:-1]) / (inside.sum(-1) + 1e-12)


@dataclass(frozen=True)
class StepsToGoTokenizer:
    """``num_bins`` bins over the integer steps-to-go range ``0..max_steps`` (Appendix E)."""

    max_steps: int
    num_bins: int
    bin_values: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, got {self.max_steps}")
        if not 2 <= self.num_bins <= self.max_steps + 1:
            raise ValueError(
                f"num_bins must be in [2, max_steps + 1 = {self.max_steps + 1}], "
                f"got {self.num_bins}"
            )
        steps = np.arange(self.max_steps + 1)
        bins = self._bin_of(steps)
        counts = np.bincount(bins, minlength=self.num_bins)
        if np.any(counts == 0):  # cannot happen for num_bins <= max_steps + 1; guard anyway
            raise ValueError(f"{self.num_bins} bins over 0..{self.max_steps} leave a bin empty")
        values = np.bincount(bins, weights=steps, minlength=self.num_bins) / counts
        values.setflags(write=False)
        object.__setattr__(self, "bin_values", values)

    @property
    def bin_width(self) -> float:
        """Width of a bin in steps (may be fractional; bins hold whole step counts)."""
        return (self.max_steps + 1) / self.num_bins

    def _bin_of(self, steps: np.ndarray) -> np.ndarray:
        clipped = np.clip(steps, 0, self.max_steps)
        index = np.floor(clipped * self.num_bins / (self.max_steps + 1)).astype(np.int64)
        return np.minimum(index, self.num_bins - 1)

    def encode(self, steps_to_go: object) -> np.ndarray:
        """Bin indices (int64) for non-negative step counts; counts > max_steps -> last bin."""
        steps = finite_array(steps_to_go, "steps_to_go")
        if steps.size and steps.min() < 0:
            raise ValueError(f"steps_to_go must be >= 0, got minimum {steps.min()}")
        return self._bin_of(steps)

    def decode(self, bins: object) -> np.ndarray:
        """Step value (mean count) of each bin index."""
        index = np.asarray(bins)
        if index.size and (
            not np.issubdtype(index.dtype, np.integer)
            or index.min() < 0
            or index.max() >= self.num_bins
        ):
            raise ValueError(f"bins must be integers in [0, {self.num_bins - 1}]")
        return self.bin_values[index]

    def expected_steps(self, probabilities: object) -> np.ndarray:
        """d(o, g) = E[steps-to-go] for distributions over the bins, shape ``(..., num_bins)``.

        Each distribution must be non-negative and sum to 1 (within 1e-3); paper Eq. 1.
        """
        probs = finite_array(probabilities, "probabilities")
        if probs.ndim < 1 or probs.shape[-1] != self.num_bins:
            raise ValueError(
                f"probabilities must end in dimension {self.num_bins}, got shape {probs.shape}"
            )
        if probs.size and probs.min() < 0:
            raise ValueError("probabilities must be non-negative")
        sums = probs.sum(axis=-1)
        if sums.size and np.max(np.abs(sums - 1.0)) > 1e-3:
            raise ValueError(
                f"probabilities must sum to 1, got sums in [{sums.min()}, {sums.max()}]"
            )
        return probs @ self.bin_values


def expected_steps_from_logits(logits: object, bin_values: object) -> np.ndarray:
    """d(o, g) from unnormalised logits ``(..., num_bins)`` (softmax, then Eq. 1)."""
    values = finite_array(bin_values, "bin_values", ndim=1)
    z = finite_array(logits, "logits")
    if z.ndim < 1 or z.shape[-1] != values.shape[0]:
        raise ValueError(f"logits must end in dimension {values.shape[0]}, got shape {z.shape}")
    z = z - z.max(axis=-1, keepdims=True)
    probs = np.exp(z)
    probs /= probs.sum(axis=-1, keepdims=True)
    return probs @ values


def language_table_steps_to_go() -> StepsToGoTokenizer:
    """0..100 steps in 50 bins (paper Appendix E.1)."""
    return StepsToGoTokenizer(max_steps=100, num_bins=50)


def aloha_steps_to_go() -> StepsToGoTokenizer:
    """One token per step over 0..300 (paper Appendix E.2: 1500 steps / action chunk 5)."""
    return StepsToGoTokenizer(max_steps=300, num_bins=301)


def steps_to_go_labels(length: int) -> np.ndarray:
    """Steps-to-go for each observation ``o_0 .. o_T`` of an episode whose goal is reached
    at its final observation: ``T - t`` (Section 2.1, goal at the last timestep)."""
    if length < 0:
        raise ValueError(f"length must be >= 0, got {length}")
    return np.arange(length, -1, -1, dtype=np.int64)
