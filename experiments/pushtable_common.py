"""What the PushTable experiments (sample efficiency, pretraining, BananaTable) share.

All three start from ``config/pushtable.yaml`` (conv_efm, 4 blocks, 64-px camera; the
Stage 1 that ``make demo`` trains) and measure ground-truth success on the same
held-out tasks (``experiments.held_out_tasks``; evaluation only).
"""

from __future__ import annotations

import argparse
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


def experiment_parser(prog: str, description: str, data_help: str,
                      stage1_help: str | None = None) -> argparse.ArgumentParser:
    """The options every PushTable experiment has (``--stage1`` where Stage 1 is reusable)."""
    p = argparse.ArgumentParser(prog=f"python -m {prog}", description=description)
    p.add_argument("--config", default=DEFAULT_CONFIG)
    if stage1_help is not None:
        p.add_argument("--stage1", default=None, metavar="DIR", help=stage1_help)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds")
    p.add_argument("--data-dir", default=None, help=data_help)
    p.add_argument("--out", default=None)
    p.add_argument("--test-tasks", type=int, default=None,
                   help=f"held-out evaluation tasks (default 200; {QUICK_TEST_TASKS} with "
                   "--quick)")
    p.add_argument("--quick", action="store_true", help="tiny configuration (smoke test)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    return p


def start(args: argparse.Namespace, name: str) -> tuple[Any, Path, list[int]]:
    """``(progress printer, output folder, held-out tasks)`` of an experiment run."""
    from experiments import Progress, held_out_tasks, setup_runtime

    setup_runtime()
    out = Path(args.out or f"runs/experiments/{name}{'_quick' if args.quick else ''}")
    out.mkdir(parents=True, exist_ok=True)
    n_test = args.test_tasks or (QUICK_TEST_TASKS if args.quick else 200)
    return Progress(name), out, held_out_tasks(n_test)
