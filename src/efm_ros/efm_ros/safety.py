"""The safety layer between a policy and a robot (issue 5 item 6).

Pure numpy, so it is tested without ROS and the policy node only wires it in:
* :meth:`SafetyLimits.limit` clips a chunk to the embodiment's limits and bounds the change
  between consecutive actions (``max_change_per_tick`` per dof; 0 disables it);
* :class:`Watchdog` says whether the newest observation is too old to act on.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from efm_ros.embodiments import Embodiment


@dataclass
class SafetyLimits:
    """Clip to limits and rate-limit successive actions of one station."""

    embodiment: Embodiment
    max_change_per_tick: float = 0.0
    last: np.ndarray | None = None

    def limit(self, chunk: np.ndarray) -> np.ndarray:
        """``(chunk, dof)`` -> limited copy; remembers the last action it let through."""
        values = np.asarray(chunk, dtype=np.float64)
        if values.ndim != 2 or values.shape[1] != self.embodiment.dof:
            raise ValueError(f"chunk must be (n, {self.embodiment.dof}), got {values.shape}")
        if not np.all(np.isfinite(values)):
            raise ValueError("policy produced NaN/inf actions")
        out = self.embodiment.clip(values)
        if self.max_change_per_tick > 0:
            previous = self.last
            for i in range(out.shape[0]):
                if previous is not None:
                    step = np.clip(
                        out[i] - previous, -self.max_change_per_tick, self.max_change_per_tick
                    )
                    out[i] = previous + step
                previous = out[i]
        self.last = out[-1].copy() if len(out) else self.last
        return out

    def reset(self) -> None:
        """Forget the last action (after a hold or a new episode)."""
        self.last = None


@dataclass
class Watchdog:
    """Stale-observation detector: ``fresh(now)`` is False when nothing arrived within
    ``timeout_s`` (times in seconds, any monotonic clock)."""

    timeout_s: float
    last_seen: float | None = None

    def feed(self, now: float) -> None:
        self.last_seen = now

    def fresh(self, now: float) -> bool:
        return self.last_seen is not None and now - self.last_seen <= self.timeout_s
