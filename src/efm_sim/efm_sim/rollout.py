"""Record an episode from any efm_sim env and policy into an ``Episode``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import gymnasium as gym
import numpy as np

from efm_sim.dataset import Episode


class Agent(Protocol):
    """What ``record_episode`` drives: a demonstrator, controller or policy wrapper."""

    def reset(self, obs: Any, rng: np.random.Generator) -> None: ...

    def act(self, obs: Any) -> np.ndarray: ...


def split_observation(obs: Any) -> tuple[np.ndarray, np.ndarray | None]:
    """(state vector, image or None) from a PointMass array or a tabletop Dict obs."""
    if isinstance(obs, dict):
        return np.asarray(obs["proprio"], dtype=np.float32), obs["image"]
    return np.asarray(obs, dtype=np.float32), None


def record_episode(
    env: gym.Env,
    agent: Agent | Callable[[Any], np.ndarray],
    seed: int,
    options: dict[str, Any] | None = None,
    agent_rng: np.random.Generator | None = None,
    attrs: dict[str, Any] | None = None,
) -> Episode:
    """Run one episode of ``agent`` in ``env`` from ``reset(seed=seed)`` and record it.

    ``agent`` is an ``Agent`` (reset/act) or a plain callable obs -> action. The agent's
    own randomness comes from ``agent_rng`` (default ``default_rng([seed, 1])``), so a
    seed fixes the whole episode. The episode's ``success`` is the ground-truth flag of
    the last step (evaluation only).
    """
    obs, info = env.reset(seed=seed, options=options)
    if hasattr(agent, "bind"):
        agent.bind(env.unwrapped)
    rng = agent_rng if agent_rng is not None else np.random.default_rng([int(seed), 1])
    if hasattr(agent, "reset") and hasattr(agent, "act"):
        agent.reset(obs, rng)
        act = agent.act
    else:
        act = agent  # type: ignore[assignment]
    states, images, env_states, actions = [], [], [], []
    get_env_state = getattr(env.unwrapped, "object_state", None)

    def record(o: Any) -> None:
        s, img = split_observation(o)
        states.append(s)
        if img is not None:
            images.append(img)
        if get_env_state is not None:
            env_states.append(get_env_state())

    record(obs)
    success = bool(info["success"])
    while True:
        action = np.asarray(act(obs), dtype=np.float32)
        obs, _, terminated, truncated, info = env.step(action)
        actions.append(np.clip(action, env.action_space.low, env.action_space.high))
        record(obs)
        success = bool(info["success"])
        if terminated or truncated:
            break
    name = getattr(env.unwrapped, "env_name", type(env.unwrapped).__name__)
    return Episode(
        env_name=name,
        seed=int(seed),
        instruction=str(info["instruction"]),
        task_family=str(info["task_family"]),
        success=success,
        states=np.stack(states),
        actions=np.stack(actions),
        images=np.stack(images) if images else None,
        env_states=np.stack(env_states) if env_states else None,
        attrs=dict(attrs or {}),
    )
