"""camera_ingest throughput (issue 5, item 8): 4 cameras at 480x640, 30 Hz.

A publisher in this process plays a synchronised 4-camera rig (one stamp per tick); the
node runs as its own process (as on a robot) and its CPU use is read from /proc. Reported
per configuration: frames published / taken by the node, Observations out, sets dropped,
node CPU (% of one core).

python -m benchmarks.ros_camera_ingest [--seconds 10] [--docs docs/ROS.md]

Two DDS transport set-ups are measured, each in its own child process (Fast DDS reads its
profile once per process): ``default`` (Fast DDS built-in transports: a 921 KB image is cut
into UDP fragments and best-effort frames are lost under load) and ``shm`` (a Fast DDS XML
profile with a 64 MB shared-memory segment, what a robot computer streaming raw 480x640
cameras should deploy; see FASTDDS_PROFILE below).
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

CAMERAS = ["top", "table", "left_wrist", "right_wrist"]
NS = "/bench"
#: Fast DDS profile: shared memory with a segment large enough for bursts of raw frames
FASTDDS_PROFILE = """<?xml version="1.0" encoding="UTF-8"?>
<dds xmlns="http://www.eprosima.com"><profiles>
  <transport_descriptors>
    <transport_descriptor><transport_id>shm_large</transport_id><type>SHM</type>
      <segment_size>67108864</segment_size></transport_descriptor>
    <transport_descriptor><transport_id>udp</transport_id><type>UDPv4</type>
    </transport_descriptor>
  </transport_descriptors>
  <participant profile_name="large_shm" is_default_profile="true"><rtps>
    <userTransports><transport_id>shm_large</transport_id><transport_id>udp</transport_id>
    </userTransports><useBuiltinTransports>false</useBuiltinTransports>
  </rtps></participant>
