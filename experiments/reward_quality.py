"""Quality of the learned reward and success detector on PointMass (paper Sec. 2.2, 3).

    python -m experiments.reward_quality [--quick] [--out runs/experiments/reward_quality]
                                         [--stage1 runs/pointmass/sft] [--stage2 CKPT]

Everything here is measured against the simulator's ground truth, which Stage 2 never
sees. The frozen Stage 1 ``best_steps_to_go`` model gives d(o, g) = E[steps-to-go]
(Eq. 1), the reward r_t = d(o_t) - d(o_{t+1}) (Eq. 2) and the detector d <= s (Eq. 3).

1. **Detector precision / recall** of ``d <= s`` against GT success (|pos - goal| < 0.15)
   over a range of s, per observation, on (a) the held-out demonstrations (the Stage 1
   validation split) and (b) Stage 1 policy rollouts that run the full 140 steps without
   stopping (the on-policy states Stage 2 starts from; a point can enter the goal,
   overshoot and leave). Per episode on (b): does the *first* firing, where a Stage 2
   episode would end, happen inside the goal (episode precision), and does it fire in
   episodes that reach the goal (episode recall)?
2. **Calibration** of d against the true remaining steps T - t on the held-out successful
   demos (binned means, a reliability plot by predicted d, MAE / bias / R^2), plus
   the on-policy check: d against the steps a Stage 1 rollout really needed.
3. **A Figure 2-style plot** of d over a held-out demo and two Stage 1 rollouts, with the
   events marked: GT success (shaded), the first detector firing, the threshold s.

Outputs: ``results.json``, ``precision_recall.png``, ``calibration.png``, ``episodes.png``.
Resumable: the d arrays are cached in ``<out>/cache_*.npz`` (keyed by the checkpoints)
and reused; Stage 1 is trained into ``<out>/sft`` only without ``--stage1`` (resuming).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np

from efm_learning.success_detector import held_for
from experiments import (
    TEST_SEED_BASE,
    Progress,
    finite_or_none,
    load_experiment_config,
    setup_runtime,
    stage1_checkpoints,
    write_json,
)
from experiments.pointmass import QUICK_OVERRIDES

DEFAULT_OUT = "runs/experiments/reward_quality"
DEFAULT_QUICK_OUT = "runs/experiments/reward_quality_quick"
THRESHOLDS = [0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 7.5, 10.0]
SUCCESS_RADIUS = 0.15
#: rollout tasks: a block of held-out env seeds after the PointMass experiment's tasks
ROLLOUT_SEED_BASE = TEST_SEED_BASE + 100_000
#: the detector never fires at this threshold (d >= 0): rollouts run all 140 steps
NEVER = -1.0


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m experiments.reward_quality",
        description="PointMass: precision/recall of the learned success detector d <= s "
        "over a range of s, calibration of d against the true remaining steps on held-out "
        "demos, and a Figure 2-style plot of d over episodes with their events.",
    )
    p.add_argument("--config", default="config/pointmass.yaml")
    p.add_argument("--out", default=None,
                   help=f"output directory (default {DEFAULT_OUT}; {DEFAULT_QUICK_OUT} "
                   "with --quick)")
    p.add_argument("--stage1", default=None, metavar="DIR",
                   help="reuse best_bc/best_steps_to_go from DIR (e.g. runs/pointmass/sft) "
                   "instead of running Stage 1 into <out>/sft")
    p.add_argument("--stage2", default=None, metavar="CKPT",
                   help="also measure the detector on rollouts of this Stage 2 policy "
                   "(e.g. runs/experiments/pointmass/improve_seed0/best)")
    p.add_argument("--rollouts", type=int, default=None,
                   help="policy rollouts of 140 steps (default 500; 8 with --quick)")
    p.add_argument("--max-demos", type=int, default=None,
                   help="held-out demos used (default: all; 20 with --quick)")
    p.add_argument("--thresholds", type=float, nargs="+", default=THRESHOLDS,
                   help="values of s, in steps")
    p.add_argument("--quick", action="store_true", help="tiny configuration for a smoke test")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    return p


# -- data: d on held-out demos and on full-length policy rollouts ---------------------
def distance(states: np.ndarray) -> np.ndarray:
    return np.linalg.norm(states[..., 0:2] - states[..., 4:6], axis=-1)


def ground_truth(states: np.ndarray) -> np.ndarray:
    """GT success per observation: |pos - goal| < 0.15 (evaluation only)."""
    return distance(states) < SUCCESS_RADIUS


def held_out_demos(info: dict[str, Any], cfg: Any, reward_model: Any, limit: int | None,
                   cache: Path, echo: Progress) -> dict[str, np.ndarray]:
    """d for every observation of the Stage 1 validation episodes (never trained on)."""
    from efm_learning.data import list_episode_files, split_train_val
    from efm_sim import keys
    from efm_sim.dataset import read_episode

    if cache.is_file():
        echo(f"[demos] cached in {cache}")
        return dict(np.load(cache))
    data = info.get("data") or {}
    root = data.get("dir", cfg.data.dir)
    fraction = data.get("val_fraction", cfg.data.val_fraction)
    seed = info.get("seed", cfg.seed)
    _, val = split_train_val(list_episode_files(root), fraction, seed)
    val = val[:limit] if limit else val
    echo(f"[demos] {len(val)} held-out demos of {root} (Stage 1 validation split: "
         f"val_fraction {fraction}, seed {seed})")
    states, episode, step, length, success = [], [], [], [], []
    for i, path in enumerate(val):
        e = read_episode(path, load_images=False)
        n = len(e.states)
        states.append(e.states)
        episode.append(np.full(n, i))
        step.append(np.arange(n))
        length.append(np.full(n, e.length))
        success.append(np.full(n, e.success))
    out = {
        "states": np.concatenate(states).astype(np.float32),
        "episode": np.concatenate(episode),
        "step": np.concatenate(step),
        "length": np.concatenate(length),
        "demo_success": np.concatenate(success),
    }
    out["d"] = reward_model.predict_steps_to_go({keys.OBS_STATE: out["states"]})
    np.savez_compressed(cache, **out)
    return out


def full_rollouts(cfg: Any, policy: Any, reward_model: Any, count: int, cache: Path,
                  echo: Progress, label: str) -> dict[str, np.ndarray]:
    """``count`` episodes of exactly ``max_episode_steps`` steps, d recorded every step.

    ``EnvActor`` as Stage 2 runs it (the frozen reward model computes d after every
    step, the envs never terminate on GT success) but with a threshold the detector can
    never reach, so nothing is cut short: one can see what happens after the detector
    *would* have ended the episode.
    """
    from efm_learning.actor import EnvActor, fixed_seeds

    if cache.is_file():
        echo(f"[rollouts] {label}: cached in {cache}")
        return dict(np.load(cache))
    steps = cfg.improve.max_episode_steps
    echo(f"[rollouts] {label}: {count} episodes x {steps} steps (no early stop)")
    actor = EnvActor(cfg.env, policy, reward_model, success_threshold=NEVER,
                     max_episode_steps=steps, num_envs=min(50, count), seed=cfg.seed,
                     end_on="detector", env_kwargs=cfg.env_kwargs)
    actor.set_seeds(fixed_seeds(ROLLOUT_SEED_BASE, count))
    episodes = sorted(actor.run(num_episodes=count), key=lambda e: e.seed)
    out = {
        "states": np.stack([e.observations["observation.state"] for e in episodes]),
        "d": np.stack([e.steps_to_go for e in episodes]),
        "gt_env": np.stack([e.gt_success for e in episodes]),
        "seed": np.array([e.seed for e in episodes]),
    }
    np.savez_compressed(cache, **out)
    return out


# -- metrics --------------------------------------------------------------------------
def observation_pr(d: np.ndarray, gt: np.ndarray, thresholds: list[float]) -> list[dict]:
    from efm_learning.success_detector import precision_recall

    rows = []
    for s in thresholds:
        fired = d <= s
        p, r = precision_recall(fired, gt)
        rows.append({"s": s, "precision": finite_or_none(p), "recall": finite_or_none(r),
                     "fired": int(fired.sum()), "positives": int(gt.sum())})
    return rows


def first_true(mask: np.ndarray) -> np.ndarray:
    """Index of the first True per row, -1 where none (rows are episodes)."""
    idx = mask.argmax(axis=1)
    return np.where(mask.any(axis=1), idx, -1)


def episode_pr(d: np.ndarray, gt: np.ndarray, dist: np.ndarray,
               thresholds: list[float], consecutive: int = 1) -> list[dict]:
    """Stage 2's view: the first firing ends the episode. Steps t >= 1 (at t = 0 the actor
    skips the task as already solved). ``dist``: |pos - goal| per observation.
    ``consecutive`` k: the detector fires once ``d <= s`` held on k observations in a row."""
    rows = []
    reached = gt[:, 1:].any(axis=1)
    first_gt = first_true(gt[:, 1:])
    for s in thresholds:
        fire = first_true(held_for(d[:, 1:] <= s, consecutive))
        fired = fire >= 0
        correct = fired & gt[np.arange(len(d)), fire + 1]
        early = fired & ((first_gt < 0) | (fire < first_gt))
        late = fired & reached & (fire >= first_gt)
        wrong = fired & ~correct
        wrong_dist = dist[np.arange(len(d)), fire + 1][wrong]
        rows.append({
            "s": s,
            "consecutive": consecutive,
            "fired_rate": float(fired.mean()),
            "precision": finite_or_none(correct.sum() / fired.sum()) if fired.any() else None,
            "recall": finite_or_none((fired & reached).sum() / reached.sum())
            if reached.any() else None,
            "fired_before_goal_rate": float(early.mean()),
            "mean_delay_after_goal": finite_or_none((fire - first_gt)[late].mean())
            if late.any() else None,
            "median_distance_at_wrong_first_firing": finite_or_none(np.median(wrong_dist))
            if wrong.any() else None,
            "max_distance_at_wrong_first_firing": finite_or_none(wrong_dist.max())
            if wrong.any() else None,
        })
    return rows


def calibration(d: np.ndarray, true: np.ndarray, width: int = 5) -> dict[str, Any]:
    """Binned d against the true remaining steps, and the reverse (reliability)."""
    err = d - true
    ss_res = float(np.sum(err**2))
    ss_tot = float(np.sum((true - true.mean()) ** 2))
    by_true, by_pred = [], []
    for lo in range(0, int(max(true.max(), d.max())) + 1, width):
        m = (true >= lo) & (true < lo + width)
        if m.sum():
            by_true.append({"true_lo": lo, "true_hi": lo + width, "count": int(m.sum()),
                            "mean_d": float(d[m].mean()), "std_d": float(d[m].std()),
                            "p10_d": float(np.percentile(d[m], 10)),
                            "p90_d": float(np.percentile(d[m], 90))})
        m = (d >= lo) & (d < lo + width)
        if m.sum():
            by_pred.append({"d_lo": lo, "d_hi": lo + width, "count": int(m.sum()),
                            "mean_d": float(d[m].mean()), "mean_true": float(true[m].mean()),
                            "std_true": float(true[m].std())})
    near = [{"true": k, "count": int((true == k).sum()),
             "mean_d": finite_or_none(d[true == k].mean()) if (true == k).any() else None}
            for k in range(0, 11)]
    return {
        "observations": len(d),
        "mae": float(np.abs(err).mean()),
        "rmse": float(np.sqrt(np.mean(err**2))),
        "bias_mean_d_minus_true": float(err.mean()),
        "r2": 1.0 - ss_res / ss_tot if ss_tot > 0 else None,
        # |E[true | d-bin] - mean d| weighted by bin size: 0 = calibrated in expectation
        "reliability_gap": float(sum(b["count"] * abs(b["mean_true"] - b["mean_d"])
                                     for b in by_pred) / len(d)),
        "pearson_r": float(np.corrcoef(d, true)[0, 1]) if len(d) > 2 else None,
        "near_goal": near,
        "by_true_steps": by_true,
        "by_predicted_d": by_pred,
    }


def onpolicy_remaining(roll: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(d, steps until first GT success) for rollout steps up to their first success."""
    gt = roll["gt_env"]
    first = first_true(gt)
    ds, trues = [], []
    for i, f in enumerate(first):
        if f < 0:
            continue
        ds.append(roll["d"][i, : f + 1])
        trues.append(f - np.arange(f + 1))
    if not ds:
        return np.zeros(0), np.zeros(0)
    return np.concatenate(ds), np.concatenate(trues)


