"""Episodes per hour and learner idle against the number of simulated stations (issue 16,
item 7): the make demo deployment (config/sim_practice.yaml: PushTable, 64 px, conv_efm,
the shipped Stage 1) with 1, 2, 4, 8 stations, each station composed in one process.

    python -m benchmarks.fleet_scaling [--stations 1 2 4 8] [--rounds 3] [--json OUT]

Each run goes ``--rounds`` learning rounds of N x B = 16 x 64 samples; the rate counts the
episodes the learner received while they ran (efm_ros benchmarks.practice_throughput's
measurement). On one machine all stations share its cores with the learner, so the curve
shows where *this machine* saturates; docs/SCALING.md reads it for a fleet, where each
station is its own computer.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

from benchmarks.practice_throughput import over_ros, with_overrides


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--params", type=Path, default=Path("config/sim_practice.yaml"))
    parser.add_argument("--stage1", type=Path, default=Path("checkpoints/pushtable"))
    parser.add_argument("--stations", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    os.environ.setdefault("ROS_DOMAIN_ID", "95")
    rows = []
    print("| stations | wall [s] | episodes | episodes/hour | per station | learner idle | "
          "CPU s by node type |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for n in args.stations:
        stations = "[" + ",".join(f"station_{i}" for i in range(n)) + "]"
        params = with_overrides(args.params, [f"/coordinator:stations={stations}"],
                                Path(tempfile.mkdtemp(prefix="efm-scaling-")))
        r = over_ros(params, args.stage1, args.rounds, compose=True)
        rate = 3600 * r["episodes"] / r["wall_s"]
        row = {"stations": n, "wall_s": round(r["wall_s"], 1), "episodes": r["episodes"],
               "episodes_per_hour": round(rate), "per_station_per_hour": round(rate / n),
               "learner_idle": round(1 - r["learn_s"] / r["wall_s"], 3),
               "learn_s": round(r["learn_s"], 1),
               "cpu_s_by_node": {k: round(v, 1) for k, v in r["cpu_s_by_node"].items()},
               "step_ms": round(r["timing"]["step_ms"], 2)}
        rows.append(row)
        cpu = ", ".join(f"{k} {v:.0f}" for k, v in row["cpu_s_by_node"].items())
        print(f"| {n} | {row['wall_s']:.0f} | {r['episodes']} | {rate:.0f} | "
              f"{rate / n:.0f} | {row['learner_idle']:.0%} | {cpu} |", flush=True)
    if args.json:
        args.json.write_text(json.dumps({
            "command": "python -m benchmarks.fleet_scaling", "rounds": args.rounds,
            "samples_per_round": "16 x 64", "cores": os.cpu_count(), "rows": rows,
        }, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
