"""Bad input and faults in the practice loop (issue 6): refused episodes are counted and
never learned from, an operator abort or intervention ends an episode (never learned), a
vanished station is marked lost while practice goes on, and actors wait for the
steps-to-go service instead of sending unlabelled episodes."""

from __future__ import annotations

import numpy as np
import pytest
from practice_graph import practice_yaml
from ros_harness import spin_until
from tests_efm_ros_helpers import observation


def _episode(length=3, version=0, episode_id="station_0-test-000001"):
    from efm_interfaces.msg import LabelledEpisode
    from efm_learning.returns import discounted_returns
    from efm_learning.reward import rewards_from_steps_to_go

    d = np.linspace(10, 4, length + 1)
    rewards = rewards_from_steps_to_go(d)
    return LabelledEpisode(
        episode_id=episode_id,
        station="station_0",
        policy_version=version,
        instruction="push the red star to the blue cube",
        length=length,
        observations=[observation([0.01 * i, 0.0], step=i) for i in range(length)],
        tokens_per_action=2,
        action_tokens=[3, 4] * length,
        action_dim=2,
        actions=[0.0, 0.0] * length,
        steps_to_go=d.tolist(),
        rewards=rewards.tolist(),
        returns=discounted_returns(rewards).tolist(),
        gamma=0.9,
    )


def _learner(ros_context, checkpoint, out, updates=100):
    from rclpy.parameter import Parameter

    from efm_ros.learner_node import LearnerNode

    return LearnerNode(
        context=ros_context,
        parameter_overrides=[
            Parameter("model.policy_checkpoint", value=str(checkpoint)),
            Parameter("output_dir", value=str(out)),
            Parameter("improve.updates_per_round", value=updates),
        ],
    )


def test_learner_refuses_bad_episodes_and_counts_them(ros_context, tiny_checkpoint, tmp_path):
    """Every refusal is acknowledged with its reason and counted; ids that are no file name
    (300 characters, a NUL byte, a path) and a spool that cannot be written are refused
    without stopping the learner (issue 17, defect 6: one such id made it exit)."""
    import shutil

    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node

    from efm_interfaces.msg import EpisodeAck, LabelledEpisode
    from efm_ros.qos import RELIABLE

    learner = _learner(ros_context, tiny_checkpoint, tmp_path / "learner")
    client = Node("test_client", context=ros_context)
    executor = SingleThreadedExecutor(context=ros_context)
    executor.add_node(learner)
    executor.add_node(client)
    acks = []
    client.create_subscription(EpisodeAck, "/learner/acks", acks.append, RELIABLE)
    pub = client.create_publisher(LabelledEpisode, "/learner/episodes", RELIABLE)
    try:
        assert spin_until(
            executor,
            lambda: pub.get_subscription_count() > 0 and learner.ack_pub.get_subscription_count(),
        )
        short = _episode(episode_id="bad-lengths")
        short.returns = short.returns[:-1]
        nan = _episode(episode_id="bad-nan")
        nan.returns = [float("nan"), *list(nan.returns[1:])]
        forged = _episode(episode_id="bad-returns")
        forged.returns = [r + 5.0 for r in forged.returns]
        stale = _episode(version=3, episode_id="stale-version")
        tokens = _episode(episode_id="bad-tokens")
        tokens.action_tokens = [99] * 6
        good = _episode(episode_id="good-1")
        bad_ids = [_episode(episode_id=i) for i in ("x" * 300, "a/b", "../up", "..")]
        for i, msg in enumerate((short, nan, forged, stale, tokens, *bad_ids, good, good)):
            pub.publish(msg)  # one at a time: a burst past the QoS depth (10) drops some
            assert spin_until(executor, lambda i=i: len(acks) == i + 1), learner.diag.counters
        outcome = {a.episode_id: a for a in acks}
        assert [a.outcome for a in acks if a.episode_id == "good-1"] == [
            EpisodeAck.ACCEPTED, EpisodeAck.DUPLICATE
        ]
        assert outcome["good-1"].buffer_samples == 3
        assert outcome["good-1"].buffer_capacity == 100 * 64
        assert outcome["stale-version"].reason.startswith("stale:")
        for name in ("bad-lengths", "bad-nan", "bad-returns", "bad-tokens"):
            assert outcome[name].outcome == EpisodeAck.REJECTED, name
            assert outcome[name].reason.startswith("invalid:"), outcome[name].reason
        id_refusals = [a for a in acks if a.reason.startswith("invalid: bad episode id")]
        assert len(id_refusals) == 4
        counters = learner.diag.counters
        assert counters["rejected.episode"] == 8, counters
        assert counters["rejected.stale"] == 1
        assert counters["episodes.duplicate"] == 1
        assert counters["episodes.accepted"] == 1 and len(learner.buffer) == 3
        assert (tmp_path / "learner" / "seen_episode_ids.txt").read_text().split() == ["good-1"]
        assert [p.name for p in (tmp_path / "learner" / "spool").iterdir()] == ["good-1.cdr"]

        # a spool that cannot be written (here: a file where its folder was) refuses the
        # episode with the reason, leaves it unseen (a later re-send may succeed) and the
        # learner goes on
        spool = tmp_path / "learner" / "spool"
        shutil.rmtree(spool)
        spool.write_text("not a folder")
        pub.publish(_episode(episode_id="good-2"))
        assert spin_until(executor, lambda: len(acks) == 12)
        assert acks[-1].outcome == EpisodeAck.REJECTED and acks[-1].reason.startswith("spool:")
        assert len(learner.buffer) == 3 and "good-2" not in learner.seen
        spool.unlink()
        spool.mkdir()
        pub.publish(_episode(episode_id="good-2"))
        assert spin_until(executor, lambda: len(acks) == 13)
        assert acks[-1].outcome == EpisodeAck.ACCEPTED and len(learner.buffer) == 6
    finally:
        executor.shutdown()
        learner.destroy_node()
        client.destroy_node()


