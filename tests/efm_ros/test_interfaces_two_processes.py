"""Two separate processes exchange efm_interfaces messages and a StepsToGo call, over real
DDS on a domain of the test's own (loopback only)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from ros_harness import spin_until

PEER = str(Path(__file__).with_name("peer_steps_to_go.py"))


@pytest.fixture
def node(ros_context):
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node

    node = Node("efm_test_client", context=ros_context)
    executor = SingleThreadedExecutor(context=ros_context)
    executor.add_node(node)
    yield node, executor
    executor.shutdown()
    node.destroy_node()


def _observation(step_value: float, seed: int):
    from efm_ros.conversions import make_observation

    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)
    return image, make_observation(
        station="station_0",
        step=seed,
        instruction="push the red star to the blue cube",
        images={"top": image},
        previous_images={"top": np.roll(image, 1, axis=0)},
        proprioception=[step_value, 0.25],
        proprio_names=["steps", "ee_y"],
    )


def test_steps_to_go_service_across_processes(node, ros_process):
    from efm_interfaces.srv import StepsToGo
    from efm_learning.steps_to_go import language_table_steps_to_go

    node, executor = node
    peer = ros_process(PEER, name="peer")
    peer.wait_for_output("peer ready")
    client = node.create_client(StepsToGo, "steps_to_go")
    assert spin_until(executor, lambda: client.service_is_ready(), timeout=20), peer.output()

    request = StepsToGo.Request()
    request.observations = [_observation(v, i)[1] for i, v in enumerate([0.0, 1.0, 40.0])]
    future = client.call_async(request)
    assert spin_until(executor, future.done, timeout=10), peer.output()
    response = future.result()

    tokenizer = language_table_steps_to_go()
    assert response.ok, response.message
    np.testing.assert_allclose(response.bin_values, tokenizer.bin_values, rtol=1e-6)
    d = [p.expected_steps for p in response.predictions]
    np.testing.assert_allclose(d, tokenizer.decode(tokenizer.encode([0.0, 1.0, 40.0])))
    assert [p.success for p in response.predictions] == [True, True, False]
    assert all(abs(sum(p.probabilities) - 1) < 1e-6 for p in response.predictions)
    assert response.model_version == 7

    # A malformed observation (image bytes do not match its size) is refused, not crashed on.
    bad = _observation(3.0, 9)[1]
    bad.images[0].data = bytes(bad.images[0].data)[:-1]
    future = client.call_async(StepsToGo.Request(observations=[bad]))
    assert spin_until(executor, future.done, timeout=10), peer.output()
    assert not future.result().ok and "bytes" in future.result().message
    assert peer.proc.poll() is None, "peer must survive bad input"


def test_labelled_episode_crosses_processes_intact(node, ros_process):
    from std_msgs.msg import String

    from efm_interfaces.msg import LabelledEpisode
    from efm_learning.returns import discounted_returns
    from efm_learning.reward import rewards_from_steps_to_go
    from efm_learning.tokenizers import LanguageTableActionTokenizer
    from efm_ros.qos import RELIABLE

    node, executor = node
    peer = ros_process(PEER, name="peer")
    peer.wait_for_output("peer ready")
    acks: list[dict] = []
    node.create_subscription(
        String, "episode_ack", lambda m: acks.append(json.loads(m.data)), RELIABLE
    )
    pub = node.create_publisher(LabelledEpisode, "labelled_episodes", RELIABLE)
    assert spin_until(executor, lambda: pub.get_subscription_count() > 0, timeout=20)

    tokenizer = LanguageTableActionTokenizer(max_delta=0.05)
    actions = np.array([[0.05, -0.01], [0.02, 0.0], [-0.05, 0.03]])
    d = np.array([10.0, 8.0, 5.5, 1.0])
    frames = [_observation(0.0, i) for i in range(3)]
    msg = LabelledEpisode(
        episode_id="station_0-000001",
        station="station_0",
        policy_version=3,
        instruction="push the red star to the blue cube",
        task_family="block2block",
        length=3,
        observations=[obs for _, obs in frames],
        tokens_per_action=4,
        action_tokens=tokenizer.encode(actions).ravel().tolist(),
        action_dim=2,
        actions=actions.astype(np.float32).ravel().tolist(),
        steps_to_go=d.tolist(),
        rewards=rewards_from_steps_to_go(d).tolist(),
        returns=discounted_returns(rewards_from_steps_to_go(d)).tolist(),
        gamma=0.9,
        success=True,
    )
    pub.publish(msg)
    assert spin_until(executor, lambda: len(acks) > 0, timeout=10), peer.output()
    ack = acks[0]
    assert ack["episode_id"] == "station_0-000001" and ack["length"] == 3
    assert ack["tokens"] == tokenizer.encode(actions).ravel().tolist()
    assert ack["returns"][0] == pytest.approx(2.0 + 0.9 * 2.5 + 0.81 * 4.5, abs=1e-3)
    np.testing.assert_allclose(ack["returns"], discounted_returns([2.0, 2.5, 4.5]), atol=1e-3)
    sent = hashlib.sha256(b"".join(img.tobytes() for img, _ in frames)).hexdigest()
    assert ack["images_sha256"] == sent
