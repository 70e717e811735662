"""Paper experiments at CPU scale, one command each (issue 7; results in docs/RESULTS.md).

    python -m experiments.pointmass          Figure 4: dataset, Stage 1 and Stage 2 policies
    python -m experiments.sample_efficiency  Figure 5: Stage 1 on 10/20/80% + Stage 2
    python -m experiments.pretraining        Figure 8 left: pretrained vs scratch reward model
    python -m experiments.bananatable        Section 4.3.2: PushTable Stage 1 -> BananaTable
    python -m experiments.reward_quality     d(o, g) calibration and the d <= s detector

Each writes ``results.json`` and PNGs under its ``--out`` directory, prints progress, and
is resumable: finished pieces (Stage 1, each Stage 2 seed) are kept and skipped. This
module holds the little they share; the work itself is done by ``efm_learning``.
"""

from __future__ import annotations

import copy
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

# Evaluation tasks the experiments report on: the "report" split of the evaluation
# protocol (efm_learning.evaluation, docs/EVALUATION.md), disjoint from the demonstrations,
# from the "tuning" tasks Stage 2 selects its best round on and, for all practical
# purposes, from the random practice seeds.
from efm_learning.protocol import REPORT_SEED_BASE as TEST_SEED_BASE


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
        reused = False
        if _finished_steps(root / "last") >= cfg.sft.steps:
            echo(f"[stage 1] {root}: finished earlier ({cfg.sft.steps} steps), skipped")
        else:
            echo(f"[stage 1] SFT: {cfg.sft.steps} steps, batch {cfg.sft.batch_size} -> "
                 f"{root} (resumes from last/ if present)")
            t = time.perf_counter()
            result = train_sft(cfg, resume=True, progress=True)
            echo(f"[stage 1] done in {time.perf_counter() - t:.0f} s, best validation "
                 f"{ {k: round(v, 3) for k, v in result.best_val.items()} }")
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


def _finished_steps(last: Path) -> int:
    """Steps recorded in a Stage 1 ``last/`` checkpoint (0 when there is none)."""
    from efm_learning.checkpoint import read_checkpoint_config

    if not (last / "config.json").is_file():
        return 0
    return int(read_checkpoint_config(last).get("metadata", {}).get("step") or 0)


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


# -- ground-truth measurement (evaluation only) ---------------------------------------
def held_out_tasks(count: int) -> list[int]:
    return list(range(TEST_SEED_BASE, TEST_SEED_BASE + count))


def rollouts(cfg: Any, policy: Any, seeds: Any, count: int, sample_seed: int) -> Any:
    """``count`` policy episodes on the env seeds ``seeds``, ended by GT success.

    The same runner as ``efm_learning.evaluation.Evaluator`` (``EnvActor`` with
    ``end_on="ground_truth"``), on the tasks given here instead of the fixed model
    selection tasks. Tasks that start inside the goal are skipped, as there.
    """
    from efm_learning.actor import EnvActor
    from efm_learning.evaluation import summarize_ground_truth

    imp = cfg.improve
    actor = EnvActor(cfg.env, policy, None, success_threshold=0.0,
                     max_episode_steps=imp.max_episode_steps,
                     num_envs=min(50, max(1, count)), seed=sample_seed, greedy=False,
                     end_on="ground_truth", env_kwargs=cfg.env_kwargs)
    actor.set_seeds(iter(seeds))
    return summarize_ground_truth(actor.run(num_episodes=count), imp.max_episode_steps)


def summarize_eval(result: Any) -> dict[str, float]:
    return {
        "success_rate": result.success_rate,
        "mean_length": result.mean_length,
        "mean_success_length": finite_or_none(result.mean_success_length),
        "num_episodes": result.num_episodes,
    }


def evaluate_checkpoint(cfg: Any, checkpoint: str | Path, tasks: list[int], cache: Path,
                        echo: Progress, sample_seed: int = 0) -> dict[str, Any]:
    """GT success of one checkpoint on ``tasks``, cached in ``cache`` (resumable)."""
    from efm_learning.checkpoint import load_checkpoint

    if cache.is_file():
        record = json.loads(cache.read_text())
        if record.get("checkpoint") == str(checkpoint) and record.get("tasks") == len(tasks):
            return record
    model, meta = load_checkpoint(checkpoint)
    result = rollouts(cfg, model, tasks, len(tasks), sample_seed=sample_seed)
    record = {**summarize_eval(result), "checkpoint": str(checkpoint), "tasks": len(tasks),
              "round": meta.get("round")}
    write_json(cache, record)
    echo(f"[eval] {checkpoint}: success {record['success_rate']:.1%}, mean length "
         f"{record['mean_length']:.1f} ({record['num_episodes']} tasks)")
    return record


