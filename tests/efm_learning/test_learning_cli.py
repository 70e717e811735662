"""The `efm` command line, run as subprocesses (CleanRL style: entry points cannot rot)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


def efm(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "efm_learning.cli", *args], cwd=cwd, env=ENV,
                          capture_output=True, text=True, timeout=300)


def test_help_explains_the_commands():
    out = efm("--help")
    assert out.returncode == 0
    for command in ("sft", "improve", "eval", "demo"):
        assert command in out.stdout
    assert "Self-Improvement" in out.stdout


def test_config_errors_name_the_key_and_allowed_values(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  type: mlp\nimprove:\n  selection_metric: luck\n")
    out = efm("sft", "--config", str(bad))
    assert out.returncode == 2
    assert "improve.selection_metric" in out.stderr and "'ground_truth'" in out.stderr
    out = efm("improve", "--config", str(REPO / "config/pointmass.yaml"), "--set", "sft.stepz=3")
    assert out.returncode == 2 and "sft.stepz" in out.stderr


def test_sft_improve_eval_end_to_end(pointmass_data, tmp_path):
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump({
        "name": "tiny", "run_dir": str(tmp_path / "run"), "num_threads": 1,
        "data": {"dir": str(pointmass_data)},
        "model": {"type": "mlp", "hidden_size": 32, "num_layers": 2},
        "sft": {"steps": 30, "batch_size": 32, "eval_every": 10, "checkpoint_every": 10},
        "improve": {"rounds": 2, "updates_per_round": 2, "batch_size": 16, "num_envs": 4,
                    "eval_episodes": 4, "max_episode_steps": 30},
    }))
    out = efm("sft", "--config", str(config), "--quiet")
    assert out.returncode == 0, out.stderr
    assert "best_steps_to_go" in json.loads(out.stdout)["checkpoints"]
    out = efm("improve", "--config", str(config), "--quiet")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["rounds_run"] == 2
    best = tmp_path / "run" / "improve" / "best"
    out = efm("eval", "--config", str(config), "--checkpoint", str(best), "--episodes", "3",
              "--quiet")
    assert out.returncode == 0, out.stderr
    assert 0.0 <= json.loads(out.stdout)["eval/success_rate"] <= 1.0


def test_generated_demos_match_the_configured_camera_families_and_blocks(tmp_path, capfd):
    """Stage 1 data is written for the board the model will act on (config env_kwargs);
    without progress (``efm sft --quiet``) the generator draws no progress bar."""
    from efm_learning.config import load_config
    from efm_learning.pipeline import ensure_dataset
    from efm_sim.dataset import EpisodeDataset, read_episode

    cfg = load_config(REPO / "config/pushtable.yaml",
                      [f"data.dir={tmp_path / 'demos'}", "data.generate_episodes=2",
                       "env_kwargs.task_families=[block2location]"])
    assert ensure_dataset(cfg, echo=lambda _: None, progress=False) == 2
    assert "pushtable demos" not in capfd.readouterr().err
    episodes = [read_episode(p) for p in EpisodeDataset(tmp_path / "demos").paths]
    for episode in episodes:
        assert episode.images.shape[1:] == (64, 64, 3)
        assert episode.task_family == "block2location"
        named = [b for b in ("red moon", "blue cube", "green star", "yellow pentagon")
                 if b in episode.instruction]
        assert named, episode.instruction
        for absent in ("red pentagon", "blue moon", "green cube", "yellow star"):
            assert absent not in episode.instruction
