"""``make demo-aloha``: ALOHA bimanual insertion in simulation, Stage 1 and Stage 2 over
ROS 2 (issue 14 item 5; paper Section 4.1.3, Appendices B, D.3, E.2).

1. Scripted demonstrations in the ALOHA recording layout (efm_sim.aloha_generate; resumable:
   complete episode files are kept).
2. Stage 1 (``efm sft --config config/aloha.yaml``) unless ``<out>/stage1/sft`` has its
   checkpoints: the policy is the last checkpoint, trained past the best BC validation
   loss, the reward model the best steps-to-go one (Appendix B, ALOHA).
3. Ground-truth success and stage-wise progress of the Stage 1 policy in simulation
   (efm_learning.aloha_eval; evaluation only), and one traced episode: d(o, g) along it
   (Figure 2 style) and a filmstrip of its steps-to-go distributions (Figure 3 style).
4. Stage 2 through the ROS 2 graph of ``config/aloha_sim_practice.yaml``: one simulated
   station (interbotix_sim + aloha_bridge, 10 Hz chunks executed at 50 Hz), the frozen
   Stage 1 model labelling rewards with the Section 4.1.3 success bonus, a learner and a
   coordinator whose GT-free plateau rule picks the version kept.
5. The same evaluation of the kept version (unless the rule kept the Stage 1 policy) and
   of the newest version when the rule kept another, throughput (control steps/s of the station,
   batch-1 policy latency for a 70-token chunk) and a report folder (report.md,
   results.json, the figures).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from efm_learning.evaluation import success_change
from efm_ros.demo import deployment, kept_policy, log, practise, run

#: the simulated station's driver, whose control_steps counter gives the control rate
SIM_NODE = "/station_0/interbotix_sim"
POLICY_NODE = "/station_0/policy"
#: the traced episode of the figures (an evaluation seed, never a demonstration's)
TRACE_SEED = 100_000
HEADER = ("| policy | success (peg touches pin) | both touch | both lifted | peg touches socket "
          "| pin | left gripper to socket [cm] | right gripper to peg [cm] |\n"
          "| --- | --- | --- | --- | --- | --- | --- | --- |")


def demonstrations(data: Path, episodes: int, image_size: str, workers: int) -> None:
    """Generate (or finish generating) the scripted demonstrations."""
    run([sys.executable, "-m", "efm_sim.aloha_generate", "--out", str(data), "--episodes",
         str(episodes), "--image-size", image_size, "--workers", str(workers)])


def stage1(config: Path, out: Path, data: Path, overrides: list[str]) -> dict[str, Path]:
    """Stage 1 checkpoints (Appendix B): ``last`` as the policy, ``best_steps_to_go`` as
    the frozen reward model; trained unless both exist."""
    sft = out / "stage1" / "sft"
    ckpt = {"policy": sft / "last", "reward": sft / "best_steps_to_go"}
    if all((p / "SHA256SUMS").is_file() for p in ckpt.values()):
        log(f"Stage 1 checkpoints found in {sft}; skipping Stage 1")
        return ckpt
    log("Stage 1: supervised fine-tuning (BC + steps-to-go) on the demonstrations")
    sets = [f"run_dir={out / 'stage1'}", f"data.dir={data}", *overrides]
    run([sys.executable, "-m", "efm_learning.cli", "sft", "--config", str(config),
         *[a for s in sets for a in ("--set", s)]])
    return ckpt


def ground_truth(checkpoint: Path, episodes: int, image_size: str, path: Path) -> dict:
    """GT success and stages reached over ``episodes`` evaluation seeds (evaluation only);
    a report at ``path`` is reused only when it is newer than the checkpoint."""
    sums = checkpoint / "SHA256SUMS"
    if not (path.is_file() and path.stat().st_mtime > sums.stat().st_mtime):
        run([sys.executable, "-m", "efm_learning.aloha_eval", "--checkpoint", str(checkpoint),
             "--episodes", str(episodes), "--image-size", image_size, "--json", str(path),
             "--threads", "2"])
    result = json.loads(path.read_text())
    log(f"ground truth of {checkpoint}: success {result['success_rate']:.2f}, stages reached "
        f"{result['reached_stage']} over {episodes} episodes")
    return result


def trace_and_plot(policy: Path, reward: Path, image_size: tuple[int, int], out: Path,
                   tag: str) -> dict[str, Any]:
    """One traced episode of ``policy`` with the frozen reward model: Figures 2 and 3."""
    import torch

    from efm_learning.aloha_eval import trace_episode
    from efm_learning.aloha_figures import plot_steps_to_go_episode, plot_steps_to_go_filmstrip
    from efm_learning.checkpoint import load_checkpoint
    from efm_sim.aloha import AlohaInsertionEnv

    torch.set_num_threads(2)
    model, _ = load_checkpoint(policy)
    reward_model, _ = load_checkpoint(reward)
    model.eval()
    reward_model.eval()
    env = AlohaInsertionEnv(image_size=image_size, max_episode_steps=400)
    trace = trace_episode(env, model, reward_model, TRACE_SEED, greedy=True,
                          generator=torch.Generator().manual_seed(TRACE_SEED))
    env.close()
    plot_steps_to_go_episode(trace, out / f"steps_to_go_{tag}.png",
                             f"{tag}: d(o, g) along env seed {TRACE_SEED} (cf. paper Figure 2)")
    plot_steps_to_go_filmstrip(trace, out / f"filmstrip_{tag}.png")
    latency = trace["policy_latency_s"] * 1000
    return {"seed": TRACE_SEED, "success": trace["success"], "max_stage": trace["max_stage"],
            "steps_to_go": [round(float(v), 2) for v in trace["steps_to_go"]],
            "stage": [int(s) for s in trace["stage"]],
            "policy_latency_ms": {"median": float(np.median(latency)),
                                  "p99": float(np.percentile(latency, 99)),
                                  "calls": int(latency.size)}}


def newest_version(seen: dict) -> tuple[int, Path] | None:
    """The last version the learner published and its checkpoint (None before any)."""
    if not seen["weights"]:
        return None
    version, uri = max(seen["weights"])
    return int(version), Path(uri.removeprefix("file://"))


def rates(seen: dict) -> dict[str, float]:
    """Counters per second between the first and last diagnostics of the watched nodes."""
    out: dict[str, float] = {}
    for name, key, label in ((SIM_NODE, "control_steps", "control_steps_per_s"),
                             (POLICY_NODE, "actions", "policy_steps_per_s")):
        kept = seen["diagnostics"].get(name)
        if not kept or kept["last"][0] <= kept["first"][0]:
            continue
        (t0, c0), (t1, c1) = kept["first"], kept["last"]
        out[label] = (float(c1.get(key, 0)) - float(c0.get(key, 0))) / (t1 - t0)
    return out


def report(out: Path, before: dict, after: dict, seen: dict, traces: dict, final: int,
           minutes: float, newest: tuple[int, dict] | None = None) -> dict:
    """results.json, report.md and the learning curve; ``newest``: the last published
    version and its evaluation when the rule kept another."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    episodes = list({e["episode_id"]: e for e in seen["episodes"]}.values())
    versions = sorted({e["policy_version"] for e in episodes})
    by_version = {v: [e for e in episodes if e["policy_version"] == v] for v in versions}
    detector = [float(np.mean([e["success"] for e in by_version[v]])) for v in versions]
    lengths = [float(np.mean([e["length"] for e in by_version[v]])) for v in versions]
    fig, ax = plt.subplots(1, 3, figsize=(13, 3.6))
    ax[0].plot(versions, detector, "o-", label="learned detector (practice)")
    ax[0].plot([0, final], [before["success_rate"], after["success_rate"]], "s--",
               label="ground truth (evaluation only)")
    ax[0].set_ylim(-0.02, 1.02)
    ax[0].set_xlabel("policy version")
    ax[0].set_ylabel("success rate")
    ax[0].legend(fontsize=8)
    ax[1].plot(versions, lengths, "o-")
    ax[1].set_xlabel("policy version")
    ax[1].set_ylabel("mean practice episode length [10 Hz steps]")
    stages = [str(s) for s in range(1, 5)]
    x = np.arange(4)
    rows = [("Stage 1 policy (v0)", before), (f"after Stage 2 (v{final})", after)]
    if newest is not None:
        rows.append((f"newest (v{newest[0]}, not kept)", newest[1]))
    width = 0.8 / len(rows)
    for i, (name, result) in enumerate(rows):
        ax[2].bar(x + (i - (len(rows) - 1) / 2) * width,
                  [result["reached_stage"][s] for s in stages], width, label=name)
    ax[2].set_xticks(x, ["touch", "lift", "peg-socket", "pin"])
    ax[2].set_ylabel("episodes reaching the stage (GT)")
    ax[2].set_ylim(0, 1)
    ax[2].legend(fontsize=8)
    fig.suptitle("ALOHA insertion: Self-Improvement over ROS 2 (1 simulated station)")
    fig.tight_layout()
    fig.savefig(out / "learning_curve.png", dpi=120)
    plt.close(fig)

    change = success_change(before["success_rate"], after["success_rate"],
                            before["episodes"], after["episodes"])
    throughput = {**rates(seen), "policy_latency_ms_batch1": traces["stage1"]["policy_latency_ms"]}
    results = {"stage1_ground_truth": _brief(before), "stage2_ground_truth": _brief(after),
               "kept_version": final, "policy_versions": versions,
               "detector_success_by_version": detector, "mean_length_by_version": lengths,
               "episodes": len(episodes), "ground_truth_change": change,
               "throughput": throughput, "traces": traces, "minutes": minutes,
               "newest_version": None if newest is None else newest[0],
               "newest_ground_truth": None if newest is None else _brief(newest[1])}
    (out / "results.json").write_text(json.dumps(results, indent=2))
    lat = throughput["policy_latency_ms_batch1"]
    table = "\n".join(
        f"| {name} | {r['success_rate']:.3f} | "
        + " | ".join(f"{r['reached_stage'][s]:.2f}" for s in stages)
        + f" | {100 * r['closest_left_to_socket_m']:.1f}"
        + f" | {100 * r['closest_right_to_peg_m']:.1f} |"
        for name, r in rows)
    (out / "report.md").write_text(f"""# efm demo-aloha: ALOHA insertion practice over ROS 2

Ground truth from the simulator, {before['episodes']} evaluation seeds from
{before['results'][0]['seed']} (never a demonstration's); used for this table only. Stage
columns: fraction of episodes reaching it; the last two: median over episodes of each
gripper's closest approach to its object (the scripted demonstrations reach ~3 cm, the
arms start ~26 cm away).

{HEADER}
{table}

Change in success: {change['difference']:+.3f} (95% interval {change['ci95'][0]:+.3f} to
{change['ci95'][1]:+.3f}, p = {change['p_value']:.3f}). v{final} is the version the
coordinator's GT-free plateau rule kept (the Stage 1 policy when it judged none).
Practice: {len(episodes)} labelled episodes over {len(versions)} policy versions.

Throughput: {throughput.get('control_steps_per_s', float('nan')):.1f} control steps/s at
the station (50 Hz target), {throughput.get('policy_steps_per_s', float('nan')):.1f} policy
chunks/s (10 Hz target); batch-1 policy latency for a 70-token chunk: median
{lat['median']:.1f} ms, p99 {lat['p99']:.1f} ms ({lat['calls']} calls).

![learning curve](learning_curve.png)
![d along an episode](steps_to_go_stage1.png)
![filmstrip](filmstrip_stage1.png)
""")
    log(f"report: {out / 'report.md'}")
    return results


