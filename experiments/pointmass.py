"""PointMass, paper Figure 4 (Section 3): the dataset, Stage 1 and Stage 2 policies.

    python -m experiments.pointmass [--seeds 0 1 2] [--quick] [--out runs/experiments/pointmass]
                                    [--stage1 runs/pointmass/sft] [--config config/pointmass.yaml]

Steps (each one the ``efm_learning`` code that ``efm demo`` runs):

1. Stage 1 (``train_sft``) on the 10,000 waypoint-PD demos of ``config/pointmass.yaml``,
   or, with ``--stage1 DIR``, the ``best_bc`` / ``best_steps_to_go`` checkpoints already
   in ``DIR`` (an explicit reuse; nothing is picked up implicitly).
2. Stage 2 (``self_improve``, Algorithm 1) once per seed, into ``<out>/improve_seed<N>``;
   rewards and the d <= s success detector come from the frozen ``best_steps_to_go``.
3. Ground-truth measurement (evaluation only) of the demonstrator that made the dataset,
   the Stage 1 policy and each seed's Stage 2 policy (best round and last round) on the
   same held-out tasks: env seeds from ``experiments.TEST_SEED_BASE``, which are not the
   tasks Stage 2 selects its best round on. Success = |pos - goal| < 0.15 within 140
   steps; mean length counts a failure as 140 steps; policies sample their actions.
4. ``results.json``, ``trajectories.png`` (Figure 4: the same tasks for every policy),
   ``stage2_seeds.png`` (``pipeline.seed_curves``) and ``summary.png``.

Resumable: ``<out>/stage1_eval.json`` and ``<out>/seeds/seed<N>.json`` mark finished
work and are skipped on the next run; an interrupted Stage 2 seed resumes from its
``last/`` checkpoint. ``--quick`` is a seconds-long configuration for the CI smoke test.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from experiments import (
    TEST_SEED_BASE,
    Progress,
    finite_or_none,
    held_out_tasks,
    load_experiment_config,
    rollouts,
    save_figure,
    setup_runtime,
    stage1_checkpoints,
    stage2_seed_cached,
    summarize_eval,
    summarize_runs,
    write_json,
)

DEFAULT_OUT = "runs/experiments/pointmass"
DEFAULT_QUICK_OUT = "runs/experiments/pointmass_quick"

#: a few seconds in all: tiny data, model, Stage 1 and Stage 2 (the CI smoke test)
QUICK_OVERRIDES = [
    "data.generate_episodes=150",
    "model.hidden_size=64",
    "model.num_layers=2",
    "sft.steps=150",
    "sft.batch_size=64",
    "sft.lr=1e-3",
    "sft.eval_every=50",
    "sft.checkpoint_every=50",
    "sft.val_batches=2",
    "improve.rounds=2",
    "improve.updates_per_round=4",
    "improve.batch_size=32",
    "improve.num_envs=8",
    "improve.eval_episodes=10",
    "improve.eval_every=1",
    "improve.success_threshold=1.0",
]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m experiments.pointmass",
        description="Paper Figure 4 on PointMass: trajectories, ground-truth success and "
        "mean episode length of the dataset, the Stage 1 (BC) policy and the Stage 2 "
        "(Self-Improved) policy, one Stage 2 run per seed. Resumable.",
    )
    p.add_argument("--config", default="config/pointmass.yaml")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="Stage 2 seeds")
    p.add_argument("--out", default=None,
                   help=f"output directory (default {DEFAULT_OUT}; {DEFAULT_QUICK_OUT} "
                   "with --quick)")
    p.add_argument("--stage1", default=None, metavar="DIR",
                   help="reuse best_bc/best_steps_to_go from DIR (e.g. runs/pointmass/sft) "
                   "instead of running Stage 1 into <out>/sft")
    p.add_argument("--test-tasks", type=int, default=None,
                   help="held-out evaluation tasks (default 500; 24 with --quick)")
    p.add_argument("--figure-tasks", type=int, default=None,
                   help="tasks drawn in trajectories.png (default 6; 3 with --quick)")
    p.add_argument("--quick", action="store_true",
                   help="tiny data / Stage 1 / Stage 2 for a smoke test (seconds)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="config override, e.g. improve.rounds=40")
    return p


def demonstrator_episodes(seeds: list[int], straight: bool = False) -> dict[int, Any]:
    """The dataset's waypoint-PD demonstrator (or the straight PD) on exactly these tasks.

    ``generate_demos`` candidate ``j`` uses env seed ``base + j`` and replays
    ``PointMassEnv.reset(seed=base + j)``; ``min_length=1`` keeps every candidate.
    """
    from efm_sim.pointmass import generate_demos

    lo, hi = min(seeds), max(seeds)
    episodes = generate_demos(hi - lo + 1, seed=lo, min_length=1, straight=straight)
    wanted = set(seeds)
    return {e.seed: e for e in episodes if e.seed in wanted}


def summarize_demos(episodes: list[Any], max_steps: int) -> dict[str, float]:
    success = np.array([e.success for e in episodes], dtype=bool)
    lengths = np.array([e.length if s else max_steps for e, s in zip(episodes, success,
                                                                      strict=True)])
    return {
        "success_rate": float(success.mean()),
        "mean_length": float(lengths.mean()),
        "mean_success_length": finite_or_none(lengths[success].mean()) if success.any() else None,
        "num_episodes": len(episodes),
    }


# -- the experiment ------------------------------------------------------------------
def trajectory_panels(cfg: Any, stage1: Any, stage2: dict[int, Any], count: int,
                      out: Path) -> Path:
    """Figure 4: the dataset demonstrator, Stage 1 and every Stage 2 seed on the same tasks."""
    from efm_learning.plots import plot_pointmass_trajectories

    first = rollouts(cfg, stage1, held_out_tasks(count + 10), count, sample_seed=0)
    seeds = [e.seed for e in first.episodes]  # tasks that do not start inside the goal
    demos = demonstrator_episodes(seeds)
    panels = [("Dataset (waypoint-PD demonstrator)", [demos[s].states for s in seeds])]
    runs = [("Stage 1 (BC)", stage1)] + [(f"Stage 2 (Self-Improved), seed {k}", m)
                                         for k, m in stage2.items()]
    for title, model in runs:
        episodes = rollouts(cfg, model, seeds, len(seeds), sample_seed=0).episodes
        by_seed = {e.seed: e.observations["observation.state"] for e in episodes}
        panels.append((title, [by_seed[s] for s in seeds]))
    return plot_pointmass_trajectories(panels, out)


def summary_figure(rows: list[tuple[str, float, float, float, float]], out: Path) -> Path:
    """Bars: GT success and mean length (mean +- std over seeds where there are seeds)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r[0] for r in rows]
    x = np.arange(len(rows))
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    for ax, (col, label) in zip(axes, [(1, "GT success rate"),
                                       (3, "mean episode length [steps]\n(failures = 140)")],
                                strict=True):
        values = [r[col] for r in rows]
        errors = [r[col + 1] for r in rows]
        ax.bar(x, values, yerr=errors, capsize=4, color=plt.cm.tab10(x % 10))
        for xi, v in zip(x, values, strict=True):
            ax.text(xi, v, f"{v:.2f}" if col == 1 else f"{v:.1f}", ha="center", va="bottom",
                    fontsize=8)
        ax.set_xticks(x, names, rotation=20, ha="right", fontsize=8)
        ax.set_ylabel(label)
        ax.grid(alpha=0.3, axis="y")
    fig.suptitle("PointMass, held-out tasks: dataset vs Stage 1 vs Stage 2")
    return save_figure(fig, out)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    setup_runtime()
    echo = Progress("pointmass")
    out = Path(args.out or (DEFAULT_QUICK_OUT if args.quick else DEFAULT_OUT))
    out.mkdir(parents=True, exist_ok=True)
    overrides = [*([*QUICK_OVERRIDES, f"data.dir={out / 'data'}"] if args.quick else []),
                 *args.overrides, f"run_dir={out}"]
    cfg = load_experiment_config(args.config, overrides)
    n_test = args.test_tasks or (24 if args.quick else 500)
    n_fig = args.figure_tasks or (3 if args.quick else 6)
    echo(f"config {args.config}{' (--quick)' if args.quick else ''}, Stage 2 seeds "
         f"{args.seeds}, {n_test} held-out tasks -> {out}")

    from efm_learning.checkpoint import load_checkpoint

    # 1. Stage 1 ------------------------------------------------------------------------
    policy_ckpt, reward_ckpt, stage1_info = stage1_checkpoints(cfg, args.stage1, echo)
    stage1_policy, _ = load_checkpoint(policy_ckpt)
    tasks = held_out_tasks(n_test)

    # 2. dataset demonstrator, straight PD reference and Stage 1 on the held-out tasks -----
    baseline_path = out / "stage1_eval.json"
    baselines = None
    if baseline_path.is_file():
        baselines = json.loads(baseline_path.read_text())
        if baselines.get("policy_checkpoint") != str(policy_ckpt) or \
                baselines.get("tasks") != n_test:
            baselines = None
    if baselines is None:
        echo(f"[eval] Stage 1 policy on {n_test} held-out tasks")
        s1 = rollouts(cfg, stage1_policy, tasks, n_test, sample_seed=cfg.seed)
        evaluated = [e.seed for e in s1.episodes]
        max_steps = cfg.improve.max_episode_steps
        demos = demonstrator_episodes(evaluated)
        straight = demonstrator_episodes(evaluated, straight=True)
        baselines = {
            "policy_checkpoint": str(policy_ckpt),
            "tasks": n_test,
            "evaluated_tasks": len(evaluated),
            "dataset_demonstrator": summarize_demos([demos[s] for s in evaluated], max_steps),
            "straight_pd_reference": summarize_demos([straight[s] for s in evaluated],
                                                     max_steps),
            "stage1": summarize_eval(s1),
        }
        write_json(baseline_path, baselines)
    else:
        echo(f"[eval] Stage 1 / dataset measurements already in {baseline_path}: skipped")
    for key in ("dataset_demonstrator", "straight_pd_reference", "stage1"):
        b = baselines[key]
        echo(f"[eval] {key}: success {b['success_rate']:.1%}, mean length "
             f"{b['mean_length']:.1f} ({b['num_episodes']} tasks)")

    # 3. Stage 2, one run per seed (finished seeds are skipped) ---------------------------
    per_seed = [stage2_seed_cached(cfg, seed, policy_ckpt, reward_ckpt, tasks, echo,
                                   out / "seeds" / f"seed{seed}.json")
                for seed in args.seeds]

    # 4. figures and results -----------------------------------------------------------
    from efm_learning.pipeline import seed_curves

    figures = {}
    stage2_models = {r["seed"]: load_checkpoint(Path(r["directory"]) / "best")[0]
                     for r in per_seed}
    figures["trajectories"] = str(trajectory_panels(cfg, stage1_policy, stage2_models, n_fig,
                                                    out / "trajectories.png"))
    figures["stage2_seeds"] = str(seed_curves({r["seed"]: Path(r["directory"])
                                               for r in per_seed}, out / "stage2_seeds.png"))
    best = summarize_runs([r["best"] for r in per_seed])
    last = summarize_runs([r["last"] for r in per_seed])
    rows = [(name, baselines[key]["success_rate"], np.nan, baselines[key]["mean_length"],
             np.nan)
            for name, key in [("dataset (demonstrator)", "dataset_demonstrator"),
                              ("Stage 1 (BC)", "stage1"),
                              ("straight PD (reference)", "straight_pd_reference")]]
    rows.insert(2, ("Stage 2 best round", best["success_rate"]["mean"],
                    best["success_rate"]["std"], best["mean_length"]["mean"],
                    best["mean_length"]["std"]))
    rows.insert(3, ("Stage 2 last round", last["success_rate"]["mean"],
                    last["success_rate"]["std"], last["mean_length"]["mean"],
                    last["mean_length"]["std"]))
    figures["summary"] = str(summary_figure(rows, out / "summary.png"))
    results = {
        "experiment": "pointmass_figure4",
        "config": args.config,
        "quick": args.quick,
        "overrides": overrides,
        "seeds": args.seeds,
        "stage1": stage1_info,
        "test_tasks": {"seed_base": TEST_SEED_BASE, "count": n_test,
                       "evaluated": baselines["evaluated_tasks"], "actions": "sampled",
                       "success": "|pos - goal| < 0.15", "failure_length": 140},
        "dataset_demonstrator": baselines["dataset_demonstrator"],
        "straight_pd_reference": baselines["straight_pd_reference"],
        "stage1_policy": baselines["stage1"],
        "stage2_best": best,
        "stage2_last": last,
        "stage2_per_seed": per_seed,
        "figures": figures,
        "wall_time_s_this_invocation": round(echo.elapsed, 1),
        "date": time.strftime("%Y-%m-%d"),
    }
    write_json(out / "results.json", results)
    echo(f"[report] Stage 2 best round over seeds {args.seeds}: success "
         f"{best['success_rate']['mean']:.1%} +- {best['success_rate']['std']:.1%}, mean length "
         f"{best['mean_length']['mean']:.1f} +- {best['mean_length']['std']:.1f}")
    echo(f"[report] {out / 'results.json'}, figures: {', '.join(figures.values())}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
