"""LeRobot datasets <-> the ALOHA recording layout (issue 15, item 5; paper Stage 1 data).

efm trains ALOHA from one layout (efm_sim.aloha_dataset: an HDF5 file per 50 Hz episode),
so a LeRobot dataset is *imported* into it and efm's episodes are *exported* from it:

* read: LeRobot v2.0 / v2.1 (``data/chunk-XXX/episode_XXXXXX.parquet``, one mp4 per
  episode and camera, ``meta/episodes.jsonl``, ``meta/tasks.jsonl``) and v3.0 (many
  episodes per ``data/chunk-XXX/file-XXX.parquet`` and per mp4, located by
  ``meta/episodes/*.parquet``: ``dataset_from_index`` / ``dataset_to_index`` and
  ``videos/<key>/from_timestamp``); images as ``video`` features (decoded with PyAV) or
  ``image`` features (PNG/JPEG bytes in the parquet);
* write: LeRobot v2.1 (what LeRobot's loaders still read and convert to v3), AV1 video
  (LeRobot's default codec; ``codec="h264"`` is faster), ``episodes_stats.jsonl`` for
  the numeric features.

Mapping: ``observation.state`` <-> ``/observations/qpos``, ``observation.velocity`` <->
``qvel`` (zeros when absent), ``observation.effort`` <-> ``effort``, ``action`` <->
``/action``, ``observation.images.<cam>`` <-> ``images/<cam>``; the episode's first task is
kept as the ``instruction`` attribute. LeRobot's own package pins torch < 2.11, so it cannot
be installed beside efm's torch 2.13.0; this module reads and writes the files with pyarrow
and PyAV. Nothing here is unpickled: parquet, JSON and video only.
"""

from __future__ import annotations

import io
import json
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from efm_sim.aloha_dataset import (
    EPISODE_GLOB,
    AlohaEpisode,
    episode_path,
    is_complete_episode,
    read_aloha_episode,
    write_aloha_episode,
)

IMAGE_PREFIX = "observation.images."
READABLE_VERSIONS = ("v2.0", "v2.1", "v3.0")
CHUNKS_SIZE = 1000


class LeRobotFormatError(ValueError):
    """A LeRobot dataset that cannot be read, with the reason."""


@dataclass
class LeRobotEpisode:
    """One episode as read from a LeRobot dataset, in the ALOHA layout's terms."""

    index: int
    task: str
    episode: AlohaEpisode


# -- reading ----------------------------------------------------------------------------------
def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise LeRobotFormatError(f"{path}: {error}") from error


def _jsonl(path: Path) -> list[dict[str, Any]]:
    try:
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    except (OSError, json.JSONDecodeError) as error:
        raise LeRobotFormatError(f"{path}: {error}") from error


def _read_table(path: Path) -> dict[str, list]:
    import pyarrow.parquet as pq

    try:
        return pq.read_table(path).to_pydict()
    except Exception as error:  # pyarrow raises its own ArrowInvalid / OSError types
        raise LeRobotFormatError(f"{path}: not a readable parquet file ({error})") from error


def _column(table: dict[str, list], name: str, path: Path, length: int | None = None):
    if name not in table:
        raise LeRobotFormatError(f"{path}: no column {name!r} (has {sorted(table)[:12]})")
    values = np.asarray(table[name], dtype=np.float64)
    if values.ndim == 1:
        values = values[:, None]
    if values.ndim != 2 or (length is not None and values.shape[0] != length):
        raise LeRobotFormatError(f"{path}: column {name!r} has shape {values.shape}")
    if not np.all(np.isfinite(values)):
        raise LeRobotFormatError(f"{path}: column {name!r} holds NaN or inf")
    return values


def decode_video(path: Path, start_s: float = 0.0, frames: int | None = None) -> np.ndarray:
    """(T, H, W, 3) uint8 RGB frames of an mp4, from ``start_s`` on, ``frames`` of them."""
    import av

    out = []
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            if start_s > 0:
                container.seek(int(start_s / stream.time_base), stream=stream, backward=True)
            for frame in container.decode(stream):
                if frame.time is not None and frame.time < start_s - 1e-3:
                    continue
                out.append(frame.to_ndarray(format="rgb24"))
                if frames is not None and len(out) >= frames:
                    break
    except (OSError, av.error.FFmpegError) as error:
        raise LeRobotFormatError(f"{path}: not a readable video ({error})") from error
    if not out or (frames is not None and len(out) < frames):
        raise LeRobotFormatError(f"{path}: {len(out)} frames from {start_s:.3f} s, "
                                 f"expected {frames}")
    return np.stack(out)