def reward_stats(demos: dict[str, np.ndarray]) -> dict[str, float]:
    """r_t = d_t - d_{t+1} along held-out successful demos (each step is 1 step of progress)."""
    d, ep = demos["d"], demos["episode"]
    same = ep[1:] == ep[:-1]
    ok = demos["demo_success"][1:] & same
    r = (d[:-1] - d[1:])[ok]
    return {"mean_reward_per_step": float(r.mean()), "std_reward": float(r.std()),
            "negative_reward_fraction": float((r < 0).mean()), "steps": len(r)}


# -- figures --------------------------------------------------------------------------
def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def pr_figure(results: dict[str, Any], s_config: float, out: Path) -> Path:
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
    styles = {"held_out_demos": ("tab:blue", "held-out demos"),
              "stage1_rollouts": ("tab:orange", "Stage 1 rollouts"),
              "stage2_rollouts": ("tab:green", "Stage 2 rollouts")}
    for name, (color, label) in styles.items():
        rows = results["detector"].get(name, {}).get("per_observation")
        if not rows:
            continue
        s = [r["s"] for r in rows]
        axes[0].plot(s, [np.nan if r["precision"] is None else r["precision"] for r in rows],
                     "-o", color=color, ms=3, label=f"precision, {label}")
        axes[0].plot(s, [np.nan if r["recall"] is None else r["recall"] for r in rows],
                     "--s", color=color, ms=3, label=f"recall, {label}")
        ep = results["detector"][name].get("per_episode")
        if ep:
            axes[1].plot(s, [np.nan if r["precision"] is None else r["precision"] for r in ep],
                         "-o", color=color, ms=3, label=f"first firing in goal, {label}")
            axes[1].plot(s, [r["fired_before_goal_rate"] for r in ep], ":^", color=color,
                         ms=3, label=f"fired before the goal, {label}")
            axes[1].plot(s, [np.nan if r["recall"] is None else r["recall"] for r in ep],
                         "--s", color=color, ms=3, label=f"fires if goal reached, {label}")
    for ax, title in zip(axes, ["per observation: d <= s vs |pos - goal| < 0.15",
                                "per episode (the first firing ends a Stage 2 episode)"],
                         strict=True):
        ax.axvline(s_config, color="k", lw=0.8, ls="--")
        ax.text(s_config, 0.02, f" s = {s_config} (config)", fontsize=7)
        ax.set_xscale("log")
        ax.set_xlabel("threshold s [steps]")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
        ax.set_title(title, fontsize=10)
        ax.legend(fontsize=7)
    fig.suptitle("Learned success detector d(o, g) <= s on PointMass (Stage 1 steps-to-go model)")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def calibration_figure(demos_d: np.ndarray, demos_true: np.ndarray, cal: dict[str, Any],
                       onpolicy: dict[str, Any] | None, out: Path) -> Path:
    plt = _plt()
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.4))
    top = float(max(demos_true.max(), demos_d.max())) + 2
    ax = axes[0]
    h = ax.hist2d(demos_true, demos_d, bins=[np.arange(0, top, 2), np.arange(0, top, 2)],
                  cmap="Blues", cmin=1, norm=_lognorm())
    fig.colorbar(h[3], ax=ax, label="observations")
    mid = [(b["true_lo"] + b["true_hi"] - 1) / 2 for b in cal["by_true_steps"]]
    ax.errorbar(mid, [b["mean_d"] for b in cal["by_true_steps"]],
                yerr=[b["std_d"] for b in cal["by_true_steps"]], fmt="o-", color="tab:red",
                ms=3, lw=1, capsize=2, label="mean d +- std per 5-step bin")
    ax.plot([0, top], [0, top], "k--", lw=0.8, label="d = true")
    ax.set_xlabel("true remaining steps T - t (held-out demos)")
    ax.set_ylabel("predicted d(o, g)")
    ax.set_title(f"held-out demos: MAE {cal['mae']:.1f}, bias "
                 f"{cal['bias_mean_d_minus_true']:+.1f}, R^2 {cal['r2']:.2f}", fontsize=9)
    ax.legend(fontsize=7, loc="upper left")
    ax = axes[1]
    for c, color, label in [(cal, "tab:blue", "held-out demos"),
                            (onpolicy, "tab:orange", "Stage 1 rollouts (steps until GT success)")]:
        if not c:
            continue
        rows = [b for b in c["by_predicted_d"] if b["count"] >= 20]
        mid = [(b["d_lo"] + b["d_hi"]) / 2 for b in rows]
        ax.errorbar(mid, [b["mean_true"] for b in rows], yerr=[b["std_true"] for b in rows],
                    fmt="o-", color=color, ms=3, lw=1, capsize=2, label=label)
    ax.plot([0, top], [0, top], "k--", lw=0.8, label="perfect calibration")
    ax.set_xlabel("predicted d(o, g) (5-step bins, >= 20 observations)")
    ax.set_ylabel("mean true remaining steps +- std")
    ax.set_title("reliability", fontsize=9)
    ax.legend(fontsize=7, loc="upper left")
    ax = axes[2]
    for c, color, label in [(cal, "tab:blue", "held-out demos"),
                            (onpolicy, "tab:orange", "Stage 1 rollouts")]:
        if not c:
            continue
        rows = [r for r in c["near_goal"] if r["mean_d"] is not None]
        ax.plot([r["true"] for r in rows], [r["mean_d"] for r in rows], "o-", color=color,
                label=label)
    ax.plot([0, 10], [0, 10], "k--", lw=0.8)
    ax.axhline(0.5, color="grey", lw=0.8, ls=":", label="s = 0.5")
    ax.set_xlabel("true remaining steps")
    ax.set_ylabel("mean d")
    ax.set_title("near the goal (what the detector sees)", fontsize=9)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.suptitle("Calibration of d(o, g) = E[steps-to-go] (Eq. 1), Stage 1 model")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def _lognorm() -> Any:
    from matplotlib.colors import LogNorm

    return LogNorm()


