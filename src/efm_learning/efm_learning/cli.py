"""``efm``: command line for the learning core (Stage 1, Stage 2, evaluation, demo).

    efm sft      --config config/pointmass.yaml        Stage 1: BC + steps-to-go SFT
    efm improve  --config config/pointmass.yaml        Stage 2: Self-Improvement (Alg. 1)
    efm eval     --config config/pointmass.yaml --checkpoint runs/pointmass/improve/best
    efm demo                                          PointMass end to end + report
    efm export onnx CHECKPOINT                         policy / steps-to-go heads as ONNX

Every command reads an experiment YAML (see config/) and accepts ``--set key.sub=value``
overrides. Outputs go under the config's ``run_dir`` (runs/ is not tracked by git).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

DEFAULT_CONFIG = "config/pointmass.yaml"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="efm",
        description=(
            "Self-Improving Embodied Foundation Models: Stage 1 supervised fine-tuning "
            "(behavioural cloning + steps-to-go prediction) and Stage 2 Self-Improvement "
            "(REINFORCE on rewards from the model's own steps-to-go predictions)."
        ),
        epilog="Example: efm demo   (PointMass data -> Stage 1 -> Stage 2 -> report)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def common(p: argparse.ArgumentParser, config_default: str | None = None) -> None:
        p.add_argument("--config", default=config_default, required=config_default is None,
                       help=f"experiment YAML (e.g. {DEFAULT_CONFIG})")
        p.add_argument("--set", dest="overrides", action="append", default=[],
                       metavar="KEY=VALUE", help="override a config key, e.g. sft.steps=1000")
        p.add_argument("--quiet", action="store_true", help="no progress bars")

    p = sub.add_parser("sft", help="Stage 1: supervised fine-tuning on a demo dataset",
                       description="Stage 1 (paper Sec. 2.1): BC + steps-to-go, batch split "
                       "uniformly; keeps best-validation checkpoints best_bc (policy init) and "
                       "best_steps_to_go (reward model) separately, plus last (resumable).")
    common(p)
    p.add_argument("--generate", action="store_true",
                   help="generate data.generate_episodes demos with efm_sim if data.dir is empty")
    p.add_argument("--no-resume", action="store_true", help="start over instead of resuming")

    p = sub.add_parser("improve", help="Stage 2: Self-Improvement from Stage 1 checkpoints",
                       description="Stage 2 (Algorithm 1): on-policy episodes ended by the "
                       "learned success detector, rewards from a frozen Stage 1 steps-to-go "
                       "checkpoint, N REINFORCE updates of B per round; keeps the best round.")
    common(p)
    p.add_argument("--no-resume", action="store_true", help="start over instead of resuming")

    p = sub.add_parser("eval", help="ground-truth evaluation of a checkpoint in simulation",
                       description="Run a checkpoint's policy on fixed simulator tasks and "
                       "report success rate and episode length (evaluation only).")
    common(p)
    p.add_argument("--checkpoint", required=True, help="checkpoint directory")
    p.add_argument("--episodes", type=int, default=200)
    p.add_argument("--greedy", action="store_true", help="take the most likely action tokens")
    p.add_argument("--split", choices=["tuning", "report"], default="tuning",
                   help="task split (docs/EVALUATION.md): choose on tuning, report on report")

    p = sub.add_parser("release", help="ship a Stage 1 run's checkpoints (weights + sums)",
                       description="Copy best_bc and best_steps_to_go of a Stage 1 run into a "
                       "release folder (no trainer state) and pin each checkpoint's SHA256SUMS "
                       "in RELEASE.json; make demo verifies the pins before using them.")
    p.add_argument("--from", dest="source", required=True, help="a Stage 1 sft/ directory")
    p.add_argument("--to", dest="dest", required=True, help="release folder")
    p.add_argument("--command", dest="made_by", default="",
                   help="the command that trained the run (recorded in RELEASE.json)")

    p = sub.add_parser("export", help="export a checkpoint's heads for another runtime (ONNX)",
                       description="Write policy.onnx and steps_to_go.onnx (batch axis "
                       "dynamic), onnx.json (source sha256, inputs, torch/onnxruntime parity) "
                       "and SHA256SUMS (docs/DEPLOY.md). Nodes need none of this: with "
                       "compute.backend onnxruntime they export each checkpoint they load.")
    p.add_argument("format", choices=["onnx"])
    p.add_argument("checkpoint", help="checkpoint directory (verified by its SHA256SUMS)")
    p.add_argument("--out", default=None, help="output directory (default CHECKPOINT/onnx)")
    p.add_argument("--heads", nargs="+", choices=["policy", "steps_to_go"],
                   default=["policy", "steps_to_go"])

    p = sub.add_parser("data", help="datasets in and out: LeRobot <-> the ALOHA layout",
                       description="import-lerobot: a LeRobot dataset (v2.0/v2.1/v3.0, parquet "
                       "+ mp4) -> ALOHA-layout HDF5 episodes that Stage 1 reads (resumable); "
                       "export-lerobot: ALOHA-layout episodes -> a LeRobot v2.1 dataset "
                       "(efm_learning.lerobot_format).")
    p.add_argument("action", choices=["import-lerobot", "export-lerobot"])
    p.add_argument("source", help="LeRobot dataset root (import) or episode folder (export)")
    p.add_argument("dest", help="episode folder (import) or new LeRobot dataset root (export)")
    p.add_argument("--fps", type=float, default=50.0, help="export: frame rate [Hz]")
    p.add_argument("--codec", default="libsvtav1",
                   help="export: video encoder (libsvtav1 = LeRobot's AV1; libx264)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")

    p = sub.add_parser("demo", help="PointMass end to end: data, Stage 1, Stage 2, report",
                       description="Generates PointMass demos if needed, runs Stage 1, then "
                       "Stage 2 for each seed, evaluates, plots trajectories and writes "
                       "<run_dir>/report.md.")
    common(p, DEFAULT_CONFIG)
    p.add_argument("--seeds", type=int, nargs="+", default=[0], help="Stage 2 seeds")
    p.add_argument("--quick", action="store_true",
                   help="a short version (fewer demos, steps and rounds) for a smoke test")
    p.add_argument("--figure", default=None, help="also save the trajectory figure here")
    return parser


#: the shortened settings of the CI test (tests/efm_learning/test_self_improvement.py)
QUICK_OVERRIDES = [
    "data.generate_episodes=1500",
    "sft.steps=4000",
    "sft.batch_size=128",
    "sft.lr=1e-3",
    "improve.rounds=30",
    "improve.success_threshold=1.0",
    "improve.eval_episodes=100",
    "improve.eval_every=5",
]


def _data(args: argparse.Namespace) -> int:
    from efm_learning.lerobot_format import LeRobotFormatError, export_lerobot, import_lerobot
    from efm_sim.aloha_dataset import AlohaEpisodeError

    try:
        if args.action == "import-lerobot":
            written = import_lerobot(args.source, args.dest, progress=not args.quiet)
            print(json.dumps({"imported": len(written), "into": args.dest}))
        else:
            out = export_lerobot(args.source, args.dest, fps=args.fps, codec=args.codec,
                                 progress=not args.quiet)
            print(json.dumps({"exported_to": str(out)}))
    except (LeRobotFormatError, AlohaEpisodeError) as error:
        print(f"efm data: {error}", file=sys.stderr)
        return 2
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING if getattr(args, "quiet", False) else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from efm_learning.config import ConfigError, load_config

    if args.command == "release":
        return _release(args)
    if args.command == "export":
        return _export(args)
    if args.command == "data":
        return _data(args)
    overrides = list(args.overrides)
    if args.command == "demo" and args.quick:
        overrides = [*QUICK_OVERRIDES, "run_dir=runs/pointmass_quick",
                     "data.dir=data/pointmass_quick", *overrides]
    try:
        cfg = load_config(args.config, overrides)
    except ConfigError as error:
        print(f"efm: config error: {error}", file=sys.stderr)
        return 2
    progress = not args.quiet

    if args.command == "sft":
        from efm_learning.pipeline import ensure_dataset
        from efm_learning.sft import train_sft

        if args.generate:
            ensure_dataset(cfg, progress=progress)
        result = train_sft(cfg, resume=not args.no_resume, progress=progress)
        print(json.dumps({"stage": "sft", "best_val": result.best_val,
                          "checkpoints": {k: str(v) for k, v in result.checkpoints.items()},
                          "samples_per_s": round(result.samples_per_s)}, indent=2))
    elif args.command == "improve":
        from efm_learning.self_improvement import self_improve

        result = self_improve(cfg, resume=not args.no_resume, progress=progress)
        print(json.dumps({"stage": "improve", "rounds_run": result.rounds_run,
                          "best_round": result.best_round, "best": result.best_eval,
                          "stopped_early": result.stopped_early,
                          "directory": str(result.directory)}, indent=2))
    elif args.command == "eval":
        from efm_learning.checkpoint import load_checkpoint
        from efm_learning.evaluation import Evaluator

        policy, _ = load_checkpoint(Path(args.checkpoint))
        ev = Evaluator(cfg.env, policy, cfg.improve.max_episode_steps, args.episodes,
                       greedy=args.greedy, seed=cfg.seed, env_kwargs=cfg.env_kwargs,
                       split=args.split)
        result = ev.evaluate(policy=policy)
        print(json.dumps({"checkpoint": args.checkpoint, "num_episodes": result.num_episodes,
                          "split": args.split, **result.as_metrics()}, indent=2))
    elif args.command == "demo":
        from efm_learning.pipeline import run_pipeline

        print(f"efm demo: PointMass end to end with {args.config} -> {cfg.run_dir}/\n"
              "  1. demonstrations: waypoint-PD demos (sub-optimal detours), efm_sim\n"
              "  2. Stage 1: BC + steps-to-go SFT (best_bc / best_steps_to_go checkpoints)\n"
              "  3. Stage 2: Self-Improvement with the learned reward and success detector\n"
              f"  4. report: {cfg.run_dir}/report.md, learning curves, trajectory plot")
        run_pipeline(cfg, args.seeds, Path(args.figure) if args.figure else None,
                     progress=progress)
    return 0


def _export(args: argparse.Namespace) -> int:
    from efm_learning.onnx_runtime import ExportError, export_checkpoint

    try:
        out = export_checkpoint(args.checkpoint, args.out, tuple(args.heads))
    except (ExportError, OSError) as error:  # a ChecksumError is a ValueError too
        print(f"efm export: {error}", file=sys.stderr)
        return 2
    except ValueError as error:
        print(f"efm export: {args.checkpoint}: {error}", file=sys.stderr)
        return 2
    print((out / "onnx.json").read_text())
    return 0


def _release(args: argparse.Namespace) -> int:
    from efm_learning.checkpoint import read_checkpoint_config, write_release
    from efm_learning.sft import BEST_BC, BEST_STEPS_TO_GO

    source = Path(args.source)
    info = {"made_by": args.made_by, "source": str(source)}
    for name in (BEST_BC, BEST_STEPS_TO_GO):
        meta = read_checkpoint_config(source / name).get("metadata", {})
        info[name] = {"step": meta.get("step"), "val": meta.get("val")}
    dest = write_release(source, args.dest, (BEST_BC, BEST_STEPS_TO_GO), info)
    print(json.dumps({"release": str(dest), **info}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
