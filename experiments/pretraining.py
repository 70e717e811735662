"""Pretraining ablation of the reward model, paper Figure 8 left (Section 4.2).

    python -m experiments.pretraining [--stage1 DIR] [--seeds 0 1 2] [--test-tasks 200]
        [--data-dir DIR] [--quick] [--out runs/experiments/pretraining]

The paper compares Stage 2 with EFMs initialised from PaLI (multimodal pretraining),
Uni-PaLI (unimodally pretrained vision and language encoders) and Scratch. Our
``conv_efm`` learns its vision tower from pixels in Stage 1 in every setting (no image
pretraining that finds PushTable's blocks fits on this CPU, docs/DEMO.md), so the two arms
here differ in the language side only:

* ``pretrained``: the frozen all-MiniLM-L6-v2 instruction encoder with its pretrained
  weights (``model.pretrained: true``); the vision tower from scratch. In the paper's
  terms: half of Uni-PaLI (pretrained language, unpretrained vision);
* ``scratch``: the same architecture with the MiniLM randomly initialised and frozen
  (``model.pretrained: false``): nothing pretrained, the paper's Scratch.

Both arms train their Stage 1 on the same demonstrations with the same seed and steps.
Stage 2 then starts the *same* policy (the pretrained arm's ``best_bc``) and differs only
in the frozen reward model / success detector (each arm's ``best_steps_to_go``), which is
the question the issue asks: does a pretrained reward model make Self-Improvement work
better? (In the paper both the policy and the reward model change with the
initialisation.)

Measured per arm: the reward model's validation steps-to-go MAE and detector precision /
recall on demonstrations, its detector precision on the practice episodes (episode level:
of the episodes the detector ended, the share that ground truth calls a success), and GT
success of the Stage 2 policies (best and last round) on held-out tasks. Resumable;
writes ``results.json`` and ``pretraining.png``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np

from experiments import (
    evaluate_checkpoint,
    load_experiment_config,
    mean_defined,
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

ARMS = ("pretrained", "scratch")


def _parser() -> argparse.ArgumentParser:
    return experiment_parser(
        "experiments.pretraining",
        "Paper Figure 8 left on PushTable: Stage 2 with a reward model whose language "
        "encoder is pretrained vs randomly initialised (same starting policy).",
        data_help="demonstration directory (default: the config's data.dir); must be the "
        "one the --stage1 checkpoints were trained on",
        stage1_help="reuse this pretrained-arm Stage 1 (best_bc / best_steps_to_go) instead "
        "of training it into <out>/pretrained/sft")


def practice_detector(directory: Path) -> dict[str, float | None]:
    """Episode-level detector quality over a Stage 2 run's practice rounds."""
    from efm_learning.metrics import read_metrics

    rounds = [r for r in read_metrics(directory) if "practice/episodes" in r]
    fired = sum(r["practice/detector_success_rate"] * r["practice/episodes"] for r in rounds)
    true = sum(r["practice/gt_success_at_end"] * r["practice/episodes"] for r in rounds)
    return {
        "detector_ended_episodes": float(fired),
        "gt_success_at_end": float(true),
        # detector-ended GT successes <= all GT successes, so this bounds the share of
        # detector-ended episodes that really succeeded (vacuous when it reaches 1)
        "episode_precision_upper_bound": min(1.0, float(true / fired)) if fired else None,
        "step_precision": mean_defined([r.get("detector/precision") for r in rounds]),
        "step_recall": mean_defined([r.get("detector/recall") for r in rounds]),
    }


