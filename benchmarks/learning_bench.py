"""Learning-core benchmarks: Stage 1 samples/s and Stage 2 updates/s per backend, and
batch-1 action latency of ``small_efm`` (target <= 20 ms median for a 10 Hz loop).

    .venv/bin/python -m benchmarks.learning_bench [--out runs/bench/learning.json]

Synthetic inputs (PointMass-shaped states; 96x96 frames for small_efm); one torch
thread. Stage 1 step = uniform batch split (BC + steps-to-go), AdamW; Stage 2 update =
REINFORCE on a minibatch of 64 with clipping. small_efm Stage 1 uses cached frozen-
encoder features (the practical 2-core setting); its latency is measured both with the
previous frame's features reused (the actor's steady state) and with both frames encoded.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from efm_learning.models import make_model
from efm_learning.models.base import ACTION_TOKENS, STEPS_TO_GO_BIN
from efm_learning.models.modeling_small_efm import FEATURES, PREV_FEATURES
from efm_learning.replay_buffer import RETURNS
from efm_learning.self_improvement import reinforce_step
from efm_learning.sft import sft_step

MLP = {"type": "mlp", "steps_to_go": {"max_steps": 140, "num_bins": 141},
       "action_tokenizer": {"bins": 256, "low": -5e-4, "high": 5e-4}}
SMALL = {"type": "small_efm", "state_dim": 2, "steps_to_go": {"max_steps": 100, "num_bins": 50},
         "action_tokenizer": {"type": "language_table", "max_delta": 0.03}}


def _obs(model, n: int, rng: np.random.Generator) -> dict:
    if model.config.type == "mlp":
        return {"observation.state": rng.uniform(-1, 1, (n, 6)).astype(np.float32)}
    g2 = model.config.feature_grid ** 2
    return {FEATURES: rng.normal(size=(n, g2, 1280)).astype(np.float16),
            PREV_FEATURES: rng.normal(size=(n, g2, 1280)).astype(np.float16),
            "observation.state": rng.normal(size=(n, 2)).astype(np.float32),
            "instruction": ["push the red block to the left"] * n}


def _labelled(model, n: int, rng: np.random.Generator) -> dict:
    batch = model.prepare_observations(_obs(model, n, rng))
    vocab = model.action_tokenizer.vocab_sizes
    batch[ACTION_TOKENS] = torch.as_tensor(np.stack([rng.integers(0, v, n) for v in vocab], 1))
    batch[STEPS_TO_GO_BIN] = torch.as_tensor(rng.integers(0, model.config.steps_to_go.num_bins, n))
    batch[RETURNS] = torch.as_tensor(rng.normal(0, 5, n).astype(np.float32))
    return batch


def throughput(config: dict, sft_batch: int, steps: int) -> dict:
    rng = np.random.default_rng(0)
    model = make_model(config).train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)
    half = sft_batch // 2
    batches = [{"bc": _labelled(model, half, rng), "steps_to_go": _labelled(model, half, rng)}
               for _ in range(4)]
    sft_step(model, opt, params, batches[0], 1.0)  # warm-up
    t = time.perf_counter()
    for i in range(steps):
        sft_step(model, opt, params, batches[i % 4], 1.0)
    sft_s = time.perf_counter() - t
    s2_params = model.stage2_parameters()
    opt2 = torch.optim.AdamW(s2_params, lr=1e-4)
    rl = [_labelled(model, 64, rng) for _ in range(4)]
    reinforce_step(model, opt2, s2_params, rl[0], 0.05, 1.0)
    t = time.perf_counter()
    for i in range(steps):
        reinforce_step(model, opt2, s2_params, rl[i % 4], 0.05, 1.0)
    s2_s = time.perf_counter() - t
    return {"stage1_batch": sft_batch, "stage1_samples_per_s": round(steps * sft_batch / sft_s),
            "stage2_updates_per_s": round(steps / s2_s, 1)}


def small_efm_latency(n: int = 100) -> dict:
    rng = np.random.default_rng(0)
    model = make_model(SMALL).eval()
    frames = rng.integers(0, 255, (n + 11, 1, 96, 96, 3), dtype=np.uint8)
    base = {"observation.state": np.zeros((1, 2), np.float32),
            "instruction": ["push the red block to the left"]}
    out = {}
    for mode in ("reuse_previous_frame", "encode_both_frames"):
        lat = []
        for i in range(n + 10):
            obs = {**base, "observation.image": frames[i + 1],
                   "observation.previous_image": frames[i]}
            if mode == "encode_both_frames":
                model._feature_cache.clear()
            t = time.perf_counter()
            model.act(obs)
            lat.append((time.perf_counter() - t) * 1e3)
        lat = np.array(lat[10:])
        out[mode] = {"median_ms": round(float(np.median(lat)), 2),
                     "p99_ms": round(float(np.percentile(lat, 99)), 2)}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/bench/learning.json")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    result = {
        "torch_threads": args.threads,
        "mlp": throughput(MLP, 256, 200),
        "small_efm_cached_features": throughput(SMALL, 128, 20),
        "small_efm_latency_batch1": small_efm_latency(),
    }
    print(json.dumps(result, indent=2))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
