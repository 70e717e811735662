"""aloha_bridge against the simulated Interbotix driver (issue 15, items 1-3), over real
topics and services of the interbotix_xs_msgs types: dry-run sends nothing to the arms;
with motion enabled, chunks run at 50 Hz within the joint limits and the velocity bound,
whatever the commands; stale joint_states and a lost heartbeat hold within a tick; bad
joint_states and chunks are refused and counted."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ros_harness import spin_until

pytest.importorskip("interbotix_xs_msgs", reason="make setup builds the stand-in")


@pytest.fixture
def station(ros_context):
    """The simulated driver (own executor and thread: its MuJoCo env), a bridge and a
    tester node; ``make(**bridge params)``."""
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node
    from rclpy.parameter import Parameter

    from efm_ros.aloha_bridge import AlohaBridgeNode
    from efm_ros.interbotix_sim import InterbotixSimNode

    made = {}

    def make(driver=None, **params):
        params.setdefault("safety.stale_s", 0.25)
        driver = InterbotixSimNode(context=ros_context, parameter_overrides=[
            Parameter(k, value=v) for k, v in {"cameras.enabled": False,
                                               **(driver or {})}.items()])
        bridge = AlohaBridgeNode(context=ros_context, namespace="station_0",
                                 parameter_overrides=[Parameter(k, value=v)
                                                      for k, v in params.items()])
        tester = Node("tester", context=ros_context, namespace="station_0")
        sim_exec = SingleThreadedExecutor(context=ros_context)
        sim_exec.add_node(driver)
        stop = threading.Event()
        thread = threading.Thread(target=lambda: [sim_exec.spin_once(0.01) for _ in iter(
            stop.is_set, True)], daemon=True)
        thread.start()
        executor = SingleThreadedExecutor(context=ros_context)
        executor.add_node(bridge)
        executor.add_node(tester)
        made.update(driver=driver, bridge=bridge, tester=tester, executor=executor,
                    sim_exec=sim_exec, stop=stop, thread=thread)
        assert spin_until(executor, lambda: not bridge.hold_reason.startswith(
            ("stale", "no joint")) or bridge.hold_reason == "", timeout=10.0), bridge.hold_reason
        return driver, bridge, tester, executor

    yield make
    if made:
        made["stop"].set()
        made["thread"].join(timeout=5.0)
        made["executor"].shutdown()
        made["sim_exec"].shutdown()
        made["driver"].env.close()
        for key in ("driver", "bridge", "tester"):
            made[key].destroy_node()


def _chunk(values, period=0.1):
    from efm_interfaces.msg import ActionCommand
    from efm_ros.embodiments import ALOHA_JOINTS

    values = np.asarray(values, dtype=np.float32)
    return ActionCommand(names=list(ALOHA_JOINTS), chunk_length=len(values),
                         values=values.ravel().tolist(), period_s=period)


def _home(driver):
    return driver.env.qpos().astype(np.float64)


def test_dry_run_is_the_default_and_sends_nothing(station):
    from interbotix_xs_msgs.msg import JointGroupCommand

    from efm_interfaces.msg import ActionCommand
    from efm_ros.qos import RELIABLE

    driver, bridge, tester, executor = station()
    assert bridge.dry_run
    debug = []
    tester.create_subscription(JointGroupCommand, "aloha_bridge/dry_run/follower_left/"
                               "commands/joint_group", debug.append, RELIABLE)
    pub = tester.create_publisher(ActionCommand, "action_command", RELIABLE)
    assert spin_until(executor, lambda: pub.get_subscription_count() > 0)
    target = _home(driver)
    target[1] += 0.3
    start = driver.env.qpos()
    pub.publish(_chunk([target] * 5))
    assert spin_until(executor, lambda: len(debug) >= 10, timeout=5.0), (
        bridge.diag.counters, bridge.hold_reason)
    assert debug[-1].name == "arm" and len(debug[-1].cmd) == 6
    assert driver.arms["follower_left"].commands == 0  # nothing reached the driver
    np.testing.assert_allclose(driver.env.qpos()[:6], start[:6], atol=0.02)  # no motion
    assert not driver.arms["follower_left"].torque  # and it never torqued the arms on


def test_chunks_run_at_50_hz_within_limits_and_the_velocity_bound(station):
    from interbotix_xs_msgs.msg import JointGroupCommand

    from efm_interfaces.msg import ActionCommand
    from efm_ros.qos import RELIABLE

    driver, bridge, tester, executor = station(**{"safety.dry_run": False,
                                                  "joints.max_velocity": [1.0] * 12})
    sent = []
    tester.create_subscription(JointGroupCommand, "/follower_left/commands/joint_group",
                               lambda m: sent.append((time.monotonic(), np.array(m.cmd))),
                               RELIABLE)
    pub = tester.create_publisher(ActionCommand, "action_command", RELIABLE)
    assert spin_until(executor, lambda: pub.get_subscription_count() > 0
                      and driver.arms["follower_left"].torque, timeout=10.0)
    home = _home(driver)
    target = home.copy()
    target[0] += 0.15  # waist: 0.15 rad over 5 x 0.1 s, within 1 rad/s
    pub.publish(_chunk(np.linspace(home, target, 6)[1:]))
    assert spin_until(executor, lambda: len(sent) >= 25, timeout=5.0), (
        bridge.diag.counters, bridge.hold_reason, len(sent))
    times = np.array([t for t, _ in sent[:25]])
    assert 0.015 < np.median(np.diff(times)) < 0.03  # 50 Hz
    waist = np.array([c[0] for _, c in sent[:25]])
    assert np.all(np.abs(np.diff(waist)) <= 1.0 * 0.02 + 1e-6)
    np.testing.assert_allclose(waist[-1], target[0], atol=1e-5)
    assert spin_until(executor, lambda: abs(driver.env.qpos()[0] - target[0]) < 0.03,
                      timeout=5.0), driver.env.qpos()[0]

    # fuzzed chunks: whatever arrives, no command beyond the limits or the velocity bound
    lower, upper = bridge.lower, bridge.upper

    @settings(max_examples=25, deadline=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(data=st.data(), chunk=st.integers(0, 5), extra=st.sampled_from([0, 0, 0, 1]),
           period=st.sampled_from([0.0, 0.02, 0.1, 0.1, float("inf")]))
    def one(data, chunk, extra, period):
        n = chunk * 14 + extra
        values = data.draw(st.lists(st.floats(-10, 10, width=32) | st.just(float("nan")),
                                    min_size=n, max_size=n))
        msg = ActionCommand(names=list(bridge.embodiment.action_names), chunk_length=chunk,
                            values=values, period_s=period)
        pub.publish(msg)
        spin_until(executor, lambda: False, timeout=0.06)

    sent.clear()
    one()
    spin_until(executor, lambda: False, timeout=0.3)
    commands = np.array([c for _, c in sent])
    assert len(commands) > 0
    assert np.all(commands >= lower[:6] - 1e-6) and np.all(commands <= upper[:6] + 1e-6)
    assert np.all(np.abs(np.diff(commands, axis=0)) <= 0.02 + 1e-5)
    assert bridge.diag.counters["rejected.command"] > 0


def test_stale_joint_states_hold_within_a_tick(station):
    driver, bridge, _tester, executor = station(**{"safety.dry_run": False,
                                                  "safety.stale_s": 0.03})
    assert spin_until(executor, lambda: bridge.hold_reason == "", timeout=5.0)
    driver.publishing = False
    stopped = time.monotonic()
    assert spin_until(executor, lambda: bridge.hold_reason.startswith("stale"), timeout=2.0)
    delay = bridge.hold_since - max(bridge.seen["follower_left"], bridge.seen["follower_right"])
    print(f"hold {delay * 1e3:.1f} ms after the last joint_states (stale_s 30 ms)")
    assert delay <= 0.03 + 0.02 + 0.015  # stale threshold + one 50 Hz tick (+ timer jitter)
    assert bridge.hold_since - stopped < 0.2
    driver.publishing = True
    assert spin_until(executor, lambda: bridge.hold_reason == "", timeout=2.0)


def test_a_lost_or_false_heartbeat_holds_the_arm_where_it_is(station):
    from interbotix_xs_msgs.msg import JointGroupCommand
    from std_msgs.msg import Bool

    from efm_ros.qos import RELIABLE

    _driver, bridge, tester, executor = station(**{
        "safety.dry_run": False, "safety.heartbeat_topic": "/estop/heartbeat",
        "safety.heartbeat_timeout_s": 0.1})
    beat = tester.create_publisher(Bool, "/estop/heartbeat", RELIABLE)
    sent = []
    tester.create_subscription(JointGroupCommand, "/follower_left/commands/joint_group",
                               sent.append, RELIABLE)
    assert spin_until(executor, lambda: bridge.hold_reason == "heartbeat lost", timeout=5.0)
    for _ in range(10):
        beat.publish(Bool(data=True))
        spin_until(executor, lambda: False, timeout=0.03)
    assert bridge.hold_reason == ""
    last_beat = time.monotonic()
    assert spin_until(executor, lambda: bridge.hold_reason == "heartbeat lost", timeout=2.0)
    assert bridge.hold_since - last_beat <= 0.1 + 0.03 + 0.02
    beat.publish(Bool(data=False))
    assert spin_until(executor, lambda: bridge.hold_reason == "e-stop pressed", timeout=2.0)


def _leader_states(pose14, gripper_joint):
    """The two leader arms' joint_states for a 14-value pose (what their xs_sdk publishes:
    the gripper as a joint angle [rad], fingers unused here)."""
    from sensor_msgs.msg import JointState

    from efm_sim.aloha_layout import ARM_JOINTS

    names = [*ARM_JOINTS, "gripper", "left_finger", "right_finger"]
    return [JointState(name=names, position=[*map(float, pose14[7 * i: 7 * i + 6]),
                                             gripper_joint, 0.02, -0.02]) for i in (0, 1)]


def test_leaders_drive_the_followers_only_while_the_operator_intervenes(station):
    """Teleoperation (issue 15, item 4): leader joint_states become follower targets while
    ``operator/intervention`` is true, through the same velocity bound; policy chunks are
    ignored meanwhile; a stale leader holds; handing back stops the leaders' influence."""
    from interbotix_xs_msgs.msg import JointGroupCommand, JointSingleCommand
    from sensor_msgs.msg import JointState
    from std_msgs.msg import Bool

    from efm_interfaces.msg import ActionCommand
    from efm_ros.aloha_bridge import LEADER_GRIPPER_CLOSE
    from efm_ros.qos import RELIABLE, SENSOR

    driver, bridge, tester, executor = station(**{
        "safety.dry_run": False, "joints.max_velocity": [1.0] * 12,
        "teleop.leaders": ["leader_left", "leader_right"]})
    leaders = [tester.create_publisher(JointState, f"/{a}/joint_states", SENSOR)
               for a in ("leader_left", "leader_right")]
    intervene = tester.create_publisher(Bool, "operator/intervention", RELIABLE)
    policy = tester.create_publisher(ActionCommand, "action_command", RELIABLE)
    sent, grippers, executed = [], [], []
    tester.create_subscription(JointGroupCommand, "/follower_left/commands/joint_group",
                               lambda m: sent.append(np.array(m.cmd)), RELIABLE)
    tester.create_subscription(JointSingleCommand, "/follower_left/commands/joint_single",
                               lambda m: grippers.append(m.cmd), RELIABLE)
    tester.create_subscription(JointState, "executed_action", executed.append, RELIABLE)
    pose = {"value": None, "on": True}

    def beat():  # the leaders' drivers: joint_states at 50 Hz while "on"
        if pose["on"] and pose["value"] is not None:
            for pub, msg in zip(leaders, _leader_states(pose["value"], LEADER_GRIPPER_CLOSE),
                                strict=True):
                pub.publish(msg)

    tester.create_timer(0.02, beat)
    assert spin_until(executor, lambda: driver.arms["follower_left"].torque, timeout=10.0)
    home = _home(driver)
    pose["value"] = home.copy()
    pose["value"][0] += 0.3  # the operator has moved the left leader's waist
    spin_until(executor, lambda: False, timeout=0.5)
    assert not sent, "the leaders must not drive before the operator intervenes"

    assert spin_until(executor, lambda: intervene.get_subscription_count() > 0)
    intervene.publish(Bool(data=True))
    assert spin_until(executor, lambda: abs(driver.env.qpos()[0] - pose["value"][0]) < 0.03,
                      timeout=5.0), (driver.env.qpos()[0], bridge.hold_reason)
    waist = np.array([c[0] for c in sent])
    assert np.all(np.abs(np.diff(waist)) <= 1.0 * 0.02 + 1e-5)  # the same velocity bound
    assert grippers[-1] == pytest.approx(bridge.gripper_close)  # leader closed -> closed
    assert executed and len(executed[-1].position) == 14
    # a policy chunk while the operator drives is refused and counted
    far = home.copy()
    far[0] -= 0.3
    policy.publish(_chunk([far] * 5))
    assert spin_until(executor, lambda: bridge.diag.counters.get("rejected.command", 0) >= 1)
    # a stale leader holds within the stale window
    pose["on"] = False
    assert spin_until(executor, lambda: bridge.hold_reason.startswith("stale leader"),
                      timeout=2.0), bridge.hold_reason
    pose["on"] = True
    assert spin_until(executor, lambda: bridge.hold_reason == "", timeout=2.0)
    # handed back: moving the leader does nothing any more
    intervene.publish(Bool(data=False))
    assert spin_until(executor, lambda: not bridge.intervening)
    pose["value"] = home.copy()
    pose["value"][0] -= 0.2
    spin_until(executor, lambda: False, timeout=0.6)
    assert abs(driver.env.qpos()[0] - (home[0] + 0.3)) < 0.05, driver.env.qpos()[0]


