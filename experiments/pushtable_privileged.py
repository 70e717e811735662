"""The privileged-state upper bound of PushTable Block2Block behaviour cloning.

    python -m experiments.pushtable_privileged [--config config/pushtable.yaml]
        [--tasks 200] [--split tuning] [--steps 6000] [--no-relative] [--out DIR]

What could a BC policy reach on the same demonstrations if perception were solved? An
MLP (3 x 256, the paper notebook's trunk) is trained on the Stage 1 training split of
``data.dir`` with the simulator's state instead of pixels: end-effector xy, each block's
x, y, sin/cos yaw, one-hots of the two named blocks, and (unless ``--no-relative``) the
vectors moved-block - end-effector and target - moved-block. It predicts the same
LanguageTable action tokens (Appendix E.1) and is evaluated by sampling them on the
tasks of ``--split`` (docs/EVALUATION.md) at the configured step limit. Every image model
is read against this number (docs/PUSHTABLE.md). Outputs ``<out>/results.json``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

from experiments import Progress, load_experiment_config, setup_runtime, write_json


def features(ee: np.ndarray, poses: np.ndarray, block: int, target: int, n_blocks: int,
             relative: bool) -> np.ndarray:
    """Privileged state of one observation: ``ee`` (2,), ``poses`` (N, 3) [x, y, yaw]."""
    onehot = np.zeros(2 * n_blocks, np.float32)
    onehot[block], onehot[n_blocks + target] = 1.0, 1.0
    xy, yaw = poses[:, :2], poses[:, 2:3]
    parts = [ee, xy.ravel(), np.sin(yaw).ravel(), np.cos(yaw).ravel(), onehot]
    if relative:
        parts += [xy[block] - ee, xy[target] - xy[block]]
    return np.concatenate(parts).astype(np.float32)


def _named(instruction: str, blocks: tuple[str, ...]) -> tuple[int, int]:
    from efm_sim import tasks

    task = tasks.parse_instruction(instruction, tasks.PUSHTABLE_FAMILIES)
    if task.family != tasks.BLOCK2BLOCK:
        raise SystemExit(f"the privileged bound is for Block2Block, got {instruction!r}")
    return blocks.index(task.block), blocks.index(task.target)


def training_set(cfg: Any, blocks: tuple[str, ...], relative: bool) -> tuple[np.ndarray, ...]:
    """(features, actions) of every transition in the Stage 1 training split."""
    from efm_learning.data import list_episode_files, split_train_val, train_subset
    from efm_sim.dataset import read_episode

    paths = list_episode_files(cfg.data.dir)
    train, _ = split_train_val(paths, cfg.data.val_fraction, cfg.seed)
    train = train_subset(train, cfg.data.train_fraction, cfg.seed)
    xs, ys = [], []
    for path in train:
        ep = read_episode(path, load_images=False)
        if ep.env_states is None:
            raise SystemExit(f"{path} has no environment state (generated before it was kept)")
        block, target = _named(ep.instruction, blocks)
        poses = ep.env_states.reshape(len(ep.env_states), len(blocks), 3)
        for t in range(ep.length):
            xs.append(features(ep.states[t], poses[t], block, target, len(blocks), relative))
            ys.append(ep.actions[t])
    return np.stack(xs), np.stack(ys), len(train)


def train_mlp(x: np.ndarray, tokens: np.ndarray, vocab: tuple[int, ...], steps: int,
              seed: int) -> Any:
    import torch
    from torch import nn

    torch.manual_seed(seed)
    mean, std = x.mean(0), x.std(0) + 1e-6
    net = nn.Sequential(nn.Linear(x.shape[1], 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(),
                        nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, sum(vocab)))
    opt = torch.optim.Adam(net.parameters(), lr=3e-4)
    xt = torch.as_tensor((x - mean) / std)
    yt = torch.as_tensor(tokens)
    rng = np.random.default_rng(seed)
    splits = list(np.cumsum(vocab)[:-1])
    for _ in range(steps):
        idx = torch.as_tensor(rng.integers(0, len(xt), 256))
        heads = torch.tensor_split(net(xt[idx]), splits, dim=1)
        loss = sum(nn.functional.cross_entropy(h, yt[idx, i]) for i, h in enumerate(heads))
        opt.zero_grad()
        loss.backward()
        opt.step()
    net.eval()
    return net, mean, std, splits


def evaluate(cfg: Any, model: Any, tokenizer: Any, seeds: list[int], relative: bool,
             seed: int) -> dict[str, float]:
    """Sampled-token rollouts on ``seeds`` until GT success or the step limit."""
    import torch

    from efm_sim import make_env

    net, mean, std, splits = model
    env = make_env(cfg.env, **{**cfg.env_kwargs, "image_size": 8,
                               "max_episode_steps": cfg.improve.max_episode_steps})
    gen = torch.Generator().manual_seed(seed)
    base = env.unwrapped
    successes, lengths = 0, []
    for s in seeds:
        _, info = env.reset(seed=s)
        block, target = _named(info["instruction"], base.blocks)
        for _ in range(cfg.improve.max_episode_steps):
            x = features(base.ee_xy(), base.object_poses(), block, target, len(base.blocks),
                         relative)
            with torch.no_grad():
                logits = net(torch.as_tensor((x - mean) / std)[None])
            tokens = np.array([[int(torch.multinomial(h.softmax(-1), 1, generator=gen))
                                for h in torch.tensor_split(logits, splits, dim=1)]])
            _, _, terminated, truncated, info = env.step(tokenizer.decode(tokens)[0])
            if terminated or truncated:
                break
        successes += bool(info["success"])
        lengths.append(base.elapsed_steps if info["success"] else cfg.improve.max_episode_steps)
    env.close()
    return {"success_rate": successes / len(seeds), "mean_length": float(np.mean(lengths)),
            "tasks": len(seeds)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m experiments.pushtable_privileged",
                                description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="config/pushtable.yaml")
    p.add_argument("--tasks", type=int, default=200)
    p.add_argument("--split", choices=["tuning", "report"], default="tuning")
    p.add_argument("--steps", type=int, default=6000, help="MLP training steps (batch 256)")
    p.add_argument("--no-relative", action="store_true", help="drop the two relative vectors")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/experiments/pushtable_privileged")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = p.parse_args(argv)
    setup_runtime(threads=1)
    from efm_learning.protocol import task_seeds
    from efm_learning.tokenizers import LanguageTableActionTokenizer
    from efm_sim.pushtable import check_blocks

    echo = Progress("pushtable_privileged")
    cfg = load_experiment_config(args.config, args.overrides)
    blocks = check_blocks(cfg.env_kwargs.get("blocks"))
    relative = not args.no_relative
    x, actions, episodes = training_set(cfg, blocks, relative)
    tokenizer = LanguageTableActionTokenizer(
        max_delta=float(cfg.model["action_tokenizer"].get("max_delta", 0.03)))
    echo(f"[data] {episodes} training demos, {len(x)} transitions, {x.shape[1]} features")
    model = train_mlp(x, tokenizer.encode(actions), tokenizer.vocab_sizes, args.steps, args.seed)
    echo(f"[train] {args.steps} steps done; evaluating on {args.tasks} {args.split} tasks")
    result = evaluate(cfg, model, tokenizer, task_seeds(args.split, args.tasks), relative,
                      args.seed)
    echo(f"[eval] GT success {result['success_rate']:.3f}, mean length "
         f"{result['mean_length']:.1f}")
    out = Path(args.out)
    write_json(out / f"results{'_no_relative' if not relative else ''}.json",
               {**result, "relative_vectors": relative, "train_episodes": episodes,
                "transitions": len(x), "steps": args.steps, "split": args.split,
                "step_limit": cfg.improve.max_episode_steps, "data": cfg.data.dir})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
