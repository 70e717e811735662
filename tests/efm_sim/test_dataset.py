"""Episode dataset format: round trip, streaming, schema versions, corrupt files."""

from __future__ import annotations

import logging
from pathlib import Path

import h5py
import numpy as np
import pytest

from efm_sim import dataset as ds
from efm_sim import keys


def _episode(t: int = 5, images: bool = True, seed: int = 0) -> ds.Episode:
    rng = np.random.default_rng(seed)
    return ds.Episode(
        env_name="pushtable",
        seed=seed,
        instruction="push the red moon to the blue cube",
        task_family="block2block",
        success=bool(seed % 2),
        states=rng.normal(size=(t + 1, 2)),
        actions=rng.normal(size=(t, 2)),
        images=rng.integers(0, 255, size=(t + 1, 8, 8, 3), dtype=np.uint8) if images else None,
        env_states=rng.normal(size=(t + 1, 24)),
        attrs={"suboptimality": 0.5},
    )


def test_round_trip(tmp_path: Path) -> None:
    ep = _episode()
    path = ds.write_episode(ds.episode_path(tmp_path, 3), ep)
    assert path.name == "episode_000003.h5"
    back = ds.read_episode(path)
    for name in ("env_name", "seed", "instruction", "task_family", "success", "attrs"):
        assert getattr(back, name) == getattr(ep, name)
    np.testing.assert_array_equal(back.images, ep.images)
    np.testing.assert_array_equal(back.states, ep.states)
    np.testing.assert_array_equal(back.actions, ep.actions)
    np.testing.assert_array_equal(back.env_states, ep.env_states)
    assert back.length == 5
    with h5py.File(path) as f:
        assert f.attrs[keys.SCHEMA_VERSION] == ds.SCHEMA_VERSION
        assert f[keys.OBS_IMAGE].compression == "gzip"
    assert not list(tmp_path.glob(".*tmp"))  # temporary file renamed away


def test_episode_validates_shapes() -> None:
    with pytest.raises(ValueError, match="states"):
        ds.Episode("x", 0, "i", "f", True, states=np.zeros((3, 2)), actions=np.zeros((3, 2)))
    with pytest.raises(ValueError, match="images"):
        ds.Episode(
            "x",
            0,
            "i",
            "f",
            True,
            np.zeros((4, 2)),
            np.zeros((3, 2)),
            images=np.zeros((3, 8, 8, 3), np.uint8),
        )


def test_streams_transitions_with_previous_frame(tmp_path: Path) -> None:
    eps = [_episode(t=3, seed=s) for s in range(2)]
    for i, ep in enumerate(eps):
        ds.write_episode(ds.episode_path(tmp_path, i), ep)
    data = ds.EpisodeDataset(tmp_path)
    assert len(data) == 2
    items = list(data.iter_transitions())
    assert len(items) == 6
    first, second = items[0], items[1]
    np.testing.assert_array_equal(first[keys.OBS_PREV_IMAGE], eps[0].images[0])
    np.testing.assert_array_equal(second[keys.OBS_PREV_IMAGE], eps[0].images[0])
    np.testing.assert_array_equal(second[keys.OBS_IMAGE], eps[0].images[1])
    np.testing.assert_array_equal(items[2][keys.NEXT_OBS_IMAGE], eps[0].images[3])
    assert [it[keys.STEPS_TO_GO] for it in items[:3]] == [3, 2, 1]
    assert [it[keys.DONE] for it in items[:3]] == [False, False, True]
    assert items[3][keys.EPISODE_INDEX] == 1


def test_iter_episodes_is_lazy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for i in range(3):
        ds.write_episode(ds.episode_path(tmp_path, i), _episode(seed=i))
    reads: list[Path] = []
    real = ds.read_episode
    monkeypatch.setattr(ds, "read_episode", lambda p, **kw: reads.append(p) or real(p, **kw))
    it = ds.EpisodeDataset(tmp_path).iter_episodes()
    next(it)
    assert len(reads) == 1


def test_other_schema_version_refused(tmp_path: Path) -> None:
    path = ds.write_episode(ds.episode_path(tmp_path, 0), _episode())
    with h5py.File(path, "r+") as f:
        f.attrs[keys.SCHEMA_VERSION] = ds.SCHEMA_VERSION + 1
    with pytest.raises(ds.SchemaVersionError, match=r"schema version 2.*reads version 1"):
        ds.read_episode(path)
    with pytest.raises(ds.SchemaVersionError):
        list(ds.EpisodeDataset(tmp_path).iter_episodes())


def test_other_schema_in_meta_refused(tmp_path: Path) -> None:
    ds.write_meta(tmp_path, {"env_name": "pushtable"})
    meta = tmp_path / "meta.json"
    meta.write_text(meta.read_text().replace('"schema_version": 1', '"schema_version": 99'))
    with pytest.raises(ds.SchemaVersionError, match="99"):
        ds.EpisodeDataset(tmp_path)


def test_truncated_file_is_reported_and_skipped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    for i in range(3):
        ds.write_episode(ds.episode_path(tmp_path, i), _episode(t=20, seed=i))
    bad = ds.episode_path(tmp_path, 1)
    data = bad.read_bytes()
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(ds.CorruptEpisodeError, match="episode_000001"):
        ds.read_episode(bad)
    assert not ds.is_complete_episode(bad)
    dataset = ds.EpisodeDataset(tmp_path)
    with caplog.at_level(logging.WARNING):
        seeds = [ep.seed for ep in dataset.iter_episodes()]
    assert seeds == [0, 2]
    assert dataset.skipped == [bad]
    assert "skipping corrupt episode" in caplog.text


def test_incomplete_flag_detected(tmp_path: Path) -> None:
    path = ds.write_episode(ds.episode_path(tmp_path, 0), _episode())
    with h5py.File(path, "r+") as f:
        f.attrs["complete"] = False
    with pytest.raises(ds.CorruptEpisodeError, match="incomplete"):
        ds.read_episode(path)


def test_garbage_file_detected(tmp_path: Path) -> None:
    path = ds.episode_path(tmp_path, 0)
    path.write_bytes(b"not an hdf5 file")
    with pytest.raises(ds.CorruptEpisodeError):
        ds.read_episode(path)


def test_failed_write_leaves_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ep = _episode()

    def boom(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(ds.os, "replace", boom)
    with pytest.raises(KeyboardInterrupt):
        ds.write_episode(ds.episode_path(tmp_path, 0), ep)
    assert list(tmp_path.iterdir()) == []


def test_state_only_episode(tmp_path: Path) -> None:
    ep = _episode(images=False)
    back = ds.read_episode(ds.write_episode(tmp_path / "episode_000000.h5", ep))
    assert back.images is None
    item = next(ds.episode_transitions(back))
    assert keys.OBS_IMAGE not in item