def test_simulated_leaders_moved_by_the_demonstrator_teleoperate_the_followers(station):
    """interbotix_sim's leaders (issue 15, item 3): with ``leaders.source: demonstrator``
    the scripted demonstrator moves the two leader arms, their joint_states come at 50 Hz
    as a leader's xs_sdk publishes them, and through the bridge's ``teleop.mode: always``
    the followers track them: a teleoperated demonstration in simulation."""
    from sensor_msgs.msg import JointState

    from efm_ros.interbotix_sim import JOINT_STATE_NAMES, LEADER_GRIPPER_CLOSE
    from efm_ros.interbotix_sim import LEADER_GRIPPER_OPEN as OPEN
    from efm_ros.qos import SENSOR

    driver, bridge, tester, executor = station(
        driver={"leaders.source": "demonstrator", "sim.seed": 3},
        **{"safety.dry_run": False, "teleop.leaders": ["leader_left", "leader_right"],
           "teleop.mode": "always", "joints.max_velocity": [3.0] * 12})
    seen = {"leader_left": [], "leader_right": []}
    for name, got in seen.items():
        tester.create_subscription(JointState, f"/{name}/joint_states", got.append, SENSOR)
    home = _home(driver)
    assert spin_until(executor, lambda: len(seen["leader_right"]) >= 150, timeout=30.0)
    msg = seen["leader_left"][-1]
    assert list(msg.name) == list(JOINT_STATE_NAMES)
    assert all(LEADER_GRIPPER_CLOSE - 1e-6 <= m.position[6] <= OPEN + 1e-6
               for got in seen.values() for m in got)
    leader = np.array([[*m.position[:6]] for m in seen["leader_left"][-5:]]).mean(0)
    follower = driver.env.qpos()[:6]
    assert np.abs(leader - home[:6]).max() > 0.1, "the demonstrator should have moved"
    # the followers track the leaders, within the few ticks of lag a busy machine adds
    # (wrist rotate is the fastest joint of the script)
    error = np.abs(follower - leader)
    assert np.median(error) < 0.05 and error.max() < 0.35, (follower, leader)
    assert driver.arms["follower_right"].commands > 100 and bridge.hold_reason == ""