</profiles></dds>
"""
CONFIGS = [
    {"output.layout": "aloha_stacked", "output.resize": "area"},
    {"output.layout": "aloha_stacked", "output.resize": "nearest"},
    {"output.layout": "per_camera", "output.resize": "area"},
]


def _start_node(domain: int, params: dict[str, Any], workdir: Path) -> tuple[Any, Path]:
    """camera_ingest as a child process with a nav2-style parameter file."""
    params_file = workdir / "camera_ingest.yaml"
    params_file.write_text(
        json.dumps({"/**": {"ros__parameters": {"cameras.names": CAMERAS, **params}}})
    )
    log = workdir / "camera_ingest.log"
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "efm_ros.camera_ingest"),
            *("--ros-args", "-r", f"__ns:={NS}", "--params-file", str(params_file)),
        ],
        env=ros_environment(domain),
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 30
    while "camera_ingest ready" not in log.read_text(errors="replace"):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"camera_ingest did not start:\n{log.read_text()}")
        time.sleep(0.1)
    return proc, log


def measure(domain: int, params: dict[str, Any], seconds: float) -> dict[str, Any]:
    import numpy as np
    import psutil
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.context import Context
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node
    from sensor_msgs.msg import Image

    from efm_interfaces.msg import Observation
    from efm_ros.conversions import image_to_msg
    from efm_ros.qos import RELIABLE, SENSOR

    with tempfile.TemporaryDirectory() as tmp:
        proc, log = _start_node(domain, params, Path(tmp))
        context = Context()
        rclpy.init(context=context, domain_id=domain)
        node = Node("camera_rig", namespace=NS, context=context)
        executor = SingleThreadedExecutor(context=context)
        executor.add_node(node)
        try:
            pubs = [
                node.create_publisher(Image, f"camera/{name}/image_raw", SENSOR) for name in CAMERAS
            ]
            observations = []
            node.create_subscription(
                Observation, "observation", lambda m: observations.append(m.step), SENSOR
            )
            counters: dict[str, float] = {}
            reports: list[float] = []

            def on_diag(msg: DiagnosticArray) -> None:
                for status in msg.status:
                    if status.name == f"{NS}/camera_ingest":
                        counters.update({kv.key: float(kv.value) for kv in status.values})
                        reports.append(time.monotonic())

            node.create_subscription(DiagnosticArray, "/diagnostics", on_diag, RELIABLE)
            deadline = time.monotonic() + 20
            while not all(p.get_subscription_count() for p in pubs) or not reports:
                executor.spin_once(timeout_sec=0.05)
                if time.monotonic() > deadline:
                    raise RuntimeError(f"no connection to camera_ingest:\n{log.read_text()}")
            rng = np.random.default_rng(0)
            frames = [
                image_to_msg(rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)) for _ in CAMERAS
            ]
            node_proc = psutil.Process(proc.pid)
            cpu_start = sum(node_proc.cpu_times()[:2])
            start = time.monotonic()
            ticks = 0
            while (now := time.monotonic()) - start < seconds:
                if now >= start + ticks / 30.0:
                    stamp = node.get_clock().now().to_msg()
                    for pub, frame in zip(pubs, frames, strict=True):
                        frame.header.stamp = stamp
                        pub.publish(frame)
                    ticks += 1
                executor.spin_once(timeout_sec=max(0.0, start + ticks / 30.0 - time.monotonic()))
            elapsed = time.monotonic() - start
            cpu = sum(node_proc.cpu_times()[:2]) - cpu_start
            settle = time.monotonic() + 2.5  # last observations and a fresh diagnostics message
            while time.monotonic() < settle:
                executor.spin_once(timeout_sec=0.05)
        finally:
            executor.shutdown()
            node.destroy_node()
            context.try_shutdown()
            proc.send_signal(2)
            proc.wait(10)
    frames_in = sum(v for k, v in counters.items() if k.startswith("frames_in."))
    return {
        "transport": os.environ.get("EFM_BENCH_TRANSPORT", "default"),
        "layout": params["output.layout"],
        "resize": params["output.resize"],
        "seconds": round(elapsed, 1),
        "publish_hz": round(ticks / elapsed, 1),
        "frames_published": 4 * ticks,
        "frames_taken_by_node": int(frames_in),
        "frames_lost_in_transport": int(4 * ticks - frames_in),
        "frames_dropped_unsynced": int(counters.get("dropped.unsynced", 0)),
        "observations_out": len(observations),
        "observation_hz": round(len(observations) / elapsed, 1),
        "sets_dropped": ticks - len(observations),
        "node_cpu_percent": round(100 * cpu / elapsed, 1),
    }


def to_markdown(rows: list[dict[str, Any]], seconds: float) -> str:
    lines = [
        "## camera_ingest throughput: 4 cameras, 480x640 rgb8, 30 Hz",
        "",
        f"`python -m benchmarks.ros_camera_ingest --seconds {seconds:g}`, "
        f"{time.strftime('%Y-%m-%d')}, {os.cpu_count()} CPU cores shared with the publisher "
        "(same machine, loopback DDS). Node CPU is % of one core (/proc of the node process).",
        "",
        "| DDS transport | layout | resize | frames published | taken by node "
        "| lost in transport | Observations out (Hz) | sets dropped | node CPU % |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['transport']} | {r['layout']} | {r['resize']} | {r['frames_published']} | "
            f"{r['frames_taken_by_node']} | {r['frames_lost_in_transport']} | "
            f"{r['observations_out']} ({r['observation_hz']}) | {r['sets_dropped']} | "
            f"{r['node_cpu_percent']} |"
        )
    return "\n".join(lines) + "\n"


def run_transport(transport: str, seconds: float, workdir: Path) -> list[dict[str, Any]]:
    """All CONFIGS under one DDS set-up, in a child process (one Fast DDS profile each)."""
    env = dict(os.environ, EFM_BENCH_TRANSPORT=transport)
    if transport == "shm":
        profile = workdir / "fastdds_shm.xml"
        profile.write_text(FASTDDS_PROFILE)
        env["FASTDDS_DEFAULT_PROFILES_FILE"] = str(profile)
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.ros_camera_ingest", "--child", str(seconds)],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--docs", type=Path, default=None, help="append a table to this file")
    parser.add_argument("--child", type=float, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    os.environ.setdefault("AMENT_PREFIX_PATH", sys.prefix)
    if args.child is not None:
        with claim_domain() as domain:
            os.environ["ROS_DOMAIN_ID"] = str(domain)
            configs = CONFIGS if os.environ["EFM_BENCH_TRANSPORT"] == "shm" else CONFIGS[:1]
            for params in configs:
                print(json.dumps(measure(domain, params, args.child)), flush=True)
        return
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for transport in ("default", "shm"):
            rows.extend(run_transport(transport, args.seconds, Path(tmp)))
            print("\n".join(json.dumps(r) for r in rows), flush=True)
    table = to_markdown(rows, args.seconds)
    print(table)
    if args.docs:
        with args.docs.open("a") as handle:
            handle.write("\n" + table)


if __name__ == "__main__":
    main()
