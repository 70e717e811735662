"""The practice loop over ROS 2 (issue 6): two simulated stations, actors, the frozen
steps-to-go model, a learner and the coordinator, all as separate processes started from
one YAML by efm_ros.bringup's Graph. A tiny untrained model keeps it fast; what is checked
is the plumbing of Algorithm 1 and Appendix J."""

from __future__ import annotations

import json
import time

import pytest
from practice_graph import practice_yaml
from ros_harness import spin_until


def _watch(ros_context):
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node
    from std_msgs.msg import UInt64

    from efm_interfaces.msg import EpisodeAck, PracticeStatus, WeightsUpdate
    from efm_ros.qos import LATCHED, RELIABLE

    node = Node("test_observer", context=ros_context)
    executor = SingleThreadedExecutor(context=ros_context)
    executor.add_node(node)
    seen = {"status": [], "weights": [], "acks": [], "versions": {}}
    node.create_subscription(PracticeStatus, "/practice/status", seen["status"].append, LATCHED)
    node.create_subscription(WeightsUpdate, "/learner/weights", seen["weights"].append, LATCHED)
    node.create_subscription(
        EpisodeAck, "/learner/acks", lambda m: seen["acks"].append(m.episode_id), RELIABLE
    )
    for station in ("station_0", "station_1"):
        node.create_subscription(
            UInt64,
            f"/{station}/policy/version",
            lambda m, s=station: seen["versions"].__setitem__(s, m.data),
            LATCHED,
        )
    return node, executor, seen


def _logs(graph) -> str:
    return "\n".join(
        f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}"
        for p in sorted(graph.log_dir.glob("*.log"))
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    ("executor", "compose"),
    [("single", False), ("events", False), ("events", True)],
    ids=["single", "events", "composed-events"],
)
def test_full_round_two_stations(
    ros_context, graph_factory, tiny_checkpoint, tmp_path, monkeypatch, executor, compose
):
    """The whole round, with the default executors, with EFM_EXECUTOR=events (the
    single-threaded nodes on rclpy's EventsExecutor) and with each station's nodes composed
    in one process (efm_ros.compose, as make demo runs it; docs/ROS.md)."""
    monkeypatch.setenv("EFM_EXECUTOR", executor)

    params = practice_yaml(
        tmp_path / "practice.yaml",
        tiny_checkpoint,
        tmp_path / "run",
        updates=2,
        batch=8,
        max_steps=6,
    )
    node, executor, seen = _watch(ros_context)  # before the graph: acks are not latched
    graph = graph_factory(params, compose=compose)
    try:
        ok = spin_until(
            executor,
            lambda: len(seen["weights"]) >= 2 and seen["weights"][-1].version >= 1,
            timeout=120,
        )
        assert ok, _logs(graph)
        # both stations hot-swap to version 1 (or later: tiny rounds can follow fast)
        assert spin_until(
            executor,
            lambda: all(seen["versions"].get(s, 0) >= 1 for s in ("station_0", "station_1")),
            timeout=30,
        ), (seen["versions"], _logs(graph))
        # both stations have had an episode received and acknowledged by the learner
        assert spin_until(
            executor,
            lambda: {a.split("-")[0] for a in seen["acks"]} == {"station_0", "station_1"},
            timeout=60,
        ), (seen["acks"], _logs(graph))
        assert spin_until(
            executor,
            lambda: any(s.policy_version >= 1 and s.episodes_total >= 2 for s in seen["status"]),
            timeout=30,
        ), _logs(graph)
    finally:
        codes = graph.stop()
        executor.shutdown()
        node.destroy_node()
    bad = {name: code for name, code in codes.items() if code != 0}
    assert not bad, (bad, _logs(graph))

    from efm_ros.bag_io import read_custom_data

    run = tmp_path / "run"
    # every episode the learner used was received once: ids unique, all acknowledged
    ids = (run / "learner" / "seen_episode_ids.txt").read_text().split()
    assert len(ids) == len(set(ids)) >= 2
    # both stations' episodes were received and acknowledged (a 16-sample round may be
    # filled by one station alone; the other's in-flight episodes are then stale)
    assert {a.split("-")[0] for a in seen["acks"]} == {"station_0", "station_1"}
    meta = json.loads((run / "learner" / "policy" / "v1" / "config.json").read_text())
    assert meta["metadata"]["samples"] >= 16
    # bags written by both stations' recorders, readable with rosbags and mcap
    from mcap_ros2.reader import read_ros2_messages
    from rosbags.highlevel import AnyReader

    bags = sorted(p for p in (run / "bags").glob("station_*/*") if p.is_dir())
    assert {b.parent.name for b in bags} == {"station_0", "station_1"}
    complete = limited = 0
    for bag in bags:
        with AnyReader([bag]) as reader:
            topics = {c.topic for c in reader.connections}
            assert "/station_0/observation" in topics or "/station_1/observation" in topics
        mcaps = list(bag.glob("*.mcap"))
        assert mcaps and sum(1 for _ in read_ros2_messages(str(mcaps[0]))) > 0
        episode = json.loads(read_custom_data(bag).get("efm.episode") or "{}")
        if episode.get("length") is not None:  # a finished episode: the step limit bounds
            assert episode["length"] <= 6, episode  # it (actions past it are not part of it)
            limited += 1
        complete += 1
    assert complete >= 2 and limited >= 1


