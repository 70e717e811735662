"""Sample efficiency on PushTable Block2Block, paper Figure 5 (Section 4.1.1).

    python -m experiments.sample_efficiency [--fractions 0.1 0.2 0.8]
        [--stage2-fractions 0.1 0.2] [--seeds 0 1 2] [--stage2-seeds K ...]
        [--test-tasks 200] [--quick]
        [--out runs/experiments/sample_efficiency] [--config config/pushtable.yaml]

The paper's claim: Stage 1 on 10% of the demonstrations plus a few % of extra practice
episodes (Stage 2) beats Stage 1 on 80% of them. Here the "full" set is the training
split of ``config/pushtable.yaml``'s 3,000 scripted demonstrations (2,700 after the 10%
validation hold-out); ``data.train_fraction`` keeps a seeded subset of it.

For every fraction f and seed k (``<out>/f<pct>_seed<k>``):

1. Stage 1 (``train_sft``) on f of the training split with seed k (same steps and
   batch for every fraction; ``best_bc`` / ``best_steps_to_go`` are chosen on the same
   full validation split, so a small fraction is not judged on fewer episodes);
2. ground-truth success of its policy on the held-out tasks (evaluation only);
3. for f in ``--stage2-fractions``: Stage 2 (Algorithm 1) from those checkpoints, with
   seed k (or with each of ``--stage2-seeds``), its best round (chosen on separate
   selection tasks) and last round measured on the same held-out tasks.

Total episodes (the paper's x-axis) = demonstrations used + practice episodes collected
up to the Stage 2 round that is reported. Resumable: each finished piece is a JSON file
that is skipped next time; an interrupted Stage 1 / Stage 2 resumes from ``last/``.
Writes ``results.json`` and ``sample_efficiency.png``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from experiments import (
    Progress,
    evaluate_checkpoint,
    load_experiment_config,
    save_figure,
    stage1_checkpoints,
    stage2_seed_cached,
    summarize_runs,
    write_json,
)
from experiments.pushtable_common import (
    data_dir,
    experiment_parser,
    mean_std,
    overrides,
    start,
)


def _parser() -> argparse.ArgumentParser:
    p = experiment_parser(
        "experiments.sample_efficiency",
        "Paper Figure 5 on PushTable Block2Block: Stage 1 on fractions of the "
        "demonstrations, Stage 2 from the small ones, GT success against total episodes.",
        data_help="demonstration directory (default: the config's data.dir)")
    p.add_argument("--fractions", type=float, nargs="+", default=[0.1, 0.2, 0.8])
    p.add_argument("--stage2-fractions", type=float, nargs="+", default=[0.1, 0.2])
    p.add_argument("--stage2-seeds", type=int, nargs="+", default=None,
                   help="Stage 2 seeds run from every Stage 1 checkpoint (default: one run, "
                   "with the Stage 1 seed, --seeds being the Stage 1 seeds)")
    return p


def tag(fraction: float) -> str:
    return f"f{round(fraction * 100):d}"


def practice_episodes_to(directory: Path, round_index: int) -> int:
    """Practice episodes collected in rounds 1..round_index of a Stage 2 run."""
    from efm_learning.metrics import read_metrics

    return int(sum(r["practice/episodes"] for r in read_metrics(directory)
                   if "practice/episodes" in r and r["step"] <= round_index))


def run_piece(args: argparse.Namespace, fraction: float, seed: int, out: Path,
              tasks: list[int], echo: Progress) -> dict[str, Any]:
    """Stage 1 on ``fraction`` with ``seed``, its GT success, and Stage 2 if asked."""
    from efm_learning.data import list_episode_files, split_train_val, train_subset

    root = out / f"{tag(fraction)}_seed{seed}"
    cfg = load_experiment_config(args.config, [
        *overrides(root, args.overrides, args.quick, data_dir(args, out)),
        f"data.train_fraction={fraction}", f"seed={seed}"])
    echo(f"[{root.name}] Stage 1 on {fraction:.0%} of the demonstrations, seed {seed}")
    policy, reward, info = stage1_checkpoints(cfg, None, echo)
    train, _ = split_train_val(list_episode_files(cfg.data.dir), cfg.data.val_fraction, seed)
    demos = len(train_subset(train, fraction, seed))
    stage1 = evaluate_checkpoint(cfg, policy, tasks, root / "stage1_eval.json", echo,
                                 sample_seed=seed)
    piece: dict[str, Any] = {"fraction": fraction, "seed": seed, "demos": demos,
                             "full_training_split": len(train), "stage1": stage1,
                             "stage1_val": info["val_at_best_steps_to_go"]}
    if any(abs(fraction - f) < 1e-9 for f in args.stage2_fractions):
        runs = []
        for s2 in args.stage2_seeds or [seed]:
            record = stage2_seed_cached(cfg, s2, policy, reward, tasks, echo,
                                        root / f"stage2_seed{s2}.json",
                                        name=f"improve_seed{s2}")
            directory = Path(record["directory"])
            for which in ("best", "last"):
                rounds = record[which]["round"] or 0
                record[which]["practice_episodes"] = practice_episodes_to(directory, rounds)
                record[which]["total_episodes"] = demos + record[which]["practice_episodes"]
            runs.append(record)
        piece["stage2"] = runs
    return piece


def figure(pieces: list[dict[str, Any]], out: Path) -> Path:
    """GT success against total episodes (demonstrations + practice), Figure 5 style."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    fractions = sorted({p["fraction"] for p in pieces})
    xs, ys, es = [], [], []
    for f in fractions:
        group = [p for p in pieces if p["fraction"] == f]
        x, _ = mean_std([p["demos"] for p in group])
        y, e = mean_std([p["stage1"]["success_rate"] for p in group])
        xs.append(x), ys.append(y), es.append(e)
        ax.annotate(f"{f:.0%}", (x, y), textcoords="offset points", xytext=(4, 6), fontsize=8)
    ax.errorbar(xs, ys, yerr=es, marker="o", color="tab:blue", capsize=3,
                label="Stage 1 (imitation only)")
    for f, color in zip(sorted({p["fraction"] for p in pieces if "stage2" in p}),
                        ("tab:orange", "tab:green", "tab:red", "tab:purple"), strict=False):
        group = [p for p in pieces if p["fraction"] == f and "stage2" in p]
        runs = [r for p in group for r in p["stage2"]]
        for which, style in (("best", "-"), ("last", ":")):
            x0, _ = mean_std([p["demos"] for p in group])
            y0, _ = mean_std([p["stage1"]["success_rate"] for p in group])
            x1, _ = mean_std([r[which]["total_episodes"] for r in runs])
            y1, e1 = mean_std([r[which]["success_rate"] for r in runs])
            ax.plot([x0, x1], [y0, y1], style, color=color)
            ax.errorbar([x1], [y1], yerr=[e1], marker="s" if which == "best" else "^",
                        color=color, capsize=3,
                        label=f"{f:.0%} + Stage 2 ({which} round)")
    ax.set_xlabel("total episodes (demonstrations + Stage 2 practice)")
    ax.set_ylabel("ground-truth success (held-out tasks)")
    ax.set_title("PushTable Block2Block: sample efficiency (paper Figure 5)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, out)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    bad = [f for f in args.fractions + args.stage2_fractions if not 0.0 < f <= 1.0]
    if bad:
        raise SystemExit(f"fractions must be in (0, 1], got {bad}")
    missing = [f for f in args.stage2_fractions if f not in args.fractions]
    if missing:
        raise SystemExit(f"--stage2-fractions {missing} are not among --fractions")
    echo, out, tasks = start(args, "sample_efficiency")
    n_test = len(tasks)
    echo(f"fractions {args.fractions}, Stage 2 from {args.stage2_fractions}, seeds "
         f"{args.seeds}, {n_test} held-out tasks -> {out}")

    pieces = [run_piece(args, f, seed, out, tasks, echo)
              for f in args.fractions for seed in args.seeds]

    summary: dict[str, Any] = {}
    for f in args.fractions:
        group = [p for p in pieces if p["fraction"] == f]
        entry: dict[str, Any] = {"demos": [p["demos"] for p in group],
                                 "stage1": summarize_runs([p["stage1"] for p in group])}
        if all("stage2" in p for p in group):
            runs = [r for p in group for r in p["stage2"]]
            for which in ("best", "last"):
                entry[f"stage2_{which}"] = {
                    **summarize_runs([r[which] for r in runs]),
                    "total_episodes": [r[which]["total_episodes"] for r in runs],
                    "practice_episodes": [r[which]["practice_episodes"] for r in runs],
                    "runs": [{"stage1_seed": p["seed"], "stage2_seed": r["seed"]}
                             for p in group for r in p["stage2"]],
                }
        summary[tag(f)] = entry
        line = f"[report] {f:.0%}: Stage 1 {entry['stage1']['success_rate']['mean']:.1%}"
        if "stage2_best" in entry:
            line += (f" -> Stage 2 best {entry['stage2_best']['success_rate']['mean']:.1%}, "
                     f"last {entry['stage2_last']['success_rate']['mean']:.1%}")
        echo(line)
    png = figure(pieces, out / "sample_efficiency.png")
    results = {
        "experiment": "sample_efficiency_figure5",
        "config": args.config,
        "quick": args.quick,
        "fractions": args.fractions,
        "stage2_fractions": args.stage2_fractions,
        "seeds": args.seeds,
        "stage2_seeds": args.stage2_seeds,
        "test_tasks": {"count": n_test, "actions": "sampled", "success": "env ground truth"},
        "summary": summary,
        "pieces": pieces,
        "figures": {"sample_efficiency": str(png)},
        "wall_time_s_this_invocation": round(echo.elapsed, 1),
        "date": time.strftime("%Y-%m-%d"),
    }
    write_json(out / "results.json", results)
    echo(f"[report] {out / 'results.json'}, {png}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
