"""Which executor a node process spins (efm_ros.spin.make_executor, EFM_EXECUTOR)."""

from __future__ import annotations

import pytest


def test_default_single_multi_and_bad_choice(monkeypatch, ros_context):
    from rclpy.executors import MultiThreadedExecutor, SingleThreadedExecutor

    from efm_ros.spin import EXECUTOR_ENV, make_executor

    monkeypatch.delenv(EXECUTOR_ENV, raising=False)
    single = make_executor(1, ros_context)
    multi = make_executor(2, ros_context)
    assert isinstance(single, SingleThreadedExecutor)
    assert isinstance(multi, MultiThreadedExecutor)
    single.shutdown()
    multi.shutdown()
    monkeypatch.setenv(EXECUTOR_ENV, "fastest")
    with pytest.raises(ValueError, match="single"):
        make_executor(1, ros_context)


def test_events_executor_delivers_messages_with_spin_once(monkeypatch, ros_context):
    """The spin pattern of run_node (spin_once with a timeout) on the EventsExecutor."""
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node
    from std_msgs.msg import String

    from efm_ros.qos import RELIABLE
    from efm_ros.spin import EXECUTOR_ENV, make_executor

    monkeypatch.setenv(EXECUTOR_ENV, "events")
    executor = make_executor(1, ros_context)
    assert not isinstance(executor, SingleThreadedExecutor)
    node = Node("events_probe", context=ros_context)
    got: list[str] = []
    node.create_subscription(String, "probe", lambda m: got.append(m.data), RELIABLE)
    pub = node.create_publisher(String, "probe", RELIABLE)
    ticks: list[int] = []
    node.create_timer(0.01, lambda: ticks.append(1))
    executor.add_node(node)
    try:
        for i in range(5):
            pub.publish(String(data=f"m{i}"))
        for _ in range(200):
            executor.spin_once(timeout_sec=0.05)
            if len(got) >= 5 and len(ticks) >= 3:
                break
        assert len(got) >= 5 and got[0] == "m0", got
        assert len(ticks) >= 3
    finally:
        executor.shutdown()
        node.destroy_node()


def test_a_stuck_teardown_exits_instead_of_hanging():
    """run_node's guard: once on_shutdown has run, a blocked rmw teardown ends the process
    (exit 0, said on stderr) instead of waiting for bring-up's SIGKILL; a finished one
    cancels it."""
    import subprocess
    import sys
    import time

    code = (
        "import time\n"
        "from efm_ros.spin import exit_if_stuck\n"
        "exit_if_stuck(60.0).cancel()\n"  # finished in time: nothing happens
        "exit_if_stuck(0.5)\n"
        "time.sleep(30)\n"  # a teardown that never returns
    )
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=20)
    assert proc.returncode == 0
    assert time.monotonic() - started < 15
    assert "teardown still blocked" in proc.stderr
