"""When to stop practising, without ground truth (paper Section 6).

Self-Improvement optimises a *learned* reward; pushed too far the policy over-optimises
it (Section 6: "stop at a success plateau"). A real robot has no simulator to tell it
when, so the rule reads only what practice already produces: the learned success
detector's verdict (``d <= s``, Eq. 3) on each finished episode, grouped by the policy
version that acted.

:class:`PlateauRule`: each version's detector success rate is pooled with the versions
before it (``window`` versions, weighted by their episodes) to damp the noise of a few
dozen episodes per version. Only full windows are judged: a first "window" of one version
is as noisy as no pooling, and one lucky early estimate could otherwise stand as the best
for the whole run (the fresh-clone demo of c939f2b kept v0 at 0.68 from 25 episodes, its
first full window was 0.65; docs/DEMO.md). The version ending the best pooled window is the
one kept; practice stops once ``patience`` further versions have not beaten that best by
more than ``min_gain``. The coordinator (ROS) and the in-process ``self_improve`` use it.

:class:`ValidationBudget`: the same question for Stage 1, answered from the held-out
losses only: train until neither the BC nor the steps-to-go validation loss has improved
for a while, with ``sft.steps`` as the cap, so that the budget does not depend on when a
seed happens to leave the early plateau (docs/PUSHTABLE.md section 4).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field


@dataclass
class PlateauDecision:
    """What the rule says after a version's episodes are in."""

    #: pooled detector success rate of the window ending at this version
    pooled_rate: float
    #: the version to keep (best pooled window so far)
    best_version: int
    best_rate: float
    #: versions since the best one
    stale: int
    stop: bool


@dataclass
class PlateauRule:
    """Stop at a plateau of the learned detector's success rate (GT-free, Section 6)."""

    #: stop after this many versions without a gain (0 = never stop, only track the best)
    patience: int
    #: a pooled rate must beat the best by more than this to count as a gain
    min_gain: float = 0.02
    #: versions pooled for each rate (1 = the version alone)
    window: int = 3
    #: versions with fewer finished episodes than this are not judged
    min_episodes: int = 8
    _history: list[tuple[int, int, int]] = field(default_factory=list, repr=False)
    _best: tuple[int, float] = field(default=(-1, -1.0), repr=False)
    _stale: int = field(default=0, repr=False)
    _last_version: int = field(default=-1, repr=False)

    def __post_init__(self) -> None:
        if self.patience < 0:
            raise ValueError(f"patience must be >= 0, got {self.patience}")
        if not 0.0 <= self.min_gain <= 1.0:
            raise ValueError(f"min_gain must be in [0, 1], got {self.min_gain}")
        if self.window < 1 or self.min_episodes < 1:
            raise ValueError("window and min_episodes must be >= 1")

    @property
    def best_version(self) -> int:
        return self._best[0]

    def observe(self, version: int, successes: int, episodes: int) -> PlateauDecision | None:
        """Record version ``version``'s detector successes out of ``episodes`` finished
        episodes; ``None`` when it is not judged: too few episodes, or fewer than
        ``window`` judged versions so far (no full window yet)."""
        if episodes < 0 or not 0 <= successes <= episodes:
            raise ValueError(f"need 0 <= successes <= episodes, got {successes}/{episodes}")
        if version <= self._last_version:
            raise ValueError(f"versions must increase: {version} after {self._last_version}")
        self._last_version = version
        if episodes < self.min_episodes:
            return None
        self._history.append((version, successes, episodes))
        if len(self._history) < self.window:
            return None
        recent = self._history[-self.window:]
        pooled = sum(s for _, s, _ in recent) / sum(n for _, _, n in recent)
        if pooled > self._best[1] + self.min_gain or self._best[0] < 0:
            self._best, self._stale = (version, pooled), 0
        else:
            self._stale += 1
        stop = self.patience > 0 and self._stale >= self.patience
        return PlateauDecision(pooled, self._best[0], self._best[1], self._stale, stop)


@dataclass
class ValidationBudget:
    """Stop Stage 1 once no validation loss improves (GT-free; issue 13, Appendix B).

    Each evaluation passes the held-out losses (``bc``, ``steps_to_go``). A loss counts as
    improving when it falls below its reference by more than ``min_rel_gain`` of the
    reference; the reference then moves to it. Training stops once every loss has gone
    ``patience_steps`` steps without improving. Appendix B still picks the checkpoints
    (``best_bc``, ``best_steps_to_go``); this rule only decides how long to train, from
    the same held-out losses, never from ground truth.
    """

    patience_steps: int
    min_rel_gain: float = 0.01
    _reference: dict[str, float] = field(default_factory=dict)
    _improved_at: dict[str, int] = field(default_factory=dict)
    stopped_at: int = -1

    def __post_init__(self) -> None:
        if self.patience_steps < 0:
            raise ValueError(f"patience_steps must be >= 0, got {self.patience_steps}")
        if not 0.0 <= self.min_rel_gain < 1.0:
            raise ValueError(f"min_rel_gain must be in [0, 1), got {self.min_rel_gain}")

    @property
    def stopped(self) -> bool:
        return self.stopped_at >= 0

    def observe(self, step: int, losses: dict[str, float]) -> bool:
        """Record the validation losses at ``step``; True when training should stop."""
        if not losses:
            raise ValueError("no validation losses to judge")
        for name, loss in losses.items():
            if math.isnan(loss):  # never an improvement
                continue
            ref = self._reference.get(name)
            if ref is None or loss < ref - self.min_rel_gain * abs(ref):
                self._reference[name], self._improved_at[name] = float(loss), int(step)
        if self.patience_steps == 0 or self.stopped:
            return self.stopped
        if all(step - self._improved_at.get(name, step) >= self.patience_steps
               for name in losses):
            self.stopped_at = int(step)
        return self.stopped

    def state(self) -> dict:
        """JSON-able state for the trainer checkpoint (resume continues the same rule)."""
        return {"reference": dict(self._reference), "improved_at": dict(self._improved_at),
                "stopped_at": self.stopped_at}

    def restore(self, state: dict) -> None:
        self._reference = {str(k): float(v) for k, v in state["reference"].items()}
        self._improved_at = {str(k): int(v) for k, v in state["improved_at"].items()}
        self.stopped_at = int(state["stopped_at"])