def _spooled(folder) -> dict[str, int]:
    """Episode id -> length of every episode spooled in ``folder``."""
    from rclpy.serialization import deserialize_message

    from efm_interfaces.msg import LabelledEpisode

    out = {}
    for path in folder.glob("*.cdr"):
        try:
            data = path.read_bytes()
        except FileNotFoundError:  # the actor deleted it after the listing: not spooled
            continue
        msg = deserialize_message(data, LabelledEpisode)
        out[msg.episode_id] = int(msg.length)
    return out


def _learned(policy_dir) -> set[str]:
    """Ids of the episodes every written checkpoint says its round learned from."""
    out: set[str] = set()
    for config in policy_dir.glob("v*/config.json"):
        out |= set(json.loads(config.read_text())["metadata"]["episode_ids"])
    return out


@pytest.mark.slow
def test_learner_kill9_mid_round_loses_no_acknowledged_episode(
    ros_context, graph_factory, tiny_checkpoint, tmp_path
):
    """``kill -9`` the learner after it has accepted episodes of a round (issue 17, defect
    5). Every episode it acknowledged is on its disk; restarted, it refills its buffer from
    the spool (the restored count is checked, so a no-op restore fails) and the round
    completes with every episode id used once."""
    import re

    from efm_interfaces.msg import EpisodeAck

    params = practice_yaml(
        tmp_path / "practice.yaml",
        tiny_checkpoint,
        tmp_path / "run",
        stations=("station_0",),
        updates=3,
        batch=8,
        max_steps=6,
    )
    stations = graph_factory(params, only=(*STATION_NODES, "coordinator"))
    node, executor, seen = _watch(ros_context)
    outcomes = []
    node.create_subscription(EpisodeAck, "/learner/acks", outcomes.append, _reliable())
    learner = graph_factory(params, only=("learner",))
    spool = tmp_path / "run" / "learner" / "spool"
    try:
        accepted = lambda: {a.episode_id for a in outcomes if a.outcome == EpisodeAck.ACCEPTED}  # noqa: E731
        # kill while the spool holds episodes, so the restored count below is not 0
        assert spin_until(
            executor, lambda: len(accepted()) >= 2 and _spooled(spool), timeout=90
        ), _logs(stations) + _logs(learner)
        learner.kill()  # SIGKILL: no cleanup, no flush
        acknowledged = accepted()
        on_disk = _spooled(spool)
        # acknowledged => durable, even without a clean exit: spooled, or learned from in
        # a round whose checkpoint is written (a fast machine may finish v1 before the kill)
        learned = _learned(tmp_path / "run" / "learner" / "policy")
        assert acknowledged <= set(on_disk) | learned, (acknowledged, on_disk, learned)
        assert not set(on_disk) & learned, (on_disk, learned)
        seen_ids = (tmp_path / "run" / "learner" / "seen_episode_ids.txt").read_text().split()
        assert acknowledged <= set(seen_ids)
        time.sleep(1.0)  # episodes sent now are re-sent until acknowledged
        learner2 = graph_factory(params, only=("learner",))
        log = learner2.log_dir / "learner.log"
        assert spin_until(
            executor, lambda: log.exists() and "learner ready" in log.read_text(), timeout=60
        ), _logs(learner2)
        restored = re.search(r"buffer (\d+) / (\d+) samples", log.read_text())
        assert restored, log.read_text()
        assert int(restored.group(1)) == sum(on_disk.values()) > 0, (restored.group(0), on_disk)
        # >= 1: the weights topic is latched with depth 1, so when rounds are fast (an idle
        # machine) v1 can be replaced by v2 before this observer has discovered learner2
        assert spin_until(
            executor, lambda: any(w.version >= 1 for w in seen["weights"]), timeout=120
        ), _logs(stations) + _logs(learner2)
    finally:
        executor.shutdown()
        node.destroy_node()
    ids = (tmp_path / "run" / "learner" / "seen_episode_ids.txt").read_text().split()
    assert set(on_disk) <= set(ids)
    assert len(ids) == len(set(ids))


