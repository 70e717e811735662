"""Observation -> action latency through the ROS 2 graph vs the same policy in-process,
and StepsToGo labelling throughput (issue 5 item 8).

    python -m benchmarks.ros_policy_latency --checkpoint runs/demo/stage1/sft/best_bc \
        [--reward runs/demo/stage1/sft/best_steps_to_go] [--n 200] [--image 64]

A policy node and a steps_to_go node run as separate processes (lockstep trigger); this
process publishes Observations (one 64x64 camera + proprioception) one at a time and times
each until its ActionCommand arrives. The in-process figure is the node's own work
(validation, model input, model.act) on the same messages. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml


def _pct(values: list[float]) -> str:
    a = np.asarray(values) * 1e3
    return f"{np.median(a):.2f} ms (p99 {np.percentile(a, 99):.2f})"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--reward", default="")
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--image", type=int, default=64, help="camera side; 0: no camera")
    parser.add_argument("--state-dim", type=int, default=2)
    parser.add_argument("--label-batch", type=int, default=64)
    args = parser.parse_args(argv)
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    os.environ.setdefault("ROS_DOMAIN_ID", "91")

    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node

    from efm_interfaces.msg import ActionCommand, Observation
    from efm_interfaces.srv import StepsToGo
    from efm_ros.conversions import make_observation, observation_arrays
    from efm_ros.model_host import load_verified, model_input
    from efm_ros.qos import RELIABLE, SENSOR

    rng = np.random.default_rng(0)
    frames = rng.integers(
        0, 255, (args.n, max(args.image, 1), max(args.image, 1), 3), dtype=np.uint8
    )

    def obs(i: int) -> Observation:
        images = {"top": frames[i]} if args.image else {}
        previous = {"top": frames[i - 1]} if args.image else None
        state = [0.01 * ((i + k) % 7) for k in range(args.state_dim)]
        return make_observation(
            station="bench",
            step=i,
            instruction="push the red star to the blue cube",
            images=images,
            previous_images=previous,
            proprioception=state,
            proprio_names=[f"q{k}" for k in range(args.state_dim)],
        )

    # in-process: the node's own per-observation work
    model = load_verified(args.checkpoint).model
    local = []
    for i in range(args.n):
        msg = obs(i)
        t0 = time.perf_counter()
        model.act(model_input([observation_arrays(msg)]))
        local.append(time.perf_counter() - t0)

    params = {
        "/**/policy": {
            "ros__parameters": {
                "model.checkpoint": args.checkpoint,
                "control.trigger": "observation",
                "safety.observation_timeout_s": 5.0,
            }
        }
    }
    if args.reward:
        params["/**/steps_to_go"] = {
            "ros__parameters": {
                "model.checkpoint": args.reward,
                "predict.rate_hz": 0.0,
                "viz.enabled": False,
                "service.max_batch": 1024,
            }
        }
    tmp = Path(tempfile.mkdtemp())
    (tmp / "p.yaml").write_text(yaml.safe_dump(params))
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "efm_ros.policy_node",
                "--ros-args",
                "-r",
                "__ns:=/bench",
                "--params-file",
                str(tmp / "p.yaml"),
            ]
        )
    ]
    if args.reward:
        procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "efm_ros.steps_to_go_node",
                    "--ros-args",
                    "-r",
                    "__ns:=/bench",
                    "--params-file",
                    str(tmp / "p.yaml"),
                ]
            )
        )
    rclpy.init()
    node = Node("bench_client", namespace="/bench")
    ex = SingleThreadedExecutor()
    ex.add_node(node)
    got: dict[int, float] = {}
    node.create_subscription(
        ActionCommand,
        "action_command",
        lambda m: got.setdefault(m.step, time.perf_counter()),
        RELIABLE,
    )
    pub = node.create_publisher(Observation, "observation", SENSOR)
    try:
        while pub.get_subscription_count() == 0:
            ex.spin_once(timeout_sec=0.1)
        time.sleep(1.0)
        graph = []
        for i in range(1, args.n):
            msg = obs(i)
            t0 = time.perf_counter()
            pub.publish(msg)
            deadline = t0 + 2.0
            while i not in got and time.perf_counter() < deadline:
                ex.spin_once(timeout_sec=0.001)
            if i in got:
                graph.append(got[i] - t0)
        rows = [
            ("policy, in-process (validate + model.act)", _pct(local), ""),
            (
                "policy, through ROS 2 (Observation -> ActionCommand)",
                _pct(graph),
                f"{np.median(graph) / np.median(local):.2f}x in-process",
            ),
        ]
        if args.reward:
            cli = node.create_client(StepsToGo, "steps_to_go")
            while not cli.service_is_ready():
                ex.spin_once(timeout_sec=0.1)
            batch = [obs(i) for i in range(1, args.label_batch + 1)]
            times = []
            for _ in range(5):
                t0 = time.perf_counter()
                future = cli.call_async(StepsToGo.Request(observations=batch))
                while not future.done():
                    ex.spin_once(timeout_sec=0.001)
                times.append(time.perf_counter() - t0)
            rows.append(
                (
                    f"StepsToGo, batch {args.label_batch}",
                    f"{args.label_batch / np.median(times):.0f} labels/s",
                    "",
                )
            )
        print(f"| measure (n={len(graph)}, {args.image}x{args.image} image) | median | note |")
        print("| --- | --- | --- |")
        for name, value, note in rows:
            print(f"| {name} | {value} | {note} |")
    finally:
        for p in procs:
            p.send_signal(2)
            p.wait(10)
        ex.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    main()
