"""Real-ROS test harness: one ROS domain per test, discovery on localhost only.

Domains are claimed with lock files so concurrent pytest runs on one machine (several
developers, CI) never share a domain; a lock left by a dead process is reclaimed.
"""

from __future__ import annotations

import contextlib
import os
import random
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

LOCK_DIR = Path(os.environ.get("EFM_DOMAIN_LOCK_DIR", "/tmp/efm-ros-domains"))
#: usable ROS domain ids on Linux without port clashes (ROS 2 docs: 0-101)
DOMAIN_RANGE = range(1, 102)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def claim_domain() -> Iterator[int]:
    """Claim a free ROS domain id for the duration of the block."""
    LOCK_DIR.mkdir(parents=True, exist_ok=True)
    candidates = list(DOMAIN_RANGE)
    random.shuffle(candidates)
    for domain in candidates:
        lock = LOCK_DIR / f"{domain}.lock"
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            try:
                owner = int(lock.read_text() or "0")
            except (OSError, ValueError):
                continue
            if owner and not _pid_alive(owner):
                lock.unlink(missing_ok=True)
            continue
        with os.fdopen(fd, "w") as handle:
            handle.write(str(os.getpid()))
        try:
            yield domain
        finally:
            lock.unlink(missing_ok=True)
        return
    raise RuntimeError(f"no free ROS domain id in {DOMAIN_RANGE} (locks in {LOCK_DIR})")


def ros_environment(domain: int) -> dict[str, str]:
    """Environment for a child ROS process confined to ``domain`` on this machine."""
    env = dict(os.environ)
    env["ROS_DOMAIN_ID"] = str(domain)
    env["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    env["PYTHONUNBUFFERED"] = "1"
    env.setdefault("AMENT_PREFIX_PATH", sys.prefix)
    return env


class RosProcess:
    """A child Python process on the test's domain; its output is kept for failure reports."""

    def __init__(self, args: list[str], domain: int, log_path: Path) -> None:
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, *args],
            env=ros_environment(domain),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def output(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def wait_for_output(self, text: str, timeout: float = 20.0) -> None:
        """Block until ``text`` appears in the process output (or fail with the output)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.output():
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"{text!r} not seen in process output:\n{self.output()}")

    def stop(self, timeout: float = 10.0) -> int:
        """SIGINT (like ^C), then kill if it does not exit; returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(2)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout)
        self._log.close()
        return self.proc.returncode


def spin_until(executor, predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
    """Spin ``executor`` until ``predicate()`` is true or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        executor.spin_once(timeout_sec=0.05)
    return predicate()