def test_bad_joint_states_are_refused_and_counted(station):
    from sensor_msgs.msg import JointState

    from efm_ros.qos import SENSOR

    _driver, bridge, tester, executor = station()
    pub = tester.create_publisher(JointState, "/follower_left/joint_states", SENSOR)
    before = dict(bridge.measured)
    for msg in (JointState(name=["waist", "elbow"], position=[0.0, 0.0]),
                JointState(name=["a"] * 9, position=[0.0] * 9),
                JointState(name=["waist", "shoulder", "elbow", "forearm_roll", "wrist_angle",
                                 "wrist_rotate", "gripper", "left_finger"],
                           position=[float("nan")] * 8)):
        pub.publish(msg)
    assert spin_until(executor, lambda: bridge.diag.counters["rejected.joint_states"] >= 3,
                      timeout=5.0)
    assert all(np.all(np.isfinite(v)) for v in bridge.measured.values())
    assert set(before) <= set(bridge.measured)


def test_the_stand_in_never_shadows_a_real_interbotix_install(tmp_path):
    """scripts/setup.sh builds the stand-in only when no real interbotix_xs_msgs is on
    AMENT_PREFIX_PATH; the stand-in's own install does not count as real."""
    import os
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    standin, real = tmp_path / "venv", tmp_path / "opt_ros"
    for prefix, text in ((standin, (root / "standins/interbotix_xs_msgs/package.xml")
                          .read_text()), (real, "<package><name>interbotix_xs_msgs</name>"
                                                "</package>")):
        (prefix / "share/interbotix_xs_msgs").mkdir(parents=True)
        (prefix / "share/interbotix_xs_msgs/package.xml").write_text(text)

    def found(path: str) -> str:
        return subprocess.run(["bash", str(root / "scripts/real_interbotix_prefix.sh")],
                              env={**os.environ, "AMENT_PREFIX_PATH": path},
                              capture_output=True, text=True, check=True).stdout.strip()

    assert found(str(standin)) == ""  # only the stand-in: (re)build it
    assert found(f"{standin}:{real}") == str(real)  # a real one anywhere: never build
    assert found("") == ""
    assert (root / "standins/interbotix_xs_msgs/COLCON_IGNORE").exists()  # colcon skips it


