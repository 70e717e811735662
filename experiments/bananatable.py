"""Behavioural generalisation to BananaTable, paper Section 4.3.2 (Figure 9).

    python -m experiments.bananatable [--stage1 DIR] [--seeds 0 1 2] [--test-tasks 200]
        [--data-dir DIR] [--quick] [--out runs/experiments/bananatable]

1. Stage 1 on PushTable only: ``config/pushtable.yaml`` with the Block2Block *and*
   Block2Location families (LanguageTable's data has both; "push the X to the top left of
   the board" is the closest a block task comes to "push the banana to the top left of
   the table"). No banana is ever seen.
2. Ground-truth success of that policy on BananaTable held-out tasks (before).
3. Stage 2 on BananaTable, one run per seed: the policy *and* the frozen reward model /
   success detector are the PushTable Stage 1 checkpoints (the paper's setting: the
   reward model has never seen a banana either).
4. GT success of each seed's best and last Stage 2 round on the same tasks (after), and
   ``filmstrip.png``: one task, the Stage 1 episode above the episode of a Stage 2
   policy (the last round of the seed whose last round did best).

Resumable (finished pieces are JSON files that are skipped); writes ``results.json``,
``filmstrip.png`` and ``bananatable.png``.
"""

from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path
from typing import Any

import numpy as np

from experiments import (
    evaluate_checkpoint,
    held_out_tasks,
    load_experiment_config,
    rollouts,
    save_figure,
    stage1_checkpoints,
    stage2_seed_cached,
    summarize_runs,
    write_json,
)
from experiments.pushtable_common import (
    data_dir,
    experiment_parser,
    overrides,
    start,
)

STAGE1_FAMILIES = "[block2block, block2location]"


def _parser() -> argparse.ArgumentParser:
    p = experiment_parser(
        "experiments.bananatable",
        "Paper Section 4.3.2: PushTable-only Stage 1, then Self-Improvement on BananaTable "
        "with the PushTable reward model; GT success before and after.",
        data_help="PushTable demonstration directory for Stage 1 (default "
        "data/pushtable4_b2b_b2l_64; generated when empty)",
        stage1_help="reuse a PushTable Stage 1 (best_bc / best_steps_to_go) instead of "
        "training it into <out>/sft")
    p.add_argument("--film-tasks", type=int, default=None,
                   help="tasks searched for the filmstrip episode (default 30; 2 with --quick)")
    return p


def banana_config(push_cfg: Any) -> Any:
    """The same experiment on BananaTable: same camera, the banana instead of blocks."""
    cfg = copy.deepcopy(push_cfg)
    cfg.env = "bananatable"
    cfg.env_kwargs = {"image_size": push_cfg.env_kwargs.get("image_size", 64)}
    return cfg