def pick_episodes(roll: dict[str, np.ndarray], s: float) -> list[int]:
    """A clean success (fires inside the goal) and, if any, a more eventful rollout:
    one whose first firing is outside the goal, else one that leaves the goal again,
    else one that never reaches it."""
    gt, d = roll["gt_env"], roll["d"]
    fire = first_true(d[:, 1:] <= s) + 1
    n = len(d)
    ok = [i for i in range(n) if fire[i] > 0 and gt[i, fire[i]]]
    bad_fire = [i for i in range(n) if fire[i] > 0 and not gt[i, fire[i]]]
    left = [i for i in range(n) if gt[i].any() and not gt[i, first_true(gt[i:i + 1])[0]:].all()]
    never = [i for i in range(n) if not gt[i].any()]
    picks = [ok[0]] if ok else [0]
    for group in (bad_fire, left, never):
        extra = [i for i in group if i not in picks]
        if extra:
            picks.append(extra[0])
            break
    return picks


def episodes_figure(demos: dict[str, np.ndarray], roll: dict[str, np.ndarray], s: float,
                    out: Path) -> Path:
    """Figure 2-style: d over an episode with its events, next to the path in the plane."""
    plt = _plt()
    lengths = {int(e): int(n) for e, n in zip(demos["episode"], demos["length"], strict=True)}
    ok_demos = sorted(e for e in lengths if demos["demo_success"][demos["episode"] == e][0])
    median = int(np.median([lengths[e] for e in ok_demos]))
    demo = min(ok_demos, key=lambda e: (abs(lengths[e] - median), e))
    m = demos["episode"] == demo
    items = [(f"held-out demo ({lengths[demo]} steps, ends at its first GT success)",
              demos["states"][m], demos["d"][m], ground_truth(demos["states"][m]),
              demos["length"][m][0] - demos["step"][m])]
    for i in pick_episodes(roll, s):
        items.append((f"Stage 1 policy rollout, run for all 140 steps (task seed "
                      f"{int(roll['seed'][i])})", roll["states"][i], roll["d"][i],
                      roll["gt_env"][i], None))
    fig, axes = plt.subplots(len(items), 2, figsize=(13, 3.1 * len(items) + 0.8),
                             gridspec_kw={"width_ratios": [3, 1]}, squeeze=False)
    handles: dict[str, Any] = {}
    for row, (title, states, d, gt, true) in zip(axes, items, strict=True):
        ax, ax_xy = row
        t = np.arange(len(d))
        handles["d(o_t, g), Stage 1 steps-to-go model"] = ax.plot(
            t, d, color="tab:blue", lw=1.6)[0]
        if true is not None:
            handles["true remaining steps (demo)"] = ax.plot(t, true, "k--", lw=0.9)[0]
        handles[f"s = {s}"] = ax.axhline(s, color="tab:red", lw=0.8, ls=":")
        for k in np.flatnonzero(gt):
            handles["inside the goal (GT)"] = ax.axvspan(k - 0.5, k + 0.5, color="tab:green",
                                                         alpha=0.18, lw=0)
        dist = distance(states)
        ax2 = ax.twinx()
        handles["|pos - goal| (right axis)"] = ax2.plot(t, dist, color="grey", lw=0.8,
                                                        alpha=0.8)[0]
        ax2.axhline(SUCCESS_RADIUS, color="grey", lw=0.6, ls="--")
        ax2.set_ylabel("|pos - goal|", fontsize=8, color="grey")
        ax2.set_ylim(0, max(dist.max() * 1.05, 0.3))
        fire = np.flatnonzero(d[1:] <= s)
        events = []
        gt_idx = np.flatnonzero(gt)
        if len(gt_idx):
            events.append((int(gt_idx[0]), "first GT success", "tab:green"))
        if len(fire):
            events.append((int(fire[0] + 1), "detector fires (a Stage 2 episode ends)",
                           "tab:red"))
        top = max(float(np.max(d)), float(np.max(true)) if true is not None else 0.0, 1.0)
        for k, (when, text, color) in enumerate(events):
            ax.axvline(when, color=color, lw=1.2, ls="--")
            right = when > 0.55 * len(d)
            ax.annotate(f"{k + 1}) {text}, t = {when}", (when, top * (0.95 - 0.14 * k)),
                        xytext=(-5 if right else 5, 0), textcoords="offset points",
                        ha="right" if right else "left", va="top", fontsize=8, color=color,
                        bbox={"facecolor": "white", "alpha": 0.8, "lw": 0, "pad": 1})
        ax.set_ylim(-1, top * 1.05)
        ax.set_xlim(-1, len(d))
        ax.set_xlabel("step t")
        ax.set_ylabel("steps")
        ax.set_title(title, fontsize=10)
        ax_xy.plot(states[:, 0], states[:, 1], "-", color="tab:blue", lw=1)
        ax_xy.plot(states[0, 0], states[0, 1], "o", color="tab:blue", ms=4)
        ax_xy.add_patch(plt.Circle(states[0, 4:6], SUCCESS_RADIUS, color="tab:green",
                                   alpha=0.25))
        for k, (when, _, color) in enumerate(events):
            ax_xy.plot(states[when, 0], states[when, 1], "x" if k else "+", color=color,
                       ms=9, mew=2)
        ax_xy.set_xlim(-1.25, 1.25)
        ax_xy.set_ylim(-1.25, 1.25)
        ax_xy.set_aspect("equal")
        ax_xy.set_title("path (o: start, +/x: events 1/2)", fontsize=8)
        ax_xy.grid(alpha=0.25)
    fig.legend(list(handles.values()), list(handles.keys()), loc="lower center",
               ncol=len(handles), fontsize=8, frameon=False)
    fig.suptitle("d(o, g) over PointMass episodes with their events (cf. paper Figure 2)")
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


