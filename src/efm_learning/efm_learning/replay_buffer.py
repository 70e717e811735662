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

    def __init__(
        self,
        buffer: ReplayBuffer,
        reward_model: EFM,
        gamma: float,
        in_range: bool = False,
        success_bonus: float = 0.0,
    ) -> None:
        """``in_range``: rewards from d given the goal is in range (improve.reward_steps_to_go);
        ``success_bonus``: added when the detector ended the episode (Section 4.1.3)."""
        self.buffer = buffer
        self.reward_model = reward_model
        self.gamma = gamma
        self.in_range = in_range
        self.success_bonus = float(success_bonus)
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
        if self.in_range:
            d = self.reward_model.predict_steps_to_go(episode.observations, in_range=True)
        else:
            d = self.reward_model.predict_steps_to_go(episode.observations)
        succeeded = episode.end_reason == "success_detector"
        rewards = rewards_from_steps_to_go(d, self.success_bonus, succeeded)
        returns = discounted_returns(rewards, self.gamma)
        t = episode.length
        observations = {k: v[:t] for k, v in episode.observations.items()}
        if keys.INSTRUCTION not in observations:
            observations[keys.INSTRUCTION] = [episode.instruction] * t
        self.buffer._add(observations, np.asarray(episode.action_tokens), returns)
        return LabelStats(length=t, rewards=rewards, returns=returns, steps_to_go=d)


class LabelledAdder:
    """The path into the buffer for episodes labelled elsewhere (paper Appendix J.1: actors
    query the steps-to-go inference nodes, compute returns and send the labelled tuples to
    the replay buffer server).

    Nothing is trusted: shapes must agree (T actions, T + 1 values of d), numbers must be
    finite, tokens in the vocabulary, and the returns must be the discounted sums of
    ``r_t = d_t - d_{t+1}`` (Eq. 2), plus ``success_bonus`` on the last reward of an episode
    the detector ended (Section 4.1.3), within ``tolerance``.
    """

    def __init__(
        self,
        buffer: ReplayBuffer,
        num_tokens: int,
        vocab: int,
        gamma: float,
        tolerance: float = 1e-3,
        success_bonus: float = 0.0,
    ) -> None:
        self.buffer = buffer
        self.num_tokens = num_tokens
        self.vocab = vocab
        self.gamma = gamma
        self.tolerance = tolerance
        self.success_bonus = float(success_bonus)
        self.refused = 0

    def add(
        self,
        observations: dict[str, Any],
        action_tokens: np.ndarray,
        steps_to_go: np.ndarray,
        returns: np.ndarray,
        gamma: float,
        success: bool = False,
    ) -> LabelStats:
        stats = self.check(observations, action_tokens, steps_to_go, returns, gamma, success)
        self.add_checked(observations, action_tokens, stats)
        return stats

    def add_checked(
        self, observations: dict[str, Any], action_tokens: np.ndarray, stats: LabelStats
    ) -> None:
        """Add an episode that :meth:`check` accepted (``stats`` is what it returned)."""
        self.buffer._add(observations, np.asarray(action_tokens, dtype=np.int64), stats.returns)

    def check(
        self,
        observations: dict[str, Any],
        action_tokens: np.ndarray,
        steps_to_go: np.ndarray,
        returns: np.ndarray,
        gamma: float,
        success: bool = False,
    ) -> LabelStats:
        """Validate without adding (EpisodeError if bad): a caller that must store the
        episode durably first (the learner's spool) adds it only once that succeeded.
        ``success``: the actor's detector ended the episode (the message's ``success``)."""
        try:
            return self._check(observations, action_tokens, steps_to_go, returns, gamma,
                               bool(success))
        except EpisodeError:
            self.refused += 1
            raise

    def _check(
        self, observations, action_tokens, steps_to_go, returns, gamma, success
    ) -> LabelStats:
        tokens = np.asarray(action_tokens)
        t = len(tokens)
        if t < 1:
            raise EpisodeError("episode has no actions")
        if tokens.shape != (t, self.num_tokens) or not np.issubdtype(tokens.dtype, np.integer):
            raise EpisodeError(
                f"action_tokens must be integer ({t}, {self.num_tokens}), "
                f"got {tokens.dtype} {tokens.shape}"
            )
        if tokens.min() < 0 or tokens.max() >= self.vocab:
            raise EpisodeError(f"action tokens outside [0, {self.vocab - 1}]")
        d = np.asarray(steps_to_go, dtype=np.float64)
        r = np.asarray(returns, dtype=np.float64)
        if d.shape != (t + 1,) or r.shape != (t,):
            raise EpisodeError(
                f"{t} actions need {t + 1} steps-to-go values and {t} returns, "
                f"got {d.shape[0] if d.ndim else d.shape} and "
                f"{r.shape[0] if r.ndim else r.shape}"
            )
        if not (np.all(np.isfinite(d)) and np.all(np.isfinite(r))):
            raise EpisodeError("non-finite steps-to-go or returns")
        if abs(gamma - self.gamma) > 1e-6:
            raise EpisodeError(f"returns discounted with gamma {gamma}, learner uses {self.gamma}")
        rewards = rewards_from_steps_to_go(d, self.success_bonus, success)
        expected = discounted_returns(rewards, self.gamma)
        if np.max(np.abs(expected - r)) > self.tolerance * max(1.0, np.max(np.abs(expected))):
            raise EpisodeError(
                "returns do not match the steps-to-go labels (Eq. 2; the learner's success "
                f"bonus is {self.success_bonus})"
            )
        for key, value in observations.items():
            if len(value) != t:
                raise EpisodeError(
                    f"observation field {key!r} has {len(value)} rows for {t} actions"
                )
        return LabelStats(length=t, rewards=rewards, returns=expected, steps_to_go=d)
