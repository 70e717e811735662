"""sim_robot contract over real topics/services: reset, camera + joint streams, commands
move the pusher, bad commands are refused and counted, ground truth only on eval/."""

from __future__ import annotations

import numpy as np
import pytest
from ros_harness import spin_until


@pytest.fixture
def graph(ros_context):
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node
    from rclpy.parameter import Parameter

    from efm_ros.sim_robot import SimRobotNode

    def make(realtime: bool, **params):
        overrides = [
            Parameter("control.realtime", value=realtime),
            Parameter("sim.image_size", value=32),
        ]
        overrides += [Parameter(k, value=v) for k, v in params.items()]
        robot = SimRobotNode(
            context=ros_context, namespace="station_0", parameter_overrides=overrides
        )
        client = Node("test_client", context=ros_context, namespace="station_0")
        executor = SingleThreadedExecutor(context=ros_context)
        executor.add_node(robot)
        executor.add_node(client)
        made.append((robot, client, executor))
        return robot, client, executor

    made: list = []
    yield make
    for robot, client, executor in made:
        executor.shutdown()
        robot.env.close()
        robot.destroy_node()
        client.destroy_node()


def _reset(client, executor, **fields):
    from efm_interfaces.srv import ResetStation

    cli = client.create_client(ResetStation, "reset")
    assert spin_until(executor, cli.service_is_ready)
    future = cli.call_async(ResetStation.Request(seed=fields.pop("seed", 3), **fields))
    assert spin_until(executor, future.done)
    return future.result()


def test_reset_command_and_streams(graph):
    from diagnostic_msgs.msg import DiagnosticArray
    from sensor_msgs.msg import Image, JointState

    from efm_interfaces.msg import ActionCommand
    from efm_ros.qos import RELIABLE, SENSOR

    robot, client, executor = graph(realtime=False)
    joints, images, diags = [], [], []
    client.create_subscription(JointState, "joint_states", joints.append, SENSOR)
    client.create_subscription(Image, "camera/top/image_raw", images.append, SENSOR)
    client.create_subscription(DiagnosticArray, "/diagnostics", diags.append, RELIABLE)
    cmd_pub = client.create_publisher(ActionCommand, "action_command", RELIABLE)
    assert spin_until(executor, lambda: cmd_pub.get_subscription_count() > 0)

    result = _reset(client, executor, task_family="block2block")
    assert result.ok and result.task_family == "block2block" and result.instruction
    assert spin_until(executor, lambda: joints and images)
    assert (images[-1].height, images[-1].width, images[-1].encoding) == (32, 32, "rgb8")
    start = np.array(joints[-1].position)
    assert list(joints[-1].name) == ["ee_x", "ee_y"]

    joints.clear()
    for _ in range(3):
        cmd_pub.publish(ActionCommand(names=["dx", "dy"], chunk_length=1, values=[0.02, -0.01]))
    assert spin_until(executor, lambda: len(joints) >= 3)
    moved = np.array(joints[-1].position) - start
    assert moved[0] > 0.02 and moved[1] < -0.01, moved  # went +x, -y

    # Bad commands never move the robot; they are counted on /diagnostics.
    before = np.array(joints[-1].position)
    for bad in (
        ActionCommand(names=["dx", "dy"], chunk_length=1, values=[float("nan"), 0.0]),
        ActionCommand(names=["a", "b"], chunk_length=1, values=[0.01, 0.0]),
        ActionCommand(names=["dx", "dy"], chunk_length=2, values=[0.01, 0.0]),
    ):
        cmd_pub.publish(bad)
    assert spin_until(executor, lambda: robot.diag.counters["rejected.command"] >= 3)
    np.testing.assert_allclose(robot.env.unwrapped.ee_xy(), before, atol=1e-6)
    assert spin_until(
        executor,
        lambda: any(
            kv.key == "rejected.command" and kv.value == "3"
            for d in diags
            for s in d.status
            for kv in s.values
        ),
        timeout=3,
    )


def test_unknown_family_is_refused_with_choices(graph):
    _robot, client, executor = graph(realtime=False)
    result = _reset(client, executor, task_family="juggling")
    assert not result.ok and "block2block" in result.message


def test_ground_truth_only_on_eval_topics(graph):
    _robot, client, executor = graph(realtime=False)
    topics = dict(client.get_topic_names_and_types())
    assert spin_until(
        executor, lambda: "/station_0/eval/success" in dict(client.get_topic_names_and_types())
    )
    topics = dict(client.get_topic_names_and_types())
    gt_topics = [t for t in topics if "success" in t and t.startswith("/station_0")]
    assert gt_topics == ["/station_0/eval/success"]


