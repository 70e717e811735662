"""Episode dataset: one HDF5 file per episode (the layout the ALOHA stack records).

Layout of ``episode_<index:06d>.h5`` (schema version ``SCHEMA_VERSION``)::

    attrs: schema_version, format="efm_episode", env_name, seed, instruction,
           task_family, success (ground truth, evaluation only), length T,
           complete=True (written last), extra_json (demonstrator settings etc.)
    observation.image              uint8 (T+1, H, W, 3)  gzip, one chunk per frame
    observation.state              float32 (T+1, D)       proprio / low-dim state
    action                         float32 (T, A)
    observation.environment_state  float32 (T+1, K)       optional, ground truth

Frame ``t`` is the observation before action ``t``; frame ``T`` is the final one. The
previous frame the paper feeds (Appendix D.1) is frame ``t-1`` (frame 0 at ``t=0``) and
is derived by the reader rather than stored twice. Writers write to a hidden temporary
name and rename atomically, so a crash never leaves a half-written ``episode_*.h5``.
Readers stream episode by episode, refuse other schema versions, and log and skip
truncated or corrupt files.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from efm_sim import keys

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1
FORMAT_NAME = "efm_episode"
EPISODE_GLOB = "episode_*.h5"
_EPISODE_RE = re.compile(r"^episode_(\d+)\.h5$")
TMP_SUFFIX = ".tmp"


class SchemaVersionError(ValueError):
    """The file or dataset was written with a different schema version."""


class CorruptEpisodeError(OSError):
    """An episode file is truncated, unreadable, incomplete or inconsistent."""


@dataclass
class Episode:
    """One recorded episode (T actions, T+1 observations).

    ``success`` is ground truth from the simulator, for evaluation and dataset
    statistics only; it must never be a learning input (paper Section 3).
    """

    env_name: str
    seed: int
    instruction: str
    task_family: str
    success: bool
    states: np.ndarray
    actions: np.ndarray
    images: np.ndarray | None = None
    env_states: np.ndarray | None = None
    attrs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.states = np.asarray(self.states, dtype=np.float32)
        self.actions = np.asarray(self.actions, dtype=np.float32)
        if self.actions.ndim != 2:
            raise ValueError(f"actions must be (T, A), got shape {self.actions.shape}")
        t = self.actions.shape[0]
        if self.states.ndim != 2 or self.states.shape[0] != t + 1:
            raise ValueError(f"states must be (T+1={t + 1}, D), got shape {self.states.shape}")
        if self.images is not None:
            self.images = np.asarray(self.images)
            if (
                self.images.dtype != np.uint8
                or self.images.ndim != 4
                or self.images.shape[0] != t + 1
                or self.images.shape[-1] != 3
            ):
                raise ValueError(
                    f"images must be uint8 (T+1={t + 1}, H, W, 3), got "
                    f"{self.images.dtype} {self.images.shape}"
                )
        if self.env_states is not None:
            self.env_states = np.asarray(self.env_states, dtype=np.float32)
            if self.env_states.ndim != 2 or self.env_states.shape[0] != t + 1:
                raise ValueError(
                    f"env_states must be (T+1={t + 1}, K), got {self.env_states.shape}"
                )

    @property
    def length(self) -> int:
        """Number of actions T."""
        return int(self.actions.shape[0])

    def previous_images(self) -> np.ndarray | None:
        """Frame t-1 for every t (frame 0 repeated at t=0), as fed to the model."""
        if self.images is None:
            return None
        return np.concatenate([self.images[:1], self.images[:-1]], axis=0)


def episode_path(root: str | os.PathLike[str], index: int) -> Path:
    """Canonical file name of episode ``index`` inside dataset ``root``."""
    return Path(root) / f"episode_{int(index):06d}.h5"


def write_episode(
    path: str | os.PathLike[str], episode: Episode, compression_level: int = 4
) -> Path:
    """Write ``episode`` to ``path`` crash-safely (temporary file, then atomic rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}{TMP_SUFFIX}")
    try:
        with h5py.File(tmp, "w") as f:
            f.attrs[keys.SCHEMA_VERSION] = SCHEMA_VERSION
            f.attrs["format"] = FORMAT_NAME
            f.attrs[keys.ENV_NAME] = episode.env_name
            f.attrs[keys.SEED] = int(episode.seed)
            f.attrs[keys.INSTRUCTION] = episode.instruction
            f.attrs[keys.TASK_FAMILY] = episode.task_family
            f.attrs[keys.SUCCESS] = bool(episode.success)
            f.attrs[keys.LENGTH] = episode.length
            f.attrs["extra_json"] = json.dumps(episode.attrs, sort_keys=True)
            if episode.images is not None:
                _, h, w, c = episode.images.shape
                f.create_dataset(
                    keys.OBS_IMAGE,
                    data=episode.images,
                    chunks=(1, h, w, c),
                    compression="gzip",
                    compression_opts=compression_level,
                )
            f.create_dataset(keys.OBS_STATE, data=episode.states)
            f.create_dataset(keys.ACTION, data=episode.actions)
            if episode.env_states is not None:
                f.create_dataset(keys.OBS_ENV_STATE, data=episode.env_states)
            f.attrs["complete"] = True
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def _attr_str(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def check_schema(path: str | os.PathLike[str], version: Any) -> None:
    """Raise SchemaVersionError unless ``version`` equals this reader's version."""
    if version is None:
        raise SchemaVersionError(
            f"{path}: no '{keys.SCHEMA_VERSION}' attribute; not an efm episode file "
            f"(this reader understands schema version {SCHEMA_VERSION})"
        )
    if int(version) != SCHEMA_VERSION:
        raise SchemaVersionError(
            f"{path}: written with schema version {int(version)}, but this efm_sim reads "
            f"version {SCHEMA_VERSION}; regenerate the dataset with this version "
            "(python -m efm_sim.generate) or use the efm_sim release that wrote it"
        )


def read_episode(path: str | os.PathLike[str], load_images: bool = True) -> Episode:
    """Read one episode file fully into memory.

    Raises SchemaVersionError for other schema versions and CorruptEpisodeError for
    truncated, incomplete or inconsistent files.
    """
    path = Path(path)
    try:
        with h5py.File(path, "r") as f:
            check_schema(path, f.attrs.get(keys.SCHEMA_VERSION))
            if not bool(f.attrs.get("complete", False)):
                raise CorruptEpisodeError(f"{path}: incomplete episode (no 'complete' flag)")
            length = int(f.attrs[keys.LENGTH])
            images = None
            if load_images and keys.OBS_IMAGE in f:
                images = f[keys.OBS_IMAGE][()]
            env_states = f[keys.OBS_ENV_STATE][()] if keys.OBS_ENV_STATE in f else None
            episode = Episode(
                env_name=_attr_str(f.attrs[keys.ENV_NAME]),
                seed=int(f.attrs[keys.SEED]),
                instruction=_attr_str(f.attrs[keys.INSTRUCTION]),
                task_family=_attr_str(f.attrs[keys.TASK_FAMILY]),
                success=bool(f.attrs[keys.SUCCESS]),
                states=f[keys.OBS_STATE][()],
                actions=f[keys.ACTION][()],
                images=images,
                env_states=env_states,
                attrs=json.loads(_attr_str(f.attrs.get("extra_json", "{}"))),
            )
    except SchemaVersionError:
        raise
    except CorruptEpisodeError:
        raise
    except (OSError, KeyError, ValueError, RuntimeError) as exc:
        raise CorruptEpisodeError(f"{path}: unreadable or corrupt episode file ({exc})") from exc
    if episode.length != length:
        raise CorruptEpisodeError(
            f"{path}: length attribute {length} != {episode.length} stored actions"
        )
    return episode


def is_complete_episode(path: str | os.PathLike[str]) -> bool:
    """Cheap check used for resuming: the file opens, has our schema and is complete."""
    try:
        with h5py.File(path, "r") as f:
            return (
                f.attrs.get(keys.SCHEMA_VERSION) is not None
                and int(f.attrs[keys.SCHEMA_VERSION]) == SCHEMA_VERSION
                and bool(f.attrs.get("complete", False))
            )
    except (OSError, KeyError, ValueError):
        return False


def episode_index_of(path: str | os.PathLike[str]) -> int | None:
    """Index parsed from ``episode_<index>.h5``, or None for other names."""
    m = _EPISODE_RE.match(Path(path).name)
    return int(m.group(1)) if m else None


class EpisodeDataset:
    """Streams a directory of episode files, one episode in memory at a time.

    ``iter_episodes()`` yields ``Episode`` objects in file order (or shuffled with an
    ``rng``); ``iter_transitions()`` yields one dict per step with the keys of
    ``efm_sim.keys``. Truncated/corrupt files are logged, recorded in ``skipped`` and
    skipped; a file from another schema version raises ``SchemaVersionError``.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"dataset directory {self.root} does not exist")
        meta = self.root / "meta.json"
        self.meta: dict[str, Any] = {}
        if meta.exists():
            self.meta = json.loads(meta.read_text())
            check_schema(meta, self.meta.get(keys.SCHEMA_VERSION))
        self.paths = sorted(p for p in self.root.glob(EPISODE_GLOB) if p.is_file())
        self.skipped: list[Path] = []

    def __len__(self) -> int:
        return len(self.paths)

    def iter_episodes(
        self, load_images: bool = True, rng: np.random.Generator | None = None
    ) -> Iterator[Episode]:
        order = np.arange(len(self.paths)) if rng is None else rng.permutation(len(self.paths))
        for i in order:
            path = self.paths[int(i)]
            try:
                yield read_episode(path, load_images=load_images)
            except CorruptEpisodeError as exc:
                logger.warning("skipping corrupt episode: %s", exc)
                self.skipped.append(path)

    def __iter__(self) -> Iterator[Episode]:
        return self.iter_episodes()

    def iter_transitions(
        self, load_images: bool = True, rng: np.random.Generator | None = None
    ) -> Iterator[dict[str, Any]]:
        """Yield per-step dicts: obs (current + previous frame), action, next obs,
        ``steps_to_go`` = T - t, ``done``, instruction, task family and episode success."""
        for ep_i, ep in enumerate(self.iter_episodes(load_images=load_images, rng=rng)):
            yield from episode_transitions(ep, ep_i)


def episode_transitions(episode: Episode, episode_index: int = 0) -> Iterator[dict[str, Any]]:
    """Per-step dicts for one episode (see ``EpisodeDataset.iter_transitions``)."""
    prev = episode.previous_images()
    t_total = episode.length
    for t in range(t_total):
        item: dict[str, Any] = {
            keys.OBS_STATE: episode.states[t],
            keys.ACTION: episode.actions[t],
            keys.NEXT_OBS_STATE: episode.states[t + 1],
            keys.STEPS_TO_GO: t_total - t,
            keys.DONE: t == t_total - 1,
            keys.INSTRUCTION: episode.instruction,
            keys.TASK_FAMILY: episode.task_family,
            keys.SUCCESS: episode.success,
            keys.EPISODE_INDEX: episode_index,
            keys.FRAME_INDEX: t,
        }
        if episode.images is not None and prev is not None:
            item[keys.OBS_IMAGE] = episode.images[t]
            item[keys.OBS_PREV_IMAGE] = prev[t]
            item[keys.NEXT_OBS_IMAGE] = episode.images[t + 1]
        yield item


def write_meta(root: str | os.PathLike[str], meta: dict[str, Any]) -> Path:
    """Write ``meta.json`` (env name, kwargs, schema version) atomically."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    data = {keys.SCHEMA_VERSION: SCHEMA_VERSION, "format": FORMAT_NAME, **meta}
    tmp = root / f".meta.json.{os.getpid()}{TMP_SUFFIX}"
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True))
    os.replace(tmp, root / "meta.json")
    return root / "meta.json"