def _observer(ros_context):
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node

    from efm_interfaces.msg import LabelledEpisode, PracticeStatus
    from efm_ros.qos import LATCHED, RELIABLE

    node = Node("test_observer", context=ros_context)
    executor = SingleThreadedExecutor(context=ros_context)
    executor.add_node(node)
    seen = {"status": [], "episodes": []}
    node.create_subscription(PracticeStatus, "/practice/status", seen["status"].append, LATCHED)
    node.create_subscription(
        LabelledEpisode, "/learner/episodes", seen["episodes"].append, RELIABLE
    )
    return node, executor, seen


STATION = ("sim_robot", "camera_ingest", "steps_to_go", "policy", "episode_recorder", "actor")


def _wait_running_with_actions(executor, seen, actions, count):
    assert spin_until(
        executor,
        lambda: any(s.stations and s.stations[0].state == "running" for s in seen["status"]),
        timeout=60,
    )
    assert spin_until(executor, lambda: len(actions) >= count, timeout=30)


@pytest.mark.slow
def test_operator_abort_and_intervention_end_the_episode_and_it_is_never_learned(
    ros_context, graph_factory, tiny_checkpoint, tmp_path, ros_domain
):
    """Appendix F's operator ends an episode two ways: ``efm-operator abort`` (the goal is
    cancelled) and an intervention (``operator/intervention``, as a leader arm or pedal
    would send). Either episode is recorded, its bag marked with the outcome, and nothing
    of it reaches the learner (issue 15, item 4; before, aborted episodes were learned)."""
    import json
    import subprocess
    import sys

    from ros_harness import ros_environment
    from std_msgs.msg import Bool

    from efm_interfaces.msg import ActionCommand
    from efm_ros.bag_io import read_custom_data
    from efm_ros.qos import RELIABLE

    params = practice_yaml(
        tmp_path / "p.yaml",
        tiny_checkpoint,
        tmp_path / "run",
        stations=("station_0",),
        max_steps=100_000,
        updates=1000,
    )
    graph_factory(params)
    node, executor, seen = _observer(ros_context)
    intervene = node.create_publisher(Bool, "/station_0/operator/intervention", RELIABLE)
    actions = []
    node.create_subscription(
        ActionCommand,
        "/station_0/action_command",
        lambda m: actions.append(m) if not m.hold else None,
        RELIABLE,
    )
    aborted = lambda: seen["status"][-1].stations[0].aborted if seen["status"] else 0  # noqa: E731
    try:
        _wait_running_with_actions(executor, seen, actions, 3)
        cli = subprocess.Popen(
            [sys.executable, "-m", "efm_ros.operator_cli", "abort", "station_0"],
            env=ros_environment(ros_domain), stdout=subprocess.PIPE, text=True,
        )
        assert spin_until(executor, lambda: cli.poll() is not None, 30)
        assert cli.returncode == 0 and "aborting" in cli.stdout.read()
        assert spin_until(executor, lambda: aborted() == 1, timeout=30)
        actions.clear()
        _wait_running_with_actions(executor, seen, actions, 3)  # the next episode runs
        assert spin_until(executor, lambda: intervene.get_subscription_count() > 0)
        intervene.publish(Bool(data=True))
        assert spin_until(executor, lambda: aborted() == 2, timeout=30)

        def outcomes() -> dict:
            found = {}
            for bag in (tmp_path / "run" / "bags" / "station_0").iterdir():
                if not (bag / "metadata.yaml").exists():
                    continue  # still recording (or waiting out the recorder's grace period)
                meta = json.loads(read_custom_data(bag).get("efm.episode") or "{}")
                if meta.get("outcome"):
                    found[meta["outcome"]] = meta
            return found

        # the coordinator counts the abort when the actor reports it; the recorder closes
        # that bag after its grace period, so the bag may come a little later
        spin_until(executor, lambda: set(outcomes()) == {"aborted", "intervened"}, timeout=30)
    finally:
        executor.shutdown()
        node.destroy_node()
    assert not seen["episodes"], [e.termination_reason for e in seen["episodes"]]
    found = outcomes()
    assert set(found) == {"aborted", "intervened"}, found
    assert all(m["length"] >= 1 and m["success"] is False for m in found.values())


