"""Actors: run the current policy and return practice episodes (Algorithm 1, Appendix J).

Acme-style roles. The learner publishes versioned weights through a
:class:`VariableSource`; an actor pulls them (never calling the learner) and produces
:class:`PracticeEpisode` records. Each practice episode ends when

1. the *learned* success detector fires, ``d(o_t, g) <= s`` (Eq. 3), computed with the
   frozen Stage 1 steps-to-go model (on ``success_consecutive`` observations in a row;
   1, the paper's, by default);
2. the maximum episode length is reached; or
3. it is aborted from outside (the paper's human operator; :meth:`Actor.request_abort`).

:class:`EnvActor` runs ``num_envs`` efm_sim environments in lock-step in this process
with batched inference (fast experiments and tests). Environments are built with
``terminate_on_success=False``: the simulator's ground-truth success flag is *recorded*
for evaluation only and never ends or labels a practice episode. A ROS 2 actor serving
many robot stations implements the same interface in a later issue.

The same runner with ``end_on="ground_truth"`` gives the evaluation rollouts.
"""

from __future__ import annotations

import abc
import copy
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch

from efm_learning.envs import ground_truth_success, make_env, observation_to_keys
from efm_learning.models import EFM
from efm_learning.models.base import stack_observations
from efm_sim import keys

EndReason = Literal["success_detector", "step_limit", "abort", "env_terminated", "ground_truth"]


@dataclass
class PracticeEpisode:
    """One on-policy episode: T actions, T + 1 observations.

    ``gt_success`` (the simulator's flag per observation) is for evaluation only; the
    learner labels rewards from ``observations`` with its frozen reward model.
    """

    observations: dict[str, Any]
    action_tokens: np.ndarray
    actions: np.ndarray
    instruction: str
    end_reason: EndReason
    policy_version: int
    seed: int
    steps_to_go: np.ndarray | None = None
    gt_success: np.ndarray | None = None
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def length(self) -> int:
        return len(self.action_tokens)


class VariableSource:
    """Learner side: publishes versioned copies of the policy weights."""

    def __init__(self, model: EFM) -> None:
        self.version = 0
        self._weights = _cpu_state(model)

    def publish(self, model: EFM) -> int:
        self.version += 1
        self._weights = _cpu_state(model)
        return self.version

    def get(self) -> tuple[int, dict[str, torch.Tensor]]:
        return self.version, self._weights


def _cpu_state(model: EFM) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


class Actor(abc.ABC):
    """Produces practice episodes with the latest published policy."""

    @abc.abstractmethod
    def update(self, source: VariableSource) -> int:
        """Pull newer weights if any; returns the version now in use."""

    @abc.abstractmethod
    def collect(self, min_samples: int) -> list[PracticeEpisode]:
        """Complete episodes until they hold at least ``min_samples`` transitions."""

    def request_abort(self, station: int) -> None:  # noqa: B027 - optional hook
        """End the running episode at ``station`` (the paper's human operator)."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release environments or connections."""


class EnvActor(Actor):
    """``num_envs`` efm_sim environments stepped in lock-step with batched inference."""

    def __init__(
        self,
        env_name: str,
        policy: EFM,
        steps_to_go_model: EFM | None,
        success_threshold: float,
        max_episode_steps: int,
        num_envs: int = 16,
        seed: int = 0,
        greedy: bool = False,
        end_on: Literal["detector", "ground_truth"] = "detector",
        env_kwargs: dict[str, Any] | None = None,
        seed_stream: Callable[[], Iterator[int]] | None = None,
        success_consecutive: int = 1,
    ) -> None:
        if end_on == "detector" and steps_to_go_model is None:
            raise ValueError("a detector-terminated actor needs the frozen steps-to-go model")
        self.policy = copy.deepcopy(policy).eval()
        for p in self.policy.parameters():
            p.requires_grad_(False)
        self.steps_to_go_model = steps_to_go_model
        self.success_threshold = float(success_threshold)
        if success_consecutive < 1:
            raise ValueError(f"success_consecutive must be >= 1, got {success_consecutive}")
        self.success_consecutive = int(success_consecutive)
        self.max_episode_steps = int(max_episode_steps)
        self.greedy = greedy
        self.end_on = end_on
        kwargs = dict(env_kwargs or {})
        kwargs.update(
            max_episode_steps=max_episode_steps, terminate_on_success=end_on != "detector"
        )
        self.envs = [make_env(env_name, **kwargs) for _ in range(num_envs)]
        self.version = 0
        self.generator = torch.Generator().manual_seed(int(seed))
        self._seeds = (seed_stream or _default_seed_stream(seed))()
        self._abort = np.zeros(num_envs, dtype=bool)
        self.empty_episodes = 0

    def update(self, source: VariableSource) -> int:
        version, weights = source.get()
        if version != self.version:
            self.policy.load_state_dict(weights)
            self.version = version
        return self.version

    def request_abort(self, station: int) -> None:
        self._abort[station] = True

    def set_seeds(self, seeds: Iterator[int]) -> None:
        self._seeds = seeds

    def collect(self, min_samples: int) -> list[PracticeEpisode]:
        return self.run(min_samples=min_samples)

    def run(
        self, min_samples: int | None = None, num_episodes: int | None = None
    ) -> list[PracticeEpisode]:
        """Run until ``min_samples`` transitions or ``num_episodes`` episodes are done.

        New episodes start only while the target is not yet covered by finished plus
        running episodes, so little is collected beyond it and no episode is cut short
        (cutting would bias the buffer towards short episodes).
        """
        if (min_samples is None) == (num_episodes is None):
            raise ValueError("give exactly one of min_samples and num_episodes")
        done: list[PracticeEpisode] = []
        slots: list[_Running | None] = [None] * len(self.envs)
        started = 0

        def need_more() -> bool:
            if num_episodes is not None:
                return started < num_episodes
            running = sum(s.steps for s in slots if s is not None)
            return sum(e.length for e in done) + running < min_samples

        while True:
            for i, slot in enumerate(slots):
                while slot is None and need_more():
                    slot = self._start(i)
                    started += 1
                    if slot is not None and slot.finished:  # succeeded at o_0: no actions
                        self.empty_episodes += 1
                        slot = None
                slots[i] = slot
            live = [i for i, s in enumerate(slots) if s is not None]
            if not live:
                break
            obs = stack_observations([slots[i].current for i in live])
            tokens, actions = self.policy.act(obs, greedy=self.greedy, generator=self.generator)
            next_obs = []
            for j, i in enumerate(live):
                next_obs.append(slots[i].step(self.envs[i], tokens[j], actions[j]))
            d_next = self._steps_to_go(next_obs)
            for j, i in enumerate(live):
                slot = slots[i]
                reason = slot.end_reason(
                    None if d_next is None else float(d_next[j]),
                    self.success_threshold,
                    self.success_consecutive,
                    self.max_episode_steps,
                    bool(self._abort[i]),
                    self.end_on,
                )
                if reason is not None:
                    self._abort[i] = False
                    done.append(slot.finish(reason, self.version))
                    slots[i] = None
        return done

    def _steps_to_go(self, observations: Sequence[dict[str, Any]]) -> np.ndarray | None:
        if self.steps_to_go_model is None or not observations:
            return None
        return self.steps_to_go_model.predict_steps_to_go(stack_observations(observations))

    def _start(self, i: int) -> _Running:
        seed = int(next(self._seeds))
        obs, info = self.envs[i].reset(seed=seed)
        slot = _Running(seed, observation_to_keys(obs, info), ground_truth_success(info))
        if self.end_on == "detector":
            d0 = float(self._steps_to_go([slot.current])[0])
            slot.d.append(d0)
            slot.fired_in_a_row = int(d0 <= self.success_threshold)
            slot.finished = slot.fired_in_a_row >= self.success_consecutive
        else:
            if self.steps_to_go_model is not None:
                slot.d.append(float(self._steps_to_go([slot.current])[0]))
            slot.finished = slot.gt[0]
        return slot