@pytest.mark.slow
def test_actor_kill9_keeps_unacknowledged_episodes(
    ros_context, graph_factory, tiny_checkpoint, tmp_path
):
    """An episode sent while no learner listens stays in the actor's spool; after ``kill
    -9`` of the actor and a restart it is re-sent and the learner, started only then,
    accepts it (issue 17, defect 8: before, unacknowledged episodes lived only in memory)."""
    from rclpy.action import ActionClient

    from efm_interfaces.action import RunEpisode
    from efm_interfaces.msg import EpisodeAck

    params = practice_yaml(
        tmp_path / "practice.yaml", tiny_checkpoint, tmp_path / "run", stations=("station_0",),
        max_steps=4,
    )
    rest = graph_factory(params, only=tuple(n for n in STATION_NODES if n != "actor"))
    actor = graph_factory(params, only=("actor",))
    node, executor, _ = _watch(ros_context)
    outcomes = []
    node.create_subscription(EpisodeAck, "/learner/acks", outcomes.append, _reliable())
    client = ActionClient(node, RunEpisode, "/station_0/run_episode")
    spool = tmp_path / "run" / "actor_spool" / "station_0"
    try:
        assert spin_until(executor, client.server_is_ready, timeout=60), _logs(actor)
        goal = client.send_goal_async(RunEpisode.Goal(station="station_0", max_steps=4, seed=1))
        assert spin_until(executor, goal.done, timeout=30) and goal.result().accepted
        result = goal.result().get_result_async()
        assert spin_until(executor, result.done, timeout=60), _logs(actor) + _logs(rest)
        episode_id = result.result().result.episode_id
        assert episode_id and set(_spooled(spool)) == {episode_id}
        actor.kill()
        actor2 = graph_factory(params, only=("actor",))
        learner = graph_factory(params, only=("learner",))
        seen_file = tmp_path / "run" / "learner" / "seen_episode_ids.txt"

        def accepted() -> bool:
            # the learner's own record, or its ACCEPTED ack: the ack is not latched, and a
            # learner that starts fast may accept before this observer has matched it
            return any(a.episode_id == episode_id and a.outcome == EpisodeAck.ACCEPTED
                       for a in outcomes) or (
                seen_file.exists() and episode_id in seen_file.read_text().split())

        assert spin_until(executor, accepted, timeout=60), _logs(actor2) + _logs(learner)
        assert spin_until(executor, lambda: not _spooled(spool), timeout=10)  # decided: gone
    finally:
        executor.shutdown()
        node.destroy_node()
    seen_ids = (tmp_path / "run" / "learner" / "seen_episode_ids.txt").read_text().split()
    assert seen_ids.count(episode_id) == 1


STATION_NODES = ("sim_robot", "camera_ingest", "steps_to_go", "policy", "episode_recorder", "actor")


def _reliable():
    from efm_ros.qos import RELIABLE

    return RELIABLE


@pytest.mark.slow
def test_remote_client_station_feeds_the_learner(
    ros_context, graph_factory, tiny_checkpoint, tmp_path
):
    """Appendix J.1 mode end to end (issue 17, defect 1): the station's policy is a
    remote_client of a policy server; its episodes reach the learner with the server's
    tokens and are accepted (before: tokens_per_action 0, every one refused)."""
    import yaml
    from rclpy.parameter import Parameter

    from efm_interfaces.msg import EpisodeAck
    from efm_ros.policy_node import PolicyNode

    params = practice_yaml(tmp_path / "practice.yaml", tiny_checkpoint, tmp_path / "run",
                           stations=("station_0",), updates=1000, max_steps=4)
    data = yaml.safe_load(params.read_text())
    policy = data["/**/policy"]["ros__parameters"]
    policy.update({"mode": "remote_client", "remote.service": "/policy_server/get_action"})
    params.write_text(yaml.safe_dump(data))
    server = PolicyNode(context=ros_context, namespace="policy_server", parameter_overrides=[
        Parameter("mode", value="remote_server"),
        Parameter("model.checkpoint", value=str(tiny_checkpoint))])
    node, executor, _ = _watch(ros_context)
    executor.add_node(server)
    outcomes = []
    node.create_subscription(EpisodeAck, "/learner/acks", outcomes.append, _reliable())
    graph = graph_factory(params)
    try:
        assert spin_until(
            executor,
            lambda: any(a.outcome == EpisodeAck.ACCEPTED for a in outcomes),
            timeout=90,
        ), ([(a.outcome, a.reason) for a in outcomes], _logs(graph))
        assert server.diag.counters["served"] > 0
        assert not [a for a in outcomes if a.reason.startswith("invalid")]
    finally:
        executor.shutdown()
        server.destroy_node()
        node.destroy_node()
