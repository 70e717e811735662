"""Generate ALOHA insertion demonstrations in the station's recording layout (Appendix D.3).

    python -m efm_sim.aloha_generate --out data/aloha --episodes 50 --workers 2
    python -m efm_sim.aloha_generate --out data/aloha_tiny --episodes 10 --image-size 48x64
    python -m efm_sim.aloha_generate --measure 200          # success rate, no files, no images

One ``episode_<i>.hdf5`` per kept episode (``efm_sim.aloha_dataset``). Candidate ``i``
runs the scripted demonstrator from env seed ``seed + i``; only successful candidates
(the peg touches the pin) are kept, as for ACT's scripted data, so indices can have gaps.
Every attempt is recorded in ``attempts.json`` (attempted, kept, failed indices), so
re-running after a crash or ^C skips finished episode files and known failures and
finishes the job. Episodes end at the first pin contact (``--full-length`` records the
whole ``--max-episode-steps`` like ACT). Runs across ``--workers`` processes with a
progress bar.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import logging
import multiprocessing as mp
import os
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from efm_sim import aloha_dataset as ads

logger = logging.getLogger(__name__)

META = "meta.json"
ATTEMPTS = "attempts.json"
#: held by the generator writing the directory (efm_sim.aloha_generate.exclusive)
LOCK = ".generate.lock"
SCHEMA_VERSION = 1


def parse_image_size(text: str) -> tuple[int, int]:
    """``"480x640"`` -> (480, 640) (height x width)."""
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"image size must be HxW, e.g. 480x640, got {text!r}"
        ) from None
    if h < 8 or w < 8:
        raise argparse.ArgumentTypeError(f"image size must be at least 8x8, got {text!r}")
    return h, w


def run_episode(
    env: Any,
    demo: Any,
    seed: int,
    writer: ads.AlohaEpisodeWriter | None = None,
) -> dict[str, Any]:
    """Roll out ``demo`` in ``env`` from ``reset(seed=seed)``; stream it into ``writer``.

    The demonstrator's randomness comes from ``default_rng([seed, 1])`` (as
    ``efm_sim.rollout``), so the seed fixes the whole episode. Returns ground-truth
    ``success``, ``max_stage``, ``length`` and the step of first success (evaluation only).
    """
    obs, info = env.reset(seed=seed)
    demo.bind(env)
    demo.reset(obs, np.random.default_rng([int(seed), 1]))
    success_step = -1
    while True:
        action = np.asarray(demo.act(obs), dtype=np.float32)
        applied = np.clip(action, env.action_space.low, env.action_space.high)
        if writer is not None:
            writer.append(obs["qpos"], obs["qvel"], obs["effort"], applied, obs.get("images"))
        obs, _, terminated, truncated, info = env.step(action)
        if info["success"] and success_step < 0:
            success_step = env.elapsed_steps
        if terminated or truncated:
            break
    return {
        "seed": int(seed),
        "success": success_step > 0,
        "max_stage": int(info["max_stage"]),
        "length": int(env.elapsed_steps),
        "success_step": int(success_step),
    }


# -- workers: one env (and GL context) per process --------------------------------------
_WORKER: dict[str, Any] = {}


def _init_worker(env_kwargs: dict[str, Any], demo_kwargs: dict[str, Any]) -> None:
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles ^C
    from efm_sim.aloha import AlohaInsertionEnv
    from efm_sim.aloha_demonstrator import AlohaInsertionDemonstrator

    _WORKER["env"] = env = AlohaInsertionEnv(**env_kwargs)
    _WORKER["demo"] = AlohaInsertionDemonstrator(env=env, **demo_kwargs)


def _work(job: tuple[Path | None, int, int, int]) -> dict[str, Any]:
    out, index, seed, compression = job
    env, demo = _WORKER["env"], _WORKER["demo"]
    start = time.perf_counter()
    if out is None:
        result = run_episode(env, demo, seed)
    else:
        size = (env.height, env.width) if env.cameras else None
        with ads.AlohaEpisodeWriter(
            ads.episode_path(out, index), env.cameras, size, True, compression
        ) as writer:
            result = run_episode(env, demo, seed, writer)
            if result["success"]:
                writer.finish({**result, "index": index, "demonstrator": demo.describe()})
    result["index"] = index
    result["seconds"] = time.perf_counter() - start
    return result


def _run_jobs(
    jobs: list[tuple[Path | None, int, int, int]],
    keep: int | None,
    workers: int,
    env_kwargs: dict[str, Any],
    demo_kwargs: dict[str, Any],
    bar: tqdm,
    on_result: Any,
) -> None:
    """Run candidate jobs in order; with ``keep``, stop once that many succeeded (never
    more in flight than still needed, so exactly ``keep`` episode files are written)."""
    kept = 0
    done = 0

    def record(res: dict[str, Any]) -> None:
        nonlocal kept, done
        kept += bool(res["success"])
        done += 1
        on_result(res)
        bar.update(1 if keep is None or res["success"] else 0)
        bar.set_postfix(success=f"{kept / done:.2f}", attempted=done)

    it = iter(jobs)
    if workers <= 1:
        _init_worker(env_kwargs, demo_kwargs)
        for job in it:
            if keep is not None and kept >= keep:
                break
            record(_work(job))
        return
    ctx = mp.get_context("spawn")
    with ctx.Pool(workers, initializer=_init_worker, initargs=(env_kwargs, demo_kwargs)) as pool:
        pending: list[Any] = []
        try:
            exhausted = False
            while True:
                need = None if keep is None else keep - kept
                while (
                    not exhausted
                    and len(pending) < 2 * workers
                    and (need is None or len(pending) < need)
                ):
                    job = next(it, None)
                    if job is None:
                        exhausted = True
                        break
                    pending.append(pool.apply_async(_work, (job,)))
                if not pending:
                    break
                pending[0].wait()
                finished = [p for p in pending if p.ready()]
                pending = [p for p in pending if not p.ready()]
                for p in finished:
                    record(p.get())
        except KeyboardInterrupt:
            pool.terminate()
            raise


def _load_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.exists() else {}


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}{ads.TMP_SUFFIX}")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True))
    os.replace(tmp, path)


def generate(
    out: Path,
    episodes: int,
    seed: int = 0,
    workers: int = 1,
    env_kwargs: dict[str, Any] | None = None,
    demo_kwargs: dict[str, Any] | None = None,
    compression: int = 4,
    max_attempts: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Keep ``episodes`` successful demos in ``out`` (resumable); returns the attempt log."""
    out.mkdir(parents=True, exist_ok=True)
    with exclusive(out):
        return _generate(out, episodes, seed, workers, env_kwargs, demo_kwargs, compression,
                         max_attempts, progress)


