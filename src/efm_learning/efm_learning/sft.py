"""Stage 1: supervised fine-tuning with BC and steps-to-go (Section 2.1, Appendices A.3, B).

Read top to bottom: configuration, seeding, data (streamed episode pool + held-out
validation episodes), model (action tokenizer range and input normalisation fitted to
the training split), AdamW, then the loop. Every batch is split uniformly across the
objectives (A.3); the loss is the mean over the whole batch, i.e. the average of the
per-objective means. Every ``eval_every`` steps the held-out losses are computed on fixed
validation batches (never trained on), and the best-validation checkpoint is kept
*separately* for BC (``best_bc``: the Stage 2 policy initialisation) and for steps-to-go
(``best_steps_to_go``: the frozen reward model and success detector), as in Appendix B.
``last`` holds optimizer and RNG state for resuming; with ``sft.policy_checkpoint: last``
it is also the Stage 2 policy, trained past the best BC validation loss (Appendix B's
ALOHA exception). A NaN/inf loss or gradient stops
training with :class:`NonFiniteLossError`; the checkpoints on disk stay the last good ones.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from efm_learning.checkpoint import (
    TrainerState,
    load_checkpoint,
    load_trainer_state,
    optimizer_from_state,
    optimizer_to_state,
    save_checkpoint,
)
from efm_learning.config import ConfigError, ExperimentConfig, to_dict
from efm_learning.data import (
    StreamingSampler,
    list_episode_files,
    load_pool,
    split_train_val,
    state_featurizer,
    symmetric_action_range,
    train_subset,
)
from efm_learning.distributed import DistContext, init_distributed, shard_size, wrap_model
from efm_learning.metrics import MetricLogger, plot_curves, read_metrics
from efm_learning.models import EFM, make_model, model_config_from_dict
from efm_learning.models.base import ACTION_TOKENS, STEPS_TO_GO_BIN, STEPS_TO_GO_PAST_BIN
from efm_learning.rollout_labels import STEPS_TO_GO_CENSORED
from efm_learning.stopping import ValidationBudget
from efm_learning.success_detector import SuccessDetector, precision_recall
from efm_sim import keys

logger = logging.getLogger(__name__)

#: checkpoint names under ``<run_dir>/sft/``
BEST_BC, BEST_STEPS_TO_GO, LAST = "best_bc", "best_steps_to_go", "last"


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN/inf loss or gradient and was stopped."""


@dataclass
class SFTResult:
    directory: Path
    steps: int
    best_val: dict[str, float]
    final_val: dict[str, float]
    elapsed_s: float
    samples_per_s: float
    checkpoints: dict[str, Path] = field(default_factory=dict)


def to_model_batch(model: EFM, batch: dict[str, Any]) -> dict[str, Any]:
    """Numpy pool batch -> model batch with tokenized labels."""
    out = model.prepare_observations(batch)
    if keys.ACTION in batch:
        tokens = model.encode_actions(batch[keys.ACTION])
        out[ACTION_TOKENS] = torch.as_tensor(tokens, device=model.device)
    if keys.STEPS_TO_GO in batch:
        bins = model.encode_steps_to_go(batch[keys.STEPS_TO_GO])
        out[STEPS_TO_GO_BIN] = torch.as_tensor(bins, device=model.device)
    if STEPS_TO_GO_CENSORED in batch:
        out[STEPS_TO_GO_PAST_BIN] = torch.as_tensor(batch[STEPS_TO_GO_CENSORED],
                                                    device=model.device)
    return out


def split_batch(total: int, objectives: list[str]) -> dict[str, int]:
    """Uniform split of a batch across objectives (Appendix A.3); remainder to the first."""
    base, extra = divmod(total, len(objectives))
    return {o: base + (1 if i < extra else 0) for i, o in enumerate(objectives)}


