"""Fixtures for node tests: a tiny real checkpoint (random mlp, safetensors + sha256)."""

from __future__ import annotations

from pathlib import Path

import pytest


def write_tiny_checkpoint(path: Path, seed: int = 0, state_dim: int = 2) -> Path:
    """A small untrained ``mlp`` EFM over a ``state_dim`` state with 2-D actions in
    [-0.03, 0.03] (PushTable's delta range) and 50 steps-to-go bins over 0..100."""
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
            "action_tokenizer": {
                "type": "uniform",
                "action_dim": 2,
                "bins": 32,
                "low": -0.03,
                "high": 0.03,
            },
            "steps_to_go": {"max_steps": 100, "num_bins": 50},
        }
    )
    return save_checkpoint(path, model, metadata={"purpose": "test"})


@pytest.fixture
def tiny_checkpoint(tmp_path: Path) -> Path:
    return write_tiny_checkpoint(tmp_path / "ckpt_v0")
