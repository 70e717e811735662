"""Worker for test_distributed.py: one Stage 1 and one Stage 2 update on a fixed global
batch, either single-process (whole batch) or as one of K torchrun processes (its
1/K shard, DDP-averaged gradients). Rank 0 writes the resulting weights."""

from __future__ import annotations

import sys

import numpy as np
import torch
from safetensors.torch import save_file

from efm_learning.distributed import cleanup, exit_process, init_distributed, wrap_model
from efm_learning.models.base import ACTION_TOKENS, STEPS_TO_GO_BIN
from efm_learning.replay_buffer import RETURNS
from efm_learning.self_improvement import reinforce_step
from efm_learning.sft import sft_step
from efm_learning.testing import tiny_mlp

GLOBAL_BATCH = 32


def global_batches(model):
    rng = np.random.default_rng(123)
    state = rng.uniform(-1, 1, (GLOBAL_BATCH, 6)).astype(np.float32)
    bc = model.prepare_observations({"observation.state": state})
    bc[ACTION_TOKENS] = torch.as_tensor(rng.integers(0, 16, (GLOBAL_BATCH, 2)))
    stg = model.prepare_observations({"observation.state": state[::-1].copy()})
    stg[STEPS_TO_GO_BIN] = torch.as_tensor(rng.integers(0, 15, GLOBAL_BATCH))
    rl = model.prepare_observations({"observation.state": state * 0.5})
    rl[ACTION_TOKENS] = torch.as_tensor(rng.integers(0, 16, (GLOBAL_BATCH, 2)))
    rl[RETURNS] = torch.as_tensor(rng.normal(0, 5, GLOBAL_BATCH).astype(np.float32))
    return bc, stg, rl


def shard(batch, rank, world):
    n = GLOBAL_BATCH // world
    return {k: v[rank * n : (rank + 1) * n] for k, v in batch.items()}


def main(out: str) -> None:
    torch.set_num_threads(1)
    ctx = init_distributed("gloo")
    model = tiny_mlp(seed=0)
    bc, stg, rl = (shard(b, ctx.rank, ctx.world_size) for b in global_batches(model))
    params = list(model.parameters())
    # Stage 1 update (DDP over both heads)
    ddp = wrap_model(model, ctx)
    opt = torch.optim.AdamW(params, lr=1e-2)
    sft_step(ddp, opt, params, {"bc": bc, "steps_to_go": stg}, grad_clip=1.0)
    # Stage 2 update (fresh optimizer; the steps-to-go trunk is unused)
    ddp2 = wrap_model(model, ctx, find_unused=True)
    opt2 = torch.optim.AdamW(params, lr=1e-2)
    reinforce_step(ddp2, opt2, params, rl, c=0.05, grad_clip=1.0)
    if ctx.is_main:
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, out)
    del ddp, ddp2
    cleanup(ctx)
    exit_process(ctx)


if __name__ == "__main__":
    main(sys.argv[1])
