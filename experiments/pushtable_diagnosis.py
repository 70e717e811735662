"""Where PushTable Stage 1 fails: the policy's GT success and the detector on its rollouts.

    python -m experiments.pushtable_diagnosis --stage1 runs/demo/stage1/sft
        [--config config/pushtable.yaml] [--tasks 200] [--split tuning|report] [--out DIR]

Everything here is measured against the simulator's ground truth, which Stage 2 never
sees (docs/EVALUATION.md; ``--split tuning`` by default, so a diagnosis never touches the
tasks a report is made on).

1. **Policy**: GT success of ``best_bc`` on ``--tasks`` tasks of the split, ended at GT
   success or the configured step limit (``improve.max_episode_steps``).
2. **Reward model on the policy's own rollouts** (paper Sec. 2.2, Eq. 3): the same
   policy runs the full step limit with the frozen ``best_steps_to_go`` model computing
   d(o, g) after every step; per episode the *first* firing of ``d <= s`` (where a Stage 2
   episode would end) is a true positive when the scene is a GT success then. Precision
   and recall per episode and per observation over a range of s, and for a detector that
   fires once ``d <= s`` held on 2 or 3 observations in a row (``per_episode_held``).
3. **Reward noise** on the same rollouts: the per-step reward r_t = d_t - d_t+1 (Eq. 2)
   with d the full expectation (Eq. 1) and with d over every bin but the last
   (``improve.reward_steps_to_go: in_range``): mean, std, 1st/99th percentile.
4. **Contact sheet** of false-positive first firings (``false_positives.png``): what the
   detector mistakes for success, with the instruction under each frame.

Outputs in ``--out`` (default ``<stage1>/../diagnosis_<split>``): ``results.json``,
``false_positives.png``, ``traces.npz`` (d and GT of every rollout step).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

from experiments import (
    Progress,
    finite_or_none,
    load_experiment_config,
    rollouts,
    save_figure,
    setup_runtime,
    summarize_eval,
    write_json,
)
from experiments.reward_quality import episode_pr, first_true, observation_pr

THRESHOLDS = [0.5, 1.0, 1.25, 1.5, 1.75, 2.0, 2.5, 3.0, 4.0, 6.0, 8.0]
#: the detector variants compared: fire once d <= s held on k observations in a row
CONSECUTIVE = (1, 2, 3)
#: the detector can never fire at this threshold (d >= 0): rollouts run the full limit
NEVER = -1.0
#: rollout tasks sit this far above the split's GT-evaluation tasks
ROLLOUT_OFFSET = 100_000


def torch_no_grad(fn: Any) -> Any:
    """``torch.no_grad`` imported late (setup_runtime sets torch's threads first)."""
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        import torch

        with torch.no_grad():
            return fn(*args, **kwargs)
    return wrapped


def detector_rollouts(cfg: Any, policy: Any, reward_model: Any, seeds: list[int]) -> list[Any]:
    """Episodes of exactly ``max_episode_steps`` with d(o, g) recorded after every step."""
    from efm_learning.actor import EnvActor

    actor = EnvActor(cfg.env, policy, reward_model, success_threshold=NEVER,
                     max_episode_steps=cfg.improve.max_episode_steps,
                     num_envs=min(50, len(seeds)), seed=cfg.seed, end_on="detector",
                     env_kwargs=cfg.env_kwargs)
    actor.set_seeds(iter(seeds))
    return sorted(actor.run(num_episodes=len(seeds)), key=lambda e: e.seed)


def detector_quality(episodes: list[Any], s: float) -> dict[str, Any]:
    """Episode- and observation-level precision/recall of ``d <= s`` against GT."""
    d = np.stack([e.steps_to_go for e in episodes])
    gt = np.stack([e.gt_success for e in episodes])
    dist = np.full(d.shape, np.nan)
    per_episode = episode_pr(d, gt, dist, THRESHOLDS)
    at_s = episode_pr(d, gt, dist, [s])[0]
    return {
        "s": s,
        "episodes": len(episodes),
        "episodes_reaching_gt_success": int(gt[:, 1:].any(axis=1).sum()),
        "at_configured_s": at_s,
        "per_episode": per_episode,
        "per_episode_held": {str(k): episode_pr(d, gt, dist, THRESHOLDS, consecutive=k)
                             for k in CONSECUTIVE if k > 1},
        "per_observation": observation_pr(d[:, 1:], gt[:, 1:], THRESHOLDS),
    }


@torch_no_grad
def reward_noise(episodes: list[Any], reward_model: Any) -> dict[str, Any]:
    """Per-step reward statistics for each choice of d behind the reward (Eq. 2)."""
    out = {}
    for name, in_range in (("expected", False), ("in_range", True)):
        rewards = np.concatenate([
            -np.diff(reward_model.predict_steps_to_go(e.observations, in_range=in_range))
            for e in episodes
        ])
        out[name] = {"mean": float(rewards.mean()), "std": float(rewards.std()),
                     "p01": float(np.percentile(rewards, 1)),
                     "p99": float(np.percentile(rewards, 99)), "steps": int(rewards.size)}
    return out


def false_positive_sheet(episodes: list[Any], s: float, out: Path, limit: int = 24) -> Path | None:
    """Frames where the first firing of ``d <= s`` is not a GT success."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    picks = []
    for e in episodes:
        fire = first_true((e.steps_to_go[1:] <= s)[None])[0]
        if fire >= 0 and not e.gt_success[fire + 1]:
            picks.append((e, fire + 1))
    if not picks:
        return None
    picks = picks[:limit]
    cols = 6
    rows = (len(picks) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(2.2 * cols, 2.5 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, (e, t) in zip(axes.ravel(), picks, strict=False):
        ax.imshow(e.observations["observation.image"][t])
        words = e.instruction.replace("move the ", "").replace(" close to the ", " -> ")
        ax.set_title(f"{words}\nt={t} d={e.steps_to_go[t]:.1f}", fontsize=5)
    fig.suptitle(f"detector false positives (first d <= {s}, not a GT success)")
    return save_figure(fig, out)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m experiments.pushtable_diagnosis",
                                description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--stage1", required=True, metavar="DIR",
                   help="a Stage 1 sft/ directory with best_bc and best_steps_to_go")
    p.add_argument("--config", default="config/pushtable.yaml")
    p.add_argument("--policy", default="best_bc", help="policy checkpoint name in --stage1")
    p.add_argument("--tasks", type=int, default=200)
    p.add_argument("--split", choices=["tuning", "report"], default="tuning")
    p.add_argument("--out", default=None)
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    setup_runtime()
    from efm_learning.checkpoint import load_checkpoint
    from efm_learning.protocol import task_seeds
    from efm_learning.self_improvement import freeze

    echo = Progress("pushtable_diagnosis")
    cfg = load_experiment_config(args.config, args.overrides)
    stage1 = Path(args.stage1)
    out = Path(args.out or stage1.parent / f"diagnosis_{args.split}")
    policy, _ = load_checkpoint(stage1 / args.policy)
    reward_model = freeze(load_checkpoint(stage1 / "best_steps_to_go")[0])
    s = cfg.improve.success_threshold

    tasks = task_seeds(args.split, args.tasks)
    echo(f"[policy] {stage1 / args.policy}: {len(tasks)} {args.split} tasks")
    gt = summarize_eval(rollouts(cfg, policy, tasks, len(tasks), sample_seed=0))
    echo(f"[policy] GT success {gt['success_rate']:.3f}, mean length {gt['mean_length']:.1f}")

    echo(f"[detector] {len(tasks)} full-length rollouts, d <= {s}")
    episodes = detector_rollouts(cfg, policy, reward_model,
                                 task_seeds(args.split, args.tasks, offset=ROLLOUT_OFFSET))
    quality = detector_quality(episodes, s)
    at_s = quality["at_configured_s"]
    echo(f"[detector] fired in {at_s['fired_rate']:.2f} of episodes; precision "
         f"{at_s['precision']}, recall {at_s['recall']} "
         f"({quality['episodes_reaching_gt_success']} episodes reach GT success)")
    noise = reward_noise(episodes, reward_model)
    echo("[reward] per-step std: " + ", ".join(
        f"{k} {v['std']:.2f} (p1 {v['p01']:.1f}, p99 {v['p99']:.1f})" for k, v in noise.items()))
    sheet = false_positive_sheet(episodes, s, out / "false_positives.png")
    results = {
        "stage1": str(stage1), "policy": args.policy, "split": args.split,
        "step_limit": cfg.improve.max_episode_steps, "policy_gt": gt, "detector": quality,
        "reward_noise": noise,
        "false_positive_sheet": str(sheet) if sheet else None,
        "gt_success_anywhere_in_rollouts": finite_or_none(
            float(np.mean([e.gt_success[1:].any() for e in episodes]))),
    }
    write_json(out / "results.json", results)
    np.savez_compressed(out / "traces.npz",  # d and GT per step, to evaluate other rules
                        steps_to_go=np.stack([e.steps_to_go for e in episodes]),
                        gt_success=np.stack([e.gt_success for e in episodes]))
    echo(f"results in {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
