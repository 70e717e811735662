"""The actor's labels decide where an episode ends (Algorithm 1): the first observation,
after ``success.min_steps`` actions, where the detector fires, even when the best-effort
continuous predictions missed it. Real rclpy nodes: an ActorNode and a StepsToGo server."""

from __future__ import annotations

import threading

import numpy as np
import pytest

D = [9.0, 6.0, 1.5, 5.0, 4.0, 3.5]  # d(o_0..o_5); the detector (s = 2) fires at o_2 only


@pytest.fixture
def labelled(ros_context):
    from rclpy.executors import MultiThreadedExecutor
    from rclpy.node import Node
    from rclpy.parameter import Parameter
    from tests_efm_ros_helpers import observation

    from efm_interfaces.msg import ActionCommand, StepsToGoPrediction
    from efm_interfaces.srv import StepsToGo
    from efm_ros.actor_node import ActorNode, EpisodeRecord

    def on_request(request, response):  # d = proprioception[0], success = d <= 2
        d = [float(o.proprioception[0]) for o in request.observations]
        response.ok = True
        response.success_threshold = 2.0
        response.predictions = [StepsToGoPrediction(expected_steps=x, success=x <= 2.0) for x in d]
        return response

    made = []

    def label(min_steps: int, reason: int, consecutive: int = 1, d_values=D,
              send_previous: bool = True, bonus: float = 0.0):
        server = Node("labeller", context=ros_context, namespace="station_0")
        server.create_service(StepsToGo, "steps_to_go", on_request)
        actor = ActorNode(context=ros_context, namespace="station_0", parameter_overrides=[
            Parameter("success.min_steps", value=min_steps),
            Parameter("success.consecutive", value=consecutive),
            Parameter("episode.send_previous_images", value=send_previous),
            Parameter("labelling.success_bonus", value=bonus)])
        executor = MultiThreadedExecutor(context=ros_context)
        for node in (server, actor):
            executor.add_node(node)
        thread = threading.Thread(target=executor.spin, daemon=True)
        thread.start()
        made.append((executor, thread, server, actor))
        record = EpisodeRecord(episode_id="station_0-test-1", instruction="push the red moon "
                               "to the blue cube", started=0.0, start_ns=0)
        for i, d in enumerate(d_values):
            obs = observation([d, 0.0], step=i, image=np.full((4, 4, 3), i, np.uint8))
            obs.header.stamp.sec = i + 1
            obs.previous_images = list(obs.images)  # as camera_ingest sends them
            record.add_observation(obs)
            if i < len(d_values) - 1:
                command = ActionCommand(action_tokens=[1, 2], values=[0.0, 0.0])
                command.header.stamp = obs.header.stamp
                assert record.add_command(command) == ""
        return actor._label(record, reason), actor

    yield label
    for executor, thread, server, actor in made:
        executor.shutdown()
        thread.join(timeout=5)
        server.destroy_node()
        actor.destroy_node()


def test_episode_is_cut_at_the_first_labelled_success(labelled):
    from efm_ros.actor_node import Goal

    episode, actor = labelled(min_steps=1, reason=Goal.TERMINATION_MAX_STEPS)
    assert episode.length == 2 and len(episode.observations) == 2
    assert list(episode.steps_to_go) == D[:3]
    assert episode.success and episode.termination_reason == Goal.TERMINATION_SUCCESS
    assert len(episode.rewards) == len(episode.returns) == 2
    assert len(episode.action_tokens) == 2 * 2
    assert actor.diag.counters["episodes.cut_at_labelled_success"] == 1


def test_detector_is_ignored_before_min_steps(labelled):
    from efm_ros.actor_node import Goal

    episode, _ = labelled(min_steps=3, reason=Goal.TERMINATION_MAX_STEPS)
    assert episode.length == 5 and not episode.success
    assert episode.termination_reason == Goal.TERMINATION_MAX_STEPS


def test_detector_held_on_consecutive_observations(labelled):
    """success.consecutive = 2: a lone d <= s (o_1) does not end the episode; the second of
    two in a row (o_3, o_4) does, and the episode is cut there."""
    from efm_ros.actor_node import Goal

    d_values = [9.0, 1.5, 6.0, 1.0, 0.5, 3.0]
    episode, _ = labelled(min_steps=1, reason=Goal.TERMINATION_MAX_STEPS, consecutive=2,
                          d_values=d_values)
    assert episode.length == 4 and episode.success
    assert list(episode.steps_to_go) == d_values[:5]
    single, _ = labelled(min_steps=1, reason=Goal.TERMINATION_MAX_STEPS, d_values=d_values)
    assert single.length == 1 and single.success  # Eq. 3 alone fires at o_1


def test_previous_frames_are_left_out_of_the_episode_when_asked(labelled):
    """episode.send_previous_images false (docs/ALOHA.md, episode transport): the episode's
    observations keep their current images and lose only the previous ones."""
    from rclpy.serialization import serialize_message

    from efm_ros.actor_node import Goal

    full, _ = labelled(min_steps=1, reason=Goal.TERMINATION_MAX_STEPS)
    lean, _ = labelled(min_steps=1, reason=Goal.TERMINATION_MAX_STEPS, send_previous=False)
    assert all(o.previous_images for o in full.observations)
    assert all(not o.previous_images and o.images for o in lean.observations)
    assert [o.images for o in lean.observations] == [o.images for o in full.observations]
    assert list(lean.steps_to_go) == list(full.steps_to_go)  # labelled the same way
    assert len(serialize_message(lean)) < len(serialize_message(full))


def test_success_bonus_is_labelled_on_a_detected_success_only(labelled):
    """labelling.success_bonus (Section 4.1.3): the last reward of an episode the detector
    ended gains the bonus, and the returns include it; an episode that ran out does not."""
    from efm_learning.returns import discounted_returns
    from efm_ros.actor_node import Goal

    episode, _ = labelled(min_steps=1, reason=Goal.TERMINATION_MAX_STEPS, bonus=4.0)
    assert episode.success
    np.testing.assert_allclose(episode.rewards, [3.0, 4.5 + 4.0])
    np.testing.assert_allclose(episode.returns, discounted_returns([3.0, 8.5], 0.9), rtol=1e-6)
    missed, _ = labelled(min_steps=3, reason=Goal.TERMINATION_MAX_STEPS, bonus=4.0)
    assert not missed.success
    np.testing.assert_allclose(missed.rewards, -np.diff(D), rtol=1e-6)
