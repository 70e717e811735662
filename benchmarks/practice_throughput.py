"""Practice throughput over ROS 2 vs the in-process loop of the learning core (issue 6
item 7), same models, same N x B, two stations / two environments.

    python -m benchmarks.practice_throughput --config config/pointmass.yaml \
        --params config/pointmass_practice.yaml --stage1 runs/demo_pointmass/stage1/sft \
        [--rounds 5]

ROS: the full graph of ``--params`` (14 processes, or 4 with ``--compose``: one per
station) runs ``--rounds`` learning rounds;
episodes per hour per station and the learner's idle fraction (1 - time spent in rounds /
wall time) are measured. In-process: ``efm_learning.actor.EnvActor`` with 2 environments
collects the same N x B samples per round, and N REINFORCE updates run on them.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from itertools import pairwise
from pathlib import Path

import numpy as np


def in_process(config: Path, stage1: Path, rounds: int) -> dict:
    import torch

    from efm_learning.actor import EnvActor
    from efm_learning.checkpoint import load_checkpoint
    from efm_learning.config import load_config
    from efm_learning.replay_buffer import Adder, ReplayBuffer
    from efm_learning.self_improvement import reinforce_step, to_policy_batch

    torch.set_num_threads(1)
    cfg = load_config(config)
    imp = cfg.improve
    policy, _ = load_checkpoint(stage1 / "best_bc")
    reward, _ = load_checkpoint(stage1 / "best_steps_to_go")
    reward.eval()
    actor = EnvActor(
        cfg.env,
        policy,
        reward,
        imp.success_threshold,
        imp.max_episode_steps,
        num_envs=2,
        seed=0,
        env_kwargs=cfg.env_kwargs,
    )
    params = policy.stage2_parameters()
    optimizer = torch.optim.AdamW(params, lr=imp.lr, weight_decay=imp.weight_decay)
    rng = np.random.default_rng(0)
    episodes, learn_s = 0, 0.0
    start = time.monotonic()
    for _ in range(rounds):
        buffer = ReplayBuffer()
        adder = Adder(buffer, reward, imp.gamma)
        for episode in actor.collect(imp.updates_per_round * imp.batch_size):
            adder.add(episode)
            episodes += 1
        t0 = time.monotonic()
        for batch in buffer.minibatches(imp.updates_per_round, imp.batch_size, rng):
            reinforce_step(
                policy,
                optimizer,
                params,
                to_policy_batch(policy, batch),
                imp.reinforce_c,
                imp.grad_clip,
            )
        learn_s += time.monotonic() - t0
        actor.policy.load_state_dict(policy.state_dict())
    wall = time.monotonic() - start
    return {"wall_s": wall, "episodes": episodes, "learn_s": learn_s}


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc; 0 if it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def node_cpu(graph, since: dict[str, float] | None = None) -> dict[str, float]:
    """CPU seconds per node process (minus ``since``)."""
    since = since or {}
    return {name: cpu_seconds(p.pid) - since.get(name, 0.0) for name, p in graph.procs.items()}


def by_node_type(per_node: dict[str, float]) -> dict[str, float]:
    """Stations summed: ``/station_0/policy`` and ``/station_1/policy`` -> ``policy``."""
    from efm_ros.node_set import EXECUTABLES

    total: dict[str, float] = {}
    for name, used in per_node.items():
        kind = name.rsplit("/", 1)[-1]
        if kind not in EXECUTABLES:  # a station's namespace: efm_ros.compose, one process
            kind = "station (composed)"
        total[kind] = total.get(kind, 0.0) + used
    return dict(sorted(total.items(), key=lambda kv: -kv[1]))


def episode_timing(bags: Path) -> dict[str, float]:
    """Where a station's wall time goes, from its recorded bags (receive times): the
    median control step (observation to observation) and episode span (first observation
    to last action), and the median and 90th-percentile gap from one episode's last
    message to the next one's first (reset, labelling, dispatch; learning pauses fill
    the upper tail)."""
    from rosbags.rosbag2 import Reader

    steps, spans, gaps = [], [], []
    for station in sorted(p for p in bags.iterdir() if p.is_dir()):
        windows = []
        for bag in sorted(p for p in station.iterdir() if p.is_dir()):
            times: dict[str, list[int]] = {"observation": [], "action_command": []}
            with Reader(bag) as reader:
                for connection, stamp, _ in reader.messages():
                    times.setdefault(connection.topic.rsplit("/", 1)[-1], []).append(stamp)
            obs, act = np.array(times["observation"]), np.array(times["action_command"])
            if len(obs) < 3 or len(act) < 2:
                continue  # an episode cut short by the end of the run
            steps.append(np.median(np.diff(obs)))
            spans.append(act[-1] - obs[0])
            windows.append((min(obs[0], act[0]), max(obs[-1], act[-1])))
        windows.sort()
        gaps += [nxt[0] - cur[1] for cur, nxt in pairwise(windows)]
    ms = 1e-6
    return {
        "bags": len(spans),
        "step_ms": float(np.median(steps)) * ms if steps else float("nan"),
        "episode_ms": float(np.median(spans)) * ms if spans else float("nan"),
        "gap_ms": float(np.median(gaps)) * ms if gaps else float("nan"),
        "gap_p90_ms": float(np.percentile(gaps, 90)) * ms if gaps else float("nan"),
    }


def with_overrides(params_file: Path, overrides: list[str], out: Path) -> Path:
    """A copy of the deployment YAML with ``NODE_KEY:PARAM=VALUE`` overrides (YAML values)."""
    import yaml

    from efm_ros.node_set import dump_params, load_params

    params = load_params(params_file)
    for item in overrides:
        key, has_value, value = item.partition("=")
        node, _, name = key.partition(":")
        if node not in params or not name or not has_value:
            raise SystemExit(f"--node-param {item!r}: want NODE:PARAM=VALUE, NODE one of "
                             f"{sorted(params)}")
        params[node]["ros__parameters"][name] = yaml.safe_load(value)
    path = out / "overridden.yaml"
    path.write_text(dump_params(params))
    return path


def over_ros(params_file: Path, stage1: Path, rounds: int, compose: bool) -> dict:
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node

    from efm_interfaces.msg import LabelledEpisode, WeightsUpdate
    from efm_ros.bringup import Graph
    from efm_ros.demo import deployment
    from efm_ros.node_set import load_params, practice_nodes
    from efm_ros.qos import LATCHED, RELIABLE

    out = Path(tempfile.mkdtemp(prefix="efm-throughput-"))
    params = deployment(
        params_file, out, {"policy": stage1 / "best_bc", "reward": stage1 / "best_steps_to_go"}
    )
    specs = practice_nodes(load_params(params), sim=True)
    graph = Graph(specs, params, out / "logs", compose=compose)
    rclpy.init()
    node = Node("throughput_observer")
    ex = SingleThreadedExecutor()
    ex.add_node(node)
    ids: dict[str, str] = {}
    versions: list[tuple[int, float]] = []
    learning_ms = {"value": 0}
    node.create_subscription(
        LabelledEpisode,
        "/learner/episodes",
        lambda m: ids.setdefault(m.episode_id, m.station),
        RELIABLE,
    )
    node.create_subscription(
        WeightsUpdate,
        "/learner/weights",
        lambda m: versions.append((m.version, time.monotonic())),
        LATCHED,
    )

    def on_diag(msg: DiagnosticArray) -> None:
        for status in msg.status:
            if status.hardware_id == "learner":
                for kv in status.values:
                    if kv.key == "learning_ms":
                        learning_ms["value"] = int(kv.value)

    node.create_subscription(DiagnosticArray, "/diagnostics", on_diag, RELIABLE)
    try:
        while not versions:
            ex.spin_once(timeout_sec=0.1)
        start, cpu0 = time.monotonic(), node_cpu(graph)
        while max(v for v, _ in versions) < rounds:
            ex.spin_once(timeout_sec=0.1)
        wall, cpu = time.monotonic() - start, node_cpu(graph, cpu0)
        end = time.monotonic() + 2.0
        while time.monotonic() < end:
            ex.spin_once(timeout_sec=0.1)
    finally:
        graph.stop()
        ex.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()
    stations = sorted(set(ids.values()))
    return {
        "wall_s": wall,
        "episodes": len(ids),
        "learn_s": learning_ms["value"] / 1000,
        "per_station": {s: sum(1 for v in ids.values() if v == s) for s in stations},
        "cpu_s_by_node": by_node_type(cpu),
        "timing": episode_timing(out / "bags"),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, default=Path("config/pointmass.yaml"))
    parser.add_argument("--params", type=Path, default=Path("config/pointmass_practice.yaml"))
    parser.add_argument("--stage1", type=Path, default=Path("runs/demo_pointmass/stage1/sft"))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--node-param",
        action="append",
        default=[],
        metavar="NODE:PARAM=VALUE",
        help="override a deployment parameter, e.g. '/**/steps_to_go:predict.rate_hz=0'",
    )
    parser.add_argument("--skip-in-process", action="store_true")
    parser.add_argument(
        "--compose", action="store_true", help="one process per station (bringup --compose)"
    )
    args = parser.parse_args(argv)
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    os.environ.setdefault("ROS_DOMAIN_ID", "93")
    params = args.params
    if args.node_param:
        params = with_overrides(params, args.node_param, Path(tempfile.mkdtemp()))
    ros = over_ros(params, args.stage1, args.rounds, args.compose)
    wall = ros["wall_s"]
    print(f"CPU seconds per node type over the {wall:.0f} s measured ({2 * wall:.0f} core-s "
          "on 2 cores):")
    for kind, used in ros["cpu_s_by_node"].items():
        print(f"  {kind:18s} {used:7.1f} s  {used / wall:5.0%} of a core")
    t = ros["timing"]
    print(
        f"From the {t['bags']} bags: control step {t['step_ms']:.1f} ms, episode "
        f"{t['episode_ms']:.0f} ms, between episodes {t['gap_ms']:.0f} ms "
        f"(p90 {t['gap_p90_ms']:.0f} ms, learning pauses included) (medians)"
    )
    if args.skip_in_process:
        print(f"ROS only: {ros['episodes']} episodes in {wall:.0f} s, "
              f"{3600 * ros['episodes'] / wall / 2:.0f} episodes/hour/station")
        return
    local = in_process(args.config, args.stage1, args.rounds)
    rate = {k: 3600 * v["episodes"] / v["wall_s"] / 2 for k, v in (("ros", ros), ("local", local))}
    print(
        f"| loop ({args.rounds} rounds, 2 stations/envs) | wall [s] | episodes | "
        "episodes/hour/station | learner idle |"
    )
    print("| --- | --- | --- | --- | --- |")
    graph = "ROS 2 graph, a process per " + ("station" if args.compose else "node")
    for name, r in ((graph, ros), ("in-process EnvActor", local)):
        key = "ros" if name.startswith("ROS") else "local"
        idle = 1 - r["learn_s"] / r["wall_s"]
        print(f"| {name} | {r['wall_s']:.0f} | {r['episodes']} | {rate[key]:.0f} | {idle:.0%} |")
    print(
        f"\nROS / in-process episodes per hour: {rate['ros'] / rate['local']:.2f}; "
        f"per station (ROS): {ros['per_station']}"
    )


if __name__ == "__main__":
    main()
