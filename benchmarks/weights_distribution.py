"""Time to distribute one policy version to N stations over ROS 2 (issue 16, item 5).

    python -m benchmarks.weights_distribution [--stations 1 2 4 8] [--mb 0 64] [--json OUT]

One server (this process: a WeightsServer, as in the learner) and N station processes
(a WeightsFetcher each, as in the policy node), all on this machine's loopback. Every
station first finds the service, then all start together; the time is from the start to
the last station holding a verified copy. Checkpoints: the shipped PushTable policy
(``--mb 0``, about 1 MB) and synthetic weights of the given size in MB (a VLM-sized
checkpoint is GBs: scale linearly). 512 KiB chunks, the default.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

RELEASE = Path("checkpoints/pushtable/best_bc")


def _station(args: argparse.Namespace) -> int:
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node

    from efm_ros.weights_transfer import WeightsFetcher

    rclpy.init()
    node = Node(f"station_{os.getpid()}")
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    stop = threading.Event()
    spinner = threading.Thread(
        target=lambda: [executor.spin_once(0.05) for _ in iter(stop.is_set, True)], daemon=True)
    spinner.start()
    fetcher = WeightsFetcher(node, Path(args.cache), timeout_s=60.0)
    client = fetcher._client(args.service)
    client.wait_for_service(timeout_sec=60.0)
    print("ready", flush=True)
    while not Path(args.go).exists():
        time.sleep(0.005)
    fetcher.fetch(f"ros://{args.service}", 1, args.sha, args.config_sha)
    print(json.dumps({"done": time.time(), "bytes": fetcher.fetched_bytes,
                      "retried_calls": fetcher.retried_calls}), flush=True)
    stop.set()
    spinner.join()
    node.destroy_node()
    rclpy.try_shutdown()
    return 0


def _checkpoint(root: Path, mb: int) -> Path:
    path = root / f"ckpt_{mb}mb" / "v1"
    path.mkdir(parents=True)
    shutil.copy(RELEASE / "config.json", path / "config.json")
    if mb == 0:
        shutil.copy(RELEASE / "model.safetensors", path / "model.safetensors")
    else:
        with open(path / "model.safetensors", "wb") as out:
            for _ in range(mb):
                out.write(os.urandom(1 << 20))
    return path


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stations", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--mb", type=int, nargs="+", default=[0, 64])
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--role", choices=["server", "station"], default="server")
    parser.add_argument("--service", default="/learner/get_weights")
    for name in ("cache", "go", "sha", "config-sha"):
        parser.add_argument(f"--{name}", default="")
    args = parser.parse_args(argv)
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    os.environ.setdefault("ROS_DOMAIN_ID", "93")
    if args.role == "station":
        return _station(args)

    import rclpy
    from rclpy.executors import MultiThreadedExecutor
    from rclpy.node import Node

    from efm_ros.weights_transfer import WeightsServer

    root = Path(tempfile.mkdtemp(prefix="efm_weights_"))
    rclpy.init()
    node = Node("learner")
    checkpoints = {mb: _checkpoint(root, mb) for mb in args.mb}
    current: dict[str, Path] = {}
    server = WeightsServer(node, "~/get_weights", lambda v: current.get("dir") if v == 1 else None)
    executor = MultiThreadedExecutor(num_threads=2)
    executor.add_node(node)
    stop = threading.Event()
    spinner = threading.Thread(
        target=lambda: [executor.spin_once(0.05) for _ in iter(stop.is_set, True)], daemon=True)
    spinner.start()
    rows = []
    try:
        for mb, ckpt in checkpoints.items():
            current["dir"] = ckpt
            size = sum(p.stat().st_size for p in ckpt.iterdir())
            for n in args.stations:
                go = root / f"go_{mb}_{n}"
                procs = [subprocess.Popen(
                    [sys.executable, "-m", "benchmarks.weights_distribution", "--role", "station",
                     "--service", server.name, "--cache", str(root / f"cache_{mb}_{n}_{i}"),
                     "--go", str(go), "--sha", _sha(ckpt / "model.safetensors"),
                     "--config-sha", _sha(ckpt / "config.json")],
                    stdout=subprocess.PIPE, text=True) for i in range(n)]
                for proc in procs:
                    assert proc.stdout.readline().strip() == "ready"
                start = time.time()
                go.touch()
                done = [json.loads(proc.stdout.readline()) for proc in procs]
                for proc in procs:
                    proc.wait(timeout=60)
                wall = max(d["done"] for d in done) - start
                rows.append({"mb": round(size / 2**20, 2), "stations": n,
                             "seconds": round(wall, 3),
                             "retried_calls": sum(d["retried_calls"] for d in done),
                             "MB_per_s_total": round(n * size / 2**20 / wall, 1)})
                print(f"| {size / 2**20:.1f} MB | {n} | {wall:.2f} s | "
                      f"{n * size / 2**20 / wall:.1f} MB/s | {rows[-1]['retried_calls']} |",
                      flush=True)
    finally:
        stop.set()
        spinner.join()
        node.destroy_node()
        rclpy.try_shutdown()
        shutil.rmtree(root, ignore_errors=True)
    if args.json:
        args.json.write_text(json.dumps({"command": "python -m benchmarks.weights_distribution",
                                         "chunk_bytes": 512 * 1024, "rows": rows}, indent=2)
                             + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
