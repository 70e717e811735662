"""Fixtures for node tests: a tiny real checkpoint (random mlp, safetensors + sha256)."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests_efm_ros_helpers import write_tiny_checkpoint


@pytest.fixture
def tiny_checkpoint(tmp_path: Path) -> Path:
    return write_tiny_checkpoint(tmp_path / "ckpt_v0")
