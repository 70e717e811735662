"""ALOHA recording layout: one HDF5 file per episode, 50 Hz (paper Stage 1 data, Appendix D.3).

The layout an ALOHA station's ``record_episodes`` writes (and ACT's sim recorder), so
simulated demonstrations and real station recordings go through ONE reader::

    attrs: sim (bool); optional compress (bool, JPEG-encoded frames)
    /observations/qpos              (T, 14) float   6 joints + normalised gripper, per arm
    /observations/qvel              (T, 14) float
    /observations/effort            (T, 14) float   (absent in ACT's sim recordings)
    /observations/images/<cam>      (T, H, W, 3) uint8, or (T, N) uint8 JPEG bytes when
                                    ``compress`` is set (zero padded)
    /action                         (T, 14) float   joint targets applied after obs t
    /base_action                    (T, 2) float    mobile kits only (read if present)

Frame ``t`` is the observation before action ``t`` (T of each). efm's sim writer adds
attributes of its own (``seed``, ``success`` and ``max_stage`` as ground truth for
evaluation only, ``demonstrator_json``, ``complete``); the reader accepts files without
them. Writers stream frames into a hidden temporary file and rename it when the episode
is finished, so a crash never leaves a half-written ``episode_*.hdf5``.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import h5py
import numpy as np

STATE_DIM = 14
EPISODE_GLOB = "episode_*.hdf5"
TMP_SUFFIX = ".tmp"
QPOS = "/observations/qpos"
QVEL = "/observations/qvel"
EFFORT = "/observations/effort"
IMAGES = "/observations/images"
ACTION = "/action"
BASE_ACTION = "/base_action"


class AlohaEpisodeError(ValueError):
    """An ALOHA episode file is unreadable, truncated or not in the recording layout."""


@dataclass
class AlohaEpisode:
    """One ALOHA episode in memory (T observations, T actions).

    ``attrs`` holds the file's attributes (``sim``, and for efm sim demos ``seed``,
    ``success``, ``max_stage``: ground truth, evaluation only, never a learning input).
    """

    qpos: np.ndarray
    qvel: np.ndarray
    action: np.ndarray
    effort: np.ndarray | None = None
    images: dict[str, np.ndarray] = field(default_factory=dict)
    base_action: np.ndarray | None = None
    sim: bool = True
    attrs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.qpos = _check_state("qpos", self.qpos, None)
        t = self.qpos.shape[0]
        self.qvel = _check_state("qvel", self.qvel, t)
        self.action = _check_state("action", self.action, t)
        if self.effort is not None:
            self.effort = _check_state("effort", self.effort, t)
        for cam, frames in self.images.items():
            frames = np.asarray(frames)
            if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[::3] != (t, 3):
                raise AlohaEpisodeError(
                    f"images/{cam} must be uint8 (T={t}, H, W, 3), got {frames.dtype} "
                    f"{frames.shape}"
                )
            self.images[cam] = frames
        if self.base_action is not None:
            self.base_action = np.asarray(self.base_action, dtype=np.float32)
            if self.base_action.ndim != 2 or self.base_action.shape[0] != t:
                raise AlohaEpisodeError(
                    f"base_action must be (T={t}, 2), got {self.base_action.shape}"
                )

    @property
    def length(self) -> int:
        return int(self.qpos.shape[0])

    @property
    def success(self) -> bool | None:
        """Ground-truth success recorded by the simulator (None for real recordings)."""
        value = self.attrs.get("success")
        return None if value is None else bool(value)


def _check_state(name: str, value: Any, length: int | None) -> np.ndarray:
    arr = np.asarray(value)
    if not np.issubdtype(arr.dtype, np.floating):
        raise AlohaEpisodeError(f"{name} must be floating point, got dtype {arr.dtype}")
    if (
        arr.ndim != 2
        or arr.shape[1] != STATE_DIM
        or (length is not None and arr.shape[0] != length)
    ):
        want = f"({'T' if length is None else length}, {STATE_DIM})"
        raise AlohaEpisodeError(f"{name} must have shape {want}, got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise AlohaEpisodeError(f"{name} holds NaN/inf values")
    return arr.astype(np.float32)


def episode_path(root: str | os.PathLike[str], index: int) -> Path:
    """Canonical file name of episode ``index`` (the station's ``episode_<i>.hdf5``)."""
    return Path(root) / f"episode_{int(index)}.hdf5"


def episode_index_of(path: str | os.PathLike[str]) -> int | None:
    name = Path(path).name
    if name.startswith("episode_") and name.endswith(".hdf5") and name[8:-5].isdigit():
        return int(name[8:-5])
    return None


class AlohaEpisodeWriter:
    """Streams one episode into ``path`` (temporary file until ``finish``).

    Frames are appended one step at a time, so a 480x640 four-camera episode never sits
    in memory whole. Use as a context manager: leaving the block without ``finish``
    (an exception, a failed demo) removes the temporary file.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        cameras: Sequence[str] = (),
        image_size: tuple[int, int] | None = None,
        sim: bool = True,
        compression_level: int = 4,
    ) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}{TMP_SUFFIX}")
        self.cameras = tuple(cameras)
        if self.cameras and image_size is None:
            raise ValueError("image_size (H, W) is required when cameras are recorded")
        self._file: h5py.File | None = h5py.File(self.tmp, "w")
        f = self._file
        f.attrs["sim"] = bool(sim)
        self._sets: dict[str, h5py.Dataset] = {}
        for key in (QPOS, QVEL, EFFORT, ACTION):
            self._sets[key] = f.create_dataset(
                key,
                shape=(0, STATE_DIM),
                maxshape=(None, STATE_DIM),
                dtype=np.float32,
                chunks=(64, STATE_DIM),
            )
        for cam in self.cameras:
            assert image_size is not None
            h, w = image_size
            self._sets[cam] = f.create_dataset(
                f"{IMAGES}/{cam}",
                shape=(0, h, w, 3),
                maxshape=(None, h, w, 3),
                dtype=np.uint8,
                chunks=(1, h, w, 3),
                compression="gzip" if compression_level > 0 else None,
                compression_opts=compression_level if compression_level > 0 else None,
            )
        self.length = 0

    def append(
        self,
        qpos: np.ndarray,
        qvel: np.ndarray,
        effort: np.ndarray,
        action: np.ndarray,
        images: Mapping[str, np.ndarray] | None = None,
    ) -> None:
        """Add step ``t``: the observation before ``action`` and the action itself."""
        if self._file is None:
            raise RuntimeError("writer already finished or aborted")
        t = self.length
        for key, value in ((QPOS, qpos), (QVEL, qvel), (EFFORT, effort), (ACTION, action)):
            ds = self._sets[key]
            ds.resize(t + 1, axis=0)
            ds[t] = np.asarray(value, dtype=np.float32).reshape(STATE_DIM)
        images = images or {}
        missing = set(self.cameras) - set(images)
        if missing:
            raise ValueError(f"step {t} lacks images for cameras {sorted(missing)}")
        for cam in self.cameras:
            ds = self._sets[cam]
            ds.resize(t + 1, axis=0)
            ds[t] = images[cam]
        self.length = t + 1

    def finish(self, attrs: Mapping[str, Any] | None = None) -> Path:
        """Write ``attrs``, close and atomically rename to ``path``."""
        if self._file is None:
            raise RuntimeError("writer already finished or aborted")
        if self.length == 0:
            raise ValueError("an episode needs at least one step")
        for key, value in (attrs or {}).items():
            if isinstance(value, (dict, list, tuple)):
                self._file.attrs[f"{key}_json"] = json.dumps(value, sort_keys=True)
            else:
                self._file.attrs[key] = value
        self._file.attrs["complete"] = True
        self._file.close()
        self._file = None
        os.replace(self.tmp, self.path)
        return self.path

    def abort(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        self.tmp.unlink(missing_ok=True)

    def __enter__(self) -> AlohaEpisodeWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.abort()


def write_aloha_episode(
    path: str | os.PathLike[str], episode: AlohaEpisode, compression_level: int = 4
) -> Path:
    """Write an in-memory ``episode`` in the ALOHA layout (crash-safe)."""
    cams = tuple(episode.images)
    size = next(iter(episode.images.values())).shape[1:3] if cams else None
    with AlohaEpisodeWriter(path, cams, size, episode.sim, compression_level) as w:
        effort = episode.effort if episode.effort is not None else np.zeros_like(episode.qpos)
        for t in range(episode.length):
            w.append(
                episode.qpos[t],
                episode.qvel[t],
                effort[t],
                episode.action[t],
                {c: episode.images[c][t] for c in cams},
            )
        attrs = {k: v for k, v in episode.attrs.items() if k not in ("sim", "complete")}
        return w.finish(attrs)


def _decode_jpeg_frames(name: str, data: np.ndarray) -> np.ndarray:
    from PIL import Image

    frames = []
    for t, row in enumerate(data):
        try:
            with Image.open(io.BytesIO(row.tobytes())) as img:
                frames.append(np.asarray(img.convert("RGB")))
        except OSError as exc:
            raise AlohaEpisodeError(f"images/{name} frame {t}: not a JPEG ({exc})") from exc
    return np.stack(frames)


def _attr(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.generic):
        return value.item()
    return value


def read_aloha_episode(
    path: str | os.PathLike[str],
    load_images: bool = True,
    cameras: Sequence[str] | None = None,
) -> AlohaEpisode:
    """Read and validate one episode in the ALOHA recording layout (sim or real station).

    ``cameras`` restricts which image streams are loaded (default: all in the file; a
    named camera that is absent is an error). Raises ``AlohaEpisodeError`` with the reason
    for unreadable files, missing datasets, wrong shapes/dtypes or mismatched lengths.
    """
    path = Path(path)
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise AlohaEpisodeError(f"{path}: not a readable HDF5 file ({exc})") from exc
    try:
        with f:
            for key in (QPOS, QVEL, ACTION):
                if key not in f:
                    raise AlohaEpisodeError(
                        f"{path}: missing dataset {key}; not an ALOHA episode recording"
                    )
            attrs = {k: _attr(v) for k, v in f.attrs.items()}
            if "sim" not in attrs:
                raise AlohaEpisodeError(f"{path}: missing root attribute 'sim'")
            for key in [k for k in attrs if k.endswith("_json")]:
                attrs[key[:-5]] = json.loads(attrs.pop(key))
            images: dict[str, np.ndarray] = {}
            if load_images and IMAGES in f:
                names = list(f[IMAGES]) if cameras is None else list(cameras)
                for cam in names:
                    if cam not in f[IMAGES]:
                        raise AlohaEpisodeError(
                            f"{path}: no camera {cam!r}; has {sorted(f[IMAGES])}"
                        )
                    data = f[IMAGES][cam][()]
                    if bool(attrs.get("compress", False)) and data.ndim == 2:
                        data = _decode_jpeg_frames(cam, data)
                    images[cam] = data
            elif load_images and cameras:
                raise AlohaEpisodeError(f"{path}: no images recorded, asked for {list(cameras)}")
            episode = AlohaEpisode(
                qpos=f[QPOS][()],
                qvel=f[QVEL][()],
                action=f[ACTION][()],
                effort=f[EFFORT][()] if EFFORT in f else None,
                images=images,
                base_action=f[BASE_ACTION][()] if BASE_ACTION in f else None,
                sim=bool(attrs.pop("sim")),
                attrs=attrs,
            )
    except AlohaEpisodeError as exc:
        if str(path) in str(exc):
            raise
        raise AlohaEpisodeError(f"{path}: {exc}") from exc
    except (OSError, KeyError, RuntimeError, TypeError) as exc:
        raise AlohaEpisodeError(f"{path}: unreadable or corrupt episode ({exc})") from exc
    return episode


def read_aloha_frames(
    path: str | os.PathLike[str], frames: Sequence[int], cameras: Sequence[str]
) -> dict[str, np.ndarray]:
    """Only frames ``frames`` (sorted or not, repeats allowed) of each camera in
    ``cameras``: uint8 ``(len(frames), H, W, 3)`` each, JPEG frames decoded. For loaders
    that subsample a 50 Hz recording (a 480x640 four-camera episode is ~1 GB in memory
    whole). Raises ``AlohaEpisodeError`` like :func:`read_aloha_episode`."""
    path = Path(path)
    index = np.asarray(frames, dtype=np.int64)
    unique, inverse = np.unique(index, return_inverse=True)
    out: dict[str, np.ndarray] = {}
    try:
        with h5py.File(path, "r") as f:
            compress = bool(f.attrs.get("compress", False))
            for cam in cameras:
                key = f"{IMAGES}/{cam}"
                if key not in f:
                    raise AlohaEpisodeError(f"{path}: no camera {cam!r} recorded")
                data = f[key]
                if unique.size and (unique[0] < 0 or unique[-1] >= data.shape[0]):
                    raise AlohaEpisodeError(
                        f"{path}: frames {unique[0]}..{unique[-1]} outside images/{cam} "
                        f"({data.shape[0]} frames)"
                    )
                rows = data[unique] if unique.size else data[:0]
                if compress and rows.ndim == 2:
                    rows = _decode_jpeg_frames(cam, rows)
                if rows.dtype != np.uint8 or rows.ndim != 4 or rows.shape[-1] != 3:
                    raise AlohaEpisodeError(f"{path}: images/{cam} is not uint8 (T, H, W, 3)")
                out[cam] = rows[inverse]
    except AlohaEpisodeError:
        raise
    except (OSError, KeyError, RuntimeError, TypeError) as exc:
        raise AlohaEpisodeError(f"{path}: unreadable or corrupt episode ({exc})") from exc
    return out


def is_complete_episode(path: str | os.PathLike[str]) -> bool:
    """Cheap resume check: opens, has the layout's datasets and the writer's mark."""
    try:
        with h5py.File(path, "r") as f:
            return bool(f.attrs.get("complete", False)) and all(
                k in f for k in (QPOS, QVEL, ACTION)
            )
    except (OSError, KeyError, ValueError):
        return False


__all__ = [
    "AlohaEpisode",
    "AlohaEpisodeError",
    "AlohaEpisodeWriter",
    "episode_path",
    "is_complete_episode",
    "read_aloha_episode",
    "read_aloha_frames",
    "write_aloha_episode",
]
