"""Stage 1 data: stream efm_sim episode files into an in-memory pool of transitions.

For a demonstration ``o_0, a_0, ..., a_{T-1}, o_T`` whose goal is reached at the final
observation, the paper's two Stage 1 objectives (Section 2.1) sample:

* behavioural cloning items ``(o_t, a_t)`` for ``t < T``;
* steps-to-go items ``(o_t, T - t)`` for ``t <= T`` (the final observation is labelled
  0, which is what lets ``d(o, g) <= s`` detect success later).

Episode files are read one at a time (efm_sim's HDF5 reader) into a pool holding at most
``pool_transitions`` transitions; when the dataset is larger, the oldest episodes are
periodically replaced by new ones (a streaming shuffle buffer). When it fits, the pool
simply holds everything. Validation episodes are a seeded, held-out subset of files.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from efm_sim import keys, tasks
from efm_sim.aloha_dataset import EPISODE_GLOB as ALOHA_EPISODE_GLOB
from efm_sim.aloha_dataset import AlohaEpisodeError
from efm_sim.dataset import EPISODE_GLOB, CorruptEpisodeError, Episode, read_episode

logger = logging.getLogger(__name__)

#: turns an Episode into per-observation arrays, each with T + 1 rows
Featurizer = Callable[[Episode], dict[str, np.ndarray]]

#: keys whose previous-frame version the pool derives (frame t-1; frame 0 at t = 0)
PREVIOUS_OF = {
    keys.OBS_IMAGE: keys.OBS_PREV_IMAGE,
    "observation.image_features": "observation.previous_image_features",
}


def state_featurizer(episode: Episode) -> dict[str, np.ndarray]:
    """Low-dimensional state only (the ``mlp`` backend)."""
    return {keys.OBS_STATE: episode.states}


def list_episode_files(root: str | Path) -> list[Path]:
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(
            f"dataset directory {root} does not exist; generate it with "
            f"`python -m efm_sim.generate --env <env> --episodes N --out {root}`"
        )
    # efm_sim episode files, and ALOHA recordings (efm_learning.aloha_data, at 10 Hz)
    return sorted(
        p for pattern in (EPISODE_GLOB, ALOHA_EPISODE_GLOB) for p in root.glob(pattern)
        if p.is_file()
    )


def read_episode_file(path: Path, load_images: bool) -> Episode:
    """An efm_sim episode file, or an ALOHA ``.hdf5`` recording as 10 Hz policy steps."""
    if path.suffix == ".hdf5":
        from efm_learning.aloha_data import read_policy_episode

        return read_policy_episode(path, load_images=load_images)
    return read_episode(path, load_images=load_images)


def split_train_val(
    paths: Sequence[Path], val_fraction: float, seed: int
) -> tuple[list[Path], list[Path]]:
    """Seeded held-out split by episode (at least one episode on each side)."""
    if len(paths) < 2:
        raise ValueError(f"need at least 2 episodes to hold some out, got {len(paths)}")
    order = np.random.default_rng(seed).permutation(len(paths))
    n_val = min(max(1, round(val_fraction * len(paths))), len(paths) - 1)
    val = sorted(paths[i] for i in order[:n_val])
    train = sorted(paths[i] for i in order[n_val:])
    return train, val


def train_subset(paths: Sequence[Path], fraction: float, seed: int) -> list[Path]:
    """A seeded ``fraction`` of the training episodes (at least one), for data-size studies."""
    if fraction >= 1.0:
        return list(paths)
    order = np.random.default_rng([seed, 1]).permutation(len(paths))
    keep = max(1, round(fraction * len(paths)))
    return sorted(paths[i] for i in order[:keep])


def iter_episodes(
    paths: Sequence[Path], rng: np.random.Generator | None, load_images: bool, repeat: bool
) -> Iterator[Episode]:
    """Episodes from files (shuffled each pass with ``rng``), skipping corrupt files."""
    while True:
        order = rng.permutation(len(paths)) if rng is not None else range(len(paths))
        read_any = False
        for i in order:
            try:
                episode = read_episode_file(paths[int(i)], load_images=load_images)
            except (CorruptEpisodeError, AlohaEpisodeError) as error:
                logger.warning("skipping corrupt episode: %s", error)
                continue
            read_any = True
            yield episode
        if not repeat or not read_any:
            return


#: steps-to-go label of a goal-relabelled negative: past the last bin ("not this task")
NEGATIVE_STEPS_TO_GO = 1_000_000
#: negatives show one of an episode's last this many observations (its goal scene)
NEGATIVE_TAIL = 3


def task_key(instruction: str) -> tuple | None:
    """What an instruction asks for, up to symmetry: two Block2Block instructions over the
    same pair of blocks are satisfied by the same scenes. ``None``: not a table task."""
    try:
        task = tasks.parse_instruction(instruction, tasks.PUSHTABLE_FAMILIES)
    except ValueError:
        return None
    if task.family == tasks.BLOCK2BLOCK:
        return (task.family, frozenset((task.block, task.target)))
    return (task.family, task.block, task.target, task.location)


class EpisodePool:
    """Whole episodes flattened into per-observation arrays for fast batch sampling.

    ``steps_to_go_negatives`` (a departure from the paper, docs/PUSHTABLE.md): that
    fraction of every steps-to-go batch is *goal-relabelled*: one of an episode's last
    ``NEGATIVE_TAIL`` observations (the scene that satisfies its own instruction) paired
    with the instruction of a task over other objects, labelled "not done" (past the last
    steps-to-go bin), so the success detector learns that a finished scene of one task is
    not success for another. Only the demonstrations' own instructions are used.
    """

    def __init__(
        self,
        featurize: Featurizer,
        successful_only_steps_to_go: bool = True,
        steps_to_go_negatives: float = 0.0,
    ) -> None:
        if not 0.0 <= steps_to_go_negatives < 1.0:
            raise ValueError(
                f"steps_to_go_negatives must be in [0, 1), got {steps_to_go_negatives}"
            )
        self.featurize = featurize
        self.successful_only = successful_only_steps_to_go
        self.negatives = float(steps_to_go_negatives)
        self._episodes: deque[tuple[dict[str, np.ndarray], np.ndarray, bool, str]] = deque()
        self.num_transitions = 0
        self._dirty = True

    def __len__(self) -> int:
        return len(self._episodes)

    def add(self, episode: Episode) -> None:
        features = self.featurize(episode)
        for key, value in features.items():
            if len(value) != episode.length + 1:
                raise ValueError(
                    f"featurizer returned {len(value)} rows of {key} for an episode with "
                    f"{episode.length + 1} observations"
                )
        self._episodes.append((features, episode.actions, episode.success, episode.instruction))
        self.num_transitions += episode.length
        self._dirty = True

    def drop_oldest(self, transitions: int) -> None:
        dropped = 0
        while self._episodes and dropped < transitions:
            _, actions, _, _ = self._episodes.popleft()
            dropped += len(actions)
        self.num_transitions -= dropped
        self._dirty = True

    def _build(self) -> None:
        if not self._episodes:
            raise ValueError("the episode pool is empty (no readable episodes)")
        obs_keys = list(self._episodes[0][0])
        self._obs = {k: np.concatenate([e[0][k] for e in self._episodes]) for k in obs_keys}
        lengths = np.array([len(e[1]) for e in self._episodes])
        starts = np.concatenate([[0], np.cumsum(lengths + 1)[:-1]])
        self._actions = np.concatenate([e[1] for e in self._episodes])
        self._instructions = [e[3] for e in self._episodes]
        # BC items: observation rows t < T of every episode
        self._bc_obs = np.concatenate(
            [s + np.arange(n) for s, n in zip(starts, lengths, strict=True)]
        )
        self._obs_episode = np.repeat(np.arange(len(lengths)), lengths + 1)
        # steps-to-go items: rows t <= T with label T - t
        keep = [i for i, e in enumerate(self._episodes) if e[2] or not self.successful_only]
        if not keep:
            raise ValueError("no successful episodes: steps-to-go labels are undefined")
        self._stg_obs = np.concatenate([starts[i] + np.arange(lengths[i] + 1) for i in keep])
        self._stg_label = np.concatenate([np.arange(lengths[i], -1, -1) for i in keep])
        self._first_row, self._last_row = starts, starts + lengths
        self._keep_stg = np.array(keep)
        if self.negatives > 0:
            self._build_negatives()
        first = np.repeat(starts, lengths + 1)
        rows = np.arange(len(self._obs_episode))
        self._prev_row = np.maximum(rows - 1, first)
        self._dirty = False

    def _build_negatives(self) -> None:
        """For each distinct task in the pool, the instructions of every other task."""
        by_key: dict[tuple, list[str]] = {}
        keys_of = []
        for instruction in self._instructions:
            key = task_key(instruction)
            if key is None:
                raise ValueError(
                    f"steps_to_go_negatives needs table-task instructions, got {instruction!r}"
                )
            keys_of.append(key)
            by_key.setdefault(key, [])
            if instruction not in by_key[key]:
                by_key[key].append(instruction)
        if len(by_key) < 2:
            raise ValueError("steps_to_go_negatives needs demonstrations of at least two tasks")
        self._other_instructions = {
            key: sorted(i for k, v in by_key.items() if k != key for i in v) for key in by_key
        }
        self._episode_key = keys_of

    def _relabel_negatives(self, batch: dict[str, Any], rng: np.random.Generator) -> None:
        """Turn a ``negatives`` fraction of a steps-to-go batch into relabelled negatives."""
        n = len(batch[keys.STEPS_TO_GO])
        count = int(rng.binomial(n, self.negatives))
        if count == 0:
            return
        slots = rng.choice(n, size=count, replace=False)
        episodes = self._keep_stg[rng.integers(0, len(self._keep_stg), size=count)]
        back = rng.integers(0, NEGATIVE_TAIL, size=count)
        rows = np.maximum(self._last_row[episodes] - back, self._first_row[episodes])
        negative = self._gather(rows)
        for key, value in negative.items():
            if key != keys.INSTRUCTION:
                batch[key][slots] = value
        instructions = list(batch[keys.INSTRUCTION])
        for slot, episode in zip(slots, episodes, strict=True):
            others = self._other_instructions[self._episode_key[episode]]
            instructions[slot] = others[int(rng.integers(0, len(others)))]
        batch[keys.INSTRUCTION] = instructions
        batch[keys.STEPS_TO_GO][slots] = NEGATIVE_STEPS_TO_GO

    def _gather(self, rows: np.ndarray) -> dict[str, Any]:
        batch: dict[str, Any] = {k: v[rows] for k, v in self._obs.items()}
        for key, prev_key in PREVIOUS_OF.items():
            if key in self._obs:
                batch[prev_key] = self._obs[key][self._prev_row[rows]]
        batch[keys.INSTRUCTION] = [self._instructions[i] for i in self._obs_episode[rows]]
        return batch

    def sample(self, objective: str, n: int, rng: np.random.Generator) -> dict[str, Any]:
        """A numpy batch for ``"bc"`` (with ``action``) or ``"steps_to_go"`` (with labels)."""
        if self._dirty:
            self._build()
        if objective == "bc":
            pick = rng.integers(0, len(self._bc_obs), size=n)
            batch = self._gather(self._bc_obs[pick])
            batch[keys.ACTION] = self._actions[pick]
        elif objective == "instruction":
            # auxiliary (fn. 2): the instruction from the first and the last frame
            pick = rng.integers(0, len(self._first_row), size=n)
            batch = self._gather(self._last_row[pick])
            for key, prev_key in PREVIOUS_OF.items():
                if key in self._obs:
                    batch[prev_key] = self._obs[key][self._first_row[pick]]
        elif objective == "steps_to_go":
            pick = rng.integers(0, len(self._stg_obs), size=n)
            batch = self._gather(self._stg_obs[pick])
            batch[keys.STEPS_TO_GO] = self._stg_label[pick]
            if self.negatives > 0:
                self._relabel_negatives(batch, rng)
        else:
            raise ValueError(
                f"unknown objective {objective!r}; allowed: bc, steps_to_go, instruction"
            )
        return batch

    def all_actions(self) -> np.ndarray:
        if self._dirty:
            self._build()
        return self._actions

    def all_observations(self, key: str) -> np.ndarray:
        if self._dirty:
            self._build()
        return self._obs[key]

    def instructions(self) -> list[str]:
        return [e[3] for e in self._episodes]


class StreamingSampler:
    """Training batches from a pool that streams episode files through it."""

    def __init__(
        self,
        paths: Sequence[Path],
        featurize: Featurizer,
        capacity: int,
        refresh_fraction: float,
        refresh_every: int,
        seed: int,
        load_images: bool = False,
        successful_only_steps_to_go: bool = True,
        steps_to_go_negatives: float = 0.0,
    ) -> None:
        self.rng = np.random.default_rng(seed)
        self.capacity = capacity
        self.refresh_fraction = refresh_fraction
        self.refresh_every = refresh_every
        self.pool = EpisodePool(featurize, successful_only_steps_to_go, steps_to_go_negatives)
        self._stream = iter_episodes(paths, self.rng, load_images, repeat=True)
        self._exhausted_once = False
        self._steps = 0
        seen = 0
        for episode in self._stream:
            self.pool.add(episode)
            seen += 1
            if self.pool.num_transitions >= capacity or seen >= len(paths):
                break
        self.streaming = seen < len(paths)
        logger.info(
            "Stage 1 pool: %d episodes, %d transitions (%s)",
            len(self.pool),
            self.pool.num_transitions,
            "streaming" if self.streaming else "whole dataset in memory",
        )

    def sample(self, objective: str, n: int) -> dict[str, Any]:
        return self.pool.sample(objective, n, self.rng)

    def step(self) -> None:
        """Advance one training step; refresh part of the pool when streaming."""
        self._steps += 1
        if not self.streaming or self._steps % self.refresh_every:
            return
        target = int(self.refresh_fraction * self.pool.num_transitions)
        self.pool.drop_oldest(target)
        added = 0
        for episode in self._stream:
            self.pool.add(episode)
            added += episode.length
            if added >= target:
                break


def load_pool(
    paths: Sequence[Path],
    featurize: Featurizer,
    max_transitions: int,
    load_images: bool = False,
    successful_only_steps_to_go: bool = True,
) -> EpisodePool:
    """A fixed pool (validation) from files in order, up to ``max_transitions``."""
    pool = EpisodePool(featurize, successful_only_steps_to_go)
    for episode in iter_episodes(paths, None, load_images, repeat=False):
        pool.add(episode)
        if pool.num_transitions >= max_transitions:
            break
    return pool


def symmetric_action_range(actions: np.ndarray) -> tuple[float, float]:
    """``(-m, m)`` with ``m`` the largest |action| component in the demonstrations."""
    m = float(np.max(np.abs(actions)))
    if not np.isfinite(m) or m <= 0:
        raise ValueError(f"cannot fit an action range to demonstrations with max |a| = {m}")
    return -m, m