def _decode_images(values: list, path: Path) -> np.ndarray:
    """An ``image`` feature column: {'bytes': PNG/JPEG} per row -> (T, H, W, 3)."""
    from PIL import Image

    frames = []
    for value in values:
        data = value.get("bytes") if isinstance(value, dict) else value
        if not isinstance(data, bytes | bytearray):
            raise LeRobotFormatError(f"{path}: image feature without bytes")
        frames.append(np.asarray(Image.open(io.BytesIO(data)).convert("RGB")))
    return np.stack(frames)


class LeRobotDataset:
    """A LeRobot dataset on disk (v2.0, v2.1 or v3.0), read episode by episode."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.info = _json(self.root / "meta" / "info.json")
        self.version = str(self.info.get("codebase_version", ""))
        if self.version not in READABLE_VERSIONS:
            raise LeRobotFormatError(
                f"{self.root}: codebase_version {self.version!r}; readable: {READABLE_VERSIONS}"
            )
        self.fps = float(self.info.get("fps", 0))
        if not self.fps > 0:
            raise LeRobotFormatError(f"{self.root}: info.json has no positive fps")
        features = self.info.get("features", {})
        for key in ("observation.state", "action"):
            if key not in features:
                raise LeRobotFormatError(f"{self.root}: feature {key!r} missing")
        self.features = features
        self.cameras = {k[len(IMAGE_PREFIX):]: k for k, f in features.items()
                        if k.startswith(IMAGE_PREFIX) and f.get("dtype") in ("video", "image")}
        if self.version == "v3.0":
            self._episodes = self._episodes_v3()
            self._tasks = self._tasks_v3()
        else:
            self._episodes = {int(e["episode_index"]): e
                              for e in _jsonl(self.root / "meta" / "episodes.jsonl")}
            self._tasks = {int(t["task_index"]): str(t["task"])
                           for t in _jsonl(self.root / "meta" / "tasks.jsonl")}

    def __len__(self) -> int:
        return len(self._episodes)

    @property
    def episode_indices(self) -> list[int]:
        return sorted(self._episodes)

    def _episodes_v3(self) -> dict[int, dict]:
        files = sorted((self.root / "meta" / "episodes").glob("chunk-*/file-*.parquet"))
        if not files:
            raise LeRobotFormatError(f"{self.root}: no meta/episodes/chunk-*/file-*.parquet")
        out = {}
        for path in files:
            table = _read_table(path)
            rows = len(table.get("episode_index", []))
            for i in range(rows):
                row = {k: v[i] for k, v in table.items()}
                out[int(row["episode_index"])] = row
        return out

    def _tasks_v3(self) -> dict[int, str]:
        table = _read_table(self.root / "meta" / "tasks.parquet")
        names = table.get("task") or table.get("__index_level_0__")
        if names is None or "task_index" not in table:
            raise LeRobotFormatError(f"{self.root}: meta/tasks.parquet lacks task/task_index")
        return {int(i): str(t) for i, t in zip(table["task_index"], names, strict=True)}

    def _format(self, template_key: str, **values: int | str) -> Path:
        template = self.info.get(template_key)
        if not template:
            raise LeRobotFormatError(f"{self.root}: info.json has no {template_key}")
        return self.root / template.format(**values)

    def read(self, index: int, load_images: bool = True) -> LeRobotEpisode:
        """Episode ``index`` as an AlohaEpisode (state, velocity, effort, action, images)."""
        if index not in self._episodes:
            raise LeRobotFormatError(f"{self.root}: no episode {index}")
        meta = self._episodes[index]
        chunks = int(self.info.get("chunks_size", CHUNKS_SIZE))
        if self.version == "v3.0":
            path = self._format("data_path", chunk_index=int(meta["data/chunk_index"]),
                               file_index=int(meta["data/file_index"]))
            table = _read_table(path)
            lo, hi = int(meta["dataset_from_index"]), int(meta["dataset_to_index"])
            index_column = np.asarray(table.get("index", []))
            rows = np.flatnonzero((index_column >= lo) & (index_column < hi))
            table = {k: [v[i] for i in rows] for k, v in table.items()}
        else:
            path = self._format("data_path", episode_chunk=index // chunks,
                               episode_index=index)
            table = _read_table(path)
        if "frame_index" in table:
            order = np.argsort(np.asarray(table["frame_index"]))
            table = {k: [v[i] for i in order] for k, v in table.items()}
        qpos = _column(table, "observation.state", path)
        t = qpos.shape[0]
        if t == 0:
            raise LeRobotFormatError(f"{path}: episode {index} has no frames")
        action = _column(table, "action", path, t)
        qvel = (_column(table, "observation.velocity", path, t)
                if "observation.velocity" in table else np.zeros_like(qpos))
        effort = (_column(table, "observation.effort", path, t)
                  if "observation.effort" in table else None)
        images = {}
        if load_images:
            for cam, key in self.cameras.items():
                images[cam] = self._images(key, index, meta, table, t, path)
        task = self._task(meta, table)
        try:
            episode = AlohaEpisode(qpos=qpos, qvel=qvel, action=action, effort=effort,
                                   images=images, sim=False,
                                   attrs={"instruction": task, "source": "lerobot",
                                          "lerobot_episode_index": index,
                                          "fps": self.fps})
        except ValueError as error:
            raise LeRobotFormatError(f"{path}: episode {index}: {error}") from error
        return LeRobotEpisode(index, task, episode)

    def _task(self, meta: dict, table: dict[str, list]) -> str:
        tasks = meta.get("tasks")
        if isinstance(tasks, list | tuple | np.ndarray) and len(tasks):
            return str(tasks[0])
        if table.get("task_index"):
            return self._tasks.get(int(table["task_index"][0]), "")
        return ""

    def _images(self, key: str, index: int, meta: dict, table: dict, t: int,
                path: Path) -> np.ndarray:
        if self.features[key].get("dtype") == "image":
            return _decode_images(table[key], path)
        if self.version == "v3.0":
            video = self._format("video_path", video_key=key,
                                 chunk_index=int(meta[f"videos/{key}/chunk_index"]),
                                 file_index=int(meta[f"videos/{key}/file_index"]))
            start = float(meta[f"videos/{key}/from_timestamp"])
        else:
            chunks = int(self.info.get("chunks_size", CHUNKS_SIZE))
            video = self._format("video_path", episode_chunk=index // chunks,
                                 video_key=key, episode_index=index)
            start = 0.0
        return decode_video(video, start, t)

    def __iter__(self) -> Iterator[LeRobotEpisode]:
        for index in self.episode_indices:
            yield self.read(index)


def import_lerobot(source: str | Path, dest: str | Path, progress: bool = True) -> list[Path]:
    """Every episode of a LeRobot dataset -> ``dest/episode_<i>.hdf5`` (ALOHA layout).

    Resumable: episodes already complete in ``dest`` are skipped; each file is written
    crash-safe (temporary file, then rename)."""
    from tqdm import tqdm

    dataset = LeRobotDataset(source)
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    written = []
    for index in tqdm(dataset.episode_indices, desc="lerobot -> aloha hdf5",
                      disable=not progress):
        path = episode_path(dest, index)
        if not is_complete_episode(path):
            write_aloha_episode(path, dataset.read(index).episode)
        written.append(path)
    return written


# -- writing (v2.1) ----------------------------------------------------------------------------
def encode_video(path: Path, frames: np.ndarray, fps: float, codec: str = "libsvtav1") -> None:
    """(T, H, W, 3) uint8 frames -> an mp4 (yuv420p), written to a temporary file first.

    SVT-AV1 switches the calling thread to SCHED_FIFO 99 where it may (as root), and every
    process started from it afterwards inherits that: ROS nodes that busy-wait then starve
    the machine. The caller's scheduling policy is restored afterwards."""
    policy, param = os.sched_getscheduler(0), os.sched_getparam(0)
    try:
        _encode(path, frames, fps, codec)
    finally:
        if (os.sched_getscheduler(0), os.sched_getparam(0)) != (policy, param):
            os.sched_setscheduler(0, policy, param)


