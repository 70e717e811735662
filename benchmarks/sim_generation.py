"""Demo generation throughput and dataset bytes per episode (issue 3, item 8).

    python -m benchmarks.sim_generation [--episodes 60] [--workers 2]

Runs ``efm_sim.generate`` code paths into a temporary directory: PushTable at 96x96 and
224x224 with ``--workers`` processes (episodes/minute, bytes/episode), and 10,000
PointMass demos (in memory and written to disk).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("MUJOCO_GL", "egl")

from efm_sim import dataset as ds
from efm_sim import generate
from efm_sim import pointmass as pm


def _bytes_per_episode(out: Path) -> float:
    files = list(out.glob(ds.EPISODE_GLOB))
    return sum(f.stat().st_size for f in files) / max(1, len(files))


def pushtable(episodes: int, workers: int, size: int, root: Path) -> dict[str, Any]:
    out = root / f"pushtable_{size}"
    start = time.perf_counter()
    generate.generate_pushtable(
        out,
        episodes,
        seed=0,
        workers=workers,
        env_kwargs={"image_size": size},
        demo_kwargs={},
        progress=False,
    )
    dt = time.perf_counter() - start
    data = ds.EpisodeDataset(out)
    lengths = [e.length for e in data.iter_episodes(load_images=False)]
    return {
        "what": f"pushtable {size}x{size}, {workers} workers",
        "episodes_per_min": episodes / dt * 60,
        "bytes_per_episode": _bytes_per_episode(out),
        "mean_length": sum(lengths) / len(lengths),
        "seconds": dt,
    }


def pointmass(root: Path, episodes: int = 10_000) -> list[dict[str, Any]]:
    start = time.perf_counter()
    eps = pm.generate_demos(episodes, seed=0)
    mem = time.perf_counter() - start
    out = root / "pointmass"
    start = time.perf_counter()
    generate.generate_pointmass(out, episodes, seed=0, progress=False)
    disk = time.perf_counter() - start
    stats = pm.summarize(eps)
    return [
        {
            "what": f"pointmass {episodes} demos in memory",
            "episodes_per_min": episodes / mem * 60,
            "bytes_per_episode": float("nan"),
            "mean_length": stats.mean_length,
            "seconds": mem,
        },
        {
            "what": f"pointmass {episodes} demos to disk",
            "episodes_per_min": episodes / disk * 60,
            "bytes_per_episode": _bytes_per_episode(out),
            "mean_length": stats.mean_length,
            "seconds": disk,
        },
    ]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--episodes", type=int, default=60)
    p.add_argument("--workers", type=int, default=2)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        rows = [pushtable(args.episodes, args.workers, s, root) for s in (96, 224)]
        rows += pointmass(root)
    print("| what | episodes/min | bytes/episode | mean length | seconds |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['what']} | {r['episodes_per_min']:.0f} | {r['bytes_per_episode']:.0f} "
            f"| {r['mean_length']:.1f} | {r['seconds']:.1f} |"
        )
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
