"""Fuzzing, short form (issue 17): generated messages on the subscribers and services that
take outside input, against real nodes in one executor. A callback that raised would
surface from ``spin_once`` and fail the test; invalid input must never move the robot and
must be counted on /diagnostics. docs/RELIABILITY.md reports the cases each entry got."""

from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from ros_harness import spin_until

FLOATS = st.floats(allow_nan=True, allow_infinity=True, width=32)
#: the long form (docs/RELIABILITY.md): EFM_FUZZ_EXAMPLES=400 (default 40, the CI form)
EXAMPLES = int(os.environ.get("EFM_FUZZ_EXAMPLES", "40"))
SETTINGS = settings(max_examples=EXAMPLES, deadline=None,
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
    print("fuzz cases (camera_ingest):", EXAMPLES, "observations out:", len(out),
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


@st.composite
def action_commands(draw, names=("dx", "dy")):
    """ActionCommands a buggy or hostile publisher might send: wrong names, chunk sizes and
    value counts, NaN/inf, huge values, hold set or not."""
    from efm_interfaces.msg import ActionCommand

    chunk = draw(st.integers(0, 4))
    count = draw(st.sampled_from([chunk * len(names), chunk * len(names) + 1, 0, 7]))
    return ActionCommand(
        station="station_0", step=draw(st.integers(0, 2**32 - 1)),
        names=draw(st.sampled_from([list(names), [], ["dy", "dx"], ["q"] * len(names)])),
        chunk_length=chunk, period_s=draw(st.sampled_from([0.0, 0.1, float("nan")])),
        values=draw(st.lists(st.one_of(FLOATS, st.floats(-1e30, 1e30, width=64)),
                             min_size=count, max_size=count)),
        hold=draw(st.booleans()),
    )


def test_fuzzed_commands_and_resets_never_crash_sim_robot_or_move_it_on_bad_input(ros_context):
    """sim_robot's action_command subscriber and reset service (issue 17 fuzzing): a command
    the embodiment refuses leaves the simulated robot exactly where it was; the state stays
    finite whatever arrives; every reset request is answered."""
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node
    from rclpy.parameter import Parameter

    from efm_interfaces.msg import ActionCommand
    from efm_interfaces.srv import ResetStation
    from efm_ros.qos import RELIABLE
    from efm_ros.sim_robot import SimRobotNode

    robot = SimRobotNode(context=ros_context, namespace="station_0", parameter_overrides=[
        Parameter("control.realtime", value=False), Parameter("sim.image_size", value=16),
        Parameter("control.idle_publish_hz", value=0.0)])
    tester = Node("fuzzer", namespace="station_0", context=ros_context)
    executor = SingleThreadedExecutor(context=ros_context)
    executor.add_node(robot)
    executor.add_node(tester)
    pub = tester.create_publisher(ActionCommand, "action_command", RELIABLE)
    reset = tester.create_client(ResetStation, "reset")
    assert spin_until(executor, lambda: reset.service_is_ready()
                      and pub.get_subscription_count() > 0)
    counts = {"invalid": 0, "applied": 0, "resets_ok": 0, "resets_refused": 0}

    def call_reset(request):
        future = reset.call_async(request)
        assert spin_until(executor, future.done, timeout=10.0)
        return future.result()

    assert call_reset(ResetStation.Request(seed=1)).ok

    good = st.builds(lambda v: ActionCommand(station="station_0", names=["dx", "dy"],
                                             chunk_length=1, values=v),
                     st.lists(st.floats(-0.125, 0.125, width=32), min_size=2, max_size=2))

    @SETTINGS
    @given(command=st.one_of(action_commands(), good))
    def one_command(command):
        before = robot.env.unwrapped.data.qpos.copy()
        steps = robot.diag.counters.get("steps", 0)
        pub.publish(command)
        spin_until(executor, lambda: False, timeout=0.03)
        after = robot.env.unwrapped.data.qpos
        assert np.all(np.isfinite(after))
        try:
            robot.embodiment.command_values(command)
            valid = not command.hold
        except ValueError:
            valid = False
        if not valid:
            counts["invalid"] += 1
            np.testing.assert_array_equal(after, before)  # never moved
            assert robot.diag.counters.get("steps", 0) == steps
        elif robot.diag.counters.get("steps", 0) > steps:
            counts["applied"] += 1
        if robot.episode_done:
            assert call_reset(ResetStation.Request(seed=2)).ok

    @SETTINGS
    @given(family=st.one_of(st.just(""), st.just("block2block"), st.text(max_size=20)),
           instruction=st.one_of(st.just(""), st.text(max_size=40)),
           seed=st.integers(-2**63, 2**63 - 1))
    def one_reset(family, instruction, seed):
        response = call_reset(ResetStation.Request(
            task_family=family.replace("\x00", ""), instruction=instruction.replace("\x00", ""),
            seed=seed))
        counts["resets_ok" if response.ok else "resets_refused"] += 1
        assert response.ok or response.message
        assert np.all(np.isfinite(robot.env.unwrapped.data.qpos))

    one_command()
    one_reset()
    print("fuzz cases (sim_robot):", counts,
          {k: v for k, v in robot.diag.counters.items() if k.startswith("rejected")})
    assert counts["invalid"] > 0 and robot.diag.counters.get("rejected.command", 0) > 0
    assert counts["applied"] > 0  # valid commands do move it: the comparison can fail
    assert counts["resets_refused"] > 0 and counts["resets_ok"] > 0
    executor.shutdown()
    robot.env.close()
    robot.destroy_node()
    tester.destroy_node()


def test_fuzzed_episode_events_never_crash_the_recorder(ros_context, tmp_path):
    """The recorder's episode/events (issue 17 fuzzing): arbitrary text, JSON of the wrong
    shape, ids that are no folder name, stops without a start. Only well-formed events
    open bags, only inside the output folder, and every bag it closed is readable."""
    import json

    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node
    from rclpy.parameter import Parameter
    from std_msgs.msg import String

    from efm_ros.episode_recorder import EpisodeRecorderNode
    from efm_ros.qos import RELIABLE

    out = tmp_path / "bags"
    node = EpisodeRecorderNode(context=ros_context, namespace="station_0", parameter_overrides=[
        Parameter("recorder.output_dir", value=str(out))])
    tester = Node("fuzzer", namespace="station_0", context=ros_context)
    executor = SingleThreadedExecutor(context=ros_context)
    executor.add_node(node)
    executor.add_node(tester)
    pub = tester.create_publisher(String, "episode/events", RELIABLE)
    assert spin_until(executor, lambda: pub.get_subscription_count() > 0)
    ids = st.one_of(st.sampled_from(["ep-1", "ep-2", "../escape", "a/b", "", ".", "x" * 300]),
                    st.text(max_size=12))
    events = st.one_of(
        st.text(max_size=40),
        st.builds(lambda e, i, v: json.dumps({"event": e, "episode_id": i,
                                              "instruction": "push", "policy_version": v}),
                  st.sampled_from(["start", "stop", "pause"]), ids,
                  st.one_of(st.integers(-3, 3), st.just("1"), st.just(True))),
        st.builds(lambda i, s, n: json.dumps({"event": "stop", "episode_id": i, "success": s,
                                              "length": n}),
                  ids, st.one_of(st.booleans(), st.just("yes")), st.integers(-2, 5)),
        st.just("[1, 2]"), st.just("null"))
    sent = []

    @SETTINGS
    @given(text=events)
    def one(text):
        sent.append(text)
        pub.publish(String(data=text))
        spin_until(executor, lambda: False, timeout=0.02)

    one()
    spin_until(executor, lambda: False, timeout=0.3)
    EpisodeRecorderNode.close_on_shutdown(node)
    from rosbags.highlevel import AnyReader

    bags = [p for p in out.rglob("*") if p.is_dir() and (p / "metadata.yaml").exists()]
    for bag in bags:
        assert bag.resolve().is_relative_to(out.resolve())  # never outside the folder
        with AnyReader([bag]):
            pass  # readable
    rejected = node.diag.counters.get("rejected.episode_event", 0)
    print("fuzz cases (episode_recorder):", len(sent), "bags:", len(bags), "rejected:", rejected)
    assert rejected > 0
    executor.shutdown()
    node.destroy_node()
    tester.destroy_node()


def test_fuzzed_compressed_frames_never_crash_camera_ingest(ros_context):
    """camera_ingest with a CompressedImage camera (issue 17 fuzzing): random bytes, lying
    formats, truncated and valid JPEG/PNG; what it publishes the policy accepts."""
    import io

    from PIL import Image as PILImage
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node
    from rclpy.parameter import Parameter
    from sensor_msgs.msg import CompressedImage

    from efm_interfaces.msg import Observation
    from efm_ros.camera_ingest import CameraIngestNode
    from efm_ros.conversions import observation_arrays
    from efm_ros.qos import SENSOR

    node = CameraIngestNode(namespace="station_0", context=ros_context, parameter_overrides=[
        Parameter("cameras.names", value=["top"]), Parameter("cameras.compressed", value=[True]),
        Parameter("output.size", value=[16, 16])])
    tester = Node("fuzzer", namespace="station_0", context=ros_context)
    executor = SingleThreadedExecutor(context=ros_context)
    executor.add_node(node)
    executor.add_node(tester)
    frames = tester.create_publisher(CompressedImage, "camera/top/image_raw/compressed", SENSOR)
    out = []
    tester.create_subscription(Observation, "observation", out.append, SENSOR)
    assert spin_until(executor, lambda: frames.get_subscription_count() > 0)

    def encoded(fmt: str, h: int, w: int, seed: int) -> bytes:
        pixels = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
        buffer = io.BytesIO()
        PILImage.fromarray(pixels).save(buffer, format=fmt)
        return buffer.getvalue()

    payloads = st.one_of(
        st.binary(max_size=200),
        st.builds(encoded, st.sampled_from(["JPEG", "PNG"]), st.integers(1, 40),
                  st.integers(1, 40), st.integers(0, 9)),
        st.builds(lambda b, n: b[:n], st.builds(encoded, st.just("JPEG"), st.just(24),
                                                st.just(24), st.just(0)), st.integers(0, 300)))
    formats = st.sampled_from(["jpeg", "png", "rgb8; jpeg compressed bgr8", "", "tiff", "jpg"])
    valid = []

    @SETTINGS
    @given(data=payloads, fmt=formats)
    def one(data, fmt):
        msg = CompressedImage(format=fmt, data=data)
        msg.header.stamp = tester.get_clock().now().to_msg()
        frames.publish(msg)
        spin_until(executor, lambda: False, timeout=0.03)

    one()
    spin_until(executor, lambda: False, timeout=0.3)
    for msg in out:
        arrays = observation_arrays(msg)  # raises if it published something invalid
        valid.append(arrays["images"]["top"].shape)
    rejected = {k: v for k, v in node.diag.counters.items() if k.startswith("rejected")}
    print("fuzz cases (camera_ingest compressed):", EXAMPLES, "observations out:", len(out),
          rejected)
    assert rejected and all(shape == (16, 16, 3) for shape in valid)
    executor.shutdown()
    node.destroy_node()
    tester.destroy_node()


def test_fuzzed_run_episode_goals_are_rejected_or_end_with_a_result(ros_context,
                                                                    tiny_checkpoint, tmp_path):
    """The actor's RunEpisode goals (issue 17 fuzzing), against a whole in-process station
    (sim_robot, camera_ingest, steps_to_go, policy, episode_recorder, actor): any
    instruction, task family, step limit, station and seed is either rejected at once or
    ends with a result and a known termination reason within its deadline; the actor
    keeps serving afterwards (a plain goal still runs to its step limit)."""
    from action_msgs.msg import GoalStatus
    from rclpy.action import ActionClient
    from rclpy.executors import MultiThreadedExecutor
    from rclpy.node import Node
    from rclpy.parameter import Parameter

    from efm_interfaces.action import RunEpisode
    from efm_ros.actor_node import ActorNode
    from efm_ros.camera_ingest import CameraIngestNode
    from efm_ros.episode_recorder import EpisodeRecorderNode
    from efm_ros.policy_node import PolicyNode
    from efm_ros.sim_robot import SimRobotNode
    from efm_ros.steps_to_go_node import StepsToGoNode

    def make(cls, **params):
        return cls(context=ros_context, namespace="station_0",
                   parameter_overrides=[Parameter(k, value=v) for k, v in params.items()])

    ckpt = str(tiny_checkpoint)
    nodes = [
        make(SimRobotNode, **{"sim.image_size": 16, "control.realtime": False,
                              "control.idle_publish_hz": 5.0}),
        make(CameraIngestNode, **{"cameras.names": ["top"], "output.size": [16, 16],
                                  "proprio.enabled": True, "proprio.names": ["ee_x", "ee_y"],
                                  "sync.tolerance_s": 0.01}),
        make(StepsToGoNode, **{"model.checkpoint": ckpt, "success.threshold": 0.0,
                               "predict.every_observation": True, "viz.enabled": False}),
        make(PolicyNode, **{"model.checkpoint": ckpt, "control.trigger": "observation",
                            "safety.observation_timeout_s": 2.0}),
        make(EpisodeRecorderNode, **{"recorder.output_dir": str(tmp_path / "bags")}),
        make(ActorNode, **{"episode.max_steps": 4, "episode.timeout_s": 3.0,
                           "episode.stall_timeout_s": 3.0, "learner.spool_dir": ""}),
    ]
    client_node = Node("fuzzer", context=ros_context)
    executor = MultiThreadedExecutor(num_threads=6, context=ros_context)
    for n in (*nodes[1:], client_node):
        executor.add_node(n)
    # the simulator renders with an EGL context current on one thread: its own executor
    # and thread, as efm_ros.compose runs it
    import threading

    from rclpy.executors import SingleThreadedExecutor

    sim_executor, stop = SingleThreadedExecutor(context=ros_context), threading.Event()
    sim_executor.add_node(nodes[0])
    sim_thread = threading.Thread(target=lambda: [sim_executor.spin_once(0.05)
                                                  for _ in iter(stop.is_set, True)], daemon=True)
    sim_thread.start()
    client = ActionClient(client_node, RunEpisode, "/station_0/run_episode")
    assert spin_until(executor, lambda: client.server_is_ready(), timeout=10.0)
    outcomes: dict[str, int] = {}

    def run(goal, deadline=30.0):
        sent = client.send_goal_async(goal)
        assert spin_until(executor, sent.done, timeout=10.0)
        handle = sent.result()
        if not handle.accepted:
            return "rejected", None
        result = handle.get_result_async()
        assert spin_until(executor, result.done, timeout=deadline), goal
        return result.result().status, result.result().result

    @settings(max_examples=max(12, EXAMPLES // 4), deadline=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
    @given(instruction=st.one_of(st.just(""), st.just("push the red star to the blue cube"),
                                 st.text(max_size=30)),
           family=st.one_of(st.just(""), st.just("block2block"), st.text(max_size=12)),
           max_steps=st.one_of(st.integers(0, 6), st.just(2**32 - 1)),
           station=st.sampled_from(["", "station_0", "station_9", "\u00e9"]),
           seed=st.integers(-2**63, 2**63 - 1))
    def one(instruction, family, max_steps, station, seed):
        goal = RunEpisode.Goal(instruction=instruction.replace("\x00", ""),
                               task_family=family.replace("\x00", ""), max_steps=max_steps,
                               station=station, seed=seed)
        status, result = run(goal)
        if status == "rejected":
            assert station not in ("", "station_0")
            key = "rejected"
        else:
            assert status in (GoalStatus.STATUS_SUCCEEDED, GoalStatus.STATUS_ABORTED)
            assert result.termination_reason in (0, 1, 2, 3)
            if result.termination_reason == 3:
                assert result.termination_detail
            key = f"status {status} / reason {result.termination_reason}"
        outcomes[key] = outcomes.get(key, 0) + 1

    try:
        one()
        status, result = run(RunEpisode.Goal(max_steps=3, seed=5))  # still serving
        assert status == GoalStatus.STATUS_SUCCEEDED and result.length == 3, result
        print("fuzz cases (actor goals):", outcomes)
        assert len(outcomes) >= 2
    finally:
        stop.set()
        sim_thread.join(timeout=5.0)
        executor.shutdown()
        sim_executor.shutdown()
        for n in (*nodes, client_node):
            n.destroy_node()


def test_fuzzed_streams_never_crash_the_actor_mid_episode(ros_context):
    """The actor's per-step subscribers (observation, action_command, steps_to_go/prediction)
    while an episode is recording: any message is recorded, refused and counted, or
    ignored; what the record holds afterwards is consistent (every command answers a
    recorded observation, every recorded d is finite)."""
    import time as _time

    from rclpy.executors import MultiThreadedExecutor
    from rclpy.node import Node
    from rclpy.parameter import Parameter

    from efm_interfaces.msg import ActionCommand, Observation, StepsToGoPrediction
    from efm_ros.actor_node import ActorNode, EpisodeRecord
    from efm_ros.conversions import stamp_ns
    from efm_ros.qos import RELIABLE, SENSOR

    actor = ActorNode(context=ros_context, namespace="station_0", parameter_overrides=[
        Parameter("learner.spool_dir", value="")])
    tester = Node("fuzzer", namespace="station_0", context=ros_context)
    executor = MultiThreadedExecutor(num_threads=2, context=ros_context)
    executor.add_node(actor)
    executor.add_node(tester)
    obs_pub = tester.create_publisher(Observation, "observation", SENSOR)
    cmd_pub = tester.create_publisher(ActionCommand, "action_command", RELIABLE)
    pred_pub = tester.create_publisher(StepsToGoPrediction, "steps_to_go/prediction", RELIABLE)
    assert spin_until(executor, lambda: obs_pub.get_subscription_count() > 0
                      and cmd_pub.get_subscription_count() > 0
                      and pred_pub.get_subscription_count() > 0)
    with actor.lock:
        actor.record = EpisodeRecord("station_0-fuzz-000001", "push", _time.monotonic(),
                                     start_ns=0)
    stamps = []

    @SETTINGS
    @given(obs=observations(), command=action_commands(), d=FLOATS, success=st.booleans(),
           answer_known=st.booleans())
    def one(obs, command, d, success, answer_known):
        now = tester.get_clock().now()
        obs.header.stamp = now.to_msg()
        obs_pub.publish(obs)
        if answer_known and stamps:
            command.header.stamp.sec, command.header.stamp.nanosec = divmod(stamps[-1], 10**9)
        cmd_pub.publish(command)
        pred = StepsToGoPrediction(expected_steps=d, success=success)
        pred.header.stamp = obs.header.stamp
        pred_pub.publish(pred)
        stamps.append(now.nanoseconds)
        spin_until(executor, lambda: False, timeout=0.03)

    one()
    spin_until(executor, lambda: False, timeout=0.2)
    with actor.lock:
        record = actor.record
        recorded = set(record.observations)
        assert all(stamp_ns(c) in recorded for c in record.commands)
        assert np.isnan(record.latest_d) or np.isfinite(record.latest_d)
        actor.record = None
    print("fuzz cases (actor streams):", EXAMPLES, "observations recorded:", len(recorded),
          "commands recorded:", len(record.commands),
          {k: v for k, v in actor.diag.counters.items() if k.startswith("rejected")})
    executor.shutdown()
    actor.destroy_node()
    tester.destroy_node()


def test_fuzzed_weights_requests_never_read_outside_what_was_published(ros_context,
                                                                       tmp_path):
    """The learner's get_weights service (efm_ros.weights_transfer.WeightsServer): any
    version, file name, offset and size; only the two files of a published version are
    ever sent, never more than the chunk cap, and exactly the bytes at the offset."""
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node
    from tests_efm_ros_helpers import write_tiny_checkpoint

    from efm_interfaces.srv import GetWeights
    from efm_ros.weights_transfer import WeightsServer

    v1 = write_tiny_checkpoint(tmp_path / "policy" / "v1")
    host = Node("learner", context=ros_context)
    server = WeightsServer(host, "~/get_weights", lambda v: v1 if v == 1 else None, 4096)
    client_node = Node("fuzzer", context=ros_context)
    executor = SingleThreadedExecutor(context=ros_context)
    executor.add_node(host)
    executor.add_node(client_node)
    client = client_node.create_client(GetWeights, "/learner/get_weights")
    assert spin_until(executor, client.service_is_ready)
    files = {n: (v1 / n).read_bytes() for n in ("config.json", "model.safetensors")}
    answered = {"ok": 0, "refused": 0}

    @SETTINGS
    @given(version=st.one_of(st.just(1), st.integers(0, 2**64 - 1)),
           file=st.one_of(st.sampled_from([*files, "SHA256SUMS", "../v1/model.safetensors",
                                           "/etc/passwd", ""]), st.text(max_size=20)),
           offset=st.one_of(st.integers(0, 20000), st.integers(0, 2**64 - 1)),
           max_bytes=st.integers(0, 2**32 - 1))
    @example(version=1, file="model.safetensors", offset=100, max_bytes=10**6)  # an answer
    @example(version=2, file="config.json", offset=0, max_bytes=10)  # a refusal
    def one(version, file, offset, max_bytes):
        future = client.call_async(GetWeights.Request(
            version=version, file=file.replace("\x00", ""), offset=offset,
            max_bytes=max_bytes))
        assert spin_until(executor, future.done, timeout=5.0)
        reply = future.result()
        if reply.ok:
            answered["ok"] += 1
            data = files[file]
            assert version == 1 and reply.total_bytes == len(data)
            assert len(reply.data) <= 4096
            assert bytes(reply.data) == data[offset: offset + len(reply.data)]
        else:
            answered["refused"] += 1
            assert reply.message and len(reply.data) == 0

    one()
    print("fuzz cases (get_weights):", answered, "bytes served:", server.served_bytes)
    assert answered["ok"] > 0 and answered["refused"] > 0 and server.served_bytes > 0
    executor.shutdown()
    host.destroy_node()
    client_node.destroy_node()


def test_fuzzed_weight_updates_and_instructions_never_swap_the_policy(station):
    """The policy's weights and instruction topics: a WeightsUpdate that does not name a
    loadable checkpoint with its digest never changes the weights in use; any instruction
    text is taken or ignored without a crash."""
    from std_msgs.msg import String

    from efm_interfaces.msg import WeightsUpdate
    from efm_ros.qos import LATCHED

    node, executor, _pub, _commands, client = station
    weights = client.create_publisher(WeightsUpdate, "weights", LATCHED)
    instructions = client.create_publisher(String, "instruction", LATCHED)
    assert spin_until(executor, lambda: weights.get_subscription_count() > 0)
    before = node.host.current()

    @SETTINGS
    @given(version=st.integers(0, 2**64 - 1), uri=st.one_of(
               st.sampled_from(["", "file:///nonexistent", "http://x/y", "ros:///learner/x",
                                "ros://host/learner/get_weights", "/etc"]),
               st.text(max_size=40)),
           sha=st.one_of(st.just("0" * 64), st.text(max_size=70)),
           text=st.text(max_size=80))
    @example(version=5, uri="file:///nonexistent", sha="0" * 64, text="")  # refused
    def one(version, uri, sha, text):
        weights.publish(WeightsUpdate(version=version, uri=uri.replace("\x00", ""),
                                      sha256=sha.replace("\x00", "")))
        instructions.publish(String(data=text.replace("\x00", "")))
        spin_until(executor, lambda: False, timeout=0.03)

    one()
    spin_until(executor, lambda: not node.host.busy, timeout=10.0)
    spin_until(executor, lambda: False, timeout=0.5)
    assert node.host.current() is before  # the same weights, never swapped
    rejected = {k: v for k, v in node.diag.counters.items() if k.startswith("rejected")}
    print("fuzz cases (policy weights + instruction):", EXAMPLES, rejected)
    assert rejected.get("rejected.weights", 0) > 0