def _brief(result: dict) -> dict:
    return {k: v for k, v in result.items() if k != "results"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, default=Path("config/aloha.yaml"))
    parser.add_argument("--params", type=Path, default=Path("config/aloha_sim_practice.yaml"))
    parser.add_argument("--out", type=Path, default=Path("runs/demo_aloha"))
    parser.add_argument("--data", type=Path, default=Path("data/aloha_48x64"))
    parser.add_argument("--demos", type=int, default=300, help="scripted demonstrations")
    parser.add_argument("--image-size", default="48x64", help="camera HxW of the demos and sim")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="Stage 1 config overrides (e.g. sft.steps=3000)")
    parser.add_argument("--rounds", type=int, default=30, help="learning round budget")
    parser.add_argument("--minutes", type=float, default=10.0, help="practice time limit")
    parser.add_argument("--eval-episodes", type=int, default=20)
    parser.add_argument(
        "--processes", choices=("station", "node"), default="node",
        help="a process per node (default: the 50 Hz simulated driver gets its own "
        "interpreter) or the station's nodes composed in one (efm_ros.compose)")
    args = parser.parse_args(argv)
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    h, w = (int(v) for v in args.image_size.lower().split("x"))
    demonstrations(args.data, args.demos, args.image_size, args.workers)
    ckpt = stage1(args.config, args.out, args.data, args.set)
    before = ground_truth(ckpt["policy"], args.eval_episodes, args.image_size,
                          args.out / "eval_stage1.json")
    traces = {"stage1": trace_and_plot(ckpt["policy"], ckpt["reward"], (h, w), args.out,
                                       "stage1")}
    params = deployment(args.params, args.out, ckpt)
    seen = practise(params, args.out, args.rounds, args.minutes,
                    compose=args.processes == "station", watch=(SIM_NODE, POLICY_NODE))
    final_version, final = kept_policy(seen, ckpt["policy"])
    # the rule kept the Stage 1 policy: its evaluation and trace are the ones above
    after = before if final_version == 0 else ground_truth(
        final, args.eval_episodes, args.image_size, args.out / f"eval_v{final_version}.json")
    newest = newest_version(seen)
    if newest is not None and newest[0] != final_version:
        # what practice did to the policy, whether or not the rule kept it (evaluation
        # only: nothing is chosen on it)
        newest = (newest[0], ground_truth(newest[1], args.eval_episodes, args.image_size,
                                          args.out / f"eval_v{newest[0]}.json"))
    else:
        newest = None
    if final_version != 0:
        traces["stage2"] = trace_and_plot(final, ckpt["reward"], (h, w), args.out, "stage2")
    report(args.out, before, after, seen, traces, final_version,
           (time.monotonic() - started) / 60, newest)
    log(f"done in {(time.monotonic() - started) / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
