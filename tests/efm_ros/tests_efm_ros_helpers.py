"""Small builders shared by the node tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def observation(
    state,
    step: int = 0,
    image: np.ndarray | None = None,
    instruction: str = "",
    station: str = "station_0",
    stamp=None,
):
    """An efm_interfaces/Observation with a 2-D proprioception and an optional camera;
    ``stamp``: a builtin_interfaces/Time or a node (stamped with its clock's now)."""
    from efm_ros.conversions import make_observation

    images = {} if image is None else {"top": image}
    if stamp is not None and hasattr(stamp, "get_clock"):
        stamp = stamp.get_clock().now().to_msg()
    return make_observation(
        station=station,
        step=step,
        instruction=instruction,
        images=images,
        proprioception=list(state),
        proprio_names=["ee_x", "ee_y"],
        stamp=stamp,
    )


def write_tiny_checkpoint(
    path: Path,
    seed: int = 0,
    state_dim: int = 2,
    action_limit: float = 0.03,
    tokenizer: dict | None = None,
) -> Path:
    """A small untrained ``mlp`` EFM over a ``state_dim`` state with 2-D actions in
    [-0.03, 0.03] (PushTable's delta range; ``action_limit`` widens it, for tests of the
    clipping; ``tokenizer`` replaces the action tokenizer) and 50 steps-to-go bins over
    0..100."""
    import torch

    from efm_learning.checkpoint import save_checkpoint
    from efm_learning.models import make_model

    torch.manual_seed(seed)
    model = make_model(
        {
            "type": "mlp",
            "state_dim": state_dim,
            "hidden_size": 16,
            "num_layers": 2,
            "action_tokenizer": tokenizer
            or {
                "type": "uniform",
                "action_dim": 2,
                "bins": 32,
                "low": -action_limit,
                "high": action_limit,
            },
            "steps_to_go": {"max_steps": 100, "num_bins": 50},
        }
    )
    return save_checkpoint(path, model, metadata={"purpose": "test"})
