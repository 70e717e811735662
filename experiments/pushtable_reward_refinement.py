"""Refine the PushTable reward model on labelled rollouts of the Stage 1 policy (Sec. 6).

    python -m experiments.pushtable_reward_refinement [--stage1 checkpoints/pushtable]
        [--label-episodes 300] [--steps 1500] [--tasks 200] [--report] [--out DIR]

The Stage 1 detector ``d <= s`` mistakes the policy's near misses for success
(docs/PUSHTABLE.md 3, 4.1). Following the paper's Section 6 ("collect a dataset of robot
rollouts using robot policies, and label those trajectories for training the steps-to-go
estimator"), with the protocol of docs/EVALUATION.md:

1. **Label**: the Stage 1 policy runs ``--label-episodes`` full-length episodes on
   **tuning** tasks (offset :data:`LABEL_OFFSET`, disjoint from every other task set
   here); each observation's success flag comes from the simulator, standing in for an
   operator's label (efm_learning.rollout_labels: exact steps to the next success, or
   censored). 10% of the episodes are held out for the loss curves.
2. **Refine**: ``best_steps_to_go`` continues on steps-to-go alone, half demonstrations
   (with Stage 1's relabelled negatives) and half labelled rollouts, for ``--steps``
   steps fixed in advance (efm_learning.reward_refinement) -> ``<out>/refined_steps_to_go``.
3. **Choose the detector on tuning tasks**: the same policy's full-length rollouts on the
   tuning tasks of ``pushtable_diagnosis`` (offset 100,000), scored by both reward models;
   per model the rule fixed in docs/PUSHTABLE.md 3.1 picks (k, s): the highest recall
   with precision >= 0.8 (k observations in a row with d <= s).
4. **Report** (``--report``, once): the same on report tasks, at every (k, s), with the
   tuning choice marked.

Outputs in ``--out``: ``results.json``, the refined checkpoint, ``labelled_rollouts.npz``.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from experiments import Progress, load_experiment_config, setup_runtime, write_json
from experiments.pushtable_diagnosis import (
    CONSECUTIVE,
    ROLLOUT_OFFSET,
    THRESHOLDS,
    detector_rollouts,
    torch_no_grad,
)
from experiments.reward_quality import episode_pr

#: labelled-rollout tasks: tuning split, far from the diagnosis and evaluation tasks
LABEL_OFFSET = 200_000
#: the detector rule of docs/PUSHTABLE.md 3.1, fixed before any of these runs
MIN_PRECISION = 0.8
HELD_OUT_FRACTION = 0.1


def detector_grid(episodes: list[Any]) -> list[dict[str, Any]]:
    """Episode precision/recall of "d <= s held on k observations" for every (k, s)."""
    d = np.stack([e.steps_to_go for e in episodes])
    gt = np.stack([e.gt_success for e in episodes])
    dist = np.full(d.shape, np.nan)
    return [row for k in CONSECUTIVE for row in episode_pr(d, gt, dist, THRESHOLDS, k)]


def choose_detector(grid: list[dict[str, Any]],
                    min_precision: float = MIN_PRECISION) -> dict[str, Any] | None:
    """The highest recall among (k, s) with precision >= ``min_precision`` (ties: the
    higher precision, then the smaller k)."""
    ok = [r for r in grid if r["precision"] is not None and r["recall"] is not None
          and r["precision"] >= min_precision]
    if not ok:
        return None
    return max(ok, key=lambda r: (r["recall"], r["precision"], -r["consecutive"]))


@torch_no_grad
def rescored(episodes: list[Any], reward_model: Any) -> list[Any]:
    """The same episodes with d(o, g) from another reward model."""
    return [dataclasses.replace(e, steps_to_go=reward_model.predict_steps_to_go(e.observations))
            for e in episodes]


def demo_source(cfg: Any, model: Any, capacity: int, seed: int) -> Any:
    """Stage 1's steps-to-go batches (training split, relabelled negatives) as a callable."""
    from efm_learning.data import StreamingSampler, list_episode_files, split_train_val

    paths = list_episode_files(cfg.data.dir)
    train, _ = split_train_val(paths, cfg.data.val_fraction, cfg.seed)
    sampler = StreamingSampler(
        train, model.featurizer(), capacity=capacity, refresh_fraction=0.0,
        refresh_every=10**9, seed=seed, load_images=True,
        successful_only_steps_to_go=cfg.data.steps_to_go_successful_only,
        steps_to_go_negatives=cfg.data.steps_to_go_negatives)
    return lambda n, rng: sampler.pool.sample("steps_to_go", n, rng)


def detector_report(episodes: list[Any], models: dict[str, Any], scored_by: str
                    ) -> dict[str, Any]:
    """Grid and tuning-rule choice per reward model; ``episodes`` already carry the d of
    ``models[scored_by]``, the others are rescored."""
    out = {}
    for name, model in models.items():
        grid = detector_grid(episodes if name == scored_by else rescored(episodes, model))
        out[name] = {"grid": grid, "chosen": choose_detector(grid)}
    return out


