"""How big an ALOHA practice episode is on the wire, and how long it takes to reach the
learner (issue 14, item 4).

    python -m benchmarks.aloha_episode_transport [--steps 300] [--repeats 3] [--json OUT]

An actor sends each labelled episode to the learner as one ``LabelledEpisode`` on
``/learner/episodes`` (reliable QoS). Each policy step carries the Observation the action
answered, with its camera images. What that costs depends on what ``camera_ingest`` puts
in the Observation, so the benchmark builds the episode an ALOHA actor would send for
``--steps`` 10 Hz policy steps (Appendix E.2: 1500 driver steps = 300 policy steps) in
each of these layouts, with random pixels (incompressible, the worst case):

* ``raw_480x640``: the four realsense views at full size, current and previous frame
  (what a pass-through ingest would send; measured at a few steps and scaled, since the
  full episode is gigabytes);
* ``stacked_224``: camera_ingest's ``aloha_stacked`` layout at the paper's 224 px;
* ``stacked_64``: the same at the 64 px of ``config/aloha_station.yaml`` (today's setting);
* ``stacked_64_current_only``: 64 px without ``previous_images`` (``aloha_efm`` reads only
  the current images).

For each it reports the serialized size, the time to serialize, and the time from
``publish`` to the learner-side callback in another process over loopback DDS (median of
``--repeats``). Every run sets ``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST``.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

#: (name, image height, width, number of images, previous frames sent)
LAYOUTS = (
    ("stacked_64_current_only", 64, 64, 2, False),
    ("stacked_64", 64, 64, 2, True),
    ("stacked_224", 224, 224, 2, True),
    ("raw_480x640", 480, 640, 4, True),
)
#: steps actually built for the raw layout (the rest is scaled: size is linear in steps)
RAW_STEPS = 30
#: an episode that has not reached the learner by then counts as lost
ARRIVAL_TIMEOUT_S = 120.0
TOPIC = "/bench/episodes"


def build_episode(steps: int, height: int, width: int, cameras: int, previous: bool, seed=0):
    """A LabelledEpisode as an ALOHA actor sends it: 70 tokens, 14 x 5 values per step."""
    from efm_interfaces.msg import LabelledEpisode
    from efm_ros.conversions import make_observation

    rng = np.random.default_rng(seed)
    names = [f"cam{i}" for i in range(cameras)]
    frame = {n: rng.integers(0, 256, (height, width, 3), dtype=np.uint8) for n in names}
    observations = []
    for t in range(steps):
        observations.append(make_observation(
            images=frame, previous_images=frame if previous and t else None, step=t,
            station="station_0", instruction="insert the peg into the socket",
            proprioception=np.zeros(14, np.float32),
            proprio_names=[f"joint{j}" for j in range(14)],
        ))
    return LabelledEpisode(
        episode_id="bench", station="station_0", length=steps, observations=observations,
        tokens_per_action=70, action_tokens=[0] * (70 * steps), action_dim=70,
        actions=[0.0] * (70 * steps), steps_to_go=[0.0] * (steps + 1),
        rewards=[0.0] * steps, returns=[0.0] * steps, gamma=0.9,
    )


def _receiver() -> int:
    """Learner side: print the wall time at which each episode's callback ran."""
    import rclpy
    from rclpy.node import Node

    from efm_interfaces.msg import LabelledEpisode
    from efm_ros.qos import RELIABLE

    rclpy.init()
    node = Node("bench_learner")
    node.create_subscription(
        LabelledEpisode, TOPIC,
        lambda m: print(json.dumps({"got": time.time(), "steps": len(m.observations)}),
                        flush=True),
        RELIABLE)
    print(json.dumps({"ready": True}), flush=True)
    try:
        rclpy.spin(node)
    except KeyboardInterrupt:
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


def _readline(process: subprocess.Popen, timeout_s: float) -> str | None:
    """The receiver's next line, or None when nothing arrives within ``timeout_s``."""
    ready, _, _ = select.select([process.stdout], [], [], timeout_s)
    return process.stdout.readline() if ready else None


def measure(args: argparse.Namespace) -> dict:
    import rclpy
    from rclpy.node import Node
    from rclpy.serialization import serialize_message

    from efm_interfaces.msg import LabelledEpisode
    from efm_ros.qos import RELIABLE

    receiver = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.aloha_episode_transport", "--receiver"],
        stdout=subprocess.PIPE, text=True, env=os.environ)
    if not json.loads(_readline(receiver, 60.0) or "{}").get("ready"):
        receiver.kill()
        raise RuntimeError("the receiver did not start")
    rclpy.init()
    node = Node("bench_actor")
    pub = node.create_publisher(LabelledEpisode, TOPIC, RELIABLE)
    deadline = time.monotonic() + 30
    while pub.get_subscription_count() == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    results = {}
    try:
        for name, height, width, cameras, previous in LAYOUTS:
            steps = min(args.steps, RAW_STEPS) if name.startswith("raw") else args.steps
            episode = build_episode(steps, height, width, cameras, previous)
            t0 = time.perf_counter()
            size = len(serialize_message(episode))
            serialize_s = time.perf_counter() - t0
            transfer, lost = [], 0
            for _ in range(args.repeats):
                sent = time.time()
                pub.publish(episode)
                line = _readline(receiver, ARRIVAL_TIMEOUT_S)
                if line is None:
                    lost += 1
                    continue
                transfer.append(json.loads(line)["got"] - sent)
            scale = args.steps / steps
            results[name] = {
                "steps_built": steps, "scaled_to_steps": args.steps,
                "bytes": int(size * scale), "mb": round(size * scale / 1e6, 2),
                "serialize_s": round(serialize_s * scale, 4),
                "publish_to_callback_s_median": (
                    round(statistics.median(transfer) * scale, 4) if transfer else None),
                "publish_to_callback_s": [round(x, 4) for x in transfer],
                "lost": lost, "timeout_s": ARRIVAL_TIMEOUT_S,
            }
            print(name, results[name], flush=True)
    finally:
        receiver.terminate()
        receiver.wait(10)
        node.destroy_node()
        rclpy.try_shutdown()
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=300, help="10 Hz policy steps")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--receiver", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    if args.receiver:
        return _receiver()
    if args.steps < 1 or args.repeats < 1:
        parser.error("--steps and --repeats must be >= 1")
    results = {"steps": args.steps, "layouts": measure(args)}
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