def test_the_station_calibration_file_configures_the_bridge(ros_context):
    from pathlib import Path

    import yaml
    from rclpy.parameter import Parameter

    from efm_ros.aloha_bridge import AlohaBridgeNode

    path = Path(__file__).resolve().parents[2] / "config" / "aloha_station.yaml"
    params = yaml.safe_load(path.read_text())["/**/aloha_bridge"]["ros__parameters"]
    node = AlohaBridgeNode(context=ros_context, parameter_overrides=[
        Parameter(k, value=v) for k, v in params.items()])
    try:
        assert node.dry_run  # shipped in dry-run
        assert np.all(node.lower < node.upper) and len(node.cameras) == 3
        assert np.all(node.max_step <= 1.5 * 0.02 + 1e-9)
    finally:
        node.destroy_node()


def _call(executor, client, request, timeout=30.0):
    future = client.call_async(request)
    assert spin_until(executor, future.done, timeout=timeout)
    return future.result()


def test_reset_moves_the_followers_to_the_start_pose_and_answers_when_there(station):
    """ResetStation on a real station (issue 15, item 6): the bridge moves both arms to
    reset.pose through the same rate bounds, refuses policy chunks meanwhile, and answers
    only when the measured joints are there; an unreachable pose times out with a reason."""
    from efm_interfaces.msg import ActionCommand
    from efm_interfaces.srv import ResetStation
    from efm_ros.aloha_bridge import RESET_POSE
    from efm_ros.qos import RELIABLE

    driver, bridge, tester, executor = station(**{
        "safety.dry_run": False, "joints.max_velocity": [2.0] * 12})
    client = tester.create_client(ResetStation, "reset")
    policy = tester.create_publisher(ActionCommand, "action_command", RELIABLE)
    assert spin_until(executor, lambda: client.service_is_ready()
                      and driver.arms["follower_left"].torque, timeout=10.0)
    pose = np.asarray(RESET_POSE)
    away = _home(driver)
    away[0] += 0.3  # the policy left the left waist 0.3 rad from the start pose
    away[8] -= 0.2
    policy.publish(_chunk([away] * 5))
    assert spin_until(executor, lambda: abs(driver.env.qpos()[0] - away[0]) < 0.03,
                      timeout=10.0)
    start = driver.env.qpos().copy()
    assert np.max(np.abs(start[:6] - pose[:6])) > 0.25  # a real move, not already there
    future = client.call_async(ResetStation.Request())
    spin_until(executor, lambda: bridge.resetting is not None, timeout=2.0)
    policy.publish(_chunk([start] * 5))  # refused: the reset owns the arms
    assert spin_until(executor, future.done, timeout=30.0), bridge.hold_reason
    response = future.result()
    assert response.ok, response.message
    assert response.instruction == "insert the peg into the socket"
    assert response.task_family == "insertion"
    measured = bridge._measured14()
    arm = np.r_[0:6, 7:13]
    assert np.max(np.abs(measured[arm] - pose[arm])) <= 0.02 + 1e-6
    assert bridge.diag.counters.get("rejected.command", 0) >= 1
    refused = _call(executor, client, ResetStation.Request(task_family="block2block"))
    assert not refused.ok and "unknown task family" in refused.message