def figure(results: dict[str, Any], out: Path) -> Path:
    """GT success of Stage 1 and of Stage 2 (best / last round) per reward-model arm, and
    each seed's selection-task success over the rounds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from efm_learning.metrics import read_metrics

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    names, values, errors = ["Stage 1 policy"], [results["stage1_policy"]["success_rate"]], [0.0]
    for arm in ARMS:
        for which in ("best", "last"):
            s = results["arms"][arm][f"stage2_{which}"]["success_rate"]
            names.append(f"{arm} RM\nStage 2 {which}")
            values.append(s["mean"])
            errors.append(s["std"])
    x = np.arange(len(names))
    colors = ["tab:gray", "tab:blue", "tab:blue", "tab:orange", "tab:orange"]
    left.bar(x, values, yerr=errors, capsize=4, color=colors, alpha=0.85)
    for xi, v in zip(x, values, strict=True):
        left.text(xi, v, f"{v:.2f}", ha="center", va="bottom", fontsize=8)
    left.set_xticks(x, names, fontsize=8)
    left.set_ylabel("GT success (held-out tasks)")
    left.set_title("reward model: pretrained vs scratch language encoder")
    left.grid(alpha=0.3, axis="y")
    for arm, color in zip(ARMS, ("tab:blue", "tab:orange"), strict=True):
        for record in results["arms"][arm]["per_seed"]:
            rows = [r for r in read_metrics(Path(record["directory"]))
                    if r.get("eval/success_rate") is not None]
            right.plot([r["step"] for r in rows], [r["eval/success_rate"] for r in rows],
                       color=color, alpha=0.7,
                       label=arm if record is results["arms"][arm]["per_seed"][0] else None)
    right.set_xlabel("Stage 2 round")
    right.set_ylabel("GT success (selection tasks)")
    right.set_title("Stage 2 per seed")
    right.grid(alpha=0.3)
    right.legend(fontsize=8)
    fig.suptitle("PushTable Block2Block: pretraining ablation (paper Figure 8 left)")
    return save_figure(fig, out)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    echo, out, tasks = start(args, "pretraining")
    n_test = len(tasks)
    echo(f"Stage 2 seeds {args.seeds}, {n_test} held-out tasks -> {out}")

    # 1. Stage 1 for each arm (the pretrained one may be reused) -------------------------
    cfgs, stage1 = {}, {}
    for arm in ARMS:
        cfgs[arm] = load_experiment_config(args.config, [
            *overrides(out / arm, args.overrides, args.quick, data_dir(args, out)),
            f"model.pretrained={'true' if arm == 'pretrained' else 'false'}"])
        reuse = args.stage1 if arm == "pretrained" else None
        echo(f"[{arm}] Stage 1 reward model, language encoder "
             f"{'pretrained' if arm == 'pretrained' else 'randomly initialised'}")
        stage1[arm] = stage1_checkpoints(cfgs[arm], reuse, echo)
    policy = stage1["pretrained"][0]
    before = evaluate_checkpoint(cfgs["pretrained"], policy, tasks, out / "stage1_eval.json",
                                 echo)

    # 2. Stage 2 from the same policy with each arm's frozen reward model ----------------
    arms: dict[str, Any] = {}
    for arm in ARMS:
        reward = stage1[arm][1]
        per_seed = [stage2_seed_cached(cfgs[arm], seed, policy, reward, tasks, echo,
                                       out / arm / f"seed{seed}.json")
                    for seed in args.seeds]
        for record in per_seed:
            record["practice_detector"] = practice_detector(Path(record["directory"]))
        arms[arm] = {
            "reward_checkpoint": str(reward),
            "reward_model_val": stage1[arm][2]["val_at_best_steps_to_go"],
            "stage2_best": summarize_runs([r["best"] for r in per_seed]),
            "stage2_last": summarize_runs([r["last"] for r in per_seed]),
            "practice_episode_precision_upper_bound": mean_defined(
                [r["practice_detector"]["episode_precision_upper_bound"] for r in per_seed]),
            "per_seed": per_seed,
        }
        echo(f"[report] {arm} reward model: Stage 1 {before['success_rate']:.1%} -> Stage 2 "
             f"best {arms[arm]['stage2_best']['success_rate']['mean']:.1%}, last "
             f"{arms[arm]['stage2_last']['success_rate']['mean']:.1%}")
    results = {
        "experiment": "pretraining_ablation_figure8_left",
        "config": args.config,
        "quick": args.quick,
        "seeds": args.seeds,
        "policy_checkpoint": str(policy),
        "stage1_policy": before,
        "test_tasks": {"count": n_test, "actions": "sampled", "success": "env ground truth"},
        "arms": arms,
        "wall_time_s_this_invocation": round(echo.elapsed, 1),
        "date": time.strftime("%Y-%m-%d"),
    }
    results["figures"] = {"pretraining": str(figure(results, out / "pretraining.png"))}
    write_json(out / "results.json", results)
    echo(f"[report] {out / 'results.json'}, {results['figures']['pretraining']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
