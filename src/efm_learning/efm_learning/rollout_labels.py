"""Steps-to-go labels for the policy's own rollouts (paper Section 6, a departure).

Stage 1 learns steps-to-go from demonstrations only, which never show the policy's own
failure states. The paper's Section 6 names the remedy: "collect a dataset of robot
rollouts using robot policies, and label those trajectories for training the steps-to-go
estimator". A rollout is labelled by one success flag per observation (an operator's
mark on a real station; in simulation the ground truth stands in for that operator, on
**tuning** tasks only, docs/EVALUATION.md):

* an observation from which the rollout reaches success at a later (or the same)
  observation t' gets the exact label ``t' - t``, as a demonstration would;
* an observation from which the rollout never reaches success is **censored**: all we
  know is that more than ``T - t`` steps remain. Its loss is ``-log P(bin > bin(T - t))``,
  the mass on the bins after the one holding ``T - t`` (bin granularity: the last
  observation of a failed rollout is "not in the success bin").

:class:`LabelledRollouts` holds the labelled observations for sampling and writes them to
an ``.npz`` read back without pickle.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from efm_learning.validation import finite_array
from efm_sim import keys

#: numpy batch key: bool ``(B,)``, the label is a lower bound (the rollout never succeeded)
STEPS_TO_GO_CENSORED = "steps_to_go_censored"
#: observation arrays a labelled rollout keeps (those the episodes have)
KEPT_OBSERVATIONS = (keys.OBS_IMAGE, keys.OBS_STATE)


def rollout_steps_to_go(success: object) -> tuple[np.ndarray, np.ndarray]:
    """``(labels, censored)`` for observations ``o_0 .. o_T`` of one rollout with success
    flags ``success[t]``: steps to the next success at or after t (exact), else ``T - t``
    flagged as censored (more than that many steps remain)."""
    flags = np.asarray(success)
    if flags.ndim != 1 or flags.size == 0 or flags.dtype != bool:
        raise ValueError(f"success must be a non-empty 1-D bool array, got {flags.dtype} "
                         f"of shape {flags.shape}")
    last = len(flags) - 1
    labels = np.empty(len(flags), dtype=np.int64)
    censored = np.empty(len(flags), dtype=bool)
    next_success = -1
    for t in range(last, -1, -1):
        if flags[t]:
            next_success = t
        if next_success >= 0:
            labels[t], censored[t] = next_success - t, False
        else:
            labels[t], censored[t] = last - t, True
    return labels, censored


class LabelledRollouts:
    """Labelled rollout observations (image, state, instruction, label, censored flag)."""

    def __init__(self, observations: dict[str, np.ndarray], instructions: Sequence[str],
                 labels: np.ndarray, censored: np.ndarray) -> None:
        n = len(labels)
        if len(instructions) != n or len(censored) != n or n == 0:
            raise ValueError(f"labelled rollouts need equal, non-zero lengths; got {n} labels, "
                             f"{len(instructions)} instructions, {len(censored)} flags")
        for key, value in observations.items():
            if len(value) != n:
                raise ValueError(f"{key} has {len(value)} rows for {n} labels")
        labels = np.asarray(labels)
        if labels.dtype.kind not in "iu" or labels.min() < 0:
            raise ValueError("labels must be non-negative integers")
        self.observations = observations
        self.instructions = np.asarray(instructions, dtype=str)
        self.labels = labels.astype(np.int64)
        self.censored = np.asarray(censored, dtype=bool)

    @classmethod
    def from_episodes(cls, episodes: Sequence[Any], success: Sequence[object] | None = None
                      ) -> LabelledRollouts:
        """From practice episodes (``efm_learning.actor.PracticeEpisode``) and one success
        flag per observation each (``success``; by default each episode's ``gt_success``,
        the simulator standing in for an operator's labels)."""
        flags = success if success is not None else [e.gt_success for e in episodes]
        if len(flags) != len(episodes) or not episodes:
            raise ValueError("one success-flag array per episode, and at least one episode")
        kept = [k for k in KEPT_OBSERVATIONS if k in episodes[0].observations]
        obs: dict[str, list[np.ndarray]] = {k: [] for k in kept}
        instructions, labels, censored = [], [], []
        for episode, flag in zip(episodes, flags, strict=True):
            if flag is None or len(flag) != episode.length + 1:
                raise ValueError(f"episode {episode.seed}: need {episode.length + 1} success "
                                 "flags (one per observation)")
            lab, cen = rollout_steps_to_go(np.asarray(flag, dtype=bool))
            for key in kept:
                obs[key].append(np.asarray(episode.observations[key]))
            instructions += [episode.instruction] * len(lab)
            labels.append(lab)
            censored.append(cen)
        return cls({k: np.concatenate(v) for k, v in obs.items()}, instructions,
                   np.concatenate(labels), np.concatenate(censored))

    def __len__(self) -> int:
        return len(self.labels)

    def sample(self, n: int, rng: np.random.Generator) -> dict[str, Any]:
        """A numpy steps-to-go batch of ``n`` random rows."""
        return self.rows(rng.integers(0, len(self), size=n))

    def rows(self, pick: np.ndarray) -> dict[str, Any]:
        """Rows ``pick`` as a numpy steps-to-go batch (the Stage 1 pool's keys plus the
        censored flag)."""
        batch: dict[str, Any] = {k: v[pick] for k, v in self.observations.items()}
        batch[keys.INSTRUCTION] = [str(s) for s in self.instructions[pick]]
        batch[keys.STEPS_TO_GO] = self.labels[pick]
        batch[STEPS_TO_GO_CENSORED] = self.censored[pick]
        return batch

    def summary(self) -> dict[str, float]:
        return {"observations": len(self), "censored_fraction": float(self.censored.mean()),
                "success_observations": int(((self.labels == 0) & ~self.censored).sum())}

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez_compressed(tmp, instructions=self.instructions, labels=self.labels,
                            censored=self.censored,
                            **{f"obs/{k}": v for k, v in self.observations.items()})
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> LabelledRollouts:
        with np.load(path, allow_pickle=False) as data:  # never unpickle
            obs = {k[4:]: data[k] for k in data.files if k.startswith("obs/")}
            if keys.OBS_STATE in obs:
                obs[keys.OBS_STATE] = finite_array(obs[keys.OBS_STATE], keys.OBS_STATE)
            return cls(obs, list(data["instructions"]), data["labels"], data["censored"])
