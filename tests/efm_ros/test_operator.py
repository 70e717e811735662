"""The practice operator (issue 15, item 4; paper Appendix F: one operator resets stations and
ends episodes): ``efm-operator`` run as a real process against a real CoordinatorNode that
drives a stand-in actor through real RunEpisode actions; ``station.require_reset`` holds a
station until the operator's reset; an aborted episode is not counted as the policy's."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import pytest
from ros_harness import ros_environment, spin_until


def _operator(executor, domain: int, *args: str, timeout: float = 30.0):
    """Run ``efm-operator ARGS`` as a process while ``executor`` spins; (rc, out, err)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "efm_ros.operator_cli", *args, "--timeout", "5"],
        env=ros_environment(domain), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )
    assert spin_until(executor, lambda: proc.poll() is not None, timeout), args
    out, err = proc.communicate()
    return proc.returncode, out, err


@pytest.fixture
def coordinated(ros_context):
    """A coordinator with ``station.require_reset`` and a stand-in actor for station_0 whose
    episodes run until ``release`` is set or they are cancelled."""
    from rclpy.action import ActionServer, CancelResponse
    from rclpy.callback_groups import ReentrantCallbackGroup
    from rclpy.executors import MultiThreadedExecutor
    from rclpy.node import Node
    from rclpy.parameter import Parameter
    from std_msgs.msg import UInt64

    from efm_interfaces.action import RunEpisode
    from efm_interfaces.msg import PracticeStatus, WeightsUpdate
    from efm_ros.coordinator_node import CoordinatorNode
    from efm_ros.qos import LATCHED

    coordinator = CoordinatorNode(
        context=ros_context,
        parameter_overrides=[
            Parameter("stations", value=["station_0"]),
            Parameter("station.require_reset", value=True),
            Parameter("status.rate_hz", value=20.0),
        ],
    )
    fake = Node("fake_station", context=ros_context)
    state = {"goals": 0, "release": threading.Event(), "cancelled": 0}
    goal = RunEpisode.Goal

    def execute(handle):
        state["goals"] += 1
        while not state["release"].is_set():
            if handle.is_cancel_requested:
                state["cancelled"] += 1
                handle.canceled()
                return RunEpisode.Result(termination_reason=goal.TERMINATION_ABORTED,
                                         termination_detail="cancelled by the operator",
                                         length=3)
            time.sleep(0.01)
        state["release"].clear()
        handle.succeed()
        return RunEpisode.Result(success=True, length=5,
                                 termination_reason=goal.TERMINATION_SUCCESS)

    ActionServer(fake, RunEpisode, "/station_0/run_episode", execute,
                 cancel_callback=lambda _: CancelResponse.ACCEPT,
                 callback_group=ReentrantCallbackGroup())
    fake.create_publisher(WeightsUpdate, "/learner/weights", LATCHED).publish(
        WeightsUpdate(version=0))
    fake.create_publisher(UInt64, "/station_0/policy/version", LATCHED).publish(UInt64(data=0))
    statuses: list[PracticeStatus] = []
    fake.create_subscription(PracticeStatus, "/practice/status", statuses.append, LATCHED)
    executor = MultiThreadedExecutor(num_threads=4, context=ros_context)
    executor.add_node(coordinator)
    executor.add_node(fake)
    try:
        yield coordinator, state, statuses, executor
    finally:
        state["release"].set()
        executor.shutdown()
        coordinator.destroy_node()
        fake.destroy_node()


def test_require_reset_holds_a_station_until_the_operator_says_reset_done(
    coordinated, ros_domain
):
    coordinator, state, _statuses, executor = coordinated
    station = coordinator.stations["station_0"]
    assert spin_until(executor, lambda: state["goals"] == 1, 20.0)
    state["release"].set()  # the episode succeeds
    assert spin_until(executor, lambda: station.state == "awaiting_reset", 10.0)
    # no new episode while the station waits, however long
    assert not spin_until(executor, lambda: state["goals"] > 1, 1.5)
    rc, out, _ = _operator(executor, ros_domain, "status")
    assert rc == 0 and "awaiting_reset" in out and "station_0" in out, out
    rc, out, err = _operator(executor, ros_domain, "reset-done", "station_9")
    assert rc == 1 and "unknown station" in err, (out, err)
    rc, out, err = _operator(executor, ros_domain, "reset-done", "station_0")
    assert rc == 0 and "reset done" in out, (out, err)
    assert spin_until(executor, lambda: state["goals"] == 2, 10.0)
    # a reset for a station that is running is refused, and nothing changes
    rc, _, err = _operator(executor, ros_domain, "reset-done", "station_0")
    assert rc == 1 and "no station is waiting" in err, err
    assert station.state == "running"


def test_abort_ends_the_episode_and_it_is_not_the_policys_outcome(coordinated, ros_domain):
    coordinator, state, statuses, executor = coordinated
    station = coordinator.stations["station_0"]
    assert spin_until(executor, lambda: state["goals"] == 1, 20.0)
    rc, out, err = _operator(executor, ros_domain, "abort", "station_0")
    assert rc == 0 and "aborting ['station_0']" in out, (out, err)
    assert spin_until(executor, lambda: station.aborted == 1, 10.0)
    assert state["cancelled"] == 1
    # not counted as an episode of the policy, nor in the detector success per version
    assert station.episodes == 0 and not coordinator.version_success.get(0)
    assert station.state == "awaiting_reset"  # the operator resets before the next one
    assert spin_until(
        executor, lambda: statuses and statuses[-1].stations[0].aborted == 1, 5.0
    )
    assert statuses[-1].stations[0].last_seen.sec > 0  # stamped when the actor answered
    # pause / resume round trip through the same service
    rc, out, _ = _operator(executor, ros_domain, "pause")
    assert rc == 0 and coordinator.state == "paused", out
    rc, out, _ = _operator(executor, ros_domain, "resume")
    assert rc == 0 and coordinator.state == "collecting", out


def test_operator_without_a_coordinator_says_so(ros_domain):
    env = ros_environment(ros_domain)
    for args in (["pause"], ["status"], ["intervene", "station_0"]):
        proc = subprocess.run(
            [sys.executable, "-m", "efm_ros.operator_cli", *args, "--timeout", "1"],
            env=env, capture_output=True, text=True, timeout=60,
        )
        assert proc.returncode == 2, (args, proc.stdout, proc.stderr)
        assert "efm-operator:" in proc.stderr
    bad = subprocess.run([sys.executable, "-m", "efm_ros.operator_cli", "intervene"],
                         env=env, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "needs a STATION" in bad.stderr
