"""Ground-truth evaluation of an ALOHA policy in efm_sim's insertion env (Appendix D.3).

The policy acts at 10 Hz: every 5th driver step it sees the stacked camera pair and the
joints (efm_learning.aloha_data.policy_observation, the Stage 1 pool's stacking) and
emits a chunk of 5 joint targets, which the 50 Hz env executes in full, one per driver
step (the chunk already holds one target per driver step, so no interpolation is
needed). Success (peg touches pin) and the stage reached (``info["max_stage"]``: 1 both
grippers touch, 2 both lifted, 3 peg touches socket, 4 pin) are ground truth, for
evaluation only.

    python -m efm_learning.aloha_eval --checkpoint runs/aloha/sft/last --episodes 20
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from efm_learning.aloha_data import POLICY_PERIOD, policy_observation
from efm_sim.aloha_layout import OBS_IMAGES

logger = logging.getLogger(__name__)

#: evaluation env seeds start here, far from the demonstrations' (0, 1, 2, ...)
EVAL_SEED = 100_000


def execute_chunk(
    env: Any, chunk: np.ndarray, obs: dict[str, Any], info: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, Any], int, bool]:
    """Execute one 10 Hz chunk at 50 Hz, one target per driver step, stopping at the end of
    the episode; ``(last observation, its info, driver steps taken, episode over)``."""
    done, steps = False, 0
    for action in chunk[:POLICY_PERIOD]:
        obs, _, terminated, truncated, info = env.step(action)
        steps += 1
        done = bool(terminated or truncated)
        if done:
            break
    return obs, info, steps, done


def grasp_distances(env: Any) -> tuple[float, float]:
    """Ground truth, evaluation only: distance [m] from each gripper's grasp point (the
    site between its fingertips) to the object that arm must pick up (left: socket, right:
    peg), a progress measure below the contact stages for a policy that never grasps."""
    left = env.data.site_xpos[env.model.site("left_grasp").id]
    right = env.data.site_xpos[env.model.site("right_grasp").id]
    return (float(np.linalg.norm(left - env.socket_pose()[:3])),
            float(np.linalg.norm(right - env.peg_pose()[:3])))


def run_policy_episode(
    env: Any, policy: Any, seed: int, greedy: bool = True,
    generator: torch.Generator | None = None,
) -> dict[str, Any]:
    """One episode: 10 Hz chunks executed at 50 Hz until success or the time limit."""
    obs, info = env.reset(seed=seed)
    size, band = policy.config.image_size, policy.config.band_px
    steps = 0
    done = False
    closest = np.asarray(grasp_distances(env))
    while not done:
        _, chunk = policy.act(policy_observation(obs, size, band), greedy=greedy,
                              generator=generator)
        obs, info, n, done = execute_chunk(env, chunk[0], obs, info)
        steps += n
        closest = np.minimum(closest, grasp_distances(env))
    return {"seed": int(seed), "success": bool(info["success"]),
            "max_stage": int(info["max_stage"]), "steps": steps,
            "closest_left_to_socket_m": round(float(closest[0]), 4),
            "closest_right_to_peg_m": round(float(closest[1]), 4)}


def trace_episode(
    env: Any, policy: Any, reward_model: Any, seed: int, greedy: bool = True,
    generator: torch.Generator | None = None,
) -> dict[str, Any]:
    """One episode as :func:`run_policy_episode`, recording at every 10 Hz observation what
    the paper's Figures 2 and 3 show: the frozen Stage 1 model's steps-to-go distribution
    and d(o, g) (Eq. 1), the first stacked image (cam_high over cam_low), and the
    simulator's contact stage (ground truth, only to annotate the plots). Also the wall
    time of every batch-1 policy call (a 70-token chunk) for the latency report."""
    obs, info = env.reset(seed=seed)
    size, band = policy.config.image_size, policy.config.band_px
    probs, d, stages, frames, latency = [], [], [], [], []
    steps, done = 0, False

    reward_view = (reward_model.config.image_size, reward_model.config.band_px)

    def observe(o: dict[str, Any], stage: int) -> dict[str, Any]:
        """Record the reward model's view of ``o``; returns the policy's input."""
        x = policy_observation(o, size, band)
        xr = x if reward_view == (size, band) else policy_observation(o, *reward_view)
        batch = reward_model.prepare_observations(xr)
        with torch.no_grad():
            probs.append(reward_model.steps_to_go_probs(batch)[0].cpu().numpy())
            d.append(float(reward_model.expected_steps_to_go(batch)[0]))
        frames.append(xr[OBS_IMAGES][0, 0])
        stages.append(stage)
        return x

    x = observe(obs, int(info.get("stage", 0)))
    while not done:
        start = time.perf_counter()
        _, chunk = policy.act(x, greedy=greedy, generator=generator)
        latency.append(time.perf_counter() - start)
        obs, info, n, done = execute_chunk(env, chunk[0], obs, info)
        steps += n
        x = observe(obs, int(info["stage"]))
    return {
        "seed": int(seed), "success": bool(info["success"]),
        "max_stage": int(info["max_stage"]), "steps": steps,
        "steps_to_go": np.asarray(d), "probs": np.stack(probs),
        "stage": np.asarray(stages), "frames": np.stack(frames),
        "bin_values": np.asarray(reward_model.steps_tokenizer.bin_values, dtype=np.float64),
        "policy_latency_s": np.asarray(latency),
    }


def evaluate(
    checkpoint: str | Path,
    episodes: int = 20,
    seed: int = EVAL_SEED,
    image_size: tuple[int, int] = (48, 64),
    max_episode_steps: int = 400,
    greedy: bool = True,
    threads: int = 1,
) -> dict[str, Any]:
    """GT success rate and stage-wise progress of a checkpoint over ``episodes`` seeds."""
    from efm_learning.checkpoint import load_checkpoint
    from efm_sim.aloha import AlohaInsertionEnv

    torch.set_num_threads(threads)
    policy, meta = load_checkpoint(Path(checkpoint))
    policy.eval()
    env = AlohaInsertionEnv(image_size=image_size, max_episode_steps=max_episode_steps)
    generator = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    results = []
    for i in range(episodes):
        results.append(run_policy_episode(env, policy, seed + i, greedy, generator))
        logger.info("episode %d: %s", i, results[-1])
    env.close()
    stages = np.array([r["max_stage"] for r in results])
    return {
        "checkpoint": str(checkpoint),
        "step": meta.get("step"),
        "episodes": episodes,
        "greedy": greedy,
        "success_rate": float(np.mean([r["success"] for r in results])),
        # fraction of episodes that reached at least stage s (1 touch .. 4 pin)
        "reached_stage": {str(s): float(np.mean(stages >= s)) for s in range(1, 5)},
        "mean_max_stage": float(stages.mean()),
        # closest approach of each gripper to its object (median over episodes, m)
        "closest_left_to_socket_m": float(np.median(
            [r["closest_left_to_socket_m"] for r in results])),
        "closest_right_to_peg_m": float(np.median(
            [r["closest_right_to_peg_m"] for r in results])),
        "seconds": round(time.perf_counter() - start, 1),
        "results": results,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", required=True, help="a Stage 1 checkpoint directory")
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--seed", type=int, default=EVAL_SEED)
    parser.add_argument("--image-size", default="48x64", help="camera HxW, as generated")
    parser.add_argument("--max-episode-steps", type=int, default=400)
    parser.add_argument("--sample", action="store_true", help="sample actions (default greedy)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path, help="also write the report here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    h, w = (int(v) for v in args.image_size.lower().split("x"))
    report = evaluate(args.checkpoint, args.episodes, args.seed, (h, w),
                      args.max_episode_steps, not args.sample, args.threads)
    text = json.dumps(report, indent=2)
    if args.json:
        args.json.write_text(text)
    print(json.dumps({k: v for k, v in report.items() if k != "results"}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
