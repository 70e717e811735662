"""The Self-Improvement replay buffer and its adder (Algorithm 1).

The :class:`Adder` is the only way into the :class:`ReplayBuffer`. For each practice
episode it

1. refuses malformed episodes (mismatched lengths, empty, non-finite, bad tokens) with
   :class:`EpisodeError` *before* anything enters the buffer;
2. labels rewards with the frozen Stage 1 model: ``r_t = d(o_t, g) - d(o_{t+1}, g)``
   (Eq. 2); ground truth is never consulted;
3. computes Monte-Carlo returns ``R_t = sum_i gamma^(i-t) r_i`` (gamma = 0.9);
4. stores ``(o_t, a_t, g, R_t)`` for ``t < T``.

The learner then draws N minibatches of B *without replacement* from a shuffled order
and clears the buffer (on-policy, no data reuse).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from efm_learning.actor import PracticeEpisode
from efm_learning.models import EFM
from efm_learning.returns import discounted_returns
from efm_learning.reward import rewards_from_steps_to_go
from efm_sim import keys

RETURNS = "returns"


class EpisodeError(ValueError):
    """A practice episode was refused before entering the replay buffer."""


def validate_episode(episode: PracticeEpisode, num_tokens: int, vocab: int) -> None:
    """Raise EpisodeError unless the episode's arrays agree: T >= 1 actions,
    T + 1 rows of every observation field, tokens in range, finite numbers."""
    t = len(episode.action_tokens)
    if t < 1:
        raise EpisodeError("episode has no actions")
    tokens = np.asarray(episode.action_tokens)
    if tokens.shape != (t, num_tokens) or not np.issubdtype(tokens.dtype, np.integer):
        raise EpisodeError(
            f"action_tokens must be integer ({t}, {num_tokens}), got {tokens.dtype} {tokens.shape}"
        )
    if tokens.min() < 0 or tokens.max() >= vocab:
        raise EpisodeError(f"action tokens outside [0, {vocab - 1}]")
    if len(episode.actions) != t:
        raise EpisodeError(f"{len(episode.actions)} actions but {t} action token rows")
    for key, value in episode.observations.items():
        if len(value) != t + 1:
            raise EpisodeError(
                f"observation field {key!r} has {len(value)} rows; an episode with {t} "
                f"actions needs {t + 1} observations"
            )
        array = np.asarray(value) if not isinstance(value, list) else None
        if array is not None and array.dtype.kind == "f" and not np.all(np.isfinite(array)):
            raise EpisodeError(f"observation field {key!r} contains NaN/inf")
    for name in ("steps_to_go", "gt_success"):
        value = getattr(episode, name)
        if value is not None and len(value) != t + 1:
            raise EpisodeError(f"{name} has {len(value)} entries; expected {t + 1}")


@dataclass
class LabelStats:
    """Reward labels of one episode (for logging)."""

    length: int
    rewards: np.ndarray
    returns: np.ndarray
    steps_to_go: np.ndarray


class ReplayBuffer:
    """Holds ``(o_t, a_t, g, R_t)`` for one round; flattened for minibatch sampling."""

    def __init__(self) -> None:
        self._obs: list[dict[str, Any]] = []
        self._tokens: list[np.ndarray] = []
        self._returns: list[np.ndarray] = []
        self.num_samples = 0

    def __len__(self) -> int:
        return self.num_samples

    def _add(self, observations: dict[str, Any], tokens: np.ndarray, returns: np.ndarray) -> None:
        self._obs.append(observations)
        self._tokens.append(tokens)
        self._returns.append(returns)
        self.num_samples += len(tokens)

    def clear(self) -> None:
        self.__init__()

    def minibatches(
        self, num_batches: int, batch_size: int, rng: np.random.Generator
    ) -> Iterator[dict[str, Any]]:
        """``num_batches`` minibatches drawn without replacement from a shuffled order."""
        need = num_batches * batch_size
        if self.num_samples < need:
            raise ValueError(f"buffer holds {self.num_samples} samples, needs {need}")
        obs_keys = list(self._obs[0])
        flat = {}
        for key in obs_keys:
            values = [o[key] for o in self._obs]
            if isinstance(values[0], list):
                flat[key] = [v for part in values for v in part]
            else:
                flat[key] = np.concatenate(values)
        tokens = np.concatenate(self._tokens)
        returns = np.concatenate(self._returns)
        order = rng.permutation(self.num_samples)[:need]
        for b in range(num_batches):
            idx = order[b * batch_size : (b + 1) * batch_size]
            batch = {
                k: ([v[i] for i in idx] if isinstance(v, list) else v[idx]) for k, v in flat.items()
            }
            batch["action.tokens"] = tokens[idx]
            batch[RETURNS] = returns[idx]
            yield batch


class Adder:
    """Validates, labels (frozen reward model) and stores practice episodes."""

    def __init__(self, buffer: ReplayBuffer, reward_model: EFM, gamma: float) -> None:
        self.buffer = buffer
        self.reward_model = reward_model
        self.gamma = gamma
        self.refused = 0

    @torch.no_grad()
    def add(self, episode: PracticeEpisode) -> LabelStats:
        try:
            validate_episode(
                episode, self.reward_model.num_action_tokens, self.reward_model.action_vocab
            )
        except EpisodeError:
            self.refused += 1
            raise
        d = self.reward_model.predict_steps_to_go(episode.observations)
        rewards = rewards_from_steps_to_go(d)
        returns = discounted_returns(rewards, self.gamma)
        t = episode.length
        observations = {k: v[:t] for k, v in episode.observations.items()}
        if keys.INSTRUCTION not in observations:
            observations[keys.INSTRUCTION] = [episode.instruction] * t
        self.buffer._add(observations, np.asarray(episode.action_tokens), returns)
        return LabelStats(length=t, rewards=rewards, returns=returns, steps_to_go=d)
