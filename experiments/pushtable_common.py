"""What the PushTable experiments (sample efficiency, pretraining, BananaTable) share.

All three start from ``config/pushtable.yaml`` (conv_efm, 4 blocks, 64-px camera; the
Stage 1 that ``make demo-pushtable`` trains) and measure ground-truth success on the same
held-out tasks (``experiments.held_out_tasks``; evaluation only).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

DEFAULT_CONFIG = "config/pushtable.yaml"

#: Stage 2 at experiment scale (each run ~3-5 min here): 20 rounds of N x B = 16 x 64,
#: the best round chosen on 50 selection tasks every 5 rounds (round 0 = Stage 1 itself).
STAGE2_OVERRIDES = [
    "improve.rounds=20",
    "improve.eval_episodes=50",
    "improve.eval_every=5",
    "improve.checkpoint_every=5",
]

#: seconds-long configuration for the CI smoke tests: a tiny board, model and schedule
QUICK_OVERRIDES = [
    "data.generate_episodes=12",
    "env_kwargs.image_size=32",
    "model.image_size=32",
    "model.channels=[8, 8]",
    "model.num_keypoints=4",
    "model.hidden_size=32",
    "sft.steps=6",
    "sft.batch_size=16",
    "sft.eval_every=3",
    "sft.checkpoint_every=3",
    "sft.val_batches=1",
    "improve.rounds=2",
    "improve.updates_per_round=2",
    "improve.batch_size=8",
    "improve.num_envs=4",
    "improve.max_episode_steps=8",
    "improve.eval_episodes=4",
    "improve.eval_every=1",
    "improve.checkpoint_every=1",
]

QUICK_TEST_TASKS = 4


def overrides(run_dir: Path, user: list[str], quick: bool,
              data_dir: str | Path | None = None) -> list[str]:
    """Experiment overrides, in order: Stage 2 scale, --quick, data dir, --set, run_dir."""
    data = [f"data.dir={data_dir}"] if data_dir is not None else []
    return [*STAGE2_OVERRIDES, *(QUICK_OVERRIDES if quick else []), *data, *user,
            "num_threads=1", f"run_dir={run_dir}"]


def data_dir(args: Any, out: Path) -> str | Path | None:
    """``--data-dir``, else ``<out>/data`` with --quick, else the config's own."""
    return args.data_dir or (out / "data" if args.quick else None)


def mean_std(values: list[float]) -> tuple[float, float]:
    array = np.asarray(values, dtype=float)
    return float(array.mean()), float(array.std())


def success_summary(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean / std / per-seed GT success and mean length of evaluation records."""
    out: dict[str, Any] = {}
    for key in ("success_rate", "mean_length"):
        values = [float(r[key]) for r in records]
        mean, std = mean_std(values)
        out[key] = {"mean": mean, "std": std, "per_seed": values}
    return out