# -- Stage 2 ---------------------------------------------------------------------------
def stage2_seed(cfg: Any, seed: int, policy_ckpt: Path, reward_ckpt: Path, tasks: list[int],
                echo: Progress, name: str | None = None) -> dict[str, Any]:
    """Stage 2 (Algorithm 1) for one seed into ``<run_dir>/<name>`` (resuming an
    interrupted run), then GT measurement of its best and last rounds on ``tasks``."""
    from efm_learning.checkpoint import load_checkpoint
    from efm_learning.metrics import read_metrics
    from efm_learning.self_improvement import self_improve

    seed_cfg = copy.deepcopy(cfg)
    seed_cfg.seed = seed
    seed_cfg.improve.policy_checkpoint = str(policy_ckpt)
    seed_cfg.improve.reward_checkpoint = str(reward_ckpt)
    name = name or f"improve_seed{seed}"
    imp = seed_cfg.improve
    echo(f"[stage 2] seed {seed}: {imp.rounds} rounds of N={imp.updates_per_round} x "
         f"B={imp.batch_size}, s={imp.success_threshold} -> {cfg.run_path / name}")
    t = time.perf_counter()
    result = self_improve(seed_cfg, resume=True, progress=True, out_name=name)
    stage2_s = time.perf_counter() - t
    history = read_metrics(result.directory)
    practice = [r for r in history if "practice/episodes" in r]
    last10 = [r for r in history if "detector/precision" in r][-10:]
    out: dict[str, Any] = {
        "seed": seed,
        "directory": str(result.directory),
        "rounds": imp.rounds,
        "best_round": result.best_round,
        "stage2_seconds": round(stage2_s, 1),
        "env_steps": max((r.get("charts/env_steps", 0) for r in history), default=0),
        "practice_episodes": int(sum(r["practice/episodes"] for r in practice)),
        "selection_eval_at_best": {k: v for k, v in result.best_eval.items()
                                   if k.startswith("eval/")},
        "detector_last10": {key: mean_defined([r.get(f"detector/{key}") for r in last10])
                            for key in ("precision", "recall")},
    }
    for which in ("best", "last"):
        model, meta = load_checkpoint(result.directory / which)
        ev = rollouts(cfg, model, tasks, len(tasks), sample_seed=seed)
        out[which] = {**summarize_eval(ev), "round": meta.get("round")}
    echo(f"[stage 2] seed {seed}: best round {out['best_round']} -> test success "
         f"{out['best']['success_rate']:.1%}, mean length {out['best']['mean_length']:.1f}; "
         f"last round -> {out['last']['success_rate']:.1%}, {out['last']['mean_length']:.1f} "
         f"({stage2_s:.0f} s)")
    return out


def stage2_seed_cached(cfg: Any, seed: int, policy_ckpt: Path, reward_ckpt: Path,
                       tasks: list[int], echo: Progress, done: Path,
                       name: str | None = None) -> dict[str, Any]:
    """``stage2_seed`` unless ``done`` already holds its result for these tasks."""
    if done.is_file():
        record = json.loads(done.read_text())
        if record.get("tasks") == len(tasks):
            echo(f"[stage 2] {done}: finished earlier, skipped")
            return record
    record = stage2_seed(cfg, seed, policy_ckpt, reward_ckpt, tasks, echo, name)
    record["tasks"] = len(tasks)
    write_json(done, record)
    return record


def mean_defined(values: list[Any]) -> float | None:
    """Mean of the defined values (metrics.jsonl stores an undefined metric as null)."""
    kept = [float(v) for v in values if v is not None and np.isfinite(v)]
    return float(np.mean(kept)) if kept else None


def summarize_runs(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean / std / min / max / per-run GT success and mean length of evaluation records."""
    out: dict[str, Any] = {}
    for key in ("success_rate", "mean_length"):
        values = np.array([r[key] for r in records], dtype=float)
        out[key] = {"mean": float(values.mean()), "std": float(values.std()),
                    "min": float(values.min()), "max": float(values.max()),
                    "per_seed": values.tolist()}
    return out


def save_figure(fig: Any, out: Path, **savefig: Any) -> Path:
    """Lay out, write (creating the folder) and close a matplotlib figure."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110, **savefig)
    plt.close(fig)
    return out
