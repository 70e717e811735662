"""``make demo``: PushTable Block2Block practice with two simulated stations over ROS 2.

1. Stage 1 (paper Section 2.1), if ``<out>/stage1`` has no checkpoints yet: scripted
   demonstrations (efm_sim.generate) and supervised fine-tuning (``efm sft``), with
   progress bars.
2. Ground-truth success of the Stage 1 policy in simulation (evaluation only).
3. Stage 2 (Algorithm 1) through the ROS 2 graph of ``config/sim_practice.yaml``: two
   stations practise, the frozen Stage 1 steps-to-go model labels rewards and detects
   success, the learner updates the policy and hot-swaps it on both stations. Progress is
   printed per learning round.
   Practice stops when the coordinator's GT-free plateau rule says so (the learned
   detector's success stops improving, paper Section 6; efm_learning.stopping) or at the
   ``--rounds`` budget, and the version the rule keeps is the one handed over.
4. Ground-truth success of the kept policy, and a report folder: results.json,
   report.md, learning_curve.png, steps_to_go.png (d over a few episodes, paper Figure 2
   style) and bags.txt.
Everything is resumable: Stage 1 is skipped when its checkpoints exist.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import yaml

from efm_learning.checkpoint import install_release
from efm_learning.config import load_config
from efm_learning.evaluation import success_change
from efm_learning.pipeline import ensure_dataset
from efm_ros.bringup import Graph
from efm_ros.fleet_auth import write_key
from efm_ros.node_set import dump_params, load_params, practice_nodes
from efm_ros.spin import EXECUTOR_ENV


def log(text: str) -> None:
    print(f"[demo {time.strftime('%H:%M:%S')}] {text}", flush=True)


def run(cmd: list[str]) -> None:
    log("$ " + " ".join(cmd))
    subprocess.run(cmd, check=True)


def stage1(config: Path, out: Path, release: Path | None) -> dict[str, Path]:
    """Stage 1 checkpoints (Appendix B: best BC policy and best steps-to-go reward model
    kept separately): the run's own when ``out`` has them; else the shipped ``release``
    after verifying its pinned sha256 digests; else demonstrations + SFT."""
    sft = out / "stage1" / "sft"
    ckpt = {"policy": sft / "best_bc", "reward": sft / "best_steps_to_go"}
    if all((p / "SHA256SUMS").is_file() for p in ckpt.values()):
        log(f"Stage 1 checkpoints found in {sft}; skipping Stage 1")
        return ckpt
    if release is not None:
        manifest = install_release(release, sft)
        log(f"Stage 1 from the shipped release {release} (sha256 verified; made by "
            f"`{manifest.get('made_by', '?')}`; --retrain trains it afresh)")
        return ckpt
    ensure_dataset(load_config(config), log)
    log("Stage 1: supervised fine-tuning (BC + steps-to-go)")
    run(
        [
            sys.executable,
            "-m",
            "efm_learning.cli",
            "sft",
            "--config",
            str(config),
            "--set",
            f"run_dir={out / 'stage1'}",
        ]
    )
    return ckpt


def ground_truth(config: Path, checkpoint: Path, episodes: int) -> dict:
    """Ground-truth success in simulation on the protocol's *report* tasks (evaluation
    only, never a learning signal; nothing is chosen on them, docs/EVALUATION.md)."""
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "efm_learning.cli",
            "eval",
            "--config",
            str(config),
            "--checkpoint",
            str(checkpoint),
            "--episodes",
            str(episodes),
            "--split",
            "report",
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    start = out.index("{")
    result = json.loads(out[start:].replace("NaN", "null"))
    log(
        f"ground truth of {checkpoint}: success {result['eval/success_rate']:.2f}, "
        f"mean length {result['eval/mean_length']:.1f} over {episodes} episodes"
    )
    return result


def deployment(template: Path, out: Path, ckpt: dict[str, Path]) -> Path:
    """The demo's copy of the deployment YAML with its own checkpoints and folders."""
    params = load_params(template)
    params["/**/steps_to_go"]["ros__parameters"]["model.checkpoint"] = str(ckpt["reward"])
    params["/**/policy"]["ros__parameters"]["model.checkpoint"] = str(ckpt["policy"])
    params["/**/episode_recorder"]["ros__parameters"]["recorder.output_dir"] = str(out / "bags")
    params["/**/actor"]["ros__parameters"]["learner.spool_dir"] = str(out / "actor_spool")
    learner = params["/learner"]["ros__parameters"]
    learner["model.policy_checkpoint"] = str(ckpt["policy"])
    learner["output_dir"] = str(out / "learner")
    # authenticated, as a fleet should run: a key of its own, weights only from the learner
    key = out / "fleet.key"
    if not key.exists():
        write_key(key)
    for node in ("/**/actor", "/**/policy", "/learner", "/coordinator"):
        params[node]["ros__parameters"]["security.fleet_key_file"] = str(key)
    params["/**/policy"]["ros__parameters"]["weights.allowed_dir"] = str(out / "learner" / "policy")
    path = out / "practice.yaml"
    path.write_text(dump_params(params))
    return path


