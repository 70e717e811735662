"""episode_recorder throughput in MB/s (issue 5, item 8).

1. ``BagWriter`` alone: pre-serialised ALOHA-sized messages (4 raw 480x640 frames and one
   Observation with 2 stacked 224x224 images + their previous frames per 30 Hz tick) written
   to an MCAP bag as fast as possible: the storage ceiling.
2. Through ROS: the recorder as its own process records a station publishing 4 raw cameras
   (480x640 @ 30 Hz), Observations (@ 10 Hz) and ActionCommands (@ 10 Hz) for one episode;
   the recorder's own summary gives MB, MB/s and messages; dropped = published - recorded.
   Run under the large shared-memory Fast DDS profile of ``benchmarks.ros_camera_ingest``.

python -m benchmarks.ros_recorder [--seconds 10] [--docs docs/ROS.md]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from ros_harness import claim_domain, ros_environment  # noqa: E402

from benchmarks.ros_camera_ingest import FASTDDS_PROFILE  # noqa: E402

NS = "/bench"
CAMERAS = ["top", "table", "left_wrist", "right_wrist"]


def _aloha_messages() -> tuple[list[Any], Any]:
    import numpy as np

    from efm_ros.conversions import image_to_msg, make_observation

    rng = np.random.default_rng(0)
    frames = [image_to_msg(rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)) for _ in CAMERAS]
    stacked = {n: rng.integers(0, 256, (224, 224, 3), dtype=np.uint8) for n in ("a", "b")}
    obs = make_observation(
        station="bench",
        step=0,
        instruction="insert the peg into the socket",
        images=stacked,
        previous_images=stacked,
        proprioception=[0.0] * 14,
        proprio_names=[f"joint_{i}" for i in range(14)],
    )
    return frames, obs


def writer_only(seconds: float, workdir: Path) -> dict[str, Any]:
    """MB/s of BagWriter for serialised bytes (no ROS graph)."""
    from rclpy.serialization import serialize_message

    from efm_ros.bag_io import BagWriter

    frames, obs = _aloha_messages()
    frame_bytes = [serialize_message(f) for f in frames]
    obs_bytes = serialize_message(obs)
    writer = BagWriter(workdir / "writer_only")
    for name in CAMERAS:
        writer.add_topic(f"{NS}/camera/{name}/image_raw", "sensor_msgs/msg/Image")
    writer.add_topic(f"{NS}/observation", "efm_interfaces/msg/Observation")
    start = time.perf_counter()
    ticks = 0
    while time.perf_counter() - start < seconds:
        stamp = ticks * 33_333_333
        for name, data in zip(CAMERAS, frame_bytes, strict=True):
            writer.write(f"{NS}/camera/{name}/image_raw", stamp, data)
        writer.write(f"{NS}/observation", stamp, obs_bytes)
        ticks += 1
    writer.close()
    elapsed = time.perf_counter() - start
    megabytes = writer.bytes_written / 1e6
    return {
        "case": "BagWriter only (no ROS)",
        "seconds": round(elapsed, 1),
        "messages": sum(writer.message_counts.values()),
        "megabytes": round(megabytes, 1),
        "mb_per_s": round(megabytes / elapsed, 1),
        "dropped": 0,
        "recorder_cpu_percent": None,
    }


def through_ros(seconds: float, workdir: Path, domain: int) -> dict[str, Any]:
    """One episode recorded by the recorder process from a live 4-camera station."""
    import psutil
    import rclpy
    from rclpy.context import Context
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node
    from sensor_msgs.msg import Image
    from std_msgs.msg import String

    from efm_interfaces.msg import ActionCommand, Observation
    from efm_ros.qos import RELIABLE, SENSOR

    params = workdir / "recorder.yaml"
    topics = [f"camera/{n}/image_raw" for n in CAMERAS] + ["observation", "action_command"]
    ros_parameters = {
        "recorder.output_dir": str(workdir / "bags"),
        "recorder.topics": topics,
        "recorder.types": ["sensor_msgs/msg/Image"] * 4
        + ["efm_interfaces/msg/Observation", "efm_interfaces/msg/ActionCommand"],
        "recorder.qos": ["sensor"] * 5 + ["reliable"],
    }
    params.write_text(json.dumps({"/**": {"ros__parameters": ros_parameters}}))
    log = workdir / "recorder.log"
    with log.open("wb") as log_handle:
        proc = subprocess.Popen(
            [
                *(sys.executable, "-m", "efm_ros.episode_recorder"),
                *("--ros-args", "-r", f"__ns:={NS}", "--params-file", str(params)),
            ],
            env=ros_environment(domain),
            stdout=log_handle,
            stderr=subprocess.STDOUT,
        )
    context = Context()
    rclpy.init(context=context, domain_id=domain)
    node = Node("station", namespace=NS, context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    try:
        cams = [node.create_publisher(Image, t, SENSOR) for t in topics[:4]]
        obs_pub = node.create_publisher(Observation, "observation", SENSOR)
        act_pub = node.create_publisher(ActionCommand, "action_command", RELIABLE)
        events = node.create_publisher(String, "episode/events", RELIABLE)
        summaries: list[dict] = []
        node.create_subscription(
            String, "episode/recorded", lambda m: summaries.append(json.loads(m.data)), RELIABLE
        )
        pubs = [*cams, obs_pub, act_pub, events]
        deadline = time.monotonic() + 30
        while not all(p.get_subscription_count() for p in pubs):
            executor.spin_once(timeout_sec=0.05)
            if time.monotonic() > deadline:
                raise RuntimeError(f"recorder not connected:\n{log.read_text()}")
        frames, obs = _aloha_messages()
        action = ActionCommand(names=[f"joint_{i}" for i in range(14)], chunk_length=5)
        action.values = [0.0] * 70
        events.publish(String(data=json.dumps({"event": "start", "episode_id": "bench"})))
        executor.spin_once(timeout_sec=0.5)
        recorder = psutil.Process(proc.pid)
        cpu_start = sum(recorder.cpu_times()[:2])
        published = 0
        ticks = 0
        start = time.monotonic()
        while (now := time.monotonic()) - start < seconds:
            if now >= start + ticks / 30.0:
                stamp = node.get_clock().now().to_msg()
                for pub, frame in zip(cams, frames, strict=True):
                    frame.header.stamp = stamp
                    pub.publish(frame)
                published += 4
                if ticks % 3 == 0:
                    obs.header.stamp = stamp
                    obs_pub.publish(obs)
                    act_pub.publish(action)
                    published += 2
                ticks += 1
            executor.spin_once(timeout_sec=max(0.0, start + ticks / 30.0 - time.monotonic()))
        time.sleep(0.5)  # let the last frames land before the stop event
        events.publish(
            String(data=json.dumps({"event": "stop", "episode_id": "bench", "length": ticks}))
        )
        deadline = time.monotonic() + 30
        while not summaries and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.1)
        cpu = sum(recorder.cpu_times()[:2]) - cpu_start
        elapsed = time.monotonic() - start
    finally:
        executor.shutdown()
        node.destroy_node()
        context.try_shutdown()
        proc.send_signal(2)
        proc.wait(10)
    summary = summaries[0]
    recorded = summary["messages"] - 2  # minus the two episode/metadata messages
    return {
        "case": "4 cams 480x640 @30 Hz + Observation/Action @10 Hz through ROS",
        "seconds": round(elapsed, 1),
        "messages": recorded,
        "megabytes": summary["megabytes"],
        "mb_per_s": summary["mb_per_s"],
        "write_mb_per_s": summary["write_mb_per_s"],
        "dropped": published - recorded,
        "recorder_cpu_percent": round(100 * cpu / elapsed, 1),
    }


def to_markdown(rows: list[dict[str, Any]], seconds: float) -> str:
    lines = [
        "## episode_recorder throughput (rosbag2 MCAP via rosbags)",
        "",
        f"`python -m benchmarks.ros_recorder --seconds {seconds:g}`, {time.strftime('%Y-%m-%d')}, "
        f"{os.cpu_count()} CPU cores shared with the publisher; shared-memory Fast DDS profile. "
        "MB/s through ROS is the recorded data rate over the episode (the station offers "
        "~114 MB/s; the window includes start/stop gaps), not a ceiling; the writer-only row is "
        "the ceiling.",
        "",
        "| case | s | messages | MB | MB/s | dropped | recorder CPU % |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        cpu = "-" if r["recorder_cpu_percent"] is None else r["recorder_cpu_percent"]
        lines.append(
            f"| {r['case']} | {r['seconds']} | {r['messages']} | {r['megabytes']} | "
            f"{r['mb_per_s']} | {r['dropped']} | {cpu} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--docs", type=Path, default=None, help="append a table to this file")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    os.environ.setdefault("AMENT_PREFIX_PATH", sys.prefix)
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        if args.child:  # runs with the shared-memory profile set by the parent
            with claim_domain() as domain:
                os.environ["ROS_DOMAIN_ID"] = str(domain)
                print(json.dumps(through_ros(args.seconds, workdir, domain)), flush=True)
            return
        rows = [writer_only(min(args.seconds, 5.0), workdir)]
        print(json.dumps(rows[-1]), flush=True)
        profile = workdir / "fastdds_shm.xml"
        profile.write_text(FASTDDS_PROFILE)
        env = dict(os.environ, FASTDDS_DEFAULT_PROFILES_FILE=str(profile))
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "benchmarks.ros_recorder",
                "--child",
                "--seconds",
                f"{args.seconds}",
            ],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
        )
        if out.returncode != 0:
            raise RuntimeError(out.stdout + out.stderr)
        rows += [json.loads(x) for x in out.stdout.splitlines() if x.startswith("{")]
        print(json.dumps(rows[-1]), flush=True)
    table = to_markdown(rows, args.seconds)
    print(table)
    if args.docs:
        with args.docs.open("a") as handle:
            handle.write("\n" + table)


if __name__ == "__main__":
    main()
