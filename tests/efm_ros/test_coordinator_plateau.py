"""The coordinator's GT-free stopping rule (paper Section 6; efm_learning.stopping): practice
stops at a plateau of the learned detector's success per policy version, and the version
to keep is published on /practice/status. A real CoordinatorNode drives a stand-in actor
(a RunEpisode action server) through real actions and topics."""

from __future__ import annotations

from collections import Counter

from ros_harness import spin_until

#: detector success of each policy version's episodes (what the stand-in actor reports)
SUCCESS_BY_VERSION = {0: 0.25, 1: 1.0, 2: 0.5, 3: 0.5, 4: 1.0}
EPISODES_PER_VERSION = 8


def test_practice_stops_at_a_detector_plateau_and_keeps_the_best_version(ros_context):
    from rclpy.action import ActionServer
    from rclpy.executors import MultiThreadedExecutor
    from rclpy.node import Node
    from rclpy.parameter import Parameter
    from std_msgs.msg import UInt64

    from efm_interfaces.action import RunEpisode
    from efm_interfaces.msg import PracticeStatus, WeightsUpdate
    from efm_ros.coordinator_node import CoordinatorNode
    from efm_ros.qos import LATCHED

    coordinator = CoordinatorNode(
        context=ros_context,
        parameter_overrides=[
            Parameter("stations", value=["station_0"]),
            Parameter("plateau.patience", value=2),
            Parameter("plateau.window", value=1),
            Parameter("plateau.min_episodes", value=4),
            Parameter("status.rate_hz", value=20.0),
        ],
    )
    fake = Node("fake_station", context=ros_context)
    state = {"version": 0, "done": Counter()}

    def execute(handle):
        version = state["version"]
        k = state["done"][version]
        state["done"][version] += 1
        handle.succeed()
        rate = SUCCESS_BY_VERSION[version]
        return RunEpisode.Result(success=k % 4 < round(rate * 4), length=10,
                                 policy_version=version,
                                 termination_reason=RunEpisode.Goal.TERMINATION_SUCCESS)

    ActionServer(fake, RunEpisode, "/station_0/run_episode", execute)
    weights = fake.create_publisher(WeightsUpdate, "/learner/weights", LATCHED)
    station_version = fake.create_publisher(UInt64, "/station_0/policy/version", LATCHED)
    statuses: list[PracticeStatus] = []
    fake.create_subscription(PracticeStatus, "/practice/status", statuses.append, LATCHED)
    executor = MultiThreadedExecutor(num_threads=4, context=ros_context)
    executor.add_node(coordinator)
    executor.add_node(fake)

    def publish(version: int) -> None:
        state["version"] = version
        weights.publish(WeightsUpdate(version=version, learning_round=version))
        station_version.publish(UInt64(data=version))

    try:
        publish(0)
        for version in range(1, 5):
            assert spin_until(
                executor, lambda v=version: state["done"][v - 1] >= EPISODES_PER_VERSION, 20.0
            ), f"version {version - 1} ran {state['done'][version - 1]} episodes"
            if coordinator.stopped:
                break
            publish(version)
        assert spin_until(executor, lambda: coordinator.stopped == "plateau", 10.0)
        # v0 0.25 -> v1 1.0 (best) -> v2 0.5, v3 0.5: two versions without a gain
        assert state["version"] == 4 and state["done"][4] == 0
        assert spin_until(
            executor, lambda: statuses and statuses[-1].state == "stopped", 5.0
        )
        last = statuses[-1]
        assert last.stop_reason == "plateau"
        assert last.best_policy_version == 1
        assert abs(last.best_success_rate - 1.0) < 1e-6
    finally:
        executor.shutdown()
        coordinator.destroy_node()
        fake.destroy_node()


def test_status_reports_the_learners_buffer_from_its_acks(ros_context):
    """PracticeStatus.buffer_samples / buffer_capacity come from the learner's latest
    EpisodeAck and drop to 0 when a new version is published (issue 17, defect 10: they
    were documented and always 0)."""
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node
    from rclpy.parameter import Parameter

    from efm_interfaces.msg import EpisodeAck, PracticeStatus, WeightsUpdate
    from efm_ros.coordinator_node import CoordinatorNode
    from efm_ros.qos import LATCHED, RELIABLE

    coordinator = CoordinatorNode(
        context=ros_context,
        parameter_overrides=[Parameter("stations", value=["station_0"]),
                             Parameter("status.rate_hz", value=20.0)],
    )
    fake = Node("fake_learner", context=ros_context)
    acks = fake.create_publisher(EpisodeAck, "/learner/acks", RELIABLE)
    weights = fake.create_publisher(WeightsUpdate, "/learner/weights", LATCHED)
    statuses: list[PracticeStatus] = []
    fake.create_subscription(PracticeStatus, "/practice/status", statuses.append, LATCHED)
    executor = SingleThreadedExecutor(context=ros_context)
    executor.add_node(coordinator)
    executor.add_node(fake)
    try:
        assert spin_until(executor, lambda: acks.get_subscription_count() > 0)
        acks.publish(EpisodeAck(episode_id="e-1", outcome=EpisodeAck.ACCEPTED,
                                learner_version=0, buffer_samples=120, buffer_capacity=1024))
        assert spin_until(executor, lambda: statuses and statuses[-1].buffer_samples == 120)
        assert statuses[-1].buffer_capacity == 1024
        weights.publish(WeightsUpdate(version=1, uri="file:///x", sha256="a" * 64))
        assert spin_until(executor, lambda: statuses[-1].policy_version == 1)
        assert spin_until(executor, lambda: statuses[-1].buffer_samples == 0)
    finally:
        executor.shutdown()
        coordinator.destroy_node()
        fake.destroy_node()
