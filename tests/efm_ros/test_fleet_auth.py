"""Fleet authentication (issue 17, defect 9): weight updates, episodes and acks signed
with the operator's fleet key; a robot loads weights only from its allowed folder."""

from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from ros_harness import spin_until
from tests_efm_ros_helpers import observation, write_tiny_checkpoint


@pytest.fixture
def key_file(tmp_path):
    from efm_ros.fleet_auth import write_key

    return write_key(tmp_path / "keys" / "fleet.key")


def test_keys_are_private_long_and_never_overwritten(tmp_path, key_file):
    from efm_ros.fleet_auth import load_key, main, write_key

    assert (os.stat(key_file).st_mode & 0o777) == 0o600
    assert len(load_key(key_file)) >= 32
    with pytest.raises(FileExistsError):
        write_key(key_file)
    with pytest.raises(SystemExit):
        main([str(key_file)])
    os.chmod(key_file, 0o644)
    with pytest.raises(ValueError, match="readable by group or others"):
        load_key(key_file)
    short = tmp_path / "short.key"
    short.write_text("abc")
    os.chmod(short, 0o600)
    with pytest.raises(ValueError, match="need >= 32"):
        load_key(short)
    with pytest.raises(ValueError, match="No such file"):
        load_key(tmp_path / "missing.key")


def test_every_field_is_covered(key_file):
    from efm_interfaces.msg import WeightsUpdate
    from efm_ros.fleet_auth import load_key, sign, verify

    key = load_key(key_file)
    msg = sign(WeightsUpdate(version=3, uri="file:///x", sha256="a" * 64), key)
    assert verify(msg, key) == ""
    assert verify(msg, None) == ""  # no key: nothing is checked
    for field, value in (("version", 4), ("uri", "file:///y"), ("sha256", "b" * 64)):
        altered = sign(WeightsUpdate(version=3, uri="file:///x", sha256="a" * 64), key)
        setattr(altered, field, value)
        assert verify(altered, key).startswith("unauthenticated: hmac does not match"), field
    assert verify(WeightsUpdate(version=3), key).startswith("unauthenticated: no hmac")
    assert verify(msg, b"k" * 32).startswith("unauthenticated")  # another fleet's key


def _policy(ros_context, checkpoint, key_file, allowed):
    from rclpy.parameter import Parameter

    from efm_ros.policy_node import PolicyNode

    return PolicyNode(
        context=ros_context,
        namespace="station_0",
        parameter_overrides=[
            Parameter("model.checkpoint", value=str(checkpoint)),
            Parameter("policy.instruction", value="push the red star to the blue cube"),
            Parameter("control.trigger", value="observation"),
            Parameter("security.fleet_key_file", value=str(key_file)),
            Parameter("weights.allowed_dir", value=str(allowed)),
        ],
    )


def test_policy_loads_only_signed_updates_from_its_allowed_folder(
    ros_context, tiny_checkpoint, tmp_path, key_file
):
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node

    from efm_interfaces.msg import Observation, WeightsUpdate
    from efm_learning.checkpoint import sha256_file
    from efm_ros.fleet_auth import load_key, sign
    from efm_ros.qos import LATCHED, SENSOR

    allowed = tmp_path / "learner" / "policy"
    inside = write_tiny_checkpoint(allowed / "v1", seed=1)
    outside = write_tiny_checkpoint(tmp_path / "elsewhere" / "v1", seed=2)
    node = _policy(ros_context, tiny_checkpoint, key_file, allowed)
    client = Node("test_client", context=ros_context, namespace="station_0")
    executor = SingleThreadedExecutor(context=ros_context)
    executor.add_node(node)
    executor.add_node(client)
    weights = client.create_publisher(WeightsUpdate, "weights", LATCHED)
    obs = client.create_publisher(Observation, "observation", SENSOR)
    key = load_key(key_file)

    def update(path, signed=True, version=1):
        msg = WeightsUpdate(version=version, uri=f"file://{path}",
                            sha256=sha256_file(path / "model.safetensors"))
        return sign(msg, key) if signed else msg

    def offer(msg, until):
        weights.publish(msg)
        for step in range(100):  # the swap happens on a worker thread: keep acting
            obs.publish(observation([0.0, 0.0], step=step, stamp=client))
            if spin_until(executor, until, timeout=0.05):
                return True
        return False

    try:
        assert spin_until(executor, lambda: weights.get_subscription_count() > 0)
        assert offer(update(inside, signed=False),
                     lambda: node.diag.counters["rejected.weights"] == 1)
        forged = update(inside)
        forged.version = 7  # signed for version 1, replayed as 7
        assert offer(forged, lambda: node.diag.counters["rejected.weights"] == 2)
        assert offer(update(outside), lambda: node.diag.counters["rejected.weights"] == 3)
        assert node.version == 0
        escape = update(inside)
        escape.uri = f"file://{allowed}/../../elsewhere/v1"  # '..' out of the folder
        assert offer(sign(escape, key), lambda: node.diag.counters["rejected.weights"] == 4)
        assert offer(update(inside), lambda: node.version == 1)
    finally:
        executor.shutdown()
        node.destroy_node()
        client.destroy_node()


