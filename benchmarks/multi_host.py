"""Episode and weights transfer across a simulated robot LAN (issue 16, items 6-7).

    python -m benchmarks.multi_host [--stations 1 2 4 8] [--episodes 5] [--steps 60] \
        [--image 64] [--json OUT]

The learner side (a WeightsServer with the shipped PushTable policy as v1 and an episode
subscriber, as the learner node has) runs in the hub namespace of an
efm_ros.netns.SimulatedLan, each station in its own namespace; DDS over UDP only, over the
veth links. Every station first downloads v1 (timed: distribution to N stations), then
sends ``--episodes`` LabelledEpisodes of ``--steps`` observations with one camera frame
each, as a PushTable actor does; the hub times each from its stamp to its arrival (one
machine: one clock) and records its serialised size. Needs root.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

RELEASE = Path("checkpoints/pushtable/best_bc")


class _Spinning:
    """Spin an executor on a thread until ``stop()`` (which waits for the thread)."""

    def __init__(self, executor) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=lambda: [executor.spin_once(0.05) for _ in iter(self._stop.is_set, True)],
            daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5.0)


def _episode(station: str, index: int, steps: int, image: int):
    from efm_interfaces.msg import LabelledEpisode
    from efm_ros.conversions import make_observation

    rng = np.random.default_rng(index)
    frames = rng.integers(0, 256, (steps + 1, image, image, 3), dtype=np.uint8)
    observations = [make_observation(
        station=station, step=t, instruction="push the red moon to the blue cube",
        images={"top": frames[t + 1]}, previous_images={"top": frames[t]},
        proprioception=[0.0, 0.0], proprio_names=["ee_x", "ee_y"]) for t in range(steps)]
    return LabelledEpisode(
        episode_id=f"{station}-bench-{index:06d}", station=station, length=steps,
        instruction="push the red moon to the blue cube", observations=observations,
        tokens_per_action=4, action_tokens=[1] * (4 * steps), action_dim=2,
        actions=[0.0] * (2 * steps), steps_to_go=[1.0] * (steps + 1), rewards=[0.0] * steps,
        returns=[0.0] * steps, gamma=0.9)


def _hub(args: argparse.Namespace) -> int:
    import rclpy
    from rclpy.executors import MultiThreadedExecutor
    from rclpy.node import Node
    from rclpy.serialization import serialize_message

    from efm_interfaces.msg import LabelledEpisode
    from efm_ros.qos import RELIABLE
    from efm_ros.weights_transfer import WeightsServer

    rclpy.init()
    node = Node("learner")
    WeightsServer(node, "~/get_weights", lambda v: RELEASE if v == 1 else None)
    arrivals = []

    def on_episode(msg: LabelledEpisode) -> None:
        sent = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
        arrivals.append({"latency_s": time.time() - sent,
                         "bytes": len(serialize_message(msg))})

    node.create_subscription(LabelledEpisode, "/learner/episodes", on_episode, RELIABLE)
    executor = MultiThreadedExecutor(num_threads=2)
    executor.add_node(node)
    spinning = _Spinning(executor)
    print("ready", flush=True)
    deadline = time.monotonic() + 300
    while len(arrivals) < args.expect and time.monotonic() < deadline:
        time.sleep(0.05)
    print(json.dumps(arrivals), flush=True)
    spinning.stop()
    node.destroy_node()
    rclpy.try_shutdown()
    return 0


def _station(args: argparse.Namespace) -> int:
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node

    from efm_interfaces.msg import LabelledEpisode
    from efm_ros.qos import RELIABLE
    from efm_ros.weights_transfer import WeightsFetcher

    rclpy.init()
    node = Node(f"bench_{args.name}")
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    spinning = _Spinning(executor)
    fetcher = WeightsFetcher(node, Path(args.cache), timeout_s=60.0)
    pub = node.create_publisher(LabelledEpisode, "/learner/episodes", RELIABLE)
    fetcher._client("/learner/get_weights").wait_for_service(timeout_sec=60.0)
    while pub.get_subscription_count() == 0:
        time.sleep(0.05)
    episodes = [_episode(args.name, i, args.steps, args.image) for i in range(args.episodes)]
    print("ready", flush=True)
    while not Path(args.go).exists():
        time.sleep(0.005)
    t0 = time.time()
    fetcher.fetch("ros:///learner/get_weights", 1, args.sha, args.config_sha)
    fetched = time.time()
    for msg in episodes:
        msg.header.stamp.sec, frac = divmod(time.time(), 1.0)
        msg.header.stamp.sec, msg.header.stamp.nanosec = int(msg.header.stamp.sec), int(frac * 1e9)
        pub.publish(msg)
        time.sleep(0.2)
    print(json.dumps({"weights_done": fetched, "start": t0,
                      "retried_calls": fetcher.retried_calls}), flush=True)
    time.sleep(2.0)  # let reliable delivery finish before the participant goes
    spinning.stop()
    node.destroy_node()
    rclpy.try_shutdown()
    return 0


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _one(n: int, args: argparse.Namespace, root: Path) -> dict:
    from efm_ros.netns import SimulatedLan

    me = [sys.executable, "-m", "benchmarks.multi_host"]
    stations = [f"station_{i}" for i in range(n)]
    with SimulatedLan(stations) as lan:
        env = lan.environment(args.domain)
        hub = subprocess.Popen([*lan.prefix("/learner"), *me, "--role", "hub", "--expect",
                                str(n * args.episodes)], env=env, stdout=subprocess.PIPE,
                               text=True)
        assert hub.stdout.readline().strip() == "ready"
        go = root / f"go_{n}"
        procs = [subprocess.Popen(
            [*lan.prefix(f"/{s}"), *me, "--role", "station", "--name", s,
             "--cache", str(root / f"cache_{n}_{s}"), "--go", str(go),
             "--sha", _sha(RELEASE / "model.safetensors"),
             "--config-sha", _sha(RELEASE / "config.json"),
             "--episodes", str(args.episodes), "--steps", str(args.steps),
             "--image", str(args.image)],
            env=env, stdout=subprocess.PIPE, text=True) for s in stations]
        for proc in procs:
            assert proc.stdout.readline().strip() == "ready"
        start = time.time()
        go.touch()
        done = [json.loads(proc.stdout.readline()) for proc in procs]
        arrivals = json.loads(hub.stdout.readline())
        for proc in [*procs, hub]:
            proc.wait(timeout=60)
    latencies = [a["latency_s"] for a in arrivals]
    return {
        "stations": n,
        "weights_MB": round((RELEASE / "model.safetensors").stat().st_size / 2**20, 2),
        "weights_to_all_s": round(max(d["weights_done"] for d in done) - start, 3),
        "episode_bytes": int(np.median([a["bytes"] for a in arrivals])),
        "episodes_received": len(arrivals),
        "episode_latency_median_s": round(float(np.median(latencies)), 4),
        "episode_latency_p99_s": round(float(np.percentile(latencies, 99)), 4),
        "retried_calls": sum(d["retried_calls"] for d in done),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stations", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--episodes", type=int, default=5)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--image", type=int, default=64)
    parser.add_argument("--domain", type=int, default=94)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--role", choices=["main", "hub", "station"], default="main")
    parser.add_argument("--expect", type=int, default=0)
    for name in ("name", "cache", "go", "sha", "config-sha"):
        parser.add_argument(f"--{name}", default="")
    args = parser.parse_args(argv)
    if args.role == "hub":
        return _hub(args)
    if args.role == "station":
        return _station(args)
    import tempfile

    root = Path(tempfile.mkdtemp(prefix="efm_lan_"))
    rows = []
    print("| stations | weights to all | episode size | episode latency median (p99) | "
          "received |")
    print("| --- | --- | --- | --- | --- |")
    for n in args.stations:
        row = _one(n, args, root)
        rows.append(row)
        print(f"| {n} | {row['weights_to_all_s']:.2f} s ({row['weights_MB']} MB) | "
              f"{row['episode_bytes'] / 2**20:.2f} MB | {row['episode_latency_median_s']*1e3:.0f}"
              f" ms ({row['episode_latency_p99_s']*1e3:.0f}) | {row['episodes_received']} |",
              flush=True)
    if args.json:
        args.json.write_text(json.dumps({"command": "python -m benchmarks.multi_host",
                                         "episodes_per_station": args.episodes,
                                         "steps": args.steps, "image": args.image,
                                         "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    raise SystemExit(main())
