"""Refine the reward model on labelled policy rollouts (paper Section 6; a departure).

The frozen Stage 1 steps-to-go model (``best_steps_to_go``) gives Stage 2 its reward and
its success detector, but it has only seen demonstrations: on PushTable it mistakes the
policy's near misses for success (docs/PUSHTABLE.md section 3). Section 6 of the paper
suggests labelling the policy's own rollouts and training the steps-to-go estimator on
them; this module does that and nothing else:

* the model continues from the Stage 1 reward model on the **steps-to-go objective
  alone** (the policy is not touched; the refined copy is again frozen for Stage 2);
* every batch is ``rollout_share`` labelled rollouts (exact or censored labels,
  :mod:`efm_learning.rollout_labels`) and the rest Stage 1 demonstrations with their
  relabelled negatives, as in Stage 1, so the demonstrations' calibration is kept;
* a fixed number of steps, chosen in advance (no ground truth picks it); the held-out
  rollouts' losses are logged, not used to stop.

Reads top to bottom: data, optimizer, loop, checkpoint.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from efm_learning.checkpoint import save_checkpoint
from efm_learning.models import EFM
from efm_learning.rollout_labels import LabelledRollouts
from efm_learning.sft import to_model_batch


@dataclass
class RefineConfig:
    """Reward-model refinement (the Stage 1 optimizer's settings unless said)."""

    steps: int = 1500
    batch_size: int = 128
    lr: float = 1.0e-4           # a tenth of Stage 1's: a correction, not a retraining
    weight_decay: float = 1.0e-4
    grad_clip: float = 1.0
    rollout_share: float = 0.5   # fraction of each batch from labelled rollouts
    log_every: int = 100
    seed: int = 0

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 2 or self.lr <= 0:
            raise ValueError("refinement needs steps >= 1, batch_size >= 2 and lr > 0")
        if not 0.0 < self.rollout_share < 1.0:
            raise ValueError(f"rollout_share must be in (0, 1), got {self.rollout_share}")


DemoSource = Callable[[int, np.random.Generator], dict[str, Any]]


@torch.no_grad()
def rollout_losses(model: EFM, rollouts: LabelledRollouts, n: int = 2048) -> dict[str, float]:
    """Steps-to-go NLL on the first ``n`` (held-out) labelled rollout rows, exact and
    censored rows apart."""
    was_training = model.training
    model.eval()
    first = np.arange(min(n, len(rollouts)))
    out = {}
    for name, rows in (("exact", first[~rollouts.censored[first]]),
                       ("censored", first[rollouts.censored[first]])):
        if len(rows):
            batch = to_model_batch(model, rollouts.rows(rows))
            out[f"rollouts/{name}_loss"] = float(model.steps_to_go_loss(batch))
    model.train(was_training)
    return out


def refine_reward_model(
    model: EFM,
    demos: DemoSource,
    rollouts: LabelledRollouts,
    cfg: RefineConfig,
    out: Path,
    held_out: LabelledRollouts | None = None,
    metadata: dict[str, Any] | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Train ``model`` (in place) on steps-to-go from ``demos(n, rng)`` batches and
    ``rollouts``; write it to ``out`` (safetensors + JSON + sha256). Returns the log."""
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    augment_gen = torch.Generator().manual_seed(cfg.seed + 17)
    n_roll = max(1, round(cfg.batch_size * cfg.rollout_share))
    n_demo = cfg.batch_size - n_roll

    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    history: list[dict[str, float]] = []
    if held_out is not None:
        history.append({"step": 0, **rollout_losses(model, held_out)})
    t0 = time.perf_counter()
    for step in range(1, cfg.steps + 1):
        demo = model.augment(to_model_batch(model, demos(n_demo, rng)), augment_gen)
        roll = model.augment(to_model_batch(model, rollouts.sample(n_roll, rng)), augment_gen)
        demo_loss = model.steps_to_go_loss(demo)
        roll_loss = model.steps_to_go_loss(roll)
        loss = (n_demo * demo_loss + n_roll * roll_loss) / cfg.batch_size
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        if not torch.isfinite(loss):
            raise RuntimeError(f"non-finite refinement loss at step {step}; nothing saved")
        optimizer.step()
        if step % cfg.log_every == 0 or step == cfg.steps:
            record = {"step": step, "losses/demos": float(demo_loss.detach()),
                      "losses/rollouts": float(roll_loss.detach())}
            if held_out is not None:
                record.update(rollout_losses(model, held_out))
            history.append(record)
            rate = step / (time.perf_counter() - t0)
            log(f"[refine] step {step}/{cfg.steps}: demos {record['losses/demos']:.3f}, "
                f"rollouts {record['losses/rollouts']:.3f} ({rate:.1f} steps/s)")
    model.eval()
    meta = {**(metadata or {}), "stage": "reward_refinement", "refine": vars(cfg),
            "rollouts": rollouts.summary()}
    save_checkpoint(out, model, meta)
    return {"history": history, "checkpoint": str(out), "elapsed_s": time.perf_counter() - t0}