def test_learner_learns_only_signed_episodes_and_signs_its_outputs(
    ros_context, tiny_checkpoint, tmp_path, key_file
):
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node
    from rclpy.parameter import Parameter
    from test_practice_faults import _episode

    from efm_interfaces.msg import EpisodeAck, LabelledEpisode, WeightsUpdate
    from efm_ros.fleet_auth import load_key, sign, verify
    from efm_ros.learner_node import LearnerNode
    from efm_ros.qos import LATCHED, RELIABLE

    key = load_key(key_file)
    learner = LearnerNode(
        context=ros_context,
        parameter_overrides=[
            Parameter("model.policy_checkpoint", value=str(tiny_checkpoint)),
            Parameter("output_dir", value=str(tmp_path / "learner")),
            Parameter("improve.updates_per_round", value=100),
            Parameter("security.fleet_key_file", value=str(key_file)),
        ],
    )
    client = Node("test_client", context=ros_context)
    executor = SingleThreadedExecutor(context=ros_context)
    executor.add_node(learner)
    executor.add_node(client)
    acks, weights = [], []
    client.create_subscription(EpisodeAck, "/learner/acks", acks.append, RELIABLE)
    client.create_subscription(WeightsUpdate, "/learner/weights", weights.append, LATCHED)
    pub = client.create_publisher(LabelledEpisode, "/learner/episodes", RELIABLE)
    try:
        assert spin_until(executor, lambda: pub.get_subscription_count() > 0 and weights)
        assert verify(weights[-1], key) == "", (weights[-1], learner.fleet_key == key)
        good = sign(_episode(episode_id="signed-1"), key)
        replay = sign(_episode(episode_id="signed-1"), key)
        replay.episode_id = "replayed-under-a-new-id"  # hmac copied, id changed
        unsigned = _episode(episode_id="unsigned-1")
        for i, msg in enumerate((unsigned, replay, good)):
            pub.publish(msg)
            assert spin_until(executor, lambda i=i: len(acks) == i + 1)
        assert [a.outcome for a in acks] == [EpisodeAck.REJECTED] * 2 + [EpisodeAck.ACCEPTED]
        assert all(a.reason.startswith("unauthenticated") for a in acks[:2])
        assert all(verify(a, key) == "" for a in acks)
        assert len(learner.buffer) == 3 and learner.seen == {"signed-1"}
        assert np.isclose(learner.diag.counters["rejected.unauthenticated"], 2)
    finally:
        executor.shutdown()
        learner.destroy_node()
        client.destroy_node()


@settings(max_examples=60, deadline=None)
@given(
    floats=st.lists(st.floats(width=32, allow_nan=False), max_size=20),
    text=st.text(max_size=40),
    version=st.integers(0, 2**64 - 1),
    gamma=st.floats(0, 1),
)
def test_a_signed_message_verifies_after_the_wire(floats, text, version, gamma):
    """The digest is of what the receiver sees: float64 values in float32 fields, lists
    that arrive as arrays, CDR padding (not zeroed, so never hashed) all agree."""
    from rclpy.serialization import deserialize_message, serialize_message

    from efm_interfaces.msg import LabelledEpisode
    from efm_ros.fleet_auth import sign, verify

    key = b"f" * 32
    msg = LabelledEpisode(episode_id="e-1", instruction=text.replace("\x00", ""),
                          policy_version=version, returns=floats, gamma=gamma,
                          action_tokens=[len(floats)] * 3,
                          observations=[observation([0.5, -0.25], step=len(floats))])
    sign(msg, key)
    received = deserialize_message(serialize_message(msg), LabelledEpisode)
    assert verify(received, key) == ""