def test_realtime_mode_holds_without_fresh_commands(graph):
    from sensor_msgs.msg import JointState

    from efm_interfaces.msg import ActionCommand
    from efm_ros.qos import RELIABLE, SENSOR

    robot, client, executor = graph(
        realtime=True, **{"control.rate_hz": 50.0, "control.command_timeout_s": 0.1}
    )
    joints = []
    client.create_subscription(JointState, "joint_states", joints.append, SENSOR)
    cmd_pub = client.create_publisher(ActionCommand, "action_command", RELIABLE)
    assert _reset(client, executor).ok
    assert spin_until(executor, lambda: cmd_pub.get_subscription_count() > 0)
    start = robot.env.unwrapped.ee_xy()
    cmd_pub.publish(
        ActionCommand(names=["dx", "dy"], chunk_length=2, values=[0.02, 0.0, 0.02, 0.0])
    )
    assert spin_until(executor, lambda: robot.diag.counters["steps"] >= 2)
    after_chunk = robot.env.unwrapped.ee_xy()
    assert after_chunk[0] - start[0] > 0.03  # both chunk steps executed
    joints.clear()
    assert spin_until(executor, lambda: len(joints) >= 10)  # keeps streaming while holding
    assert robot.diag.counters["steps"] == 2
    np.testing.assert_allclose(robot.env.unwrapped.ee_xy(), after_chunk, atol=2e-3)


def test_parameter_validation(graph):
    from rclpy.parameter import Parameter

    robot, _client, _executor = graph(realtime=False)
    result = robot.set_parameters([Parameter("control.rate_hz", value=-1.0)])[0]
    assert not result.successful
    result = robot.set_parameters([Parameter("sim.env", value="pointmass")])[0]
    assert not result.successful  # read-only
    assert robot.set_parameters([Parameter("control.rate_hz", value=10.0)])[0].successful


def test_a_smaller_board_from_sim_blocks(graph):
    """sim.blocks puts only the named blocks on the board; instructions naming others fail."""
    robot, client, executor = graph(realtime=False, **{"sim.blocks": "red moon, blue cube"})
    assert robot.env.unwrapped.blocks == ("red moon", "blue cube")
    for seed in range(4):
        assert _reset(client, executor, seed=seed, task_family="block2block").ok
        task = robot.env.unwrapped.task
        assert {task.block, task.target} == {"red moon", "blue cube"}
    result = _reset(client, executor, instruction="push the green star to the red moon")
    assert not result.ok and "not on this board" in result.message


def _lockstep_after_reset(graph, msg_type, topic: str, qos):
    """A lockstep station without idle republication, reset, with its joint states
    collected and a publisher of ``msg_type`` on ``topic`` the station listens to."""
    from sensor_msgs.msg import JointState

    from efm_ros.qos import SENSOR

    robot, client, executor = graph(realtime=False, **{"control.idle_publish_hz": 0.0})
    joints = []
    client.create_subscription(JointState, "joint_states", joints.append, SENSOR)
    pub = client.create_publisher(msg_type, topic, qos)
    assert spin_until(executor, lambda: pub.get_subscription_count() > 0)
    assert _reset(client, executor).ok
    assert spin_until(executor, lambda: joints)
    return robot, executor, joints, pub


def test_lockstep_drops_commands_for_superseded_observations(graph):
    """An action answering an older observation (e.g. an idle republication) must not be
    applied in lockstep, or every later action would act on a stale observation."""
    from efm_interfaces.msg import ActionCommand
    from efm_ros.qos import RELIABLE

    robot, executor, joints, cmd_pub = _lockstep_after_reset(
        graph, ActionCommand, "action_command", RELIABLE
    )
    first = joints[-1].header.stamp
    robot.publish_state()  # a republication of the same scene, newer stamp
    assert spin_until(executor, lambda: len(joints) >= 2)
    newest = joints[-1].header.stamp
    assert (newest.sec, newest.nanosec) != (first.sec, first.nanosec)

    stale = ActionCommand(names=["dx", "dy"], chunk_length=1, values=[0.02, 0.0])
    stale.header.stamp = first
    cmd_pub.publish(stale)
    assert spin_until(executor, lambda: robot.diag.counters["commands.superseded"] >= 1)
    assert robot.diag.counters["steps"] == 0
    fresh = ActionCommand(names=["dx", "dy"], chunk_length=1, values=[0.02, 0.0])
    fresh.header.stamp = newest
    cmd_pub.publish(fresh)
    assert spin_until(executor, lambda: robot.diag.counters["steps"] == 1)


def test_lockstep_shows_the_scene_when_an_episode_starts(graph):
    """The actor sets the instruction after the reset: a lockstep station publishes its
    scene then (the policy's first observation of the episode), not at the next idle
    tick; clearing the instruction publishes nothing."""
    from std_msgs.msg import String

    from efm_ros.qos import LATCHED

    robot, executor, joints, instruction = _lockstep_after_reset(
        graph, String, "instruction", LATCHED
    )
    after_reset = len(joints)
    instruction.publish(String(data=""))
    spin_until(executor, lambda: False, timeout=0.3)
    assert len(joints) == after_reset
    instruction.publish(String(data="push the red moon to the blue cube"))
    assert spin_until(executor, lambda: len(joints) > after_reset)
    first, newest = joints[after_reset - 1].header.stamp, joints[-1].header.stamp
    assert (newest.sec, newest.nanosec) > (first.sec, first.nanosec)
    assert robot.diag.counters["published_on_instruction"] == 1
    assert robot.diag.counters["steps"] == 0  # the scene is shown, not changed
