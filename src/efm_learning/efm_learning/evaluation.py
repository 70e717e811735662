"""Ground-truth evaluation rollouts (simulation only; never a learning signal).

The policy runs on a fixed set of tasks (the same env seeds every time, so rounds are
comparable); an episode ends at the simulator's success or at the step limit. Reported
like the public pointmass notebook: success rate and mean episode length with failures
counted as the step limit, plus the mean length of successful episodes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from efm_learning.actor import EnvActor, PracticeEpisode, VariableSource
from efm_learning.models import EFM
from efm_learning.protocol import task_seeds


@dataclass
class EvalResult:
    success_rate: float
    mean_length: float
    mean_success_length: float
    num_episodes: int
    episodes: list[PracticeEpisode] = field(default_factory=list, repr=False)

    def as_metrics(self, prefix: str = "eval") -> dict[str, float]:
        return {
            f"{prefix}/success_rate": self.success_rate,
            f"{prefix}/mean_length": self.mean_length,
            f"{prefix}/mean_success_length": self.mean_success_length,
        }


def summarize_ground_truth(episodes: list[PracticeEpisode], max_steps: int) -> EvalResult:
    success = np.array([e.end_reason == "ground_truth" for e in episodes], dtype=bool)
    lengths = np.array(
        [e.length if s else max_steps for e, s in zip(episodes, success, strict=True)]
    )
    ok = lengths[success]
    return EvalResult(
        success_rate=float(success.mean()) if len(episodes) else float("nan"),
        mean_length=float(lengths.mean()) if len(episodes) else float("nan"),
        mean_success_length=float(ok.mean()) if len(ok) else float("nan"),
        num_episodes=len(episodes),
        episodes=episodes,
    )


def success_change(before: float, after: float, n_before: int, n_after: int) -> dict:
    """Is ``after`` a real change over ``before``? Two success rates on ``n`` tasks each:
    the difference, its 95% interval (normal approximation, unpooled) and the two-sided
    p-value of the pooled two-proportion z-test. Tasks are the same fixed seeds for both,
    so this unpaired test is conservative."""
    if n_before < 1 or n_after < 1:
        raise ValueError("both evaluations need at least one task")
    for rate in (before, after):
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"success rate {rate} is not in [0, 1]")
    diff = after - before
    se = math.sqrt(before * (1 - before) / n_before + after * (1 - after) / n_after)
    pooled = (before * n_before + after * n_after) / (n_before + n_after)
    se0 = math.sqrt(pooled * (1 - pooled) * (1 / n_before + 1 / n_after))
    p = 1.0 if se0 == 0 else math.erfc(abs(diff) / se0 / math.sqrt(2))
    return {"difference": diff, "ci95": (diff - 1.96 * se, diff + 1.96 * se), "p_value": p}


class Evaluator:
    """Reusable ground-truth evaluation on ``num_episodes`` fixed tasks."""

    def __init__(
        self,
        env_name: str,
        policy: EFM,
        max_episode_steps: int,
        num_episodes: int,
        greedy: bool = False,
        num_envs: int = 50,
        seed: int = 0,
        steps_to_go_model: EFM | None = None,
        env_kwargs: dict[str, Any] | None = None,
        split: str = "tuning",
    ) -> None:
        """``split``: the protocol's task split (``efm_learning.protocol``): Stage 2's
        per-round evaluation runs on "tuning" tasks; reports use "report"."""
        self.tasks = task_seeds(split, num_episodes)
        self.num_episodes = num_episodes
        self._seed = seed + 99991
        self.max_episode_steps = max_episode_steps
        self.actor = EnvActor(
            env_name,
            policy,
            steps_to_go_model,
            success_threshold=0.0,
            max_episode_steps=max_episode_steps,
            num_envs=min(num_envs, max(1, num_episodes)),
            seed=seed + 99991,
            greedy=greedy,
            end_on="ground_truth",
            env_kwargs=env_kwargs,
        )

    def evaluate(
        self, source: VariableSource | None = None, policy: EFM | None = None
    ) -> EvalResult:
        if source is not None:
            self.actor.update(source)
        if policy is not None:
            self.actor.policy.load_state_dict(policy.state_dict())
        self.actor.set_seeds(iter(self.tasks))
        self.actor.generator.manual_seed(self._seed)
        episodes = self.actor.run(num_episodes=self.num_episodes)
        return summarize_ground_truth(episodes, self.max_episode_steps)
