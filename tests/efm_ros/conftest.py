"""Fixtures for node tests: a tiny real checkpoint (random mlp, safetensors + sha256)."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests_efm_ros_helpers import write_tiny_checkpoint


@pytest.fixture
def tiny_checkpoint(tmp_path: Path) -> Path:
    return write_tiny_checkpoint(tmp_path / "ckpt_v0")


@pytest.fixture
def graph_factory(ros_domain, tmp_path):
    """Factory: start (part of) a practice deployment as processes on the test's domain;
    ``only`` keeps the named nodes, ``station`` one station's nodes plus the globals,
    ``compose`` runs each station in one process (efm_ros.compose)."""
    from ros_harness import ros_environment

    from efm_ros.bringup import Graph
    from efm_ros.node_set import load_params, practice_nodes

    graphs = []

    def start(params_file, only=None, station=None, compose=False):
        specs = practice_nodes(load_params(params_file), sim=True)
        specs = [
            s
            for s in specs
            if (only is None or s.name in only)
            and (station is None or s.namespace in ("/", f"/{station}"))
        ]
        graph = Graph(
            specs,
            params_file,
            tmp_path / f"logs{len(graphs)}",
            env=ros_environment(ros_domain),
            compose=compose,
        )
        graphs.append(graph)
        return graph

    yield start
    for graph in graphs:
        graph.stop()