def _encode(path: Path, frames: np.ndarray, fps: float, codec: str) -> None:
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.mp4")
    rate = Fraction(fps).limit_denominator(1000)
    with av.open(str(tmp), "w") as container:
        stream = container.add_stream(codec, rate=rate)
        stream.width, stream.height = int(frames.shape[2]), int(frames.shape[1])
        stream.pix_fmt = "yuv420p"
        if codec in ("libx264", "h264"):
            stream.options = {"crf": "18"}
        for image in frames:
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    tmp.replace(path)


def _stats(values: np.ndarray) -> dict[str, list]:
    return {"min": values.min(0).tolist(), "max": values.max(0).tolist(),
            "mean": values.mean(0).tolist(), "std": values.std(0).tolist(),
            "count": [int(values.shape[0])]}


def export_lerobot(
    source: str | Path,
    dest: str | Path,
    fps: float = 50.0,
    codec: str = "libsvtav1",
    robot_type: str = "aloha",
    joint_names: Sequence[str] | None = None,
    default_task: str = "insert the peg into the socket",
    progress: bool = True,
) -> Path:
    """efm's ALOHA-layout episodes (``source/episode_*.hdf5``) -> a LeRobot v2.1 dataset.

    The episode's ``instruction`` attribute (``default_task`` when absent) is its task;
    ground-truth attributes of sim demos (``success`` ...) are not exported."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from tqdm import tqdm

    files = sorted(Path(source).glob(EPISODE_GLOB))
    if not files:
        raise LeRobotFormatError(f"{source}: no {EPISODE_GLOB} to export")
    dest = Path(dest)
    if (dest / "meta" / "info.json").exists():
        raise LeRobotFormatError(f"{dest}: already holds a dataset; export into a new folder")
    tasks: dict[str, int] = {}
    episodes, stats = [], []
    total, shape, cams, dims = 0, None, None, None
    for index, path in enumerate(tqdm(files, desc="aloha hdf5 -> lerobot",
                                      disable=not progress)):
        episode = read_aloha_episode(path)
        t = episode.length
        if cams is None:
            cams = sorted(episode.images)
            dims = episode.qpos.shape[1]
            shape = {c: list(episode.images[c].shape[1:]) for c in cams}
        elif sorted(episode.images) != cams or episode.qpos.shape[1] != dims:
            raise LeRobotFormatError(f"{path}: cameras or state size differ from the first "
                                     "episode; a LeRobot dataset has one feature set")
        task = str(episode.attrs.get("instruction") or default_task)
        task_index = tasks.setdefault(task, len(tasks))
        chunk = index // CHUNKS_SIZE
        columns = {
            "observation.state": episode.qpos.astype(np.float32),
            "observation.velocity": episode.qvel.astype(np.float32),
            "observation.effort": (episode.effort if episode.effort is not None
                                   else np.zeros_like(episode.qpos)).astype(np.float32),
            "action": episode.action.astype(np.float32),
        }
        table = {k: pa.array(list(v), type=pa.list_(pa.float32(), dims))
                 for k, v in columns.items()}
        table.update({
            "timestamp": pa.array(np.arange(t, dtype=np.float32) / np.float32(fps)),
            "frame_index": pa.array(np.arange(t, dtype=np.int64)),
            "episode_index": pa.array(np.full(t, index, dtype=np.int64)),
            "index": pa.array(np.arange(total, total + t, dtype=np.int64)),
            "task_index": pa.array(np.full(t, task_index, dtype=np.int64)),
        })
        data = dest / f"data/chunk-{chunk:03d}/episode_{index:06d}.parquet"
        data.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.table(table), data)
        for cam in cams:
            encode_video(dest / f"videos/chunk-{chunk:03d}/{IMAGE_PREFIX}{cam}/"
                         f"episode_{index:06d}.mp4", episode.images[cam], fps, codec)
        episodes.append({"episode_index": index, "tasks": [task], "length": t})
        stats.append({"episode_index": index,
                      "stats": {k: _stats(v.astype(np.float64)) for k, v in columns.items()}})
        total += t
    names = list(joint_names) if joint_names is not None else None
    vector = {"dtype": "float32", "shape": [dims], "names": names}
    features = {k: dict(vector) for k in ("observation.state", "observation.velocity",
                                           "observation.effort", "action")}
    codec_name = "av1" if "av1" in codec else ("h264" if "264" in codec else codec)
    for cam in cams:
        h, w, c = shape[cam]
        features[IMAGE_PREFIX + cam] = {
            "dtype": "video", "shape": [h, w, c], "names": ["height", "width", "channels"],
            "info": {"video.fps": fps, "video.height": h, "video.width": w,
                     "video.channels": c, "video.codec": codec_name,
                     "video.pix_fmt": "yuv420p", "video.is_depth_map": False,
                     "has_audio": False},
        }
    for key, dtype in (("timestamp", "float32"), ("frame_index", "int64"),
                       ("episode_index", "int64"), ("index", "int64"),
                       ("task_index", "int64")):
        features[key] = {"dtype": dtype, "shape": [1], "names": None}
    info = {
        "codebase_version": "v2.1", "robot_type": robot_type,
        "total_episodes": len(episodes), "total_frames": total, "total_tasks": len(tasks),
        "total_videos": len(episodes) * len(cams),
        "total_chunks": math.ceil(len(episodes) / CHUNKS_SIZE), "chunks_size": CHUNKS_SIZE,
        "fps": fps, "splits": {"train": f"0:{len(episodes)}"},
        "data_path": "data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet",
        "video_path": "videos/chunk-{episode_chunk:03d}/{video_key}/"
                      "episode_{episode_index:06d}.mp4",
        "features": features,
    }
    meta = dest / "meta"
    meta.mkdir(parents=True, exist_ok=True)
    (meta / "episodes.jsonl").write_text("".join(json.dumps(e) + "\n" for e in episodes))
    (meta / "episodes_stats.jsonl").write_text("".join(json.dumps(s) + "\n" for s in stats))
    (meta / "tasks.jsonl").write_text("".join(
        json.dumps({"task_index": i, "task": t}) + "\n" for t, i in tasks.items()))
    (meta / "info.json").write_text(json.dumps(info, indent=2))  # last: marks it complete
    return dest
