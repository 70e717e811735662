"""Shared fixtures for the learning-core tests: few threads (2 shared cores)."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def pointmass_data(tmp_path_factory: pytest.TempPathFactory):
    """120 PointMass waypoint demos written as episode files (shared by tests)."""
    from efm_learning.testing import write_pointmass_dataset

    return write_pointmass_dataset(tmp_path_factory.mktemp("pm_data"), 120, seed=0)