class _Running:
    """Bookkeeping of one in-flight episode."""

    def __init__(self, seed: int, first: dict[str, Any], gt: bool) -> None:
        self.seed = seed
        self.obs = [first]
        self.tokens: list[np.ndarray] = []
        self.actions: list[np.ndarray] = []
        self.gt = [gt]
        self.d: list[float] = []
        self.env_terminated = False
        self.finished = False
        #: observations in a row (up to now) on which d <= s
        self.fired_in_a_row = 0

    @property
    def current(self) -> dict[str, Any]:
        return self.obs[-1]

    @property
    def steps(self) -> int:
        return len(self.tokens)

    def step(self, env: Any, tokens: np.ndarray, action: np.ndarray) -> dict[str, Any]:
        obs, _, terminated, _, info = env.step(action)
        prev = self.current.get(keys.OBS_IMAGE)
        nxt = observation_to_keys(obs, info, prev)
        self.obs.append(nxt)
        self.tokens.append(tokens)
        self.actions.append(action)
        self.gt.append(ground_truth_success(info))
        self.env_terminated = bool(terminated)
        return nxt

    def end_reason(
        self, d: float | None, s: float, k: int, max_steps: int, abort: bool, end_on: str
    ) -> EndReason | None:
        if d is not None:
            self.d.append(d)
            self.fired_in_a_row = self.fired_in_a_row + 1 if d <= s else 0
        if end_on == "detector" and d is not None and self.fired_in_a_row >= k:
            return "success_detector"
        if end_on == "ground_truth" and self.gt[-1]:
            return "ground_truth"
        if abort:
            return "abort"
        if self.env_terminated:
            return "env_terminated"
        if self.steps >= max_steps:
            return "step_limit"
        return None

    def finish(self, reason: EndReason, version: int) -> PracticeEpisode:
        return PracticeEpisode(
            observations=stack_observations(self.obs),
            action_tokens=np.stack(self.tokens).astype(np.int64),
            actions=np.stack(self.actions).astype(np.float32),
            instruction=str(self.obs[0].get(keys.INSTRUCTION, "")),
            end_reason=reason,
            policy_version=version,
            seed=self.seed,
            steps_to_go=np.asarray(self.d, dtype=np.float64) if self.d else None,
            gt_success=np.asarray(self.gt, dtype=bool),
        )


def _default_seed_stream(seed: int) -> Callable[[], Iterator[int]]:
    def stream() -> Iterator[int]:
        rng = np.random.default_rng([int(seed), 7])
        while True:
            yield int(rng.integers(0, 2**31 - 1))

    return stream


def round_seeds(seed: int, round_index: int) -> Iterator[int]:
    """Deterministic env seeds for one Self-Improvement round (so resuming replays them)."""
    rng = np.random.default_rng([int(seed), 1000 + int(round_index)])
    while True:
        yield int(rng.integers(0, 2**31 - 1))


def fixed_seeds(base: int, count: int) -> Iterator[int]:
    """The same ``count`` evaluation tasks every time (comparable across rounds)."""
    return iter(range(base, base + count))
