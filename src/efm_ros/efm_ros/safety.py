"""The safety layer between a policy and a robot (issue 5 item 6).

Pure numpy, so it is tested without ROS and the policy node only wires it in:
* :meth:`SafetyLimits.limit` clips a chunk to the embodiment's limits and bounds the change
  between consecutive actions (``max_change_per_tick`` per dof; 0 disables it);
* :class:`Watchdog` says whether the newest observation (by its stamp) is too old to act on.
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
    """Stale-observation detector on the observation's own stamp (issue 17, defect 3).

    ``feed(stamp)`` records the capture time of the newest observation; ``fresh(now)`` is
    False when that stamp is more than ``timeout_s`` old, or more than ``timeout_s`` in the
    future (a clock that jumped, or a publisher whose clock is not synchronised). Arrival
    time is not used: a frozen camera that keeps re-sending one frame, or a frame that
    waited in a queue, is stale however recently it arrived. Times in seconds on the
    stamps' clock (ROS time).
    """

    timeout_s: float
    last_stamp: float | None = None

    def feed(self, stamp: float) -> None:
        self.last_stamp = stamp

    def age(self, now: float) -> float:
        return float("inf") if self.last_stamp is None else now - self.last_stamp

    def fresh(self, now: float) -> bool:
        return self.last_stamp is not None and abs(now - self.last_stamp) <= self.timeout_s
