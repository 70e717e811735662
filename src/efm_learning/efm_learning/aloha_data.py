"""ALOHA recordings -> the Stage 1 pool at the policy's 10 Hz (paper Appendix D.3).

An ALOHA episode file (efm_sim.aloha_dataset, 50 Hz, frame t = the observation before
action t, T of each) becomes an :class:`efm_sim.dataset.Episode` of 10 Hz policy steps,
so the existing Stage 1 code (efm_learning.data, efm_learning.sft) trains on it unchanged:

* observation k is 50 Hz frame ``5 k`` for ``k < K = ceil(T / 5)``;
* action k is the chunk of the next 5 driver actions ``action[5k : 5k + 5]``, flattened
  step-major to 70 values; the last chunk is padded by repeating the final action (a
  driver that executes it holds the last target);
* the final observation ``o_K`` (steps-to-go 0) is the last recorded frame ``T - 1``: the
  state after the final action, where the goal is reached, is not recorded in the ALOHA
  layout, and frame ``T - 1`` is one 50 Hz step before it (when ``T = 5 (K - 1) + 1`` it
  is also ``o_{K-1}``, so that frame appears with labels 1 and 0);
* a sim file recorded past success (``--full-length``) is cut at ``success_step``, so
  the goal is reached at the end as Stage 1's steps-to-go labels assume (Section 2.1).

Steps-to-go labels are thus counted in 10 Hz policy steps (Appendix E.2: 1500 driver
steps / chunk 5 = 300). ``states`` and ``actions`` stay raw (radians, gripper 0-1); the
``aloha_efm`` backend normalises them. Only the frames the pool needs are read.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from efm_sim import keys
from efm_sim.aloha_dataset import EPISODE_GLOB as ALOHA_EPISODE_GLOB
from efm_sim.aloha_dataset import AlohaEpisode, read_aloha_episode, read_aloha_frames
from efm_sim.aloha_layout import OBS_IMAGES, VIEW_ORDER, stack_aloha_views
from efm_sim.dataset import Episode

#: 50 Hz driver steps per 10 Hz policy step (Appendix D.3)
POLICY_PERIOD = 5
#: actions per chunk (Appendix D.3: N = 5)
CHUNK = 5
#: the single task's instruction (ALOHA insertion has one; the model ignores it)
INSTRUCTION = "insert the red peg into the blue socket"
ENV_NAME = "aloha_insertion"

__all__ = [
    "ALOHA_EPISODE_GLOB",
    "CHUNK",
    "INSTRUCTION",
    "POLICY_PERIOD",
    "AlohaPolicyEpisode",
    "chunk_actions",
    "policy_frames",
    "policy_observation",
    "read_policy_episode",
    "to_policy_episode",
]


@dataclass
class AlohaPolicyEpisode(Episode):
    """A 10 Hz ALOHA episode: ``states`` (K + 1, 14), ``actions`` (K, 70) raw chunks and
    ``views`` = the four camera frames at the same K + 1 observations (may be empty)."""

    views: dict[str, np.ndarray] = field(default_factory=dict)


def policy_frames(length: int, period: int = POLICY_PERIOD) -> np.ndarray:
    """50 Hz frame index of each 10 Hz observation ``o_0 .. o_K`` (``K = ceil(T / period)``)."""
    if length < 1:
        raise ValueError(f"an episode needs at least one step, got length {length}")
    k = math.ceil(length / period)
    return np.append(np.arange(k) * period, length - 1)


def chunk_actions(
    actions: np.ndarray, period: int = POLICY_PERIOD, chunk: int = CHUNK
) -> np.ndarray:
    """``(T, 14)`` 50 Hz actions -> ``(K, chunk * 14)``: the ``chunk`` actions from each
    policy step on, the end padded by repeating the final action."""
    actions = np.asarray(actions, dtype=np.float32)
    t = len(actions)
    k = math.ceil(t / period)
    index = np.minimum(np.arange(k)[:, None] * period + np.arange(chunk)[None, :], t - 1)
    return actions[index].reshape(k, -1)


def _goal_length(episode: AlohaEpisode) -> int:
    """Frames up to the goal: ``success_step`` when the file runs past it, else all."""
    step = episode.attrs.get("success_step")
    if isinstance(step, (int, np.integer)) and 0 < int(step) < episode.length:
        return int(step)
    return episode.length


def to_policy_episode(
    episode: AlohaEpisode,
    views: dict[str, np.ndarray] | None = None,
    period: int = POLICY_PERIOD,
    chunk: int = CHUNK,
) -> AlohaPolicyEpisode:
    """One 50 Hz ALOHA episode -> 10 Hz policy steps (module docstring). ``views``: the
    four cameras' frames at :func:`policy_frames` (default: taken from ``episode.images``)."""
    length = _goal_length(episode)
    frames = policy_frames(length, period)
    if views is None:
        views = {cam: episode.images[cam][frames] for cam in VIEW_ORDER if cam in episode.images}
    success = episode.success
    return AlohaPolicyEpisode(
        env_name=ENV_NAME,
        seed=int(episode.attrs.get("seed", -1)),
        instruction=INSTRUCTION,
        task_family="insertion",
        # a station's recordings are demonstrations that end at the goal
        success=True if success is None else success,
        states=episode.qpos[frames],
        actions=chunk_actions(episode.action[:length], period, chunk),
        attrs={**episode.attrs, "source_length": episode.length},
        views=views,
    )


def read_policy_episode(path: str | Path, load_images: bool = True) -> AlohaPolicyEpisode:
    """Read an ALOHA episode file as 10 Hz policy steps, loading only the frames used."""
    episode = read_aloha_episode(path, load_images=False)
    views: dict[str, np.ndarray] = {}
    if load_images:
        frames = policy_frames(_goal_length(episode))
        views = read_aloha_frames(path, frames, VIEW_ORDER)
    return to_policy_episode(episode, views)


def policy_observation(obs: dict[str, Any], size: int, band: int) -> dict[str, Any]:
    """One env observation (efm_sim.aloha) -> raw model inputs with a batch axis of 1:
    ``observation.state`` (1, 14) and the stacked pair ``observation.images`` (1, 2, S, S, 3),
    built with the same function as the Stage 1 pool."""
    stacked = stack_aloha_views(obs["images"], size, band)
    return {
        keys.OBS_STATE: np.asarray(obs["qpos"], np.float32)[None],
        OBS_IMAGES: stacked[None],
        keys.INSTRUCTION: [INSTRUCTION],
    }