@pytest.mark.slow
def test_vanished_station_is_marked_lost_and_practice_goes_on(
    ros_context, graph_factory, tiny_checkpoint, tmp_path
):
    params = practice_yaml(
        tmp_path / "p.yaml", tiny_checkpoint, tmp_path / "run", max_steps=4, updates=1000
    )
    station_1 = graph_factory(params, only=STATION, station="station_1")
    rest = graph_factory(params, station="station_0")
    node, executor, seen = _observer(ros_context)

    def station(name):
        return (
            next((s for s in seen["status"][-1].stations if s.station == name), None)
            if seen["status"]
            else None
        )

    try:
        assert spin_until(
            executor,
            lambda: station("station_1") is not None and station("station_1").episodes >= 1,
            timeout=60,
        ), [str(s) for s in seen["status"][-1:]]
        station_1.stop()  # the whole station goes away, mid-episode or between episodes
        assert spin_until(executor, lambda: station("station_1").state == "lost", timeout=30)
        before = station("station_0").episodes
        assert spin_until(executor, lambda: station("station_0").episodes >= before + 2, timeout=60)
    finally:
        executor.shutdown()
        node.destroy_node()
        rest.stop()


@pytest.mark.slow
def test_actor_waits_for_steps_to_go_and_never_sends_unlabelled(
    ros_context, graph_factory, tiny_checkpoint, tmp_path
):
    from rclpy.action import ActionClient

    from efm_interfaces.action import RunEpisode

    params = practice_yaml(
        tmp_path / "p.yaml", tiny_checkpoint, tmp_path / "run", stations=("station_0",), max_steps=3
    )
    graph_factory(
        params, only=("sim_robot", "camera_ingest", "policy", "episode_recorder", "actor")
    )
    node, executor, seen = _observer(ros_context)
    client = ActionClient(node, RunEpisode, "/station_0/run_episode")
    try:
        assert spin_until(executor, client.server_is_ready, timeout=30)
        goal = client.send_goal_async(RunEpisode.Goal(max_steps=3, seed=1))
        assert spin_until(executor, goal.done) and goal.result().accepted
        result = goal.result().get_result_async()
        spin_until(executor, lambda: False, timeout=8.0)  # service down: actor retries
        assert not result.done() and seen["episodes"] == []
        graph_factory(params, only=("steps_to_go",))
        assert spin_until(executor, result.done, timeout=60)
        assert result.result().result.length == 3
        assert spin_until(executor, lambda: len(seen["episodes"]) == 1)
        assert len(seen["episodes"][0].steps_to_go) == 4
    finally:
        executor.shutdown()
        node.destroy_node()
