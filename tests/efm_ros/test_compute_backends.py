"""compute.backend and compute.device of the model nodes (issue 16, items 3-4), over real
topics and services: a policy node on onnxruntime publishes exactly the greedy tokens the
torch model picks, for an image model, and keeps onnxruntime across a weight hot swap;
the steps-to-go service on onnxruntime matches torch; a GPU that is not there stops the
node at start-up."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ros_harness import spin_until
from tests_efm_ros_helpers import observation

INSTRUCTION = "push the red moon to the blue cube"
CONV = {"type": "conv_efm", "image_size": 32, "channels": [8, 16, 16], "num_keypoints": 8,
        "hidden_size": 64, "state_dim": 2, "steps_to_go": {"max_steps": 60, "num_bins": 31},
        "action_tokenizer": {"type": "uniform", "action_dim": 2, "bins": 32, "low": -0.03,
                             "high": 0.03}}


def _conv_checkpoint(path, seed):
    from efm_learning.checkpoint import save_checkpoint
    from efm_learning.models import make_model

    torch.manual_seed(seed)
    return save_checkpoint(path, make_model(CONV).eval())


def _frames(n, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 64, 64, 3), dtype=np.uint8)


@pytest.fixture
def nodes(ros_context):
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node
    from rclpy.parameter import Parameter

    made = []

    def make(cls, **params):
        node = cls(context=ros_context, namespace="station_0",
                   parameter_overrides=[Parameter(k, value=v) for k, v in params.items()])
        client = Node("test_client", context=ros_context, namespace="station_0")
        executor = SingleThreadedExecutor(context=ros_context)
        executor.add_node(node)
        executor.add_node(client)
        made.append((node, client, executor))
        return node, client, executor

    yield make
    for node, client, executor in made:
        executor.shutdown()
        node.destroy_node()
        client.destroy_node()


def test_policy_on_onnxruntime_publishes_the_torch_greedy_tokens_and_hot_swaps(nodes, tmp_path):
    from efm_interfaces.msg import ActionCommand, Observation, WeightsUpdate
    from efm_learning.checkpoint import load_checkpoint, sha256_file
    from efm_learning.onnx_runtime import OnnxRuntimeEFM
    from efm_ros.policy_node import PolicyNode
    from efm_ros.qos import LATCHED, RELIABLE, SENSOR

    v0 = _conv_checkpoint(tmp_path / "v0", seed=0)
    node, client, executor = nodes(
        PolicyNode, **{"model.checkpoint": str(v0), "compute.backend": "onnxruntime",
                       "policy.greedy": True, "control.trigger": "observation",
                       "policy.instruction": INSTRUCTION, "weights.allowed_dir": str(tmp_path)})
    assert isinstance(node.host.current().model, OnnxRuntimeEFM)
    commands: list = []
    client.create_subscription(ActionCommand, "action_command", commands.append, RELIABLE)
    pub = client.create_publisher(Observation, "observation", SENSOR)
    assert spin_until(executor, lambda: pub.get_subscription_count() > 0)
    frames, states = _frames(6), np.random.default_rng(1).uniform(-0.2, 0.2, (6, 2))

    def act_on(steps, expected_version):
        for step in steps:
            pub.publish(observation(states[step], step=step, image=frames[step], stamp=client))
            assert spin_until(executor, lambda s=step: any(c.step == s for c in commands))
        return {c.step: c for c in commands if c.step in steps
                and c.policy_version == expected_version}

    def torch_tokens(ckpt, steps):
        model, _ = load_checkpoint(ckpt)
        obs = {"observation.image": frames[steps], "observation.prev_image": frames[steps],
               "observation.state": states[steps].astype(np.float32),
               "instruction": [INSTRUCTION] * len(steps)}
        return model.eval().act(obs, greedy=True)[0]

    got = act_on([0, 1, 2], 0)
    assert len(got) == 3
    # each observation is its own episode start here: previous frame = current frame
    expected = torch_tokens(v0, [0, 1, 2])
    for i, step in enumerate((0, 1, 2)):
        assert list(got[step].action_tokens) == expected[i].tolist()

    v1 = _conv_checkpoint(tmp_path / "v1", seed=1)
    weights = client.create_publisher(WeightsUpdate, "weights", LATCHED)
    sha = sha256_file(v1 / "model.safetensors")
    weights.publish(WeightsUpdate(version=1, uri=str(v1), sha256=sha))
    assert spin_until(executor, lambda: node.version == 1, timeout=30.0), node.diag.counters
    assert isinstance(node.host.current().model, OnnxRuntimeEFM)
    got = act_on([3, 4, 5], 1)
    assert len(got) == 3
    expected = torch_tokens(v1, [3, 4, 5])
    assert [list(got[s].action_tokens) for s in (3, 4, 5)] == expected.tolist()
    assert expected.tolist() != torch_tokens(v0, [3, 4, 5]).tolist()  # the swap mattered


def test_steps_to_go_service_on_onnxruntime_matches_torch(nodes, tmp_path):
    from efm_interfaces.srv import StepsToGo
    from efm_learning.checkpoint import load_checkpoint
    from efm_learning.onnx_runtime import OnnxRuntimeEFM
    from efm_ros.steps_to_go_node import StepsToGoNode

    ckpt = _conv_checkpoint(tmp_path / "ckpt", seed=2)
    node, client, executor = nodes(StepsToGoNode, **{"model.checkpoint": str(ckpt),
                                                      "compute.backend": "onnxruntime",
                                                      "predict.rate_hz": 0.0})
    assert isinstance(node.model, OnnxRuntimeEFM)
    frames, states = _frames(4, seed=3), np.random.default_rng(2).uniform(-0.2, 0.2, (4, 2))
    request = StepsToGo.Request(
        observations=[observation(states[i], step=i, image=frames[i], instruction=INSTRUCTION)
                      for i in range(4)])
    cli = client.create_client(StepsToGo, "steps_to_go")
    assert spin_until(executor, cli.service_is_ready)
    future = cli.call_async(request)
    assert spin_until(executor, future.done)
    response = future.result()
    assert response.ok, response.message
    model, _ = load_checkpoint(ckpt)
    expected = model.eval().predict_steps_to_go({
        "observation.image": frames, "observation.prev_image": frames,
        "observation.state": states.astype(np.float32), "instruction": [INSTRUCTION] * 4})
    got = [p.expected_steps for p in response.predictions]
    np.testing.assert_allclose(got, expected, atol=1e-3)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
@pytest.mark.parametrize("backend", ["torch", "onnxruntime"])
def test_asking_for_a_missing_gpu_fails_at_start_up(nodes, tiny_checkpoint, backend):
    from efm_ros.policy_node import PolicyNode
    from efm_ros.steps_to_go_node import StepsToGoNode

    for cls in (PolicyNode, StepsToGoNode):
        with pytest.raises(ValueError, match=r"CUDA|onnxruntime-gpu"):
            nodes(cls, **{"model.checkpoint": str(tiny_checkpoint), "compute.device": "cuda",
                          "compute.backend": backend})


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_learner_refuses_a_missing_gpu():
    from efm_ros.learner_node import learner_device

    assert learner_device({"compute.device": "cpu"}) == "cpu"
    with pytest.raises(ValueError, match="no CUDA device"):
        learner_device({"compute.device": "cuda"})
    with pytest.raises(ValueError, match="'cpu' or 'cuda'"):
        learner_device({"compute.device": "tpu"})