@contextlib.contextmanager
def exclusive(out: Path) -> Iterator[None]:
    """Hold ``out``'s generation lock: a second generator on the same directory would
    delete the first one's in-progress temporaries as stale, so it is refused."""
    with (out / LOCK).open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise SystemExit(
                f"another generator is writing to {out} (it holds {out / LOCK}); wait for "
                "it to finish or use another --out directory"
            ) from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _generate(
    out: Path,
    episodes: int,
    seed: int,
    workers: int,
    env_kwargs: dict[str, Any] | None,
    demo_kwargs: dict[str, Any] | None,
    compression: int,
    max_attempts: int | None,
    progress: bool,
) -> dict[str, Any]:
    env_kwargs, demo_kwargs = dict(env_kwargs or {}), dict(demo_kwargs or {})
    meta = {
        "schema_version": SCHEMA_VERSION,
        "format": "aloha_hdf5",
        "env_name": "aloha_insertion",
        "seed": seed,
        "env_kwargs": env_kwargs,
        "demonstrator_kwargs": demo_kwargs,
    }
    old = _load_json(out / META)
    for k, v in meta.items():
        if k in old and old[k] != v:
            raise SystemExit(
                f"{out} holds episodes generated with {k}={old[k]!r}, not {v!r}; "
                "use another --out directory"
            )
    _write_json(out / META, meta)
    for tmp in out.glob(f".episode_*{ads.TMP_SUFFIX}"):
        tmp.unlink(missing_ok=True)
    kept = sorted(
        i
        for p in out.glob(ads.EPISODE_GLOB)
        if (i := ads.episode_index_of(p)) is not None and ads.is_complete_episode(p)
    )
    log = _load_json(out / ATTEMPTS)
    failed = set(log.get("failed", []))
    limit = max_attempts if max_attempts is not None else max(10 * episodes, episodes + 100)
    kept_set = set(kept)
    todo = [i for i in range(limit) if i not in failed and i not in kept_set]
    jobs = [(out, i, seed + i, compression) for i in todo]
    bar = tqdm(
        total=episodes,
        initial=min(len(kept), episodes),
        desc="aloha demos",
        unit="ep",
        disable=not progress,
    )
    start = time.perf_counter()
    new = {"kept": 0, "attempted": 0}

    def on_result(res: dict[str, Any]) -> None:
        new["attempted"] += 1
        if res["success"]:
            kept_set.add(res["index"])
            new["kept"] += 1
        else:
            failed.add(res["index"])
        _write_json(out / ATTEMPTS, _attempt_log(kept_set, failed))

    try:
        if len(kept) < episodes:
            _run_jobs(jobs, episodes - len(kept), workers, env_kwargs, demo_kwargs, bar, on_result)
    finally:
        bar.close()
        _write_json(out / ATTEMPTS, _attempt_log(kept_set, failed))
    seconds = time.perf_counter() - start
    summary = {
        **_attempt_log(kept_set, failed),
        "new_kept": new["kept"],
        "new_attempted": new["attempted"],
        "seconds": seconds,
    }
    if len(kept_set) < episodes:
        logger.warning(
            "only %d of %d episodes kept after %d attempts", len(kept_set), episodes, limit
        )
    return summary


