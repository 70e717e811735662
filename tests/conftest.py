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