def build_model_from_data(cfg: ExperimentConfig, train_paths: list[Path]) -> EFM:
    """Backend from ``cfg.model`` with the tokenizer range and normalisation fitted to
    (up to 200k transitions of) the training split."""
    model_cfg = model_config_from_dict(cfg.model)
    scan = load_pool(train_paths, state_featurizer, max_transitions=200_000)
    actions = scan.all_actions().reshape(-1, scan.all_actions().shape[-1])
    states = scan.all_observations(keys.OBS_STATE)
    tok = model_cfg.action_tokenizer
    if tok.action_dim * tok.chunk != actions.shape[-1]:
        raise ConfigError(
            f"model.action_tokenizer.action_dim x chunk = {tok.action_dim * tok.chunk}, "
            f"but the dataset's actions have {actions.shape[-1]} components"
        )
    if not tok.fitted:
        tok.low, tok.high = symmetric_action_range(actions)
        logger.info("action tokenizer range fitted to the demos: [%.3g, %.3g]", tok.low, tok.high)
    if hasattr(model_cfg, "state_dim") and model_cfg.state_dim != states.shape[1]:
        raise ConfigError(
            f"model.state_dim: got {model_cfg.state_dim}, but the dataset's "
            f"{keys.OBS_STATE} has {states.shape[1]} components; set it to {states.shape[1]}"
        )
    if "instruction" in cfg.sft.objectives:
        if not hasattr(model_cfg, "instruction_vocab"):
            raise ConfigError(
                f"sft.objectives: 'instruction' needs a backend with an instruction head "
                f"(small_efm), not {model_cfg.type!r}"
            )
        if not model_cfg.instruction_vocab:
            model_cfg.instruction_vocab = sorted(set(scan.instructions()))
    model = make_model(model_cfg)
    model.fit_to_data(states)
    return model


@torch.no_grad()
def validation_metrics(
    model: EFM,
    val_batches: dict[str, list[dict[str, Any]]],
    val_stg: dict[str, Any] | None,
    success_threshold: float,
) -> dict[str, float]:
    """Held-out losses on fixed batches, plus d(o, g) quality on validation observations:
    mean absolute error in steps and the success detector's precision/recall against
    "this is the final (goal) observation" (the only success state in a demo)."""
    model.eval()
    out: dict[str, float] = {}
    for objective, batches in val_batches.items():
        losses = [model.objective_loss(objective, b).item() for b in batches]
        out[f"val/{objective}_loss"] = float(np.mean(losses))
    if val_stg is not None:
        d = model.expected_steps_to_go(val_stg["batch"]).double().cpu().numpy()
        labels = val_stg["labels"]
        out["val/steps_to_go_mae"] = float(np.mean(np.abs(d - labels)))
        fired = SuccessDetector(success_threshold)(d)
        precision, recall = precision_recall(fired, labels == 0)
        out["val/detector_precision"] = float(precision)
        out["val/detector_recall"] = float(recall)
    model.train()
    return out


def sft_step(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    params: list[torch.nn.Parameter],
    batches: dict[str, dict[str, Any]],
    grad_clip: float,
    check: Any = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor], float]:
    """One Stage 1 update: the loss is the mean over the whole (uniformly split) batch,
    i.e. per-objective means weighted by their share. ``check(losses, grad_norm)`` runs
    before the optimizer step (the NaN guard). ``model`` may be DDP-wrapped."""
    sizes = {o: len(b[next(iter(b))]) for o, b in batches.items()}
    total = sum(sizes.values())
    losses = model(batches)
    loss = sum(losses[o] * (n / total) for o, n in sizes.items())
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    limit = grad_clip if grad_clip > 0 else float("inf")
    grad_norm = float(torch.nn.utils.clip_grad_norm_(params, limit))
    if check is not None:
        check(losses, grad_norm)
    optimizer.step()
    return loss, losses, grad_norm


def _broadcast_flag(flag: bool, ctx: DistContext) -> bool:
    """Rank 0's decision for every rank (only rank 0 evaluates)."""
    if not ctx.enabled:
        return flag
    tensor = torch.tensor([1.0 if flag else 0.0])
    torch.distributed.broadcast(tensor, 0)
    return bool(tensor.item())


def _finite_or_raise(step: int, losses: dict[str, torch.Tensor], grad_norm: float, out: Path):
    values = {k: float(v.detach()) for k, v in losses.items()}
    if all(math.isfinite(v) for v in values.values()) and math.isfinite(grad_norm):
        return
    kept = sorted(p.name for p in out.iterdir() if p.is_dir() and not p.name.startswith("."))
    raise NonFiniteLossError(
        f"non-finite Stage 1 loss at step {step} (losses {values}, grad norm {grad_norm}); "
        f"training stopped. Last good checkpoints kept in {out}: {kept or 'none yet'}. "
        "Lower sft.lr, keep sft.grad_clip > 0, or check the dataset for bad values."
    )


