"""steps_to_go node contract: batched service equals the in-process model, continuous
prediction + rviz outputs, bad observations and bad checkpoints refused."""

from __future__ import annotations

import numpy as np
import pytest
from ros_harness import spin_until


def _obs(state, step=0, image=None, instruction="push the red star to the blue cube"):
    from efm_ros.conversions import make_observation

    images = {} if image is None else {"top": image}
    return make_observation(
        station="station_0",
        step=step,
        instruction=instruction,
        images=images,
        proprioception=state,
        proprio_names=["ee_x", "ee_y"],
    )


@pytest.fixture
def graph(ros_context, tiny_checkpoint):
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node
    from rclpy.parameter import Parameter

    from efm_ros.steps_to_go_node import StepsToGoNode

    node = StepsToGoNode(
        context=ros_context,
        parameter_overrides=[
            Parameter("model.checkpoint", value=str(tiny_checkpoint)),
            Parameter("model.version", value=4),
            Parameter("success.threshold", value=60.0),
            Parameter("predict.rate_hz", value=50.0),
            Parameter("service.max_batch", value=8),
        ],
    )
    client = Node("test_client", context=ros_context)
    executor = SingleThreadedExecutor(context=ros_context)
    executor.add_node(node)
    executor.add_node(client)
    yield node, client, executor
    executor.shutdown()
    node.destroy_node()
    client.destroy_node()


def _call(client, executor, request):
    from efm_interfaces.srv import StepsToGo

    cli = client.create_client(StepsToGo, "steps_to_go")
    assert spin_until(executor, cli.service_is_ready)
    future = cli.call_async(request)
    assert spin_until(executor, future.done)
    return future.result()


def test_service_matches_the_model_in_process(graph, tiny_checkpoint):
    from efm_interfaces.srv import StepsToGo
    from efm_learning.checkpoint import load_checkpoint

    node, client, executor = graph
    states = np.array([[0.0, 0.0], [0.1, -0.2], [0.3, 0.3]], dtype=np.float32)
    response = _call(
        client, executor, StepsToGo.Request(observations=[_obs(s, i) for i, s in enumerate(states)])
    )
    assert response.ok, response.message
    model, _ = load_checkpoint(tiny_checkpoint)
    expected = model.predict_steps_to_go({"observation.state": states})
    got = [p.expected_steps for p in response.predictions]
    np.testing.assert_allclose(got, expected, rtol=1e-4)
    assert [p.success for p in response.predictions] == list(expected <= 60.0)
    assert [p.step for p in response.predictions] == [0, 1, 2]
    assert len(response.bin_values) == 50 and response.model_version == 4
    assert response.model_sha256 == node.loaded.sha256


def test_in_range_reward_d_with_the_full_expectation_for_success(ros_context, tiny_checkpoint):
    """reward.steps_to_go: in_range publishes d over every bin but the last as
    expected_steps (the actors' reward); success still reads the full expectation."""
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node
    from rclpy.parameter import Parameter

    from efm_interfaces.srv import StepsToGo
    from efm_learning.checkpoint import load_checkpoint
    from efm_ros.steps_to_go_node import StepsToGoNode

    node = StepsToGoNode(
        context=ros_context,
        parameter_overrides=[
            Parameter("model.checkpoint", value=str(tiny_checkpoint)),
            Parameter("success.threshold", value=50.0),
            Parameter("reward.steps_to_go", value="in_range"),
        ],
    )
    client = Node("test_client", context=ros_context)
    executor = SingleThreadedExecutor(context=ros_context)
    executor.add_node(node)
    executor.add_node(client)
    try:
        states = np.array([[0.0, 0.0], [0.1, -0.2], [0.3, 0.3]], dtype=np.float32)
        model, _ = load_checkpoint(tiny_checkpoint)
        inside = model.predict_steps_to_go({"observation.state": states}, in_range=True)
        full = model.predict_steps_to_go({"observation.state": states})
        assert np.all(inside < full)
        # s between the two d of the first state: only the full expectation says "not yet"
        s = float(inside[0] + full[0]) / 2
        node.set_parameters([Parameter("success.threshold", value=s)])
        request = StepsToGo.Request(observations=[_obs(x, i) for i, x in enumerate(states)])
        response = _call(client, executor, request)
        assert response.ok, response.message
        np.testing.assert_allclose([p.expected_steps for p in response.predictions], inside,
                                   rtol=1e-4)
        assert [p.success for p in response.predictions] == list(full <= s)
        assert not response.predictions[0].success
    finally:
        executor.shutdown()
        node.destroy_node()
        client.destroy_node()


