"""End to end: demonstrations -> Stage 1 -> Stage 2 (several seeds) -> report.

``efm demo`` runs this on PointMass (paper Section 3, Figure 4): SFT on sub-optimal
waypoint demos, then Self-Improvement driven only by the learned reward and success
detector. Ground truth is used only to *measure* (evaluation rollouts) and, with
``improve.selection_metric: ground_truth``, to pick the best round's checkpoint.
"""

from __future__ import annotations

import copy
import json
import logging
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from efm_learning.checkpoint import load_checkpoint
from efm_learning.config import ExperimentConfig
from efm_learning.data import list_episode_files, split_train_val
from efm_learning.evaluation import Evaluator
from efm_learning.self_improvement import ImproveResult, self_improve
from efm_learning.sft import BEST_STEPS_TO_GO, train_sft

logger = logging.getLogger(__name__)


def generate_command(cfg: ExperimentConfig) -> list[str]:
    """The ``efm_sim.generate`` command that writes ``cfg``'s demonstrations: the same
    camera size, task families and blocks as the environment the model will act in."""
    root = Path(cfg.data.dir)
    cmd = [sys.executable, "-m", "efm_sim.generate", "--env", cfg.env,
           "--episodes", str(cfg.data.generate_episodes), "--out", str(root),
           "--seed", str(cfg.seed if cfg.data.seed is None else cfg.data.seed)]
    kwargs = cfg.env_kwargs or {}
    if "image_size" in kwargs:
        cmd += ["--image-size", str(kwargs["image_size"])]
    for family in kwargs.get("task_families") or []:
        cmd += ["--task-family", str(family)]
    if kwargs.get("blocks"):
        cmd += ["--blocks", ",".join(kwargs["blocks"])]
    return cmd


def ensure_dataset(cfg: ExperimentConfig, echo: Any = print, progress: bool = True) -> int:
    """Generate ``data.generate_episodes`` demos with efm_sim when ``data.dir`` is empty
    (``progress`` False: without the generator's progress bar)."""
    root = Path(cfg.data.dir)
    existing = len(list(root.glob("episode_*.h5"))) if root.is_dir() else 0
    if existing:
        echo(f"[data] using {existing} episodes in {root}")
        return existing
    echo(f"[data] generating {cfg.data.generate_episodes} {cfg.env} demonstrations into "
         f"{root} (efm_sim.generate)")
    subprocess.run(generate_command(cfg) + ([] if progress else ["--no-progress"]), check=True)
    return len(list(root.glob("episode_*.h5")))


@dataclass
class PipelineReport:
    run_dir: Path
    stage1: dict[str, float]
    stage2: list[dict[str, Any]] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    figures: dict[str, str] = field(default_factory=dict)


def _seed_summary(seed: int, result: ImproveResult, best_eval: dict[str, float]) -> dict[str, Any]:
    final = result.final_eval
    return {
        "seed": seed,
        "rounds_run": result.rounds_run,
        "best_round": result.best_round,
        "best_success_rate": best_eval.get("success_rate"),
        "best_mean_length": best_eval.get("mean_length"),
        "final_success_rate": final.success_rate if final else None,
        "final_mean_length": final.mean_length if final else None,
        "stage2_seconds": round(result.elapsed_s, 1),
        "diverged": bool(final is None or not np.isfinite(final.mean_length)),
    }


def run_pipeline(
    cfg: ExperimentConfig,
    seeds: list[int],
    figure_path: Path | None = None,
    progress: bool = True,
    echo: Any = print,
) -> PipelineReport:
    """Data, Stage 1, then Stage 2 for each seed; writes ``<run_dir>/report.{json,md}``."""
    t0 = time.perf_counter()
    run_dir = cfg.run_path
    run_dir.mkdir(parents=True, exist_ok=True)
    ensure_dataset(cfg, echo)
    timings: dict[str, float] = {}

    echo(f"[stage 1] SFT: {cfg.sft.steps} steps, batch {cfg.sft.batch_size} split over "
         f"{cfg.sft.objectives} -> {run_dir / 'sft'}")
    t = time.perf_counter()
    sft = train_sft(cfg, resume=True, progress=progress)
    timings["stage1_s"] = time.perf_counter() - t
    echo(f"[stage 1] best validation NLL: {sft.best_val} ({timings['stage1_s']:.0f} s)")

    policy, _ = load_checkpoint(run_dir / "sft" / cfg.sft.policy_checkpoint)
    reward_model, _ = load_checkpoint(run_dir / "sft" / BEST_STEPS_TO_GO)
    imp = cfg.improve
    evaluator = Evaluator(
        cfg.env, policy, imp.max_episode_steps, max(imp.eval_episodes, 1),
        greedy=imp.eval_mode == "greedy", seed=cfg.seed, env_kwargs=cfg.env_kwargs,
    )
    stage1 = evaluator.evaluate(policy=policy)
    echo(f"[stage 1] policy (ground-truth eval, {stage1.num_episodes} tasks): success "
         f"{stage1.success_rate:.1%}, mean length {stage1.mean_length:.1f} steps "
         f"(failures count as {imp.max_episode_steps})")
    report = PipelineReport(run_dir=run_dir, stage1=stage1.as_metrics("stage1"), timings=timings)

    stage2_policies = []
    for seed in seeds:
        seed_cfg = copy.deepcopy(cfg)
        seed_cfg.seed = seed
        name = "improve" if len(seeds) == 1 else f"improve_seed{seed}"
        echo(f"[stage 2] Self-Improvement seed {seed}: up to {imp.rounds} rounds of "
             f"N={imp.updates_per_round} x B={imp.batch_size}, rewards/success from the frozen "
             f"{BEST_STEPS_TO_GO} checkpoint -> {run_dir / name}")
        t = time.perf_counter()
        result = self_improve(seed_cfg, resume=True, progress=progress, out_name=name)
        best_dir = run_dir / name / "best"
        best_policy, _ = load_checkpoint(best_dir)
        best = evaluator.evaluate(policy=best_policy)
        summary = _seed_summary(
            seed, result, {"success_rate": best.success_rate, "mean_length": best.mean_length}
        )
        summary["checkpoint"] = str(best_dir)
        report.stage2.append(summary)
        stage2_policies.append(best_policy)
        timings[f"stage2_seed{seed}_s"] = time.perf_counter() - t
        echo(f"[stage 2] seed {seed}: best round {result.best_round}: success "
             f"{best.success_rate:.1%}, mean length {best.mean_length:.1f} steps "
             f"(final round: {summary['final_success_rate']:.1%}, "
             f"{summary['final_mean_length']:.1f})")

    if cfg.env == "pointmass" and stage2_policies:
        fig = figure_path or run_dir / "pointmass_trajectories.png"
        report.figures["trajectories"] = str(
            trajectory_figure(cfg, policy, stage2_policies[0], reward_model, fig)
        )
        echo(f"[report] trajectories (dataset / Stage 1 / Stage 2): {fig}")
    if report.stage2:
        dirs = {r["seed"]: run_dir / Path(r["checkpoint"]).parent.name for r in report.stage2}
        report.figures["stage2_seeds"] = str(seed_curves(dirs, run_dir / "stage2_seeds.png"))
        echo(f"[report] Stage 2 learning curves, all seeds: {report.figures['stage2_seeds']}")
    timings["total_s"] = time.perf_counter() - t0
    write_report(report, cfg)
    echo(f"[report] {run_dir / 'report.md'} and report.json (total {timings['total_s']:.0f} s)")
    return report


