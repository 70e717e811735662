"""Stage 1 speed side by side (issue 13 item 6): the same ``efm sft`` run of
``config/pushtable.yaml`` (same data, seed and steps) three ways, in one process, one after
another: ``prepare_for_training`` a no-op (contiguous NCHW weights, eager: the code before
issue 13 item 6 but for the spatial-softmax grid cache, which every variant has),
channels-last conv weights, and channels-last plus ``sft.compile`` (inductor).

    .venv/bin/python -m benchmarks.stage1_speed [--steps 300] [--episodes 300]
        [--threads 1] [--out runs/bench/stage1_speed]

Reports samples/s over the whole run (compilation included) and after the first 50
steps (compiled by then), and the training and validation losses of each run at
each evaluation, so "faster" can be read against "the same loss curve".
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

VARIANTS = ("before", "channels_last", "channels_last+compile")


def _losses(run_dir: Path) -> dict[int, dict[str, float]]:
    out: dict[int, dict[str, float]] = {}
    for line in (run_dir / "sft" / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        kept = {k: round(v, 4) for k, v in record.items()
                if k in ("losses/bc", "losses/steps_to_go", "val/bc_loss",
                         "val/steps_to_go_loss", "charts/samples_per_s")}
        out.setdefault(int(record["step"]), {}).update(kept)
    return out


def run_variant(variant: str, args: argparse.Namespace, data: Path) -> dict:
    from efm_learning.config import load_config
    from efm_learning.models.modeling_conv_efm import ConvEFM
    from efm_learning.sft import train_sft

    run_dir = args.out / variant.replace("+", "_")
    overrides = [f"data.dir={data}", f"data.generate_episodes={args.episodes}",
                 f"sft.steps={args.steps}", f"sft.eval_every={args.steps // 3}",
                 "sft.log_every=50", f"sft.checkpoint_every={args.steps}",
                 f"num_threads={args.threads}", f"run_dir={run_dir}",
                 "data.pool_transitions=50000",
                 f"sft.compile={'true' if 'compile' in variant else 'false'}"]
    cfg = load_config("config/pushtable.yaml", overrides)
    original = ConvEFM.prepare_for_training
    if variant == "before":
        ConvEFM.prepare_for_training = lambda self, compile=False: None
    try:
        t0 = time.perf_counter()
        result = train_sft(cfg, resume=False, progress=False)
        wall = time.perf_counter() - t0
    finally:
        ConvEFM.prepare_for_training = original
    curve = _losses(run_dir)
    # charts/samples_per_s is cumulative from the first step: the time at each log follows
    logged = [(s, s * cfg.sft.batch_size / v["charts/samples_per_s"])
              for s, v in sorted(curve.items()) if v.get("charts/samples_per_s")]
    (s0, t_0), (s1, t_1) = logged[0], logged[-1]
    return {"variant": variant, "wall_s": round(wall, 1),
            "samples_per_s": round(result.samples_per_s, 1),
            "samples_per_s_after_first_log": round((s1 - s0) * cfg.sft.batch_size
                                                   / (t_1 - t_0), 1),
            "best_val": {k: round(v, 4) for k, v in result.best_val.items()},
            "curve": curve}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--episodes", type=int, default=300)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("runs/bench/stage1_speed"))
    args = parser.parse_args(argv)
    from efm_learning.config import load_config
    from efm_learning.pipeline import ensure_dataset

    data = args.out / "data"
    ensure_dataset(load_config("config/pushtable.yaml",
                               [f"data.dir={data}", f"data.generate_episodes={args.episodes}"]),
                   progress=False)
    rows = [run_variant(v, args, data) for v in VARIANTS]
    base = rows[0]["samples_per_s"]
    for row in rows:
        row["speed_up"] = round(row["samples_per_s"] / base, 2)
        print(f"{row['variant']:>24}: {row['samples_per_s']:7.1f} samples/s "
              f"(x{row['speed_up']}), after the first log "
              f"{row['samples_per_s_after_first_log']}, "
              f"best val {row['best_val']}")
    (args.out / "results.json").write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