def test_a_reset_that_cannot_finish_times_out_with_the_reason(station):
    from efm_interfaces.srv import ResetStation
    from efm_ros.aloha_bridge import RESET_POSE

    far = list(RESET_POSE)
    far[0] += 1.0  # 1 rad away at 0.01 rad/s: cannot be reached in 0.5 s
    driver, bridge, tester, executor = station(**{
        "safety.dry_run": False, "joints.max_velocity": [0.01] * 12, "reset.timeout_s": 0.5,
        "reset.pose": far})
    client = tester.create_client(ResetStation, "reset")
    assert spin_until(executor, lambda: client.service_is_ready()
                      and driver.arms["follower_left"].torque, timeout=10.0)
    response = _call(executor, client, ResetStation.Request(instruction="custom"))
    assert not response.ok and response.message.startswith("timeout"), response.message
    assert bridge.resetting is None  # the next reset may run


def test_the_simulated_arms_keep_wall_clock_time_when_a_tick_is_late(ros_context,
                                                                    monkeypatch):
    """A busy computer delays the 50 Hz timer; real arms keep moving meanwhile, so the
    stand-in runs the physics steps it owes (up to sim.max_catch_up_steps) and lets sim
    time slip, counted, beyond that. Without it the station's sim ran at ~29 Hz under load."""
    from rclpy.parameter import Parameter

    from efm_ros import interbotix_sim

    clock = {"now": 1000.0}
    monkeypatch.setattr(interbotix_sim.time, "monotonic", lambda: clock["now"])
    driver = interbotix_sim.InterbotixSimNode(context=ros_context, parameter_overrides=[
        Parameter("cameras.enabled", value=False),
        Parameter("sim.max_catch_up_steps", value=5)])
    try:
        dt, t0 = driver.aloha.DT, driver.env.data.time
        driver.on_tick()  # on time: one step
        assert driver.physics_steps == 1
        clock["now"] += 4.5 * dt  # the next tick fires 3.5 steps late
        driver.on_tick()
        assert driver.physics_steps == 5  # the 3 owed + this tick's
        assert driver.diag.counters["control_steps"] == 5
        clock["now"] += 20 * dt  # far behind: 5 steps, the rest slips
        driver.on_tick()
        assert driver.physics_steps == 10
        assert driver.diag.counters["control_steps.slipped"] == 15
        clock["now"] += dt
        driver.on_tick()  # sim time slipped, so one step per tick again
        assert driver.physics_steps == 11 and driver.diag.counters["ticks"] == 4
        assert driver.env.data.time - t0 == pytest.approx(11 * dt)
    finally:
        driver.env.close()
        driver.destroy_node()
