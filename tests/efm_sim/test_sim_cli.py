"""Subprocess smoke runs of the CLIs: generate (resume, ^C) and view."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from efm_sim import dataset as ds

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "MUJOCO_GL": "egl", "PYTHONPATH": str(ROOT / "src" / "efm_sim")}


def _run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=ENV,
        cwd=ROOT,
    )


def test_generate_pointmass_and_resume(tmp_path: Path) -> None:
    out = tmp_path / "pm"
    res = _run("efm_sim.generate", "--env", "pointmass", "--episodes", "30", "--out", str(out))
    assert res.returncode == 0, res.stderr
    data = ds.EpisodeDataset(out)
    assert len(data) == 30
    eps = list(data.iter_episodes())
    assert all(e.length >= 10 and e.env_name == "pointmass" for e in eps)
    res = _run("efm_sim.generate", "--env", "pointmass", "--episodes", "40", "--out", str(out))
    assert res.returncode == 0 and "wrote 10 new" in res.stderr


def test_generate_pushtable_parallel_and_resumable(tmp_path: Path) -> None:
    out = tmp_path / "pt"
    args = [
        "efm_sim.generate",
        "--env",
        "pushtable",
        "--out",
        str(out),
        "--image-size",
        "32",
        "--workers",
        "2",
        "--seed",
        "5",
    ]
    res = _run(*args, "--episodes", "3")
    assert res.returncode == 0, res.stderr
    first = {p.name: p.stat().st_mtime_ns for p in out.glob("episode_*.h5")}
    assert len(first) == 3
    res = _run(*args, "--episodes", "4", "--workers", "1")
    assert res.returncode == 0, res.stderr
    after = {p.name: p.stat().st_mtime_ns for p in out.glob("episode_*.h5")}
    assert len(after) == 4 and all(after[k] == v for k, v in first.items())
    ep = ds.read_episode(out / "episode_000003.h5")
    assert ep.seed == 8 and ep.images.shape[1:] == (32, 32, 3)
    # Different settings in the same directory are refused.
    res = _run(*args, "--episodes", "4", "--image-size", "48")
    assert res.returncode != 0 and "another --out" in res.stderr


def test_generate_refuses_bananatable_and_bad_family(tmp_path: Path) -> None:
    res = _run(
        "efm_sim.generate", "--env", "bananatable", "--episodes", "1", "--out", str(tmp_path)
    )
    assert res.returncode != 0 and "invalid choice" in res.stderr
    res = _run(
        "efm_sim.generate",
        "--env",
        "pushtable",
        "--episodes",
        "1",
        "--out",
        str(tmp_path / "x"),
        "--task-family",
        "stacking",
    )
    assert res.returncode != 0 and "valid families" in res.stderr


@pytest.mark.skipif(sys.platform != "linux", reason="POSIX signals")
def test_interrupt_keeps_finished_episodes(tmp_path: Path) -> None:
    out = tmp_path / "int"
    cmd = [
        sys.executable,
        "-m",
        "efm_sim.generate",
        "--env",
        "pushtable",
        "--episodes",
        "5000",  # far more than finish before the interrupt (200 once all finished first)
        "--out",
        str(out),
        "--image-size",
        "32",
        "--workers",
        "2",
        "--no-progress",
    ]
    # a runner started in the background of a non-interactive shell ignores SIGINT, and
    # children inherit that: give the generator the default disposition, as in a terminal
    proc = subprocess.Popen(
        cmd, env=ENV, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        deadline = time.time() + 60
        while time.time() < deadline and len(list(out.glob("episode_*.h5"))) < 2:
            time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert "re-run to resume" in err
    kept = sorted(out.glob("episode_*.h5"))
    assert 2 <= len(kept) < 5000
    for p in kept:  # every visible file is complete: writes are atomic
        ds.read_episode(p, load_images=False)


def test_view_dataset_and_fresh_episode(tmp_path: Path) -> None:
    out = tmp_path / "pm"
    assert (
        _run(
            "efm_sim.generate", "--env", "pointmass", "--episodes", "2", "--out", str(out)
        ).returncode
        == 0
    )
    idx = ds.episode_index_of(sorted(out.glob("episode_*.h5"))[0])
    res = _run(
        "efm_sim.view",
        "--dataset",
        str(out),
        "--episode",
        str(idx),
        "--out",
        str(tmp_path / "pm_view"),
    )
    assert res.returncode == 0, res.stderr
    res = _run(
        "efm_sim.view",
        "--env",
        "bananatable",
        "--seed",
        "1",
        "--image-size",
        "48",
        "--out",
        str(tmp_path / "banana"),
    )
    assert res.returncode == 0, res.stderr
    import imageio.v3 as iio

    sheet = iio.imread(tmp_path / "banana.png")
    gif = iio.imread(tmp_path / "banana.gif", index=None)
    assert sheet.ndim == 3 and gif.shape[1:3] == (48, 48)
    assert np.any(sheet != 255)


def test_generate_pushtable_on_a_smaller_board(tmp_path: Path) -> None:
    out = tmp_path / "pt4"
    res = _run("efm_sim.generate", "--env", "pushtable", "--out", str(out), "--image-size", "32",
               "--workers", "1", "--episodes", "3", "--task-family", "block2block",
               "--blocks", "red moon, blue cube,green star")
    assert res.returncode == 0, res.stderr
    eps = list(ds.EpisodeDataset(out).iter_episodes())
    assert len(eps) == 3
    for e in eps:
        assert e.env_states.shape[1] == 9  # three blocks
        assert not any(b in e.instruction for b in ("yellow", "pentagon", "red pentagon"))
    res = _run("efm_sim.generate", "--env", "pushtable", "--out", str(tmp_path / "bad"),
               "--episodes", "1", "--blocks", "red moon")
    assert res.returncode != 0 and "at least 2" in res.stderr
