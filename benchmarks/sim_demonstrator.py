"""Scripted demonstrator success rates (issue 3: >= 90% over 200 Block2Block episodes).

    python -m benchmarks.sim_demonstrator [--episodes 200]

Episode k uses env seed k (k = 0 .. N-1), 96x96 images, the default 100-step limit and
ground-truth success (evaluation only). Also reports the other families and the
sub-optimality knob's effect on episode length.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any

os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np

import efm_sim
from efm_sim.demonstrators import PushTableDemonstrator
from efm_sim.rollout import record_episode


def evaluate(family: str, suboptimality: float, episodes: int) -> dict[str, Any]:
    env = efm_sim.make_env("pushtable")
    demo = PushTableDemonstrator(suboptimality=suboptimality)
    start = time.perf_counter()
    eps = [record_episode(env, demo, k, options={"task_family": family}) for k in range(episodes)]
    env.close()
    ok = [e.success for e in eps]
    return {
        "family": family,
        "suboptimality": suboptimality,
        "episodes": episodes,
        "success_rate": float(np.mean(ok)),
        "successes": int(np.sum(ok)),
        "mean_length": float(np.mean([e.length for e in eps])),
        "mean_length_success": float(np.mean([e.length for e in eps if e.success] or [np.nan])),
        "failed_seeds": [e.seed for e in eps if not e.success],
        "seconds": time.perf_counter() - start,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--episodes", type=int, default=200)
    p.add_argument("--quick", action="store_true", help="only Block2Block at the default knob")
    args = p.parse_args()
    runs = [("block2block", 0.5)]
    if not args.quick:
        runs += [
            ("block2block", 0.0),
            ("block2block", 1.0),
            ("block2location", 0.5),
            ("separate", 0.5),
        ]
    rows = [evaluate(f, q, args.episodes) for f, q in runs]
    print("| family | suboptimality | success | mean length (all / successful) |")
    print("|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['family']} | {r['suboptimality']} | {r['successes']}/{r['episodes']} "
            f"({100 * r['success_rate']:.1f}%) | {r['mean_length']:.1f} / "
            f"{r['mean_length_success']:.1f} |"
        )
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
