"""Soak: many practice rounds with every node's memory, open file descriptors and threads
sampled (issue 17). Not a CI test: minutes to hours.

    python -m benchmarks.soak [--minutes 10] [--every 10] [--json OUT]

Runs the make demo deployment (config/sim_practice.yaml: two PushTable stations, lockstep
simulation, i.e. as fast as the CPUs allow, the shipped Stage 1) in a process per node,
samples each process's RSS, file descriptors and threads from /proc every ``--every``
seconds, and reports per node: first and last sample, the largest, and the least-squares
slope per hour of the second half (after warm-up). A leak shows as a slope that does not
vanish; bags and checkpoints are written all the while.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np


def sample(pid: int) -> dict[str, float] | None:
    """RSS [MB], open file descriptors and threads of a process (None if it is gone)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        fds = len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    return {"rss_mb": int(fields["VmRSS"].split()[0]) / 1024, "fds": fds,
            "threads": int(fields["Threads"])}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--params", type=Path, default=Path("config/sim_practice.yaml"))
    parser.add_argument("--stage1", type=Path, default=Path("checkpoints/pushtable"))
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--every", type=float, default=10.0)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    os.environ.setdefault("ROS_DOMAIN_ID", "96")

    from efm_ros.bringup import Graph
    from efm_ros.demo import deployment
    from efm_ros.node_set import load_params, practice_nodes

    out = Path(tempfile.mkdtemp(prefix="efm-soak-"))
    params = deployment(args.params, out, {"policy": args.stage1 / "best_bc",
                                           "reward": args.stage1 / "best_steps_to_go"})
    graph = Graph(practice_nodes(load_params(params), sim=True), params, out / "logs")
    series: dict[str, list[tuple[float, dict]]] = {name: [] for name in graph.procs}
    start = time.monotonic()
    try:
        while time.monotonic() - start < 60 * args.minutes:
            now = time.monotonic() - start
            for name, proc in graph.procs.items():
                got = sample(proc.pid)
                if got is not None:
                    series[name].append((now, got))
            assert not graph.poll(), f"a node exited: {graph.poll()}"
            time.sleep(args.every)
        versions = sorted(int(p.name[1:]) for p in (out / "learner" / "policy").glob("v*"))
    finally:
        codes = graph.stop()
    bags = len([p for p in (out / "bags").rglob("metadata.yaml")])
    report = {"minutes": args.minutes, "rounds": max(versions, default=0), "bags": bags,
              "exit_codes": codes, "nodes": {}}
    print(f"{report['rounds']} rounds, {bags} bags in {args.minutes:.0f} min; exit codes "
          f"{sorted(set(codes.values()))}")
    print("| node | RSS MB at 25% / 50% / 75% / 100% of the run | slope MB/h (2nd half) | "
          "fds 25% / 100% | threads 25% / 100% |")
    print("| --- | --- | --- | --- | --- |")
    for name, points in series.items():
        if len(points) < 4:
            continue
        t = np.array([p[0] for p in points]) / 3600
        rss = np.array([p[1]["rss_mb"] for p in points])
        half = len(t) // 2
        slope = float(np.polyfit(t[half:], rss[half:], 1)[0])
        fds = [p[1]["fds"] for p in points]
        threads = [p[1]["threads"] for p in points]
        quarters = [rss[min(len(rss) - 1, int(q * len(rss)))] for q in (0.25, 0.5, 0.75)]
        quarters.append(rss[-1])
        q1 = len(points) // 4
        report["nodes"][name] = {
            "rss_mb_quarters": [round(float(v), 1) for v in quarters],
            "rss_mb": [round(rss[0], 1), round(rss[-1], 1), round(rss.max(), 1)],
            "rss_slope_mb_per_h_second_half": round(slope, 1),
            "fds": [fds[0], fds[-1], max(fds)], "threads": [threads[0], threads[-1],
                                                              max(threads)],
            "samples": len(points)}
        print(f"| {name} | {' / '.join(f'{v:.0f}' for v in quarters)} | {slope:+.0f} | "
              f"{fds[q1]} / {fds[-1]} | {threads[q1]} / {threads[-1]} |")
    if args.json:
        args.json.write_text(json.dumps({"command": "python -m benchmarks.soak", **report},
                                        indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
