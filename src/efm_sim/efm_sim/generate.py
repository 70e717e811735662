"""Generate a demonstration dataset (paper Stage 1 data, Appendix D).

    python -m efm_sim.generate --env pushtable --episodes 1000 --out data/pushtable
    python -m efm_sim.generate --env pointmass --episodes 10000 --out data/pointmass

One HDF5 file per episode (``efm_sim.dataset``). Runs across ``--workers`` processes
with a progress bar and is resumable: complete episode files already in ``--out`` are
kept and skipped, so re-running after a crash or ^C finishes the job. Episode ``i`` of
PushTable uses env seed ``seed + i``; PointMass candidate ``j`` uses ``seed + j`` and
candidates shorter than 10 steps are dropped (notebook rule), so its file indices can
have gaps. Failed demonstrations are kept and marked ``success=False``.
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing as mp
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tqdm import tqdm

from efm_sim import dataset as ds

logger = logging.getLogger(__name__)

DEMO_ENVS = ("pointmass", "pushtable")


def _check_meta(out: Path, meta: dict[str, Any]) -> None:
    """Refuse to mix settings in one directory; write meta.json on first use."""
    path = out / "meta.json"
    if path.exists():
        old = ds.EpisodeDataset(out).meta
        for k, v in meta.items():
            if k in old and old[k] != v:
                raise SystemExit(
                    f"{out} holds a dataset generated with {k}={old[k]!r}, not {v!r}; "
                    "use another --out directory"
                )
    ds.write_meta(out, meta)


def _clean_tmp(out: Path) -> None:
    for tmp in out.glob(f".episode_*{ds.TMP_SUFFIX}"):
        tmp.unlink(missing_ok=True)


def _existing(out: Path) -> set[int]:
    done = set()
    for p in out.glob(ds.EPISODE_GLOB):
        idx = ds.episode_index_of(p)
        if idx is not None and ds.is_complete_episode(p):
            done.add(idx)
    return done


def generate_pointmass(out: Path, episodes: int, seed: int, progress: bool = True) -> int:
    """Write ``episodes`` kept PointMass demos to ``out``; returns files written now."""
    import numpy as np

    from efm_sim import pointmass as pm

    _check_meta(out, {"env_name": "pointmass", "seed": seed, "demonstrator": "waypoint_pd"})
    _clean_tmp(out)
    done = _existing(out)
    written, kept, candidate = 0, 0, 0
    bar = tqdm(total=episodes, desc="pointmass demos", unit="ep", disable=not progress)
    block = 2048
    while kept < episodes:
        seeds = [pm.demo_seed(seed, candidate + i) for i in range(block)]
        batch = pm._batch_to_episodes(
            np.array(seeds),
            pm.NUM_WAYPOINTS,
            pm.MAX_EPISODE_STEPS,
            pm.MIN_DEMO_LENGTH,
            straight=False,
        )
        for ep in batch:
            if kept >= episodes:
                break
            idx = ep.seed - seed
            if idx not in done:
                ds.write_episode(ds.episode_path(out, idx), ep)
                written += 1
            kept += 1
            bar.update(1)
        candidate += block
    bar.close()
    return written


# -- PushTable: one process per core, each with its own env (and GL context) ----------
_WORKER: dict[str, Any] = {}


def _init_worker(env_kwargs: dict[str, Any], demo_kwargs: dict[str, Any]) -> None:
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles ^C
    from efm_sim import demonstrators, make_env

    _WORKER["env"] = make_env("pushtable", **env_kwargs)
    _WORKER["demo"] = demonstrators.PushTableDemonstrator(**demo_kwargs)


def _work(job: tuple[Path, int, int, str | None]) -> tuple[int, bool, int]:
    out, index, seed, family = job
    from efm_sim.rollout import record_episode

    options = {"task_family": family} if family else None
    demo = _WORKER["demo"]
    ep = record_episode(_WORKER["env"], demo, seed, options=options, attrs=demo.describe())
    ds.write_episode(ds.episode_path(out, index), ep)
    return index, ep.success, ep.length


def generate_pushtable(
    out: Path,
    episodes: int,
    seed: int,
    workers: int,
    env_kwargs: dict[str, Any],
    demo_kwargs: dict[str, Any],
    families: Sequence[str] | None = None,
    progress: bool = True,
) -> int:
    """Write ``episodes`` PushTable demos (episode i: seed + i; families round-robin)."""
    meta = {
        "env_name": "pushtable",
        "seed": seed,
        "env_kwargs": env_kwargs,
        "demonstrator_kwargs": demo_kwargs,
        "task_families": list(families) if families else None,
    }
    _check_meta(out, meta)
    _clean_tmp(out)
    done = _existing(out)
    jobs = []
    for i in range(episodes):
        if i in done:
            continue
        fam = families[i % len(families)] if families else None
        jobs.append((out, i, seed + i, fam))
    bar = tqdm(
        total=episodes,
        initial=episodes - len(jobs),
        desc="pushtable demos",
        unit="ep",
        disable=not progress,
    )
    successes = 0
    if workers <= 1:
        _init_worker(env_kwargs, demo_kwargs)
        for job in jobs:
            _, ok, _ = _work(job)
            successes += ok
            bar.update(1)
    else:
        ctx = mp.get_context("spawn")
        init_args = (env_kwargs, demo_kwargs)
        with ctx.Pool(workers, initializer=_init_worker, initargs=init_args) as pool:
            try:
                for finished, (_, ok, _) in enumerate(
                    pool.imap_unordered(_work, jobs, chunksize=1), start=1
                ):
                    successes += ok
                    bar.update(1)
                    bar.set_postfix(success=f"{successes / finished:.2f}")
            except KeyboardInterrupt:
                pool.terminate()
                raise
    bar.close()
    return len(jobs)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m efm_sim.generate",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--env",
        required=True,
        choices=DEMO_ENVS,
        help="domain (BananaTable has no demonstrations: it is the novel task)",
    )
    p.add_argument("--episodes", type=int, required=True, help="number of episodes to keep")
    p.add_argument("--out", type=Path, required=True, help="output directory")
    p.add_argument(
        "--workers",
        type=int,
        default=os.cpu_count() or 1,
        help="worker processes (PushTable; default: all cores)",
    )
    p.add_argument("--seed", type=int, default=0, help="base seed (episode i uses seed + i)")
    p.add_argument(
        "--image-size",
        type=int,
        default=None,
        help="PushTable camera resolution (square; default: env default)",
    )
    p.add_argument(
        "--task-family",
        action="append",
        default=None,
        help="PushTable task family (repeatable; default: env's mixture)",
    )
    p.add_argument(
        "--suboptimality",
        type=float,
        default=None,
        help="PushTable demonstrator sub-optimality knob in [0, 1]",
    )
    p.add_argument(
        "--blocks",
        default=None,
        help='PushTable blocks on the board, comma-separated (e.g. "red moon,blue cube"; '
        "default: all eight)",
    )
    p.add_argument("--max-episode-steps", type=int, default=None)
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    if args.episodes < 0:
        raise SystemExit("--episodes must be >= 0")
    args.out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    try:
        if args.env == "pointmass":
            n = generate_pointmass(args.out, args.episodes, args.seed, not args.no_progress)
        else:
            env_kwargs: dict[str, Any] = {}
            if args.image_size is not None:
                env_kwargs["image_size"] = args.image_size
            if args.max_episode_steps is not None:
                env_kwargs["max_episode_steps"] = args.max_episode_steps
            if args.blocks:
                from efm_sim.pushtable import check_blocks

                try:
                    env_kwargs["blocks"] = list(check_blocks(args.blocks.split(",")))
                except ValueError as error:
                    raise SystemExit(f"--blocks: {error}") from None
            demo_kwargs: dict[str, Any] = {}
            if args.suboptimality is not None:
                demo_kwargs["suboptimality"] = args.suboptimality
            if args.task_family:
                from efm_sim.tasks import PUSHTABLE_FAMILIES, check_family

                for fam in args.task_family:
                    check_family(fam, PUSHTABLE_FAMILIES)
            n = generate_pushtable(
                args.out,
                args.episodes,
                args.seed,
                max(1, args.workers),
                env_kwargs,
                demo_kwargs,
                args.task_family,
                not args.no_progress,
            )
    except KeyboardInterrupt:
        print(
            f"\ninterrupted; finished episodes are kept in {args.out}; re-run to resume",
            file=sys.stderr,
        )
        return 130
    dt = time.perf_counter() - start
    logger.info("wrote %d new episode files to %s in %.1f s", n, args.out, dt)
    return 0


if __name__ == "__main__":
    sys.exit(main())
