"""Fuzzing, short form (issue 17): generated messages on the subscribers and services that
take outside input, against real nodes in one executor. A callback that raised would
surface from ``spin_once`` and fail the test; invalid input must never move the robot and
must be counted on /diagnostics. docs/RELIABILITY.md reports the cases each entry got."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ros_harness import spin_until

FLOATS = st.floats(allow_nan=True, allow_infinity=True, width=32)
SETTINGS = settings(max_examples=40, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture,
                                           HealthCheck.too_slow])


@st.composite
def images(draw):
    from sensor_msgs.msg import Image

    h, w = draw(st.integers(0, 6)), draw(st.integers(0, 6))
    encoding = draw(st.sampled_from(["rgb8", "bgr8", "mono8", "rgba8", "16UC1", "", "jpeg"]))
    channels = {"rgb8": 3, "bgr8": 3, "mono8": 1, "rgba8": 4}.get(encoding, 2)
    size = draw(st.sampled_from([h * w * channels, h * w * channels + 1, 0]))
    step = draw(st.sampled_from([w * channels, w * channels + 3, 0]))
    return Image(height=h, width=w, encoding=encoding, step=step,
                 data=bytes(draw(st.binary(min_size=size, max_size=size))))


@st.composite
def observations(draw):
    from efm_interfaces.msg import Observation

    n = draw(st.integers(0, 2))
    msg = Observation(
        station=draw(st.text(max_size=20)).replace("\x00", ""),
        step=draw(st.integers(0, 2**32 - 1)),
        instruction=draw(st.text(max_size=60)).replace("\x00", ""),
        camera_names=draw(st.lists(st.sampled_from(["top", "wrist", ""]), min_size=n,
                                   max_size=n + draw(st.integers(0, 1)))),
        images=[draw(images()) for _ in range(n)],
        proprioception=draw(st.lists(FLOATS, max_size=4)),
        proprio_names=draw(st.lists(st.sampled_from(["ee_x", "ee_y", "q"]), max_size=3)),
    )
    return msg


@st.composite
def good_observations(draw):
    from efm_interfaces.msg import Observation

    state = draw(st.lists(st.floats(-1, 1, width=32), min_size=2, max_size=2))
    return Observation(station="station_0", step=draw(st.integers(0, 1000)),
                       proprioception=state, proprio_names=["ee_x", "ee_y"])


def _valid(msg) -> bool:
    from efm_ros.conversions import observation_arrays

    try:
        arrays = observation_arrays(msg)
    except ValueError:
        return False
    return arrays["proprioception"].size == 2 and not arrays["images"]


@pytest.fixture
def station(ros_context, tiny_checkpoint):
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node
    from rclpy.parameter import Parameter

    from efm_interfaces.msg import ActionCommand, Observation
    from efm_ros.policy_node import PolicyNode
    from efm_ros.qos import RELIABLE, SENSOR

    node = PolicyNode(context=ros_context, namespace="station_0", parameter_overrides=[
        Parameter("model.checkpoint", value=str(tiny_checkpoint)),
        Parameter("policy.instruction", value="push the red star to the blue cube"),
        Parameter("control.trigger", value="observation"),
        Parameter("safety.observation_timeout_s", value=5.0),
    ])
    client = Node("fuzzer", context=ros_context, namespace="station_0")
    executor = SingleThreadedExecutor(context=ros_context)
    executor.add_node(node)
    executor.add_node(client)
    commands = []
    client.create_subscription(ActionCommand, "action_command", commands.append, RELIABLE)
    pub = client.create_publisher(Observation, "observation", SENSOR)
    assert spin_until(executor, lambda: pub.get_subscription_count() > 0)
    yield node, executor, pub, commands, client
    executor.shutdown()
    node.destroy_node()
    client.destroy_node()


def test_fuzzed_observations_never_crash_the_policy_or_move_on_bad_input(station):
    node, executor, pub, commands, client = station
    seen = {"valid": 0, "invalid": 0}

    @SETTINGS
    @given(msg=st.one_of(observations(), good_observations()))
    def one(msg):
        valid = _valid(msg)
        seen["valid" if valid else "invalid"] += 1
        msg.header.stamp = client.get_clock().now().to_msg()  # fresh: its content is judged
        before = len(commands)
        pub.publish(msg)
        spin_until(executor, lambda: len(commands) > before, timeout=0.3)
        for c in commands[before:]:
            if not c.hold:
                assert valid, msg
                assert np.all(np.isfinite(c.values)) and np.all(np.abs(c.values) <= 0.03 + 1e-6)

    one()
    assert seen["invalid"] > 0 and seen["valid"] > 0
    assert node.diag.counters["rejected.observation"] > 0
    print("fuzz cases (policy observation):", seen)


def test_fuzzed_episodes_never_crash_the_learner(ros_context, tiny_checkpoint, tmp_path):
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node
    from test_practice_faults import _learner

    from efm_interfaces.msg import EpisodeAck, LabelledEpisode
    from efm_ros.qos import RELIABLE

    learner = _learner(ros_context, tiny_checkpoint, tmp_path / "learner")
    client = Node("fuzzer", context=ros_context)
    executor = SingleThreadedExecutor(context=ros_context)
    executor.add_node(learner)
    executor.add_node(client)
    acks = []
    client.create_subscription(EpisodeAck, "/learner/acks", acks.append, RELIABLE)
    pub = client.create_publisher(LabelledEpisode, "/learner/episodes", RELIABLE)
    assert spin_until(executor, lambda: pub.get_subscription_count() > 0
                      and learner.ack_pub.get_subscription_count() > 0)

    @SETTINGS
    @given(length=st.integers(0, 5), obs=st.lists(observations(), max_size=5),
           tokens=st.lists(st.integers(0, 65535), max_size=12), floats=st.lists(FLOATS,
           max_size=7), k=st.integers(0, 3), gamma=FLOATS, version=st.integers(0, 3),
           episode_id=st.text(min_size=1, max_size=300).map(lambda s: s.replace("\x00", "")))
    def one(length, obs, tokens, floats, k, gamma, version, episode_id):
        msg = LabelledEpisode(episode_id=episode_id or "x", length=length, observations=obs,
                              tokens_per_action=k, action_tokens=tokens, steps_to_go=floats,
                              rewards=floats[:length], returns=floats[:length], gamma=gamma,
                              policy_version=version)
        before = len(acks)
        pub.publish(msg)
        assert spin_until(executor, lambda: len(acks) > before, timeout=5.0)

    one()
    print("fuzz cases (learner episodes):", len(acks), dict(learner.diag.counters))
    assert learner.diag.counters["rejected.episode"] > 0
    assert len(learner.buffer) == learner.diag.counters.get("samples", 0)
    executor.shutdown()
    learner.destroy_node()
    client.destroy_node()


def test_fuzzed_steps_to_go_requests_are_answered(ros_context, tiny_checkpoint):
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node
    from rclpy.parameter import Parameter

    from efm_interfaces.srv import StepsToGo
    from efm_ros.steps_to_go_node import StepsToGoNode

    node = StepsToGoNode(context=ros_context, parameter_overrides=[
        Parameter("model.checkpoint", value=str(tiny_checkpoint)),
        Parameter("service.max_batch", value=4)])
    client = Node("fuzzer", context=ros_context)
    executor = SingleThreadedExecutor(context=ros_context)
    executor.add_node(node)
    executor.add_node(client)
    cli = client.create_client(StepsToGo, "steps_to_go")
    assert spin_until(executor, cli.service_is_ready)
    answered = {"ok": 0, "refused": 0}

    @SETTINGS
    @given(obs=st.lists(observations(), max_size=6), instruction=st.text(max_size=40))
    def one(obs, instruction):
        future = cli.call_async(StepsToGo.Request(observations=obs,
                                                  instruction=instruction.replace("\x00", "")))
        assert spin_until(executor, future.done, timeout=5.0)
        response = future.result()
        if response.ok:
            answered["ok"] += 1
            assert len(response.predictions) == len(obs)
            assert all(np.isfinite(p.expected_steps) for p in response.predictions)
        else:
            answered["refused"] += 1
            assert response.message

    one()
    print("fuzz cases (steps_to_go requests):", answered)
    assert answered["refused"] > 0
    executor.shutdown()
    node.destroy_node()
    client.destroy_node()


def test_fuzzed_frames_and_joint_states_never_crash_camera_ingest(ros_context):
    """camera_ingest's subscribers (issue 17 fuzzing): generated images and joint states;
    every Observation it publishes is one the policy would accept."""
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node
    from rclpy.parameter import Parameter
    from sensor_msgs.msg import Image, JointState

    from efm_interfaces.msg import Observation
    from efm_ros.camera_ingest import CameraIngestNode
    from efm_ros.conversions import observation_arrays
    from efm_ros.qos import SENSOR

    node = CameraIngestNode(namespace="station_0", context=ros_context, parameter_overrides=[
        Parameter("cameras.names", value=["top"]), Parameter("output.size", value=[16, 16]),
        Parameter("proprio.enabled", value=True),
        Parameter("proprio.names", value=["ee_x", "ee_y"])])
    tester = Node("fuzzer", namespace="station_0", context=ros_context)
    executor = SingleThreadedExecutor(context=ros_context)
    executor.add_node(node)
    executor.add_node(tester)
    frames = tester.create_publisher(Image, "camera/top/image_raw", SENSOR)
    joints = tester.create_publisher(JointState, "joint_states", SENSOR)
    out = []
    tester.create_subscription(Observation, "observation", out.append, SENSOR)
    assert spin_until(executor, lambda: frames.get_subscription_count() > 0
                      and joints.get_subscription_count() > 0)

    @st.composite
    def good_frames(draw):
        h, w = draw(st.integers(1, 24)), draw(st.integers(1, 24))
        return Image(height=h, width=w, encoding="rgb8", step=3 * w,
                     data=bytes(draw(st.binary(min_size=3 * h * w, max_size=3 * h * w))))

    @SETTINGS
    @given(frame=st.one_of(images(), good_frames()),
           names=st.lists(st.sampled_from(["ee_x", "ee_y", "q"]), max_size=3),
           positions=st.lists(FLOATS, max_size=3))
    def one(frame, names, positions):
        now = tester.get_clock().now().to_msg()
        frame.header.stamp = now
        state = JointState(name=names, position=positions)
        state.header.stamp = now
        joints.publish(state)
        frames.publish(frame)
        spin_until(executor, lambda: False, timeout=0.05)

    one()
    spin_until(executor, lambda: False, timeout=0.3)
    for msg in out:
        observation_arrays(msg)  # raises if it published something invalid
    assert node.diag.counters, "nothing was counted"
    print("fuzz cases (camera_ingest):", 40, "observations out:", len(out),
          {k: v for k, v in node.diag.counters.items() if k.startswith("rejected")})
    executor.shutdown()
    node.destroy_node()
    tester.destroy_node()


def test_fuzzed_practice_commands_are_answered(ros_context):
    """The coordinator's PracticeCommand service (the operator's interface)."""
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node
    from rclpy.parameter import Parameter

    from efm_interfaces.srv import PracticeCommand
    from efm_ros.coordinator_node import CoordinatorNode

    node = CoordinatorNode(context=ros_context,
                           parameter_overrides=[Parameter("stations", value=["station_0"])])
    client = Node("fuzzer", context=ros_context)
    executor = SingleThreadedExecutor(context=ros_context)
    executor.add_node(node)
    executor.add_node(client)
    cli = client.create_client(PracticeCommand, "/practice/command")
    assert spin_until(executor, cli.service_is_ready)
    refused = []

    @SETTINGS
    @given(command=st.integers(0, 255), station=st.text(max_size=30),
           source=st.one_of(st.just("operator"), st.just("learner"), st.text(max_size=10)))
    def one(command, station, source):
        request = PracticeCommand.Request(command=command, station=station.replace("\x00", ""),
                                          source=source.replace("\x00", ""))
        future = cli.call_async(request)
        assert spin_until(executor, future.done, timeout=5.0)
        response = future.result()
        assert response.message
        if not response.ok:
            refused.append(command)

    one()
    assert refused
    executor.shutdown()
    node.destroy_node()
    client.destroy_node()
