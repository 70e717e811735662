"""Stage 2: Self-Improvement, Algorithm 1 (Section 2.2, Appendices A.3, B, C).

Read top to bottom. The policy starts from one Stage 1 checkpoint (``best_bc``); a
*separate*, frozen Stage 1 checkpoint (``best_steps_to_go``) supplies the reward
``r_t = d(o_t) - d(o_{t+1})`` (Eq. 2) and the success detector ``d <= s`` (Eq. 3). Each
round:

1. the actor pulls the latest weights and collects complete on-policy episodes until
   they hold at least N x B samples (episodes end on the learned detector, the step
   limit, or an abort; ground truth is only recorded);
2. the adder refuses malformed episodes, labels rewards with the frozen model and
   computes Monte-Carlo returns (gamma = 0.9);
3. N updates of ``-c R_t log pi(a_t | o_t, g)`` on minibatches of B drawn without
   replacement from a shuffled buffer; then the buffer is cleared.

Choices beyond the paper, and why:

* a *fresh* AdamW optimizer (the notebook reused Stage 1's Adam moments);
* global-norm gradient clipping at 1.0: the public notebook, run here at its defaults,
  diverged in 2 of 6 seeds (action means ~1e10) and one of those seeds was stable with
  clipping (../shared/seeds/README.md); our tokenized (bounded) actions remove the
  exploding-mean failure mode as well;
* per-round measurement on a fixed set of simulator tasks (evaluation only), and model
  selection / plateau stopping on "mean episode length with failures counted as the step
  limit" (Section 6: pushing past the peak can degrade success; keep the best).
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from efm_learning.actor import Actor, EnvActor, PracticeEpisode, VariableSource, round_seeds
from efm_learning.checkpoint import (
    load_checkpoint,
    load_trainer_state,
    optimizer_from_state,
    optimizer_to_state,
    save_checkpoint,
)
from efm_learning.config import ExperimentConfig, ImproveConfig, to_dict
from efm_learning.distributed import DistContext, init_distributed, shard_size, wrap_model
from efm_learning.evaluation import EvalResult, Evaluator
from efm_learning.metrics import MetricLogger, plot_curves, read_metrics
from efm_learning.models import EFM
from efm_learning.models.base import ACTION_TOKENS
from efm_learning.replay_buffer import RETURNS, Adder, EpisodeError, ReplayBuffer
from efm_learning.stopping import PlateauRule
from efm_learning.success_detector import precision_recall

logger = logging.getLogger(__name__)

BEST, LAST = "best", "last"


class NonFiniteUpdateError(RuntimeError):
    """A Stage 2 update produced a NaN/inf loss or gradient."""


@dataclass
class ImproveResult:
    directory: Path
    rounds_run: int
    stopped_early: bool
    initial_eval: EvalResult | None
    final_eval: EvalResult | None
    best_eval: dict[str, float]
    best_round: int
    elapsed_s: float
    updates_per_s: float
    history: list[dict[str, Any]] = field(default_factory=list, repr=False)


def freeze(model: EFM) -> EFM:
    """Frozen reward model / success detector: eval mode, no gradients."""
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def reinforce_loss(log_prob: torch.Tensor, returns: torch.Tensor, c: float) -> torch.Tensor:
    """``mean(-c * R_t * log pi(a_t | o_t, g))`` (Eq. 4)."""
    return -(c * returns * log_prob).mean()


def reinforce_step(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    params: list[torch.nn.Parameter],
    batch: dict[str, Any],
    c: float,
    grad_clip: float,
) -> dict[str, float]:
    """One REINFORCE update on a prepared batch (``model`` may be DDP-wrapped)."""
    log_prob = model({"log_prob": batch})["log_prob"]
    loss = reinforce_loss(log_prob, batch[RETURNS], c)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    norm = torch.nn.utils.clip_grad_norm_(params, grad_clip if grad_clip > 0 else float("inf"))
    if not (torch.isfinite(loss) and torch.isfinite(norm)):
        raise NonFiniteUpdateError(
            f"non-finite Stage 2 update (loss {float(loss.detach())}, grad norm {float(norm)}); "
            "stopped before applying it, the last good checkpoint is kept"
        )
    optimizer.step()
    return {
        "loss": float(loss.detach()),
        "grad_norm": float(norm),
        "log_prob": float(log_prob.detach().mean()),
    }


def to_policy_batch(model: EFM, batch: dict[str, Any]) -> dict[str, Any]:
    out = model.prepare_observations(batch)
    out[ACTION_TOKENS] = torch.as_tensor(batch[ACTION_TOKENS], device=model.device)
    out[RETURNS] = torch.as_tensor(batch[RETURNS], dtype=torch.float32, device=model.device)
    return out


def round_statistics(
    episodes: list[PracticeEpisode], labels: list[Any], imp: ImproveConfig
) -> dict[str, float]:
    """Practice-episode metrics: learned-signal statistics and ground-truth diagnostics."""
    lengths = np.array([e.length for e in episodes])
    detected = np.array([e.end_reason == "success_detector" for e in episodes])
    gt_at_end = np.array([bool(e.gt_success[-1]) for e in episodes])
    rewards = np.concatenate([lab.rewards for lab in labels])
    returns = np.concatenate([lab.returns for lab in labels])
    d_all = np.concatenate([lab.steps_to_go for lab in labels])
    # the detector reads the full expectation (Eq. 3), which the actor recorded; the
    # labels' d is the reward's (improve.reward_steps_to_go may differ)
    detector_d = [e.steps_to_go if e.steps_to_go is not None else lab.steps_to_go
                  for e, lab in zip(episodes, labels, strict=True)]
    fired = np.concatenate(detector_d) <= imp.success_threshold
    actual = np.concatenate([e.gt_success for e in episodes])
    precision, recall = precision_recall(fired, actual)
    selection = np.where(detected, lengths, imp.max_episode_steps)
    reasons = [e.end_reason for e in episodes]
    return {
        "practice/episodes": len(episodes),
        "practice/samples": int(lengths.sum()),
        "practice/mean_length": float(lengths.mean()),
        "practice/detector_success_rate": float(detected.mean()),
        "practice/selection_length": float(selection.mean()),
        "practice/step_limit_rate": reasons.count("step_limit") / len(episodes),
        "practice/gt_success_at_end": float(gt_at_end.mean()),
        "reward/mean": float(rewards.mean()),
        "reward/std": float(rewards.std()),
        "reward/min": float(rewards.min()),
        "reward/max": float(rewards.max()),
        "returns/mean": float(returns.mean()),
        "returns/std": float(returns.std()),
        "steps_to_go/mean_d": float(d_all.mean()),
        "steps_to_go/mean_initial_d": float(np.mean([lab.steps_to_go[0] for lab in labels])),
        "detector/precision": float(precision),
        "detector/recall": float(recall),
    }


def self_improve(
    cfg: ExperimentConfig,
    resume: bool = True,
    progress: bool = True,
    actor: Actor | None = None,
    ctx: DistContext | None = None,
    out_name: str = "improve",
) -> ImproveResult:
    """Run Algorithm 1 for ``cfg.improve.rounds`` rounds; outputs under ``<run_dir>/<out_name>``."""
    ctx = ctx or init_distributed()
    imp = cfg.improve
    out = cfg.run_path / out_name
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(cfg.num_threads)
    torch.manual_seed(cfg.seed)
    sft_dir = cfg.run_path / "sft"
    policy_path = Path(imp.policy_checkpoint or sft_dir / cfg.sft.policy_checkpoint)
    reward_path = Path(imp.reward_checkpoint or sft_dir / "best_steps_to_go")

    # -- models: policy from Stage 1, separate frozen reward model / detector --------
    last = out / LAST
    state = None
    if resume and last.is_dir():
        policy, _ = load_checkpoint(last, cfg.device)
        state = load_trainer_state(last)
        logger.info("resuming Stage 2 from %s", last)
    else:
        policy, _ = load_checkpoint(policy_path, cfg.device)
    reward_model = freeze(load_checkpoint(reward_path, cfg.device)[0])
    policy.train()
    params = policy.stage2_parameters()
    # a fresh optimizer: Stage 1's moments are not reused
    optimizer = torch.optim.AdamW(params, lr=imp.lr, weight_decay=imp.weight_decay)
    ddp_policy = wrap_model(policy, ctx, find_unused=True)

    # -- actor, adder, buffer, evaluator ------------------------------------------------
    variables = VariableSource(policy)
    samples_per_round = shard_size(imp.updates_per_round * imp.batch_size, ctx)
    minibatch = shard_size(imp.batch_size, ctx)
    seed = cfg.seed * 1000 + ctx.rank
    if actor is None:
        actor = EnvActor(
            cfg.env,
            policy,
            reward_model,
            success_threshold=imp.success_threshold,
            success_consecutive=imp.success_consecutive,
            max_episode_steps=imp.max_episode_steps,
            num_envs=imp.num_envs,
            seed=seed,
            greedy=False,
            end_on="detector",
            env_kwargs=cfg.env_kwargs,
        )
    buffer = ReplayBuffer()
    adder = Adder(
        buffer,
        reward_model,
        imp.gamma,
        in_range=imp.reward_steps_to_go == "in_range",
        success_bonus=imp.success_bonus,
    )
    evaluator = None
    if ctx.is_main and imp.eval_episodes > 0:
        evaluator = Evaluator(
            cfg.env,
            policy,
            imp.max_episode_steps,
            imp.eval_episodes,
            greedy=imp.eval_mode == "greedy",
            seed=cfg.seed,
            env_kwargs=cfg.env_kwargs,
        )
    shuffle_rng = np.random.default_rng([cfg.seed, ctx.rank, 5])
    metrics = MetricLogger(out, fresh=state is None) if ctx.is_main else None
    meta = {"stage": "improve", "experiment": cfg.name, "config": to_dict(cfg),
            "policy_init": str(policy_path), "reward_model": str(reward_path)}

    start_round, env_steps, best_score, best_round, stale = 0, 0, math.inf, -1, 0
    best_eval: dict[str, float] = {}
    if state is not None:
        optimizer_from_state(optimizer, state)
        v = state.values
        start_round, env_steps = int(v["round"]), int(v["env_steps"])
        best_score, best_round = float(v["best_score"]), int(v["best_round"])
        stale = int(v["stale"])
        best_eval = v["best_eval"]
        shuffle_rng.bit_generator.state = v["shuffle_rng"]
        actor_gen = state.tensors.get("actor_generator")
        if actor_gen is not None and isinstance(actor, EnvActor):
            actor.generator.set_state(actor_gen)

    def save(name: str, round_index: int, extra: dict[str, Any]) -> None:
        if not ctx.is_main:
            return
        trainer_state = None
        if name == LAST:
            trainer_state = optimizer_to_state(optimizer)
            if isinstance(actor, EnvActor):
                trainer_state.tensors["actor_generator"] = actor.generator.get_state()
            trainer_state.values.update(
                round=round_index, env_steps=env_steps, best_score=best_score,
                best_round=best_round, stale=stale, best_eval=best_eval,
                shuffle_rng=shuffle_rng.bit_generator.state,
            )
            if plateau is not None:
                trainer_state.values["plateau"] = dataclasses.asdict(plateau)
        save_checkpoint(out / name, policy, {**meta, "round": round_index, **extra}, trainer_state)

    def select_by_detector(version: int, record: dict[str, Any], acting: dict) -> bool:
        """GT-free: the plateau rule on the detector's success of the version that acted
        this round (``acting``: its weights); keeps that version as ``best`` when it leads."""
        nonlocal best_round, best_eval
        n = int(record["practice/episodes"])
        decision = plateau.observe(version, round(record["practice/detector_success_rate"] * n), n)
        if decision is None:
            return False
        record["practice/pooled_detector_success"] = decision.pooled_rate
        if decision.best_version == version and decision.stale == 0:
            best_round = version
            best_eval = {k: v for k, v in record.items() if k.startswith(("eval/", "practice/"))}
            scratch.load_state_dict(acting)
            save_checkpoint(out / BEST, scratch, {**meta, "round": version,
                                                  "selection": {"plateau": decision.pooled_rate}})
        return decision.stop

    def select(round_index: int, record: dict[str, Any]) -> bool:
        """Keep the best checkpoint; True when the plateau patience is used up."""
        nonlocal best_score, best_round, stale, best_eval
        key = "eval/mean_length"
        if key not in record:
            return False
        if record[key] < best_score - imp.min_delta:
            best_score, best_round, stale = record[key], round_index, 0
            best_eval = {k: v for k, v in record.items() if k.startswith(("eval/", "practice/"))}
            save(BEST, round_index, {"selection": {key: record[key]}})
        else:
            stale += 1
        return imp.patience > 0 and stale >= imp.patience

    plateau = scratch = None
    if imp.selection_metric == "detector":
        plateau = PlateauRule(imp.patience, imp.plateau_min_gain, imp.plateau_window)
        if state is not None and "plateau" in state.values:
            plateau = PlateauRule(**state.values["plateau"])
        scratch = copy.deepcopy(policy)

    initial_eval = None
    if evaluator is not None and state is None:
        initial_eval = evaluator.evaluate(policy=policy)
        record = {**initial_eval.as_metrics(), "charts/env_steps": 0}
        metrics.log(0, record)
        if plateau is None:
            select(0, record)
        logger.info("Stage 1 policy: %s", initial_eval)

    # -- Algorithm 1 --------------------------------------------------------------------
    t0 = time.perf_counter()
    updates_done, stopped_early, final_eval = 0, False, None
    bar = tqdm(range(start_round, imp.rounds), initial=start_round, total=imp.rounds,
               desc="Stage 2 Self-Improvement", disable=not (progress and ctx.is_main),
               dynamic_ncols=True)
    round_index = start_round
    for round_index in bar:
        # 1. collect on-policy episodes with the latest weights
        acting_version = actor.update(variables)
        acting = variables.get()[1]
        if isinstance(actor, EnvActor):
            actor.set_seeds(round_seeds(seed, round_index))
        episodes = actor.collect(samples_per_round)
        # 2. label with the frozen reward model, returns, into the buffer
        kept, labels = [], []
        for episode in episodes:
            try:
                labels.append(adder.add(episode))
                kept.append(episode)
            except EpisodeError as error:
                logger.warning("refused a practice episode: %s", error)
        env_steps += sum(e.length for e in episodes)
        if buffer.num_samples < samples_per_round:
            raise RuntimeError(
                f"only {buffer.num_samples} valid samples collected, need {samples_per_round}"
            )
        # 3. N REINFORCE updates, minibatches without replacement; then clear the buffer
        stats = []
        for batch in buffer.minibatches(imp.updates_per_round, minibatch, shuffle_rng):
            tensors = to_policy_batch(policy, batch)
            stats.append(
                reinforce_step(
                    ddp_policy, optimizer, params, tensors, imp.reinforce_c, imp.grad_clip
                )
            )
            updates_done += 1
        buffer.clear()
        variables.publish(policy)
        done = round_index + 1

        # -- measure (ground truth is evaluation only) ------------------------------
        record = round_statistics(kept, labels, imp)
        record.update({
            "losses/reinforce": float(np.mean([s["loss"] for s in stats])),
            "charts/grad_norm": float(np.mean([s["grad_norm"] for s in stats])),
            "charts/grad_norm_max": float(np.max([s["grad_norm"] for s in stats])),
            "charts/log_prob": float(np.mean([s["log_prob"] for s in stats])),
            "charts/env_steps": env_steps,
            "charts/refused_episodes": adder.refused,
        })
        if evaluator is not None and (done % imp.eval_every == 0 or done == imp.rounds):
            final_eval = evaluator.evaluate(policy=policy)
            record.update(final_eval.as_metrics())
        stop = False
        if ctx.is_main:
            if plateau is None:
                stop = select(done, record)
            else:
                stop = select_by_detector(acting_version, record, acting)
            metrics.log(done, record)
            if done % imp.checkpoint_every == 0 or done == imp.rounds or stop:
                save(LAST, done, {"metrics": record})
            bar.set_postfix(
                succ=f"{record.get('eval/success_rate', float('nan')):.2f}",
                len=f"{record.get('eval/mean_length', float('nan')):.1f}",
                d=f"{record['steps_to_go/mean_initial_d']:.1f}",
            )
        if ctx.enabled:
            flag = torch.tensor([1.0 if stop else 0.0])
            torch.distributed.broadcast(flag, 0)
            stop = bool(flag.item())
        if stop:
            stopped_early = True
            logger.info("success plateau: no improvement in %d evaluations, stopping", imp.patience)
            break
    bar.close()
    if plateau is not None and ctx.is_main and plateau.best_version < 0:
        # the rule judged no version (too few episodes): hand over the Stage 1 policy
        stage1_policy, _ = load_checkpoint(policy_path, cfg.device)
        best_round = 0
        save_checkpoint(out / BEST, stage1_policy, {**meta, "round": 0,
                                                     "selection": {"plateau": None}})
    elapsed = time.perf_counter() - t0
    if metrics is not None:
        metrics.close()
        plot_improve_curves(out)
    return ImproveResult(
        directory=out,
        rounds_run=round_index + 1 - start_round if imp.rounds > start_round else 0,
        stopped_early=stopped_early,
        initial_eval=initial_eval,
        final_eval=final_eval,
        best_eval=best_eval,
        best_round=best_round,
        elapsed_s=elapsed,
        updates_per_s=updates_done / elapsed if elapsed > 0 else 0.0,
        history=read_metrics(out) if ctx.is_main else [],
    )


def plot_improve_curves(directory: Path) -> Path:
    records = read_metrics(directory)
    return plot_curves(
        records,
        [
            ("ground-truth success (eval)", ["eval/success_rate", "practice/gt_success_at_end"]),
            (
                "episode length [steps]",
                ["eval/mean_length", "eval/mean_success_length", "practice/mean_length"],
            ),
            ("learned signals", ["steps_to_go/mean_initial_d", "returns/mean"]),
            ("detector vs ground truth", ["detector/precision", "detector/recall"]),
        ],
        directory / "learning_curve.png",
        x_key="step",
        title="Stage 2 Self-Improvement (x: round)",
    )
