"""ALOHA insertion (paper Appendix D.3): env, demonstrator, recording layout, generation."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import h5py
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import efm_sim
from efm_sim import aloha_dataset as ads
from efm_sim import aloha_generate
from efm_sim.aloha import (
    CAMERAS,
    GRIPPER_POSITION_CLOSE,
    GRIPPER_POSITION_OPEN,
    AlohaInsertionEnv,
    gym_aloha_assets,
)
from efm_sim.aloha_demonstrator import AlohaInsertionDemonstrator

SIZE = (48, 64)
ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "MUJOCO_GL": "egl", "PYTHONPATH": str(ROOT / "src" / "efm_sim")}


@pytest.fixture(scope="module")
def env() -> AlohaInsertionEnv:
    env = AlohaInsertionEnv(image_size=SIZE)
    yield env
    env.close()


@pytest.fixture(scope="module")
def blind_env() -> AlohaInsertionEnv:
    """No cameras: fast, for demonstrator rollouts."""
    return AlohaInsertionEnv(cameras=())


# -- env ------------------------------------------------------------------------------
def test_check_env_via_gymnasium_make() -> None:
    env = gym.make("efm/AlohaInsertion-v0", image_size=SIZE, render_mode="rgb_array")
    check_env(env.unwrapped, skip_render_check=False)
    assert env.unwrapped.render().shape == (*SIZE, 3)
    env.close()
    assert isinstance(efm_sim.make_env("aloha_insertion", cameras=()), AlohaInsertionEnv)
    assert "aloha_insertion" in efm_sim.ALL_ENV_NAMES


def test_assets_are_loaded_from_the_installed_gym_aloha() -> None:
    assets = gym_aloha_assets()
    assert (assets / "bimanual_viperx_insertion.xml").is_file()
    assert "site-packages" in str(assets) or "gym_aloha" in str(assets)
    assert not list((ROOT / "src" / "efm_sim").rglob("*.stl"))  # never copied


def test_four_cameras_with_configured_size_and_different_views(env: AlohaInsertionEnv) -> None:
    obs, _ = env.reset(seed=0)
    assert set(obs) == {"qpos", "qvel", "effort", "images"}
    assert tuple(obs["images"]) == CAMERAS
    frames = [obs["images"][c] for c in CAMERAS]
    for f in frames:
        assert f.shape == (*SIZE, 3) and f.dtype == np.uint8
        assert f.std() > 5  # not blank
    for i in range(4):
        for j in range(i + 1, 4):
            assert np.abs(frames[i].astype(int) - frames[j].astype(int)).mean() > 5
    # Wrist cameras ride on the grippers: moving the left arm changes only its view a lot.
    a = obs["qpos"].copy()
    a[0] += 0.5
    for _ in range(15):
        nxt, *_ = env.step(a)
    moved = {
        c: np.abs(nxt["images"][c].astype(int) - obs["images"][c].astype(int)).mean()
        for c in CAMERAS
    }
    assert moved["cam_left_wrist"] > 3 * moved["cam_right_wrist"]
    for arm in ("left", "right"):
        cam = env.model.camera(f"cam_{arm}_wrist")
        assert env.model.body(cam.bodyid[0]).name == f"vx300s_{arm}/gripper_link"


def test_observation_and_action_layout(env: AlohaInsertionEnv) -> None:
    obs, info = env.reset(seed=1)
    for key in ("qpos", "qvel", "effort"):
        assert obs[key].shape == (14,) and obs[key].dtype == np.float32
    assert env.action_space.shape == (14,)
    assert set(info) == {"stage", "max_stage", "success"} and info["success"] is False
    # Gripper slots hold the normalised finger position.
    finger = env.data.qpos[env.model.joint("vx300s_left/left_finger").qposadr[0]]
    expected = (finger - GRIPPER_POSITION_CLOSE) / (GRIPPER_POSITION_OPEN - GRIPPER_POSITION_CLOSE)
    assert obs["qpos"][6] == pytest.approx(expected, abs=1e-6)
    assert env.substeps * env.model.opt.timestep == pytest.approx(0.02)


def test_seeded_reset_is_reproducible_and_within_gym_aloha_ranges(
    blind_env: AlohaInsertionEnv,
) -> None:
    blind_env.reset(seed=7)
    peg, socket = blind_env.peg_pose(), blind_env.socket_pose()
    blind_env.reset(seed=8)
    assert not np.allclose(blind_env.peg_pose(), peg)
    blind_env.reset(seed=7)
    np.testing.assert_array_equal(blind_env.peg_pose(), peg)
    np.testing.assert_array_equal(blind_env.socket_pose(), socket)
    pegs, sockets = [], []
    for s in range(60):
        blind_env.reset(seed=s)
        pegs.append(blind_env.peg_pose()[:3])
        sockets.append(blind_env.socket_pose()[:3])
    pegs, sockets = np.array(pegs), np.array(sockets)
    assert pegs[:, 0].min() >= 0.1 and pegs[:, 0].max() <= 0.2
    assert sockets[:, 0].min() >= -0.2 and sockets[:, 0].max() <= -0.1
    for xy in (pegs, sockets):
        assert xy[:, 1].min() >= 0.4 and xy[:, 1].max() <= 0.6
        assert np.ptp(xy[:, 0]) > 0.05 and np.ptp(xy[:, 1]) > 0.1  # actually random


@pytest.mark.parametrize(
    "bad",
    [np.zeros(13), np.zeros((2, 14)), np.full(14, np.nan), np.r_[np.zeros(13), np.inf], "x"],
)
def test_bad_actions_refused(blind_env: AlohaInsertionEnv, bad: object) -> None:
    blind_env.reset(seed=0)
    before = blind_env.data.ctrl.copy()
    with pytest.raises(ValueError):
        blind_env.step(bad)
    np.testing.assert_array_equal(blind_env.data.ctrl, before)  # never applied


def test_step_before_reset_refused() -> None:
    with pytest.raises(RuntimeError, match="reset"):
        AlohaInsertionEnv(cameras=()).step(np.zeros(14, np.float32))


def test_out_of_range_targets_are_clipped_to_ctrlrange(blind_env: AlohaInsertionEnv) -> None:
    blind_env.reset(seed=0)
    m, d = blind_env.model, blind_env.data
    blind_env.step(np.r_[np.full(6, 10.0), 5.0, np.full(6, -10.0), -3.0].astype(np.float32))
    lo, hi = m.actuator_ctrlrange.T
    left_arm, right_arm = blind_env._arm_act
    np.testing.assert_allclose(d.ctrl[left_arm], hi[left_arm])
    np.testing.assert_allclose(d.ctrl[right_arm], lo[right_arm])
    left_finger = blind_env._finger_act[0][0]
    right_finger = blind_env._finger_act[1][0]
    assert d.ctrl[left_finger] == pytest.approx(hi[left_finger])  # open, at the limit
    assert d.ctrl[right_finger] == pytest.approx(lo[right_finger])  # closed, at the limit
    assert np.all(d.ctrl >= lo) and np.all(d.ctrl <= hi)


def _place(env: AlohaInsertionEnv, peg_offset: tuple[float, float, float]) -> int:
    """Socket in the air at the meeting point, peg at socket + offset; returns the stage."""
    env.reset(seed=0)
    socket = np.array([0.0, 0.5, 0.25])
    env.set_object_poses([*(socket + peg_offset), 1, 0, 0, 0], [*socket, 1, 0, 0, 0])
    return env.contact_stage()


def test_ground_truth_success_only_when_peg_touches_pin(blind_env: AlohaInsertionEnv) -> None:
    assert _place(blind_env, (0.0999, 0.0, 0.0)) == 4  # peg end against the pin
    assert blind_env.task_success()
    assert _place(blind_env, (0.11, 0.0, 0.0)) < 4  # 1 cm short of the pin, inside
    assert _place(blind_env, (0.11, 0.0085, 0.0)) == 3  # rubbing a wall, not the pin
    assert not blind_env.task_success()
    blind_env.reset(seed=0)
    for _ in range(10):  # objects resting on the table
        _, _, _, _, info = blind_env.step(blind_env.qpos().astype(np.float32))
    assert info["stage"] == 0 and not info["success"]


# -- demonstrator ---------------------------------------------------------------------
def _rollout(env: AlohaInsertionEnv, demo: AlohaInsertionDemonstrator, seed: int) -> dict:
    obs, _ = env.reset(seed=seed)
    demo.reset(obs, np.random.default_rng([seed, 1]))
    pin = (env._geom["red_peg"], env._geom["pin"])
    pin = (min(pin), max(pin))
    stages, actions = [], []
    while True:
        action = demo.act(obs)
        actions.append(action)
        obs, reward, term, trunc, info = env.step(action)
        assert info["success"] == (pin in env.contacts())
        assert reward == float(info["success"])
        stages.append(info["stage"])
        if term or trunc:
            return {"success": info["success"], "stages": stages, "actions": np.array(actions)}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_demonstrator_inserts_the_peg(blind_env: AlohaInsertionEnv, seed: int) -> None:
    demo = AlohaInsertionDemonstrator(env=blind_env)
    res = _rollout(blind_env, demo, seed)
    assert res["success"] and len(res["stages"]) <= 400
    stages = res["stages"]
    assert stages.index(2) < stages.index(4)  # grasped and lifted before inserting
    assert np.all(np.isfinite(res["actions"]))


def test_demonstrator_is_seeded_and_varied(blind_env: AlohaInsertionEnv) -> None:
    demo = AlohaInsertionDemonstrator(suboptimality=1.0, env=blind_env)

    def first_actions(seed: int, rng_seed: int) -> np.ndarray:
        obs, _ = blind_env.reset(seed=seed)
        demo.reset(obs, np.random.default_rng(rng_seed))
        out = []
        for _ in range(40):
            a = demo.act(obs)
            out.append(a)
            obs, *_ = blind_env.step(a)
        return np.array(out)

    a = first_actions(3, 0)
    np.testing.assert_array_equal(a, first_actions(3, 0))
    assert np.abs(a - first_actions(3, 1)).max() > 1e-3  # same scene, another "person"
    with pytest.raises(ValueError):
        AlohaInsertionDemonstrator(suboptimality=1.5)
    with pytest.raises(TypeError):
        AlohaInsertionDemonstrator().bind(efm_sim.make_env("pointmass"))


# -- recording layout -----------------------------------------------------------------
def _small_episode(env: AlohaInsertionEnv, steps: int = 6) -> ads.AlohaEpisode:
    obs, _ = env.reset(seed=2)
    rec: dict[str, list] = {"qpos": [], "qvel": [], "effort": [], "action": []}
    images: dict[str, list] = {c: [] for c in CAMERAS}
    for _ in range(steps):
        action = obs["qpos"] + 0.01
        for k in ("qpos", "qvel", "effort"):
            rec[k].append(obs[k])
        rec["action"].append(action)
        for c in CAMERAS:
            images[c].append(obs["images"][c])
        obs, *_ = env.step(action)
    return ads.AlohaEpisode(
        **{k: np.array(v) for k, v in rec.items()},
        images={c: np.array(v) for c, v in images.items()},
        sim=True,
        attrs={"seed": 2, "success": False, "demonstrator": {"suboptimality": 0.5}},
    )


def test_hdf5_round_trip_in_aloha_layout(env: AlohaInsertionEnv, tmp_path: Path) -> None:
    ep = _small_episode(env)
    path = ads.write_aloha_episode(ads.episode_path(tmp_path, 0), ep)
    assert path.name == "episode_0.hdf5" and not list(tmp_path.glob(".*tmp"))
    with h5py.File(path, "r") as f:  # the station's layout, readable without efm
        assert bool(f.attrs["sim"]) is True
        assert f["/observations/qpos"].shape == (6, 14)
        assert f["/observations/images/cam_left_wrist"].shape == (6, *SIZE, 3)
        assert f["/action"].shape == (6, 14)
    back = ads.read_aloha_episode(path)
    for k in ("qpos", "qvel", "effort", "action"):
        np.testing.assert_array_equal(getattr(back, k), getattr(ep, k))
    assert set(back.images) == set(CAMERAS)
    for c in CAMERAS:
        np.testing.assert_array_equal(back.images[c], ep.images[c])
    assert back.sim and back.success is False and back.attrs["seed"] == 2
    assert back.attrs["demonstrator"] == {"suboptimality": 0.5}
    only = ads.read_aloha_episode(path, cameras=["cam_high"])
    assert list(only.images) == ["cam_high"]
    assert ads.read_aloha_episode(path, load_images=False).images == {}


def test_writer_leaves_no_file_unless_finished(tmp_path: Path) -> None:
    target = tmp_path / "episode_3.hdf5"
    with ads.AlohaEpisodeWriter(target) as w:
        w.append(np.zeros(14), np.zeros(14), np.zeros(14), np.zeros(14))
        assert not target.exists()
    assert not target.exists() and not list(tmp_path.iterdir())


def test_reader_reads_a_real_station_style_recording(tmp_path: Path) -> None:
    """float64, no efm attributes, sim=False, JPEG-compressed frames (station recorder)."""
    import io

    from PIL import Image

    t = 3
    frame = np.zeros((16, 20, 3), np.uint8)
    frame[:, :10] = (200, 30, 30)
    buf = io.BytesIO()
    Image.fromarray(frame).save(buf, format="JPEG", quality=95)
    jpeg = np.frombuffer(buf.getvalue(), np.uint8)
    padded = np.zeros((t, len(jpeg) + 7), np.uint8)
    padded[:, : len(jpeg)] = jpeg
    path = tmp_path / "episode_0.hdf5"
    with h5py.File(path, "w") as f:
        f.attrs["sim"] = False
        f.attrs["compress"] = True
        for key in ("qpos", "qvel", "effort"):
            f.create_dataset(f"observations/{key}", data=np.ones((t, 14)))
        f.create_dataset("observations/images/cam_high", data=padded)
        f.create_dataset("action", data=np.ones((t, 14)))
    ep = ads.read_aloha_episode(path)
    assert not ep.sim and ep.success is None and ep.qpos.dtype == np.float32
    assert ep.images["cam_high"].shape == (t, 16, 20, 3)
    assert np.abs(ep.images["cam_high"][0].astype(int) - frame).mean() < 10


def _valid(path: Path, **overrides: np.ndarray) -> Path:
    data = {
        "observations/qpos": np.zeros((4, 14), np.float32),
        "observations/qvel": np.zeros((4, 14), np.float32),
        "observations/images/cam_high": np.zeros((4, 8, 8, 3), np.uint8),
        "action": np.zeros((4, 14), np.float32),
        **overrides,
    }
    with h5py.File(path, "w") as f:
        f.attrs["sim"] = True
        for key, value in data.items():
            if value is not None:
                f.create_dataset(key, data=value)
    return path


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"action": None}, "/action"),
        ({"observations/qpos": np.zeros((4, 7))}, "qpos must have shape"),
        ({"observations/qvel": np.zeros((5, 14))}, "qvel must have shape"),
        ({"action": np.zeros((4, 14), np.int64)}, "floating point"),
        ({"observations/images/cam_high": np.zeros((4, 8, 8, 3))}, "uint8"),
        ({"observations/images/cam_high": np.zeros((3, 8, 8, 3), np.uint8)}, "images/cam_high"),
        ({"observations/qpos": np.full((4, 14), np.nan)}, "NaN"),
    ],
)
def test_reader_refuses_bad_files(tmp_path: Path, overrides: dict, message: str) -> None:
    path = _valid(tmp_path / "episode_0.hdf5", **overrides)
    with pytest.raises(ads.AlohaEpisodeError, match=message):
        ads.read_aloha_episode(path)


def test_reader_refuses_corrupted_and_foreign_files(env: AlohaInsertionEnv, tmp_path: Path) -> None:
    good = ads.write_aloha_episode(tmp_path / "episode_0.hdf5", _small_episode(env, 3))
    ads.read_aloha_episode(good)
    raw = good.read_bytes()
    cut = tmp_path / "episode_1.hdf5"
    cut.write_bytes(raw[: len(raw) // 2])  # truncated copy
    junk = tmp_path / "episode_2.hdf5"
    junk.write_bytes(b"not hdf5 at all" * 100)
    for path in (cut, junk):
        with pytest.raises(ads.AlohaEpisodeError, match=path.name):
            ads.read_aloha_episode(path)
        assert not ads.is_complete_episode(path)
    no_sim = _valid(tmp_path / "episode_3.hdf5")
    with h5py.File(no_sim, "a") as f:
        del f.attrs["sim"]
    with pytest.raises(ads.AlohaEpisodeError, match="sim"):
        ads.read_aloha_episode(no_sim)
    only_high = _valid(tmp_path / "episode_4.hdf5")
    with pytest.raises(ads.AlohaEpisodeError, match="cam_low"):
        ads.read_aloha_episode(only_high, cameras=["cam_low"])


# -- generation -----------------------------------------------------------------------
def _run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "efm_sim.aloha_generate", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=ENV,
        cwd=ROOT,
    )


def test_generation_is_resumable(tmp_path: Path) -> None:
    out = tmp_path / "demos"
    args = ["--out", str(out), "--no-images", "--seed", "10", "--no-progress"]
    res = _run(*args, "--episodes", "2", "--workers", "1")
    assert res.returncode == 0, res.stderr
    first = {p.name: p.stat().st_mtime_ns for p in out.glob("episode_*.hdf5")}
    assert sorted(first) == ["episode_0.hdf5", "episode_1.hdf5"]
    res = _run(*args, "--episodes", "3", "--workers", "2")
    assert res.returncode == 0, res.stderr
    assert "wrote 1 new episode" in res.stderr
    after = {p.name: p.stat().st_mtime_ns for p in out.glob("episode_*.hdf5")}
    assert len(after) == 3 and all(after[k] == v for k, v in first.items())
    log = json.loads((out / "attempts.json").read_text())
    assert log["kept"] == 3 and log["attempted"] >= 3
    ep = ads.read_aloha_episode(out / "episode_2.hdf5")
    assert ep.success and ep.attrs["seed"] == 12 and ep.images == {}
    res = _run(*args, "--episodes", "3", "--suboptimality", "0.1")
    assert res.returncode != 0 and "another --out" in res.stderr


def test_a_second_generator_on_the_same_directory_is_refused(tmp_path: Path) -> None:
    """It would delete the running one's in-progress temporaries as stale (seen: the
    first generator then crashed renaming its episode)."""
    from efm_sim.aloha_generate import exclusive

    out = tmp_path / "demos"
    out.mkdir()
    running = out / ".episode_0.hdf5.123.tmp"
    with exclusive(out):  # a generator at work on this directory
        running.write_bytes(b"partial")
        res = _run("--out", str(out), "--no-images", "--episodes", "1", "--no-progress")
        assert res.returncode != 0 and "another generator is writing" in res.stderr
        assert running.read_bytes() == b"partial"
    res = _run("--out", str(out), "--no-images", "--episodes", "1", "--no-progress")
    assert res.returncode == 0, res.stderr  # free again once it finished
    assert not running.exists() and (out / "episode_0.hdf5").is_file()


def test_generation_writes_four_camera_episodes_and_keeps_only_successes(
    tmp_path: Path,
) -> None:
    out = tmp_path / "img"
    env_kwargs = {"image_size": [16, 24], "max_episode_steps": 400}
    summary = aloha_generate.generate(out, 1, seed=0, env_kwargs=env_kwargs, progress=False)
    assert summary["kept"] == 1
    ep = ads.read_aloha_episode(out / "episode_0.hdf5")
    assert set(ep.images) == set(CAMERAS) and ep.images["cam_low"].shape[1:] == (16, 24, 3)
    assert ep.length == ep.attrs["length"] and ep.success
    # A demonstrator that cannot finish in time: attempts are logged, nothing is kept.
    short = tmp_path / "short"
    summary = aloha_generate.generate(
        short,
        2,
        env_kwargs={"cameras": [], "max_episode_steps": 20},
        max_attempts=2,
        progress=False,
    )
    assert summary["kept"] == 0 and summary["failed"] == [0, 1]
    temporaries = [t for t in short.glob(".*") if t.name != ".generate.lock"]
    assert not list(short.glob("*.hdf5")) and not temporaries


def test_measure_command_reports_success() -> None:
    res = _run("--measure", "2", "--workers", "1", "--no-progress")
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout.strip().splitlines()[-1])
    assert report["episodes"] == 2 and report["success_rate"] == 1.0