def filmstrip(cfg: Any, before: Any, after: Any, tasks: list[int], out: Path,
              frames: int = 8) -> tuple[Path, dict[str, Any]]:
    """Stage 1 and Stage 2 on one task: the first of ``tasks`` where Stage 2 succeeds and
    Stage 1 does not (else where Stage 2 succeeds, else the first task)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from efm_sim import keys

    runs = {name: {e.seed: e for e in rollouts(cfg, model, tasks, len(tasks), 0).episodes}
            for name, model in (("before", before), ("after", after))}
    common = [s for s in tasks if s in runs["before"] and s in runs["after"]]
    ok = {name: {s for s in common if runs[name][s].gt_success[-1]} for name in runs}
    pick = next((s for s in common if s in ok["after"] and s not in ok["before"]),
                next((s for s in common if s in ok["after"]), common[0]))
    fig, axes = plt.subplots(2, frames, figsize=(1.6 * frames, 3.9))
    for row, (name, label) in enumerate((("before", "Stage 1 (PushTable only)"),
                                         ("after", "Stage 2 on BananaTable"))):
        episode = runs[name][pick]
        images = episode.observations[keys.OBS_IMAGE]
        index = np.unique(np.linspace(0, len(images) - 1, frames).round().astype(int))
        for col, ax in enumerate(axes[row]):
            ax.axis("off")
            if col < len(index):
                t = int(index[col])
                ax.imshow(images[t], interpolation="nearest")
                ax.set_title(f"t={t}" + (" ✓" if episode.gt_success[t] else ""), fontsize=8)
        result = "success" if episode.gt_success[-1] else "failure"
        axes[row][0].text(-0.1, 0.5, f"{label}\n{result}, {episode.length} steps",
                          transform=axes[row][0].transAxes, ha="right", va="center",
                          fontsize=8)
    how = ("a task where Stage 2 succeeds and Stage 1 fails" if pick in ok["after"]
           and pick not in ok["before"] else "the first task")
    fig.suptitle(f"BananaTable: \"{runs['after'][pick].instruction}\" (task seed {pick}; "
                 f"shown: {how} among {len(common)}, not a typical one)", fontsize=9)
    save_figure(fig, out, bbox_inches="tight")
    info = {"task_seed": pick, "instruction": runs["after"][pick].instruction,
            "before_success": bool(pick in ok["before"]),
            "after_success": bool(pick in ok["after"])}
    return out, info


def summary_figure(results: dict[str, Any], out: Path) -> Path:
    """GT success on BananaTable before and after Stage 2 (mean +- std over seeds)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    before = results["stage1_policy"]["success_rate"]
    best = results["stage2_best"]["success_rate"]
    last = results["stage2_last"]["success_rate"]
    names = ["Stage 1\n(PushTable only)", "Stage 2\nbest round", "Stage 2\nlast round"]
    values = [before, best["mean"], last["mean"]]
    errors = [0.0, best["std"], last["std"]]
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    ax.bar(range(3), values, yerr=errors, capsize=4,
           color=["tab:gray", "tab:green", "tab:olive"])
    for x, seeds in ((1, best["per_seed"]), (2, last["per_seed"])):
        ax.scatter([x] * len(seeds), seeds, color="k", s=12, zorder=3)
    for x, v in enumerate(values):
        ax.text(x, v, f"{v:.2f}", ha="center", va="bottom", fontsize=8)
    ax.set_xticks(range(3), names, fontsize=8)
    ax.set_ylabel("GT success (held-out BananaTable tasks)")
    ax.set_title("BananaTable: Self-Improvement on a novel object (Sec. 4.3.2)", fontsize=9)
    ax.grid(alpha=0.3, axis="y")
    return save_figure(fig, out)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    echo, out, tasks = start(args, "bananatable")
    n_test = len(tasks)
    n_film = args.film_tasks or (2 if args.quick else 30)
    data = data_dir(args, out) or "data/pushtable4_b2b_b2l_64"
    push_cfg = load_experiment_config(args.config, [
        *overrides(out, args.overrides, args.quick, data),
        f"env_kwargs.task_families={STAGE1_FAMILIES}"])
    cfg = banana_config(push_cfg)
    echo(f"Stage 1 on PushTable {push_cfg.env_kwargs['task_families']}, Stage 2 on "
         f"BananaTable, seeds {args.seeds}, {n_test} held-out tasks -> {out}")

    from efm_learning.checkpoint import load_checkpoint

    # 1-2. PushTable-only Stage 1 and its success on BananaTable ----------------------------
    policy, reward, stage1_info = stage1_checkpoints(push_cfg, args.stage1, echo)
    before = evaluate_checkpoint(cfg, policy, tasks, out / "stage1_eval.json", echo)

    # 3-4. Stage 2 on BananaTable with the PushTable reward model -------------------------
    per_seed = [stage2_seed_cached(cfg, seed, policy, reward, tasks, echo,
                                   out / "seeds" / f"seed{seed}.json")
                for seed in args.seeds]
    best = summarize_runs([r["best"] for r in per_seed])
    last = summarize_runs([r["last"] for r in per_seed])
    echo(f"[report] BananaTable GT success: Stage 1 {before['success_rate']:.1%} -> Stage 2 "
         f"best {best['success_rate']['mean']:.1%}, last {last['success_rate']['mean']:.1%}")
    # the filmstrip's "after" is a Stage 2 policy (last round: a best round can be round 0,
    # i.e. Stage 1 itself), from the seed whose last round did best
    top = max(per_seed, key=lambda r: r["last"]["success_rate"])
    film, film_info = filmstrip(cfg, load_checkpoint(policy)[0],
                                load_checkpoint(Path(top["directory"]) / "last")[0],
                                held_out_tasks(n_film), out / "filmstrip.png")
    results = {
        "experiment": "bananatable_section4_3_2",
        "config": args.config,
        "quick": args.quick,
        "seeds": args.seeds,
        "stage1": stage1_info,
        "stage1_families": push_cfg.env_kwargs["task_families"],
        "test_tasks": {"count": n_test, "actions": "sampled", "success": "banana centre "
                       "within 0.07 m of the named location"},
        "stage1_policy": before,
        "stage2_best": best,
        "stage2_last": last,
        "stage2_per_seed": per_seed,
        "filmstrip": {**film_info, "stage2_seed": top["seed"], "stage2_round": "last"},
        "wall_time_s_this_invocation": round(echo.elapsed, 1),
        "date": time.strftime("%Y-%m-%d"),
    }
    results["figures"] = {"filmstrip": str(film),
                          "summary": str(summary_figure(results, out / "bananatable.png"))}
    write_json(out / "results.json", results)
    echo(f"[report] {out / 'results.json'}, figures: {', '.join(results['figures'].values())}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