# -- the experiment ------------------------------------------------------------------
def _cache_name(prefix: str, *checkpoints: Path, extra: str = "") -> str:
    import hashlib

    key = "|".join(str(Path(c).resolve()) for c in checkpoints) + extra
    return f"cache_{prefix}_{hashlib.sha256(key.encode()).hexdigest()[:10]}.npz"


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    setup_runtime()
    echo = Progress("reward_quality")
    out = Path(args.out or (DEFAULT_QUICK_OUT if args.quick else DEFAULT_OUT))
    out.mkdir(parents=True, exist_ok=True)
    overrides = [*([*QUICK_OVERRIDES, f"data.dir={out / 'data'}"] if args.quick else []),
                 *args.overrides, f"run_dir={out}"]
    cfg = load_experiment_config(args.config, overrides)
    n_roll = args.rollouts or (8 if args.quick else 500)
    max_demos = args.max_demos or (20 if args.quick else None)
    thresholds = sorted(args.thresholds)
    s_config = cfg.improve.success_threshold

    from efm_learning.checkpoint import load_checkpoint
    from efm_learning.self_improvement import freeze

    policy_ckpt, reward_ckpt, info = stage1_checkpoints(cfg, args.stage1, echo)
    reward_model = freeze(load_checkpoint(reward_ckpt)[0])
    policy, _ = load_checkpoint(policy_ckpt)

    demos = held_out_demos(
        info, cfg, reward_model, max_demos,
        out / _cache_name("demos", reward_ckpt, extra=f"|{max_demos}"), echo)
    rolls = {"stage1_rollouts": full_rollouts(
        cfg, policy, reward_model, n_roll,
        out / _cache_name("stage1", policy_ckpt, reward_ckpt, extra=f"|{n_roll}"), echo,
        "Stage 1 policy")}
    if args.stage2:
        stage2, _ = load_checkpoint(args.stage2)
        rolls["stage2_rollouts"] = full_rollouts(
            cfg, stage2, reward_model, n_roll,
            out / _cache_name("stage2", Path(args.stage2), reward_ckpt, extra=f"|{n_roll}"),
            echo, f"Stage 2 policy {args.stage2}")

    echo("[metrics] precision / recall, calibration")
    gt_demos = ground_truth(demos["states"])
    detector: dict[str, Any] = {"held_out_demos": {
        "per_observation": observation_pr(demos["d"], gt_demos, thresholds),
        "observations": len(gt_demos), "gt_positive_observations": int(gt_demos.sum()),
    }}
    # demos end at their first GT success: did the detector fire before the final step?
    ep_ids = np.unique(demos["episode"])
    early = []
    for s in thresholds:
        fired_early = [bool(np.any((demos["d"] <= s)[(demos["episode"] == e)
                                                     & ~gt_demos])) for e in ep_ids]
        early.append({"s": s, "demos_with_a_firing_outside_the_goal": float(np.mean(fired_early))})
    detector["held_out_demos"]["per_episode_false_firing"] = early
    for name, roll in rolls.items():
        gt = roll["gt_env"]
        detector[name] = {
            "per_observation": observation_pr(roll["d"], gt, thresholds),
            "per_episode": episode_pr(roll["d"], gt, distance(roll["states"]), thresholds),
            "observations": int(gt.size), "gt_positive_observations": int(gt.sum()),
            "episodes": len(gt), "episodes_reaching_goal": int(gt.any(axis=1).sum()),
        }
    ok = demos["demo_success"]
    true_demo = (demos["length"] - demos["step"])[ok]
    cal = calibration(demos["d"][ok], true_demo)
    d_on, true_on = onpolicy_remaining(rolls["stage1_rollouts"])
    cal_on = calibration(d_on, true_on) if len(d_on) > 2 else None
    results = {
        "experiment": "reward_quality_pointmass",
        "config": args.config,
        "quick": args.quick,
        "overrides": overrides,
        "stage1": info,
        "stage2_checkpoint": args.stage2,
        "success_threshold_config": s_config,
        "ground_truth": "|pos - goal| < 0.15 (evaluation only)",
        "held_out_demos": {"episodes": len(ep_ids),
                           "successful": len(np.unique(demos["episode"][ok]))},
        "rollouts": {"count": n_roll, "steps": cfg.improve.max_episode_steps,
                     "seed_base": ROLLOUT_SEED_BASE, "actions": "sampled"},
        "detector": detector,
        "calibration_held_out_demos": cal,
        "calibration_stage1_rollouts_until_success": cal_on,
        "reward_on_held_out_demos": reward_stats(demos),
    }
    figures = {
        "precision_recall": str(pr_figure(results, s_config, out / "precision_recall.png")),
        "calibration": str(calibration_figure(demos["d"][ok], true_demo, cal, cal_on,
                                              out / "calibration.png")),
        "episodes": str(episodes_figure(demos, rolls["stage1_rollouts"], s_config,
                                        out / "episodes.png")),
    }
    results["figures"] = figures
    results["wall_time_s_this_invocation"] = round(echo.elapsed, 1)
    results["date"] = time.strftime("%Y-%m-%d")
    write_json(out / "results.json", results)
    at = {r["s"]: r for r in detector["held_out_demos"]["per_observation"]}
    if s_config in at:
        r = at[s_config]
        echo(f"[report] held-out demos, s = {s_config}: precision {r['precision']}, "
             f"recall {r['recall']}")
    at = {r["s"]: r for r in detector["stage1_rollouts"]["per_episode"]}
    if s_config in at:
        r = at[s_config]
        echo(f"[report] Stage 1 rollouts, s = {s_config}: first firing inside the goal "
             f"{r['precision']}, fires when the goal is reached {r['recall']}")
    echo(f"[report] calibration on held-out demos: MAE {cal['mae']:.1f} steps, bias "
         f"{cal['bias_mean_d_minus_true']:+.1f}, R^2 {cal['r2']:.3f}")
    echo(f"[report] {out / 'results.json'}, figures: {', '.join(figures.values())}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