def test_bad_requests_are_refused_and_counted(graph):
    from efm_interfaces.srv import StepsToGo

    node, client, executor = graph
    too_many = StepsToGo.Request(observations=[_obs([0.0, 0.0])] * 9)
    assert not _call(client, executor, too_many).ok
    nan = StepsToGo.Request(observations=[_obs([0.0, 0.0])])
    nan.observations[0].proprioception = [float("nan"), 0.0]
    response = _call(client, executor, nan)
    assert not response.ok and "NaN" in response.message
    assert node.diag.counters["rejected.observation"] == 1
    assert node.diag.counters["rejected.batch_size"] == 1


def test_continuous_prediction_with_rviz_outputs(graph):
    from sensor_msgs.msg import Image
    from visualization_msgs.msg import MarkerArray

    from efm_interfaces.msg import Observation, StepsToGoPrediction
    from efm_ros.conversions import msg_to_image
    from efm_ros.qos import RELIABLE, SENSOR

    node, client, executor = graph
    predictions, markers, images = [], [], []
    client.create_subscription(
        StepsToGoPrediction, "steps_to_go/prediction", predictions.append, RELIABLE
    )
    client.create_subscription(MarkerArray, "steps_to_go/markers", markers.append, RELIABLE)
    client.create_subscription(Image, "steps_to_go/distribution_image", images.append, SENSOR)
    pub = client.create_publisher(Observation, "observation", SENSOR)
    # the rviz outputs are drawn only for listeners: wait until the node sees ours
    assert spin_until(
        executor,
        lambda: pub.get_subscription_count() > 0
        and node.marker_pub.get_subscription_count() > 0
        and node.image_pub.get_subscription_count() > 0,
    )
    frame = np.zeros((24, 24, 3), np.uint8)
    frame[:, :12] = (255, 0, 0)
    pub.publish(_obs([0.1, 0.1], step=7, image=frame))
    assert spin_until(executor, lambda: predictions and markers and images)
    pred = predictions[-1]
    assert pred.step == 7 and len(pred.bin_values) == 50
    assert abs(sum(pred.probabilities) - 1) < 1e-4
    assert pred.expected_steps == pytest.approx(
        float(np.dot(pred.probabilities, pred.bin_values)), rel=1e-4
    )
    assert markers[-1].markers[0].text.startswith("d=")
    picture = msg_to_image(images[-1])
    assert picture.shape[1] == 320 and picture.shape[0] > 320  # frame on top, chart below
    assert tuple(picture[10, 10]) == (255, 0, 0)  # the camera frame is drawn


def test_checkpoint_with_wrong_sha_is_refused(ros_context, tiny_checkpoint):
    from rclpy.parameter import Parameter

    from efm_ros.steps_to_go_node import StepsToGoNode

    with pytest.raises(ValueError, match="refusing"):
        StepsToGoNode(
            context=ros_context,
            parameter_overrides=[
                Parameter("model.checkpoint", value=str(tiny_checkpoint)),
                Parameter("model.sha256", value="ab" * 32),
            ],
        )
    (tiny_checkpoint / "model.safetensors").write_bytes(b"tampered")
    with pytest.raises(ValueError, match="sha256"):
        StepsToGoNode(
            context=ros_context,
            parameter_overrides=[
                Parameter("model.checkpoint", value=str(tiny_checkpoint)),
            ],
        )


def test_inference_threads_are_a_declared_parameter(ros_context, tiny_checkpoint):
    """One torch thread per model node unless compute.torch_threads says otherwise (more
    threads than free cores only spin: docs/ROS.md), and a bad value is refused."""
    import torch
    from rclpy.parameter import Parameter

    from efm_ros.model_host import set_torch_threads
    from efm_ros.steps_to_go_node import StepsToGoNode

    before = torch.get_num_threads()
    try:
        for threads in (2, 1):
            node = StepsToGoNode(
                context=ros_context,
                parameter_overrides=[
                    Parameter("model.checkpoint", value=str(tiny_checkpoint)),
                    *([Parameter("compute.torch_threads", value=threads)] if threads > 1 else []),
                ],
            )
            assert node.get_parameter("compute.torch_threads").value == threads
            assert torch.get_num_threads() == threads
            node.destroy_node()
        with pytest.raises(ValueError):
            set_torch_threads(0)
    finally:
        torch.set_num_threads(before)
