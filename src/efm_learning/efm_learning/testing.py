"""Fakes and small fixtures for tests (one module, Acme style).

Nothing here is used by the training code itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from efm_learning.models import make_model
from efm_learning.models.base import EFM
from efm_sim import keys


def tiny_mlp(
    hidden: int = 32, bins: int = 16, num_bins: int = 15, max_steps: int = 140, seed: int = 0
) -> EFM:
    """A small ``mlp`` EFM for PointMass-shaped inputs (actions in +-5e-4)."""
    torch.manual_seed(seed)
    return make_model({
        "type": "mlp", "state_dim": 6, "hidden_size": hidden, "num_layers": 2,
        "action_tokenizer": {"type": "uniform", "action_dim": 2, "bins": bins,
                             "low": -5e-4, "high": 5e-4},
        "steps_to_go": {"max_steps": max_steps, "num_bins": num_bins},
    })


class DistanceStepsToGo(torch.nn.Module):
    """A stand-in steps-to-go model: ``d = |pos - goal| / speed`` (PointMass states).

    Lets actor tests control exactly when the learned-detector path fires.
    """

    def __init__(self, speed: float = 0.1, offset: float = 0.0) -> None:
        super().__init__()
        self.speed = speed
        self.offset = offset
        self.register_buffer("_anchor", torch.zeros(1))
        self.num_action_tokens = 2
        self.action_vocab = 16
        self.calls = 0

    def predict_steps_to_go(self, observations: Mapping[str, Any]) -> np.ndarray:
        self.calls += 1
        state = np.asarray(observations[keys.OBS_STATE], dtype=np.float64)
        return np.linalg.norm(state[:, 0:2] - state[:, 4:6], axis=1) / self.speed + self.offset


def random_image_observations(
    n: int, instructions: list[str], size: int = 64, seed: int = 0
) -> dict[str, Any]:
    """``n`` random camera observations (frame, previous frame, 2-d state, instruction)."""
    rng = np.random.default_rng(seed)
    return {
        keys.OBS_IMAGE: rng.integers(0, 255, (n, size, size, 3), dtype=np.uint8),
        keys.OBS_PREV_IMAGE: rng.integers(0, 255, (n, size, size, 3), dtype=np.uint8),
        keys.OBS_STATE: rng.normal(size=(n, 2)).astype(np.float32),
        keys.INSTRUCTION: [instructions[i % len(instructions)] for i in range(n)],
    }


def write_pointmass_dataset(root: Path, episodes: int, seed: int = 0) -> Path:
    """Write ``episodes`` PointMass waypoint demos as efm_sim episode files."""
    from efm_sim.dataset import episode_path, write_episode, write_meta
    from efm_sim.pointmass import generate_demos

    for i, episode in enumerate(generate_demos(episodes, seed=seed)):
        write_episode(episode_path(root, i), episode)
    write_meta(root, {"env_name": "pointmass", "seed": seed})
    return root