def practise(
    params_file: Path,
    out: Path,
    rounds: int,
    minutes: float,
    *,
    compose: bool = True,
    executor: str = "events",
    watch: tuple[str, ...] = (),
) -> dict:
    """Run the ROS 2 graph until ``rounds`` learner rounds or ``minutes`` have passed.

    ``compose``: each station's nodes in one process (efm_ros.compose); ``executor``: the
    EFM_EXECUTOR of the single-threaded nodes (docs/ROS.md, throughput); ``watch``: nodes
    (``/station_0/interbotix_sim``) whose /diagnostics counters are kept, first and last
    with their arrival times, in ``seen["diagnostics"]`` (rates for a report)."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node
    from sensor_msgs.msg import Image

    from efm_interfaces.msg import LabelledEpisode, PracticeStatus, WeightsUpdate
    from efm_ros.qos import LATCHED, RELIABLE, SENSOR

    specs = practice_nodes(load_params(params_file), sim=True)
    env = dict(os.environ, EFM_EXECUTOR=executor)
    graph = Graph(specs, params_file, out / "logs", env=env, compose=compose)
    log(
        f"started {len(specs)} nodes in {len(graph.procs)} processes, {executor} executors "
        f"(logs in {out / 'logs'}); practising for up to "
        f"{rounds} rounds / {minutes:.0f} min"
    )
    rclpy.init()
    node = Node("demo_observer")
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    seen: dict = {"episodes": [], "weights": [], "status": None, "diagnostics": {}}

    def on_diagnostics(msg) -> None:
        for status in msg.status:
            if status.name in watch:
                sample = (time.monotonic(), {kv.key: kv.value for kv in status.values})
                kept = seen["diagnostics"].setdefault(status.name, {"first": sample})
                kept["last"] = sample

    node.create_subscription(
        LabelledEpisode,
        "/learner/episodes",
        lambda m: seen["episodes"].append(summary(m)),
        RELIABLE,
    )
    node.create_subscription(
        WeightsUpdate,
        "/learner/weights",
        lambda m: seen["weights"].append((m.version, m.uri)),
        LATCHED,
    )
    node.create_subscription(
        PracticeStatus, "/practice/status", lambda m: seen.__setitem__("status", m), LATCHED
    )
    if watch:
        from diagnostic_msgs.msg import DiagnosticArray

        node.create_subscription(DiagnosticArray, "/diagnostics", on_diagnostics, RELIABLE)
    node.create_subscription(
        Image, "/station_0/steps_to_go/distribution_image", lambda m: save_picture(m, out), SENSOR
    )
    deadline = time.monotonic() + minutes * 60
    reported, last_print = 0, 0.0
    try:
        while time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.2)
            versions = [v for v, _ in seen["weights"]]
            newest = max(versions, default=0)
            if newest > reported:
                reported = newest
                eps = [e for e in seen["episodes"] if e["policy_version"] == newest - 1]
                rate = sum(e["success"] for e in eps) / max(len(eps), 1)
                log(
                    f"round {newest}: policy v{newest} published; version {newest - 1} ran "
                    f"{len(eps)} episodes, detector success {rate:.2f}"
                )
            if time.monotonic() - last_print > 30 and seen["status"] is not None:
                last_print = time.monotonic()
                st = seen["status"]
                log(
                    f"status: {st.state}, v{st.policy_version}, {st.episodes_total} episodes, "
                    f"buffer-filling, detector success {st.success_rate:.2f}, "
                    f"mean length {st.mean_length:.1f}"
                )
            status = seen["status"]
            if status is not None and status.state == "stopped":
                log(f"practice stopped by the coordinator: {status.stop_reason}")
                break
            if newest >= rounds:
                log(f"practice budget reached: {rounds} learning rounds")
                break
            exited = {n: c for n, c in graph.poll().items()}
            if exited:
                raise RuntimeError(f"nodes exited early: {exited}; see {out / 'logs'}")
    finally:
        log("stopping the graph (SIGINT: bags are closed cleanly)")
        graph.stop()
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()
    with (out / "episodes.jsonl").open("w") as handle:  # the report can be redrawn from it
        for episode in seen["episodes"]:
            handle.write(json.dumps(episode) + "\n")
    return seen


def kept_policy(seen: dict, stage1_policy: Path) -> tuple[int, Path]:
    """The version the coordinator's GT-free plateau rule keeps and its checkpoint; the
    Stage 1 policy (version 0) when the rule has judged none, so practice never hands
    over a policy nothing vouched for."""
    uris = dict(seen["weights"])
    status = seen["status"]
    version = int(status.best_policy_version) if status is not None else -1
    if version < 0 or version not in uris:
        version = 0
    if version == 0:
        return 0, stage1_policy
    log(f"kept policy: v{version} (coordinator plateau rule, detector success only)")
    return version, Path(uris[version].removeprefix("file://"))


_PICTURES = {"count": 0}


def save_picture(msg, out: Path) -> None:
    """Keep a few frames of the rviz steps-to-go image (paper Figure 3 style) as PNGs."""
    from PIL import Image as PILImage

    from efm_ros.conversions import msg_to_image

    _PICTURES["count"] += 1
    n = _PICTURES["count"]
    if n <= 400 and n % 40 == 1:
        folder = out / "steps_to_go_images"
        folder.mkdir(exist_ok=True)
        PILImage.fromarray(msg_to_image(msg)).save(folder / f"station_0_{n:05d}.png")


def summary(msg) -> dict:
    return {
        "episode_id": msg.episode_id,
        "station": msg.station,
        "policy_version": int(msg.policy_version),
        "length": int(msg.length),
        "success": bool(msg.success),
        "steps_to_go": [float(d) for d in msg.steps_to_go],
        "instruction": msg.instruction,
    }


def report(
    out: Path, title: str, before: dict, after: dict, seen: dict, minutes: float, final: int
) -> None:
    """``final``: the policy version measured as "after" (the newest published weights)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    episodes = {e["episode_id"]: e for e in seen["episodes"]}.values()
    by_version: dict[int, list] = {}
    for e in episodes:
        by_version.setdefault(e["policy_version"], []).append(e)
    versions = sorted(by_version)
    rates = [sum(e["success"] for e in by_version[v]) / len(by_version[v]) for v in versions]
    lengths = [sum(e["length"] for e in by_version[v]) / len(by_version[v]) for v in versions]

    fig, ax = plt.subplots(1, 2, figsize=(10, 3.6))
    ax[0].plot(versions, rates, "o-", label="learned detector (practice episodes)")
    gt_versions = [0, final]
    ax[0].plot(
        gt_versions,
        [before["eval/success_rate"], after["eval/success_rate"]],
        "s--",
        label="ground truth (evaluation only)",
    )
    ax[0].set_xlabel("policy version (learning rounds)")
    ax[0].set_ylabel("success rate")
    ax[0].set_ylim(0, 1)
    ax[0].legend(fontsize=8)
    ax[1].plot(versions, lengths, "o-")
    ax[1].set_xlabel("policy version")
    ax[1].set_ylabel("mean practice episode length [steps]")
    fig.suptitle(f"{title}: Self-Improvement over ROS 2 (2 stations)")
    fig.tight_layout()
    fig.savefig(out / "learning_curve.png", dpi=120)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 3.6))
    picks = (
        (by_version.get(versions[0], [])[:2] + by_version.get(versions[-1], [])[:2])
        if versions
        else []
    )
    for e in picks:
        ax.plot(
            e["steps_to_go"],
            label=f"v{e['policy_version']} {e['station']}{' (success)' if e['success'] else ''}",
        )
    ax.set_xlabel("step t")
    ax.set_ylabel("d(o_t, g) [expected steps-to-go]")
    ax.set_title("Steps-to-go over practice episodes (cf. paper Figure 2)")
    if picks:
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "steps_to_go.png", dpi=120)
    plt.close(fig)

    bags = sorted(str(p) for p in (out / "bags").glob("station_*/*") if p.is_dir())
    (out / "bags.txt").write_text("\n".join(bags) + "\n")
    results = {
        "stage1_ground_truth": before,
        "stage2_ground_truth": after,
        "policy_versions": versions,
        "detector_success_by_version": rates,
        "mean_length_by_version": lengths,
        "episodes": len(list(episodes)),
        "bags": len(bags),
        "practice_minutes": minutes,
    }
    change = success_change(
        before["eval/success_rate"],
        after["eval/success_rate"],
        int(before["num_episodes"]),
        int(after["num_episodes"]),
    )
    results["ground_truth_change"] = change
    (out / "results.json").write_text(json.dumps(results, indent=2))
    low, high = change["ci95"]
    (out / "report.md").write_text(f"""# efm demo: {title} practice over ROS 2

| | ground-truth success | mean length |
| --- | --- | --- |
| Stage 1 policy (v0) | {before["eval/success_rate"]:.3f} | {before["eval/mean_length"]:.1f} |
| after Stage 2 (v{final}) | \
{after["eval/success_rate"]:.3f} | {after["eval/mean_length"]:.1f} |

Change in ground-truth success: **{change["difference"]:+.3f}** (95% interval
{low:+.3f} to {high:+.3f}; two-sided p = {change["p_value"]:.3f}, two-proportion z-test on
{int(before["num_episodes"])} and {int(after["num_episodes"])} fixed tasks of the protocol's
*report* split, on which nothing was chosen: docs/EVALUATION.md). v{final} is the version
the coordinator's GT-free plateau rule kept (the learned detector's success pooled over
versions, paper Section 6), or the Stage 1 policy when the rule had judged none.
Practice: {len(results["policy_versions"])}
policy versions, {results["episodes"]} labelled episodes from 2 stations, {len(bags)} bags
(bags.txt). Ground truth comes from the simulator and is used for this table only; the
learner saw only the frozen Stage 1 model's rewards and success detector.

![learning curve](learning_curve.png)
![steps-to-go](steps_to_go.png)
""")
    log(
        f"report: {out / 'report.md'} (ground-truth success {before['eval/success_rate']:.2f}"
        f" -> {after['eval/success_rate']:.2f})"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--config",
        type=Path,
        default=Path("config/pushtable.yaml"),
        help="Stage 1 / evaluation config (efm_learning)",
    )
    parser.add_argument(
        "--params",
        type=Path,
        default=Path("config/sim_practice.yaml"),
        help="deployment parameter YAML (stations, nodes)",
    )
    parser.add_argument("--out", type=Path, default=Path("runs/demo"))
    parser.add_argument(
        "--stage1-release",
        type=Path,
        default=None,
        help="a shipped Stage 1 release (efm release; e.g. checkpoints/pushtable): verified "
        "and used instead of training Stage 1",
    )
    parser.add_argument(
        "--retrain", action="store_true", help="train Stage 1 afresh even with a release"
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=15,
        help="learning rounds to run: the practice budget (paper Section 6: stop before "
        "the policy over-optimises the learned reward)",
    )
    parser.add_argument("--minutes", type=float, default=20.0, help="practice time limit")
    parser.add_argument(
        "--eval-episodes", type=int, default=500, help="ground-truth tasks per evaluation"
    )
    parser.add_argument(
        "--processes",
        choices=("station", "node"),
        default="station",
        help="a process per station (its nodes composed, efm_ros.compose: ~1.4x the "
        "episodes per hour on 2 cores) or per node, as launch files start them",
    )
    parser.add_argument(
        "--executor",
        choices=("events", "single"),
        default=os.environ.get(EXECUTOR_ENV) or "events",
        help="executor of the single-threaded nodes: rclpy's EventsExecutor (experimental "
        "in rclpy, tested here) or the SingleThreadedExecutor (default: $EFM_EXECUTOR, "
        "else events)",
    )
    args = parser.parse_args(argv)
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    log(
        "efm demo: Stage 1 (if needed) -> Stage 2 practice with 2 simulated stations over "
        "ROS 2 -> report"
    )
    ckpt = stage1(args.config, args.out, None if args.retrain else args.stage1_release)
    before = ground_truth(args.config, ckpt["policy"], args.eval_episodes)
    params = deployment(args.params, args.out, ckpt)
    seen = practise(
        params,
        args.out,
        args.rounds,
        args.minutes,
        compose=args.processes == "station",
        executor=args.executor,
    )
    final_version, final = kept_policy(seen, ckpt["policy"])
    after = ground_truth(args.config, final, args.eval_episodes)
    cfg = yaml.safe_load(args.config.read_text())
    families = cfg.get("env_kwargs", {}).get("task_families", [])
    title = cfg["env"] + (f" ({', '.join(families)})" if families else "")
    report(args.out, title, before, after, seen, (time.monotonic() - started) / 60, final_version)
    log(f"done in {(time.monotonic() - started) / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