def train_sft(
    cfg: ExperimentConfig,
    resume: bool = True,
    progress: bool = True,
    ctx: DistContext | None = None,
) -> SFTResult:
    """Run Stage 1 for ``cfg.sft.steps`` steps, or fewer where ``sft.stop_patience_steps``
    ends it (:class:`~efm_learning.stopping.ValidationBudget`); outputs under
    ``<run_dir>/sft/``."""
    ctx = ctx or init_distributed()
    sft = cfg.sft
    out = cfg.run_path / "sft"
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(cfg.num_threads)
    torch.manual_seed(cfg.seed)

    # -- data ----------------------------------------------------------------------
    paths = list_episode_files(cfg.data.dir)
    train_paths, val_paths = split_train_val(paths, cfg.data.val_fraction, cfg.seed)
    train_paths = train_subset(train_paths, cfg.data.train_fraction, cfg.seed)
    logger.info("Stage 1 data: %d train / %d validation episodes", len(train_paths), len(val_paths))

    # -- model (or resume) ---------------------------------------------------------
    last = out / LAST
    state: TrainerState | None = None
    if resume and last.is_dir():
        model, _ = load_checkpoint(last, cfg.device)
        state = load_trainer_state(last)
        logger.info("resuming Stage 1 from %s", last)
    else:
        model = build_model_from_data(cfg, train_paths)
        model.to(cfg.device)
    model.train()
    model.prepare_for_training(compile=sft.compile)
    featurize = model.featurizer()
    load_images = getattr(model, "needs_images", False)
    sampler = StreamingSampler(
        train_paths,
        featurize,
        capacity=cfg.data.pool_transitions,
        refresh_fraction=cfg.data.refresh_fraction,
        refresh_every=cfg.data.refresh_every,
        seed=cfg.seed * 1000 + ctx.rank,
        load_images=load_images,
        successful_only_steps_to_go=cfg.data.steps_to_go_successful_only,
        steps_to_go_negatives=cfg.data.steps_to_go_negatives,
    )
    val_pool = load_pool(
        val_paths,
        featurize,
        max_transitions=50_000,
        load_images=load_images,
        successful_only_steps_to_go=cfg.data.steps_to_go_successful_only,
    )
    shares = split_batch(shard_size(sft.batch_size, ctx), sft.objectives)
    val_rng = np.random.default_rng(cfg.seed + 12345)
    val_batches = {
        o: [to_model_batch(model, val_pool.sample(o, n, val_rng)) for _ in range(sft.val_batches)]
        for o, n in shares.items()
    }
    stg_items = val_pool.sample("steps_to_go", 4096, val_rng)
    val_stg = {
        "batch": to_model_batch(model, stg_items),
        "labels": np.asarray(stg_items[keys.STEPS_TO_GO], dtype=np.float64),
    }

    # -- optimizer -----------------------------------------------------------------
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=sft.lr, weight_decay=sft.weight_decay)
    start_step, best = 0, {"bc": math.inf, "steps_to_go": math.inf}
    budget = ValidationBudget(sft.stop_patience_steps, sft.stop_min_rel_gain)
    if state is not None:
        optimizer_from_state(optimizer, state)
        start_step = int(state.values["step"])
        best = {k: float(v) for k, v in state.values["best_val"].items()}
        if "budget" in state.values:
            budget.restore(state.values["budget"])
        sampler.rng.bit_generator.state = state.values["numpy_rng"]
        torch.set_rng_state(state.tensors["torch_rng"])
    ddp_model = wrap_model(model, ctx)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / sft.warmup_steps) if sft.warmup_steps else 1.0
    )
    metrics = MetricLogger(out, fresh=state is None) if ctx.is_main else None
    meta = {"stage": "sft", "experiment": cfg.name, "config": to_dict(cfg)}

    def save(name: str, step: int, val: dict[str, float], with_state: bool) -> None:
        if not ctx.is_main:
            return
        trainer_state = None
        if with_state:
            trainer_state = optimizer_to_state(optimizer)
            trainer_state.tensors["torch_rng"] = torch.get_rng_state()
            trainer_state.values.update(
                step=step, best_val=best, numpy_rng=sampler.rng.bit_generator.state,
                budget=budget.state(),
            )
        save_checkpoint(out / name, model, {**meta, "step": step, "val": val}, trainer_state)

    # -- loop ----------------------------------------------------------------------
    t0 = time.perf_counter()
    val: dict[str, float] = {}
    end_step = budget.stopped_at if budget.stopped else sft.steps
    bar = tqdm(
        range(start_step, end_step),
        initial=start_step,
        total=sft.steps,
        desc="Stage 1 SFT",
        disable=not (progress and ctx.is_main),
        dynamic_ncols=True,
    )
    augment_gen = torch.Generator().manual_seed(cfg.seed * 1000 + ctx.rank + 17)
    for step in bar:
        batches = {
            o: model.augment(to_model_batch(model, sampler.sample(o, n)), augment_gen)
            for o, n in shares.items()
        }
        loss, losses, grad_norm = sft_step(
            ddp_model, optimizer, params, batches, sft.grad_clip,
            check=lambda ls, gn, step=step: _finite_or_raise(step, ls, gn, out),
        )
        schedule.step()
        sampler.step()
        done = step + 1
        if metrics is not None and (done % sft.log_every == 0 or done == sft.steps):
            record = {f"losses/{o}": float(v.detach()) for o, v in losses.items()}
            record.update({"losses/total": float(loss.detach()), "charts/grad_norm": grad_norm})
            record["charts/samples_per_s"] = (done - start_step) * sft.batch_size / (
                time.perf_counter() - t0
            )
            metrics.log(done, record)
            bar.set_postfix(
                bc=f"{record['losses/bc']:.3f}", stg=f"{record['losses/steps_to_go']:.3f}"
            )
        evaluate = done % sft.eval_every == 0 or done == sft.steps
        if evaluate and ctx.is_main:
            val = validation_metrics(model, val_batches, val_stg, cfg.improve.success_threshold)
            if val["val/bc_loss"] < best["bc"]:
                best["bc"] = val["val/bc_loss"]
                save(BEST_BC, done, val, with_state=False)
            if val["val/steps_to_go_loss"] < best["steps_to_go"]:
                best["steps_to_go"] = val["val/steps_to_go_loss"]
                save(BEST_STEPS_TO_GO, done, val, with_state=False)
            metrics.log(done, {**val, "val/best_bc_loss": best["bc"],
                               "val/best_steps_to_go_loss": best["steps_to_go"]})
            budget.observe(done, {"bc": val["val/bc_loss"],
                                  "steps_to_go": val["val/steps_to_go_loss"]})
        stop = evaluate and _broadcast_flag(budget.stopped, ctx)
        if done % sft.checkpoint_every == 0 or done == sft.steps or stop:
            save(LAST, done, val, with_state=True)
        if stop:
            logger.info("Stage 1 budget: no validation loss improved by %.1f%% in %d steps; "
                        "stopping at step %d of %d", 100 * sft.stop_min_rel_gain,
                        sft.stop_patience_steps, done, sft.steps)
            end_step = done
            break
    bar.close()
    elapsed = time.perf_counter() - t0
    steps_run = max(0, end_step - start_step)
    result = SFTResult(
        directory=out,
        steps=end_step,
        best_val=dict(best),
        final_val=val,
        elapsed_s=elapsed,
        samples_per_s=steps_run * sft.batch_size / elapsed if elapsed > 0 else 0.0,
        checkpoints={n: out / n for n in (BEST_BC, BEST_STEPS_TO_GO, LAST)},
    )
    # the Stage 2 policy initialisation (Appendix B): best_bc, or last (trained past it)
    result.checkpoints["policy"] = out / sft.policy_checkpoint
    if sft.policy_checkpoint == LAST and val:
        logger.info("Stage 2 policy: last (step %d, val BC %.4f; best val BC %.4f)",
                    sft.steps, val.get("val/bc_loss", math.nan), best["bc"])
    if metrics is not None:
        metrics.close()
        plot_sft_curves(out)
    return result


def plot_sft_curves(directory: Path) -> Path:
    records = read_metrics(directory)
    return plot_curves(
        records,
        [
            ("NLL (train)", ["losses/bc", "losses/steps_to_go"]),
            ("NLL (validation)", ["val/bc_loss", "val/steps_to_go_loss"]),
            ("d(o,g) error [steps]", ["val/steps_to_go_mae"]),
        ],
        directory / "learning_curve.png",
        title="Stage 1 SFT",
    )