def trajectory_figure(
    cfg: ExperimentConfig, stage1_policy: Any, stage2_policy: Any, reward_model: Any, out: Path,
    count: int = 6,
) -> Path:
    """Figure-4-like panels: held-out demos, Stage 1 and Stage 2 rollouts on the same tasks."""
    from efm_learning.plots import plot_pointmass_trajectories
    from efm_sim.dataset import read_episode

    paths = list_episode_files(cfg.data.dir)
    _, val = split_train_val(paths, cfg.data.val_fraction, cfg.seed)
    demos = [read_episode(p, load_images=False).states for p in val[:count]]
    rollouts = []
    for policy in (stage1_policy, stage2_policy):
        ev = Evaluator(cfg.env, policy, cfg.improve.max_episode_steps, count, seed=cfg.seed,
                       env_kwargs=cfg.env_kwargs)
        episodes = ev.evaluate(policy=policy).episodes
        rollouts.append([e.observations["observation.state"] for e in episodes])
    return plot_pointmass_trajectories(
        [("Dataset (waypoint PD demos)", demos), ("Stage 1 (BC)", rollouts[0]),
         ("Stage 2 (Self-Improved)", rollouts[1])],
        out,
    )


def seed_curves(directories: dict[int, Path], out: Path) -> Path:
    """Ground-truth success and mean length per round, one line per Stage 2 seed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from efm_learning.metrics import read_metrics

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    panels = [("eval/success_rate", "GT success (eval)"),
              ("eval/mean_length", "mean length, failures = limit"),
              ("detector/precision", "detector precision vs GT")]
    for seed, directory in directories.items():
        records = read_metrics(directory)
        for ax, (key, label) in zip(axes, panels, strict=True):
            pts = [(r["step"], r[key]) for r in records if r.get(key) is not None]
            if pts:
                xs, ys = zip(*pts, strict=True)
                ax.plot(xs, ys, label=f"seed {seed}", lw=1.2)
            ax.set_xlabel("round")
            ax.set_ylabel(label)
            ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle("Stage 2 Self-Improvement on PointMass (round 0 = Stage 1 policy)")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def write_report(report: PipelineReport, cfg: ExperimentConfig) -> None:
    data = {
        "experiment": cfg.name,
        "run_dir": str(report.run_dir),
        "stage1": report.stage1,
        "stage2": report.stage2,
        "timings_s": {k: round(v, 1) for k, v in report.timings.items()},
        "figures": report.figures,
    }
    (report.run_dir / "report.json").write_text(json.dumps(data, indent=2))
    s1 = report.stage1
    lines = [
        f"# {cfg.name}: Stage 1 -> Stage 2 report",
        "",
        "Ground-truth evaluation on fixed simulator tasks (evaluation only; Stage 2 learns",
        "from the frozen steps-to-go model's rewards and success detector).",
        "",
        f"Stage 1 policy: success {s1['stage1/success_rate']:.1%}, mean length "
        f"{s1['stage1/mean_length']:.1f} steps (failures count as "
        f"{cfg.improve.max_episode_steps}), successful episodes "
        f"{s1['stage1/mean_success_length']:.1f} steps.",
        "",
        "| seed | best round | success | mean length | final success | final length | s |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in report.stage2:
        lines.append(
            f"| {r['seed']} | {r['best_round']} | {r['best_success_rate']:.1%} | "
            f"{r['best_mean_length']:.1f} | {r['final_success_rate']:.1%} | "
            f"{r['final_mean_length']:.1f} | {r['stage2_seconds']} |"
        )
    lines += ["", f"Timings (s): {data['timings_s']}"]
    (report.run_dir / "report.md").write_text("\n".join(lines) + "\n")
