"""Env steps per second with rendering (issue 3, item 8): default res and 224x224.

python -m benchmarks.sim_env_steps [--seconds 3]
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


def steps_per_second(name: str, seconds: float, **kwargs: Any) -> float:
    """Random-action steps/s (resets included), observations rendered every step."""
    env = efm_sim.make_env(name, **kwargs)
    rng = np.random.default_rng(0)
    env.reset(seed=0)
    high = env.action_space.high
    steps, seed = 0, 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        _, _, terminated, truncated, _ = env.step(rng.uniform(-high, high))
        steps += 1
        if terminated or truncated:
            seed += 1
            env.reset(seed=seed)
    rate = steps / (time.perf_counter() - start)
    env.close()
    return rate


def run(seconds: float = 3.0) -> list[dict[str, Any]]:
    rows = []
    for name in ("pushtable", "bananatable"):
        for size in (96, 224):
            rows.append(
                {
                    "env": name,
                    "image": f"{size}x{size}",
                    "steps_per_s": steps_per_second(name, seconds, image_size=size),
                }
            )
    rows.append(
        {
            "env": "pointmass",
            "image": "state only",
            "steps_per_s": steps_per_second("pointmass", seconds),
        }
    )
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--seconds", type=float, default=3.0)
    args = p.parse_args()
    rows = run(args.seconds)
    print("| env | image | steps/s (1 process) |\n|---|---|---|")
    for r in rows:
        print(f"| {r['env']} | {r['image']} | {r['steps_per_s']:.0f} |")
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
