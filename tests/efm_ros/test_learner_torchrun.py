"""The learner under torchrun (issue 6 item 2): two gloo processes (rank 0 the ROS node,
rank 1 a follower) produce the same policy v1 as the single-process learner from the same
spooled episodes: same minibatches, each rank's shard, DDP-averaged gradients."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
import yaml
from ros_harness import ros_environment
from safetensors.numpy import load_file
from tests_efm_ros_helpers import observation


def _spool(folder: Path, episodes: int = 3, length: int = 4) -> None:
    from rclpy.serialization import serialize_message

    from efm_interfaces.msg import LabelledEpisode
    from efm_learning.returns import discounted_returns
    from efm_learning.reward import rewards_from_steps_to_go

    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for e in range(episodes):
        d = np.sort(rng.uniform(0, 20, length + 1))[::-1].copy()
        rewards = rewards_from_steps_to_go(d)
        msg = LabelledEpisode(
            episode_id=f"station_0-test-{e:06d}",
            station="station_0",
            policy_version=0,
            instruction="push the red star to the blue cube",
            length=length,
            observations=[observation(rng.uniform(-0.2, 0.2, 2), step=i) for i in range(length)],
            tokens_per_action=2,
            action_tokens=rng.integers(0, 32, 2 * length).tolist(),
            action_dim=2,
            actions=[0.0] * (2 * length),
            steps_to_go=d.tolist(),
            rewards=rewards.tolist(),
            returns=discounted_returns(rewards).tolist(),
            gamma=0.9,
        )
        (folder / f"{msg.episode_id}.cdr").write_bytes(serialize_message(msg))


def _run_until_v1(cmd: list[str], out: Path, env: dict, log: Path, timeout: float = 120):
    with open(log, "wb") as handle:
        proc = subprocess.Popen(
            cmd, env=env, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True
        )
        deadline = time.monotonic() + timeout
        target = out / "policy" / "v1" / "SHA256SUMS"
        try:
            while not target.exists() and time.monotonic() < deadline and proc.poll() is None:
                time.sleep(0.2)
        finally:
            time.sleep(0.5)
            # torchrun's workers live in their own process groups: kill the whole tree
            tree = psutil.Process(proc.pid).children(recursive=True)
            os.killpg(proc.pid, signal.SIGKILL)
            for child in tree:
                with contextlib.suppress(psutil.NoSuchProcess):
                    child.kill()
            proc.wait()
    assert target.exists(), log.read_text()[-3000:]
    return load_file(str(out / "policy" / "v1" / "model.safetensors"))


@pytest.mark.slow
def test_torchrun_learner_matches_single_process(ros_domain, tiny_checkpoint, tmp_path):
    env = ros_environment(ros_domain)
    results = {}
    for name, launcher in (
        ("single", [sys.executable, "-m", "efm_ros.learner_node"]),
        (
            "torchrun",
            [
                sys.executable,
                "-m",
                "torch.distributed.run",
                "--nproc_per_node",
                "2",
                "--master_port",
                str(29500 + ros_domain),
                "-m",
                "efm_ros.learner_node",
            ],
        ),
    ):
        out = tmp_path / name
        _spool(out / "spool")
        params = tmp_path / f"{name}.yaml"
        params.write_text(
            yaml.safe_dump(
                {
                    "/learner": {
                        "ros__parameters": {
                            "model.policy_checkpoint": str(tiny_checkpoint),
                            "output_dir": str(out),
                            "improve.updates_per_round": 2,
                            "improve.batch_size": 4,
                            "coordinator.service": "/nobody/here",
                        }
                    }
                }
            )
        )
        results[name] = _run_until_v1(
            [*launcher, "--ros-args", "--params-file", str(params)],
            out,
            env,
            tmp_path / f"{name}.log",
        )
    base = load_file(str(tiny_checkpoint / "model.safetensors"))
    changed = [k for k in base if not np.allclose(base[k], results["single"][k])]
    assert changed, "the round must have updated the policy"
    for key, value in results["single"].items():
        np.testing.assert_allclose(results["torchrun"][key], value, atol=1e-5, err_msg=key)
