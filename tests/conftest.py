"""Shared fixtures. Every test process keeps DDS discovery on this machine."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

# Before anything imports rclpy: discovery never leaves localhost (PLATFORM.md).
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ.setdefault("AMENT_PREFIX_PATH", sys.prefix)
os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
sys.path.append(str(Path(__file__).parent))  # last: never shadows a real package

from ros_harness import RosProcess, claim_domain


@pytest.fixture
def ros_domain(monkeypatch: pytest.MonkeyPatch) -> Iterator[int]:
    """A ROS domain id of this test's own, exported to the test and its children."""
    with claim_domain() as domain:
        monkeypatch.setenv("ROS_DOMAIN_ID", str(domain))
        monkeypatch.setenv("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
        yield domain


@pytest.fixture
def ros_context(ros_domain: int):
    """An initialised rclpy context on the test's domain (shut down afterwards)."""
    import rclpy
    from rclpy.context import Context

    context = Context()
    rclpy.init(context=context, domain_id=ros_domain)
    try:
        yield context
    finally:
        context.try_shutdown()


@pytest.fixture
def ros_process(ros_domain: int, tmp_path: Path):
    """Factory: start ``python ARGS...`` as a separate process on the test's domain."""
    started: list[RosProcess] = []

    def start(*args: str, name: str = "proc") -> RosProcess:
        proc = RosProcess(list(args), ros_domain, tmp_path / f"{name}-{len(started)}.log")
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.stop()


# Scheduling on the two pytest-xdist workers of `make test` (--dist loadgroup
# --no-loadscope-reorder). Each file is one work unit (its module fixtures are built once),
# except SPREAD, whose tests are independent and long: those go one by one to whichever
# worker is free. Units are handed out heaviest first, so both workers end together.
# Seconds per file, sequential, measured here on 2026-12-03 (tests/ outside this table
# take under 15 s each and keep their collection order).
FILE_SECONDS = {
    "tests/experiment_runs/test_experiments_smoke.py": 199,
    "tests/efm_ros/test_fault_matrix.py": 155,
    "tests/test_installed_workspace.py": 154,
    "tests/efm_ros/test_practice_loop.py": 116,
    "tests/efm_learning/test_pushtable_stage2.py": 116,
    "tests/efm_learning/test_self_improvement.py": 87,
    "tests/efm_ros/test_practice_faults.py": 55,
    "tests/efm_ros/test_fuzz_inputs.py": 34,
    "tests/efm_sim/test_aloha.py": 28,
    "tests/efm_learning/test_learning_cli.py": 22,
    "tests/efm_ros/test_operator.py": 19,
    "tests/efm_ros/test_aloha_practice.py": 18,
    "tests/efm_ros/test_learner_torchrun.py": 17,
}
SPREAD = {
    "tests/experiment_runs/test_experiments_smoke.py",
    "tests/efm_ros/test_fault_matrix.py",
    "tests/efm_ros/test_practice_loop.py",
    "tests/efm_ros/test_practice_faults.py",
}


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook reads the xdist_group marks
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Group every file but SPREAD into one xdist unit, and order units heaviest first."""
    per_file: dict[str, int] = {}
    for item in items:
        path = item.nodeid.split("::")[0]
        per_file[path] = per_file.get(path, 0) + 1
        if path not in SPREAD:
            item.add_marker(pytest.mark.xdist_group(path))

    def unit_seconds(item: pytest.Item) -> float:
        path = item.nodeid.split("::")[0]
        seconds = FILE_SECONDS.get(path, 0.0)
        return seconds / per_file[path] if path in SPREAD else seconds

    items.sort(key=unit_seconds, reverse=True)  # stable: the rest keep collection order
