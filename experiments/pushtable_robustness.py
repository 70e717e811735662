"""Is PushTable Self-Improvement reliable? Stage 1 seeds x Stage 2 seeds (paper Sec. 4, Q3).

    python -m experiments.pushtable_robustness [--stage1-seeds 1 2 3] [--stage2-seeds 1 2]
        [--rounds 30] [--patience 6] [--test-tasks 300] [--out runs/robust]

For every Stage 1 seed: Stage 1 with ``config/pushtable.yaml`` into ``<out>/s<seed>``
(skipped once trained). For every Stage 2 seed: Algorithm 1 in-process for at most
``--rounds`` rounds with **no ground truth at all**: the policy kept is the one the
GT-free plateau rule picks (``improve.selection_metric: detector``,
efm_learning.stopping; Section 6), and practice stops at its patience. Then the Stage 1
policy and the kept policy are measured on the same ``--test-tasks`` **report** tasks
(docs/EVALUATION.md): nothing here was tuned on them. Outputs ``<out>/results.json``,
``<out>/robustness.md`` (the table) and a figure; each finished run is cached.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from experiments import (
    Progress,
    evaluate_checkpoint,
    load_experiment_config,
    setup_runtime,
    stage1_checkpoints,
    stage2_seed_cached,
    write_json,
)

GT_FREE = ["improve.selection_metric=detector", "improve.eval_episodes=0"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m experiments.pushtable_robustness",
                                description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="config/pushtable.yaml")
    p.add_argument("--stage1-seeds", type=int, nargs="+", default=[1, 2, 3])
    p.add_argument("--stage2-seeds", type=int, nargs="+", default=[1, 2])
    p.add_argument("--rounds", type=int, default=30, help="the most Stage 2 rounds")
    p.add_argument("--patience", type=int, default=6,
                   help="plateau rule: stop after this many versions without a gain")
    p.add_argument("--test-tasks", type=int, default=300, help="report tasks per measurement")
    p.add_argument("--out", default="runs/robust")
    p.add_argument("--reuse-stage1", action="append", default=[], metavar="SEED=DIR",
                   help="take this Stage 1 seed's checkpoints from DIR (e.g. the shipped "
                        "release, 3=checkpoints/pushtable) instead of training it")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    setup_runtime()
    from efm_learning.evaluation import success_change
    from efm_learning.protocol import task_seeds

    echo = Progress("pushtable_robustness")
    out = Path(args.out)
    tasks = task_seeds("report", args.test_tasks)
    reuse = {}
    for item in args.reuse_stage1:
        seed, _, folder = item.partition("=")
        if not seed.isdigit() or not folder:
            raise SystemExit(f"--reuse-stage1 takes SEED=DIR, got {item!r}")
        reuse[int(seed)] = folder
    rows = []
    for s1 in args.stage1_seeds:
        cfg = load_experiment_config(args.config, [
            *GT_FREE, f"improve.rounds={args.rounds}", f"improve.patience={args.patience}",
            *args.overrides, f"seed={s1}", f"run_dir={out / f's{s1}'}", "num_threads=1"])
        policy, reward, _ = stage1_checkpoints(cfg, reuse.get(s1), echo)
        before = evaluate_checkpoint(cfg, policy, tasks, out / f"s{s1}" / "eval_stage1.json",
                                     echo)
        for s2 in args.stage2_seeds:
            run = stage2_seed_cached(cfg, s2, policy, reward, tasks, echo,
                                     out / f"s{s1}" / f"stage2_seed{s2}.json",
                                     name=f"improve_seed{s2}")
            kept = run["best"]
            change = success_change(before["success_rate"], kept["success_rate"],
                                    len(tasks), len(tasks))
            rows.append({"stage1_seed": s1, "stage2_seed": s2,
                         "stage1": before["success_rate"], "kept": kept["success_rate"],
                         "kept_round": kept["round"], "last": run["last"]["success_rate"],
                         "last_round": run["last"]["round"], "change": change})
            echo(f"[result] Stage 1 seed {s1}, Stage 2 seed {s2}: {before['success_rate']:.3f}"
                 f" -> {kept['success_rate']:.3f} (kept v{kept['round']}; p = "
                 f"{change['p_value']:.3f})")
    write_json(out / "results.json", {"tasks": {"split": "report", "count": len(tasks)},
                                      "rounds": args.rounds, "patience": args.patience,
                                      "runs": rows})
    lines = ["| Stage 1 seed | Stage 2 seed | Stage 1 | kept (round) | change (p) | last (round) |",
             "| --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        lines.append(f"| {r['stage1_seed']} | {r['stage2_seed']} | {r['stage1']:.3f} | "
                     f"{r['kept']:.3f} (v{r['kept_round']}) | {r['change']['difference']:+.3f} "
                     f"({r['change']['p_value']:.3f}) | {r['last']:.3f} (v{r['last_round']}) |")
    (out / "robustness.md").write_text("\n".join(lines) + "\n")
    echo(f"table in {out / 'robustness.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
