"""Paper experiments at CPU scale, one command each (issue 7; results in docs/RESULTS.md).

    python -m experiments.pointmass        Figure 4: dataset, Stage 1 and Stage 2 policies
    python -m experiments.reward_quality   d(o, g) calibration and the d <= s detector

Each writes ``results.json`` and PNGs under its ``--out`` directory, prints progress, and
is resumable: finished pieces (Stage 1, each Stage 2 seed) are kept and skipped. This
module holds the little they share; the work itself is done by ``efm_learning``.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

# Evaluation tasks the experiments report on: env seeds disjoint from the demonstrations
# (0..~11k), from the fixed tasks Stage 2 selects its best round on
# (efm_learning.evaluation.EVAL_SEED_BASE = 1e9) and, for all practical purposes, from
# the random practice seeds. Reporting on other tasks than the ones used for model
# selection keeps the selection from flattering the numbers.
TEST_SEED_BASE = 2_000_000_000


class Progress:
    """Timestamped progress lines on stdout (flushed, so a log file follows the run)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.t0 = time.perf_counter()

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def __call__(self, message: str) -> None:
        print(f"[{self.name} {self.elapsed:7.1f}s] {message}", flush=True)


def setup_runtime(threads: int = 1) -> None:
    """One torch thread (the machine has 2 shared cores) and no network for model hubs."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import torch

    torch.set_num_threads(threads)


def load_experiment_config(path: str | Path, overrides: list[str]) -> Any:
    """``efm_learning.config.load_config``; a bad key exits with the key named."""
    from efm_learning.config import ConfigError, load_config

    try:
        return load_config(path, overrides)
    except ConfigError as error:
        print(f"config error: {error}", file=sys.stderr)
        raise SystemExit(2) from error


def stage1_checkpoints(
    cfg: Any, stage1_dir: str | Path | None, echo: Progress
) -> tuple[Path, Path, dict[str, Any]]:
    """``(best_bc, best_steps_to_go, info)``: reuse ``stage1_dir`` or run Stage 1.

    With ``stage1_dir`` the two checkpoints are taken from there (they must exist).
    Without it, Stage 1 runs with ``cfg`` into ``<run_dir>/sft`` (generating the demos
    first when ``data.dir`` is empty); ``train_sft`` resumes from ``last/`` and returns
    at once when it has already finished.
    """
    from efm_learning.checkpoint import read_checkpoint_config
    from efm_learning.pipeline import ensure_dataset
    from efm_learning.sft import BEST_BC, BEST_STEPS_TO_GO, train_sft

    if stage1_dir is not None:
        root = Path(stage1_dir)
        echo(f"[stage 1] reusing the Stage 1 checkpoints in {root} (--stage1)")
        reused = True
    else:
        root = cfg.run_path / "sft"
        ensure_dataset(cfg, echo)
        echo(f"[stage 1] SFT: {cfg.sft.steps} steps, batch {cfg.sft.batch_size} -> {root} "
             "(resumes from last/ if present)")
        t = time.perf_counter()
        result = train_sft(cfg, resume=True, progress=True)
        echo(f"[stage 1] done in {time.perf_counter() - t:.0f} s, best validation "
             f"{ {k: round(v, 3) for k, v in result.best_val.items()} }")
        reused = False
    policy, reward = root / BEST_BC, root / BEST_STEPS_TO_GO
    for path in (policy, reward):
        if not path.is_dir():
            raise SystemExit(f"Stage 1 checkpoint {path} is missing")
    meta = read_checkpoint_config(reward).get("metadata", {})
    info = {
        "dir": str(root),
        "reused": reused,
        "policy_checkpoint": str(policy),
        "reward_checkpoint": str(reward),
        "sft_steps": meta.get("step"),
        "val_at_best_steps_to_go": meta.get("val"),
        "data": (meta.get("config") or {}).get("data"),
        "seed": (meta.get("config") or {}).get("seed"),
    }
    return policy, reward, info


def write_json(path: Path, data: Any) -> Path:
    """Write JSON atomically (a crash never leaves half a results file behind)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=_jsonable) + "\n")
    tmp.replace(path)
    return path


def _jsonable(value: Any) -> Any:
    import numpy as np

    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def finite_or_none(value: float) -> float | None:
    """JSON has no NaN: undefined metrics (e.g. precision with no positives) become null."""
    import math

    return None if value is None or not math.isfinite(float(value)) else float(value)