def _brief(row: dict[str, Any] | None) -> dict[str, Any] | None:
    return row and {k: row[k] for k in ("consecutive", "s", "precision", "recall")}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m experiments.pushtable_reward_refinement",
                                description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--stage1", default="checkpoints/pushtable", metavar="DIR",
                   help="a Stage 1 directory with best_bc and best_steps_to_go")
    p.add_argument("--config", default="config/pushtable.yaml")
    p.add_argument("--label-episodes", type=int, default=300)
    p.add_argument("--steps", type=int, default=1500, help="refinement steps (fixed)")
    p.add_argument("--demo-transitions", type=int, default=40_000,
                   help="demonstration transitions held in memory for the demo half")
    p.add_argument("--tasks", type=int, default=200, help="diagnosis tasks per split")
    p.add_argument("--report", action="store_true", help="also measure on report tasks")
    p.add_argument("--out", default="runs/reward_refinement")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    setup_runtime()
    from efm_learning.checkpoint import load_checkpoint, read_checkpoint_config
    from efm_learning.pipeline import ensure_dataset
    from efm_learning.protocol import task_seeds
    from efm_learning.reward_refinement import RefineConfig, refine_reward_model
    from efm_learning.rollout_labels import LabelledRollouts
    from efm_learning.self_improvement import freeze

    echo = Progress("reward_refinement")
    cfg = load_experiment_config(args.config, args.overrides)
    stage1, out = Path(args.stage1), Path(args.out)
    policy, _ = load_checkpoint(stage1 / "best_bc")
    reward_path = stage1 / "best_steps_to_go"
    stage1_reward = freeze(load_checkpoint(reward_path)[0])
    results: dict[str, Any] = {"stage1": str(stage1), "args": vars(args)}

    # 1. labelled rollouts of the Stage 1 policy (tuning tasks; GT stands in for labels)
    labels_path = out / "labelled_rollouts.npz"
    held_path = out / "labelled_rollouts_held_out.npz"
    if labels_path.is_file() and held_path.is_file():
        echo(f"[label] reusing {labels_path}")
        train_rollouts, held = LabelledRollouts.load(labels_path), LabelledRollouts.load(held_path)
    else:
        seeds = task_seeds("tuning", args.label_episodes, offset=LABEL_OFFSET)
        echo(f"[label] {len(seeds)} full-length Stage 1 rollouts on tuning tasks")
        episodes = detector_rollouts(cfg, policy, stage1_reward, seeds)
        n_held = max(1, int(HELD_OUT_FRACTION * len(episodes)))
        train_rollouts = LabelledRollouts.from_episodes(episodes[n_held:])
        held = LabelledRollouts.from_episodes(episodes[:n_held])
        train_rollouts.save(labels_path)
        held.save(held_path)
        results["label_episodes_reaching_success"] = float(
            np.mean([e.gt_success.any() for e in episodes]))
    results["labelled"] = {"train": train_rollouts.summary(), "held_out": held.summary()}
    echo(f"[label] {results['labelled']}")

    # 2. refine (fixed steps)
    refined_path = out / "refined_steps_to_go"
    if (refined_path / "config.json").is_file():
        echo(f"[refine] reusing {refined_path}")
    else:
        meta = read_checkpoint_config(reward_path).get("metadata", {})
        cfg.seed = int((meta.get("config") or {}).get("seed", cfg.seed))  # Stage 1's split
        ensure_dataset(cfg, echo)
        model, _ = load_checkpoint(reward_path)
        demos = demo_source(cfg, model, args.demo_transitions, seed=cfg.seed)
        log = refine_reward_model(model, demos, train_rollouts, RefineConfig(steps=args.steps),
                                  refined_path, held_out=held,
                                  metadata={"from": str(reward_path)}, log=echo)
        write_json(out / "refine_log.json", log)
    refined = freeze(load_checkpoint(refined_path)[0])
    models = {"stage1": stage1_reward, "refined": refined}

    # 3-4. detector per (k, s) on the policy's own rollouts, tuning then report
    for split in ["tuning"] + (["report"] if args.report else []):
        seeds = task_seeds(split, args.tasks, offset=ROLLOUT_OFFSET)
        echo(f"[detector] {split}: {len(seeds)} full-length rollouts")
        episodes = detector_rollouts(cfg, policy, stage1_reward, seeds)
        results[split] = {
            "episodes_reaching_gt_success": int(sum(e.gt_success[1:].any() for e in episodes)),
            **detector_report(episodes, models, scored_by="stage1"),
        }
        for name in models:
            echo(f"[detector] {split} {name}: chosen {_brief(results[split][name]['chosen'])}")
        write_json(out / "results.json", results)
    if args.report:
        for name in models:  # the tuning choice, read on report tasks
            pick = results["tuning"][name]["chosen"]
            row = None
            if pick is not None:
                row = next(r for r in results["report"][name]["grid"]
                           if r["consecutive"] == pick["consecutive"] and r["s"] == pick["s"])
            results["report"][name]["at_tuning_choice"] = row
            echo(f"[detector] report {name} at the tuning choice: {_brief(row)}")
    write_json(out / "results.json", results)
    echo(f"results in {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