def _attempt_log(kept: set[int], failed: set[int]) -> dict[str, Any]:
    attempted = len(kept) + len(failed)
    return {
        "attempted": attempted,
        "kept": len(kept),
        "failed": sorted(failed),
        "success_rate": len(kept) / attempted if attempted else None,
    }


def measure(
    episodes: int,
    seed: int = 0,
    workers: int = 1,
    env_kwargs: dict[str, Any] | None = None,
    demo_kwargs: dict[str, Any] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Ground-truth success of the demonstrator over seeds ``seed .. seed+episodes-1``."""
    env_kwargs = {"cameras": (), **(env_kwargs or {})}
    results: list[dict[str, Any]] = []
    bar = tqdm(total=episodes, desc="aloha measure", unit="ep", disable=not progress)
    start = time.perf_counter()
    jobs: list[tuple[Path | None, int, int, int]] = [
        (None, i, seed + i, 0) for i in range(episodes)
    ]
    _run_jobs(jobs, None, workers, env_kwargs, dict(demo_kwargs or {}), bar, results.append)
    bar.close()
    seconds = time.perf_counter() - start
    n = len(results)
    stages = np.array([r["max_stage"] for r in results])
    ok = [r for r in results if r["success"]]
    return {
        "episodes": n,
        "success_rate": len(ok) / n if n else None,
        "max_stage_at_least": {k: float(np.mean(stages >= k)) for k in range(1, 5)} if n else {},
        "mean_success_step": float(np.mean([r["success_step"] for r in ok])) if ok else None,
        "failed_seeds": sorted(r["seed"] for r in results if not r["success"]),
        "episodes_per_s": n / seconds if seconds > 0 else None,
        "workers": workers,
    }


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m efm_sim.aloha_generate",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--out", type=Path, help="output directory (one .hdf5 per episode)")
    p.add_argument("--episodes", type=int, default=None, help="successful episodes to keep")
    p.add_argument(
        "--measure",
        type=int,
        default=None,
        metavar="N",
        help="only measure GT success over N seeded episodes (no images, no files)",
    )
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes")
    p.add_argument("--seed", type=int, default=0, help="base seed (candidate i: seed + i)")
    p.add_argument(
        "--image-size",
        type=parse_image_size,
        default=(480, 640),
        help="camera frames HxW (default 480x640, a station's RealSense stream)",
    )
    p.add_argument("--no-images", action="store_true", help="record joints and actions only")
    p.add_argument("--suboptimality", type=float, default=None, help="demonstrator knob in [0, 1]")
    p.add_argument("--max-episode-steps", type=int, default=400)
    p.add_argument(
        "--full-length",
        action="store_true",
        help="keep recording after the peg touches the pin (fixed-length episodes as ACT)",
    )
    p.add_argument("--max-attempts", type=int, default=None, help="give up after this many")
    p.add_argument("--compression", type=int, default=4, help="gzip level for images (0: none)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    env_kwargs: dict[str, Any] = {"max_episode_steps": args.max_episode_steps}
    if args.full_length:
        env_kwargs["terminate_on_success"] = False
    demo_kwargs: dict[str, Any] = {}
    if args.suboptimality is not None:
        if not 0.0 <= args.suboptimality <= 1.0:
            raise SystemExit("--suboptimality must be in [0, 1]")
        demo_kwargs["suboptimality"] = args.suboptimality
    workers = max(1, args.workers)
    try:
        if args.measure is not None:
            if args.measure < 1:
                raise SystemExit("--measure must be >= 1")
            report = measure(
                args.measure, args.seed, workers, env_kwargs, demo_kwargs, not args.no_progress
            )
            print(json.dumps(report, sort_keys=True))
            logger.info(
                "demonstrator GT success %.3f over %d seeded episodes (%.2f episodes/s)",
                report["success_rate"],
                report["episodes"],
                report["episodes_per_s"],
            )
            return 0
        if args.out is None or args.episodes is None:
            raise SystemExit("--out and --episodes are required (or use --measure N)")
        if args.episodes < 0:
            raise SystemExit("--episodes must be >= 0")
        if args.no_images:
            env_kwargs["cameras"] = []
        else:
            env_kwargs["image_size"] = list(args.image_size)
        summary = generate(
            args.out,
            args.episodes,
            args.seed,
            workers,
            env_kwargs,
            demo_kwargs,
            args.compression,
            args.max_attempts,
            not args.no_progress,
        )
    except KeyboardInterrupt:
        print(
            f"\ninterrupted; finished episodes are kept in {args.out}; re-run to resume",
            file=sys.stderr,
        )
        return 130
    rate = summary["new_kept"] / summary["seconds"] if summary["seconds"] > 0 else 0.0
    logger.info(
        "wrote %d new episode files to %s (%d attempted now; %d kept of %d attempted in "
        "total) in %.1f s, %.3f episodes/s",
        summary["new_kept"],
        args.out,
        summary["new_attempted"],
        summary["kept"],
        summary["attempted"],
        summary["seconds"],
        rate,
    )
    return 0 if summary["kept"] >= args.episodes else 1


if __name__ == "__main__":
    sys.exit(main())
