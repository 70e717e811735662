"""Fault matrix, short form (issue 17): ``kill -9`` of one node at a seeded random point
of a practice round, then a restart. For every node: no hang (every wait has a deadline),
every acknowledged episode learned exactly once, every closed bag readable, the learner's
versions never going back (strictly increasing unless the learner itself restarted and
announced its newest version again), the round completes and the station acts with the
new version. docs/RELIABILITY.md has the table; the learner and actor cases, with their
spools, are in test_practice_loop.py."""

from __future__ import annotations

import json
import os
import random
from collections import Counter
from pathlib import Path

import pytest
from practice_graph import practice_yaml
from ros_harness import spin_until

NODES = ("sim_robot", "camera_ingest", "steps_to_go", "policy", "episode_recorder",
         "coordinator")
#: The long form (docs/RELIABILITY.md): ``EFM_FAULT_MATRIX_SEEDS=0-4`` kills each node,
#: the learner and the actor too, at several seeded points of a wider window, and waits
#: for two rounds. Unset: the short form CI runs (seed 0, one round).
_SEEDS = os.environ.get("EFM_FAULT_MATRIX_SEEDS", "")
LONG = bool(_SEEDS)
SEEDS = (list(range(int(_SEEDS.split("-")[0]), int(_SEEDS.split("-")[-1]) + 1)) if LONG
         else [0])
VICTIMS = (*NODES, "learner", "actor") if LONG else NODES
KILL_WINDOW_S = 4.0 if LONG else 1.5
ROUNDS = 2 if LONG else 1
STATION = ("sim_robot", "camera_ingest", "steps_to_go", "policy", "episode_recorder", "actor")


def _logs(*graphs) -> str:
    return "\n".join(
        f"--- {p.name}\n{p.read_text(errors='replace')[-2000:]}"
        for g in graphs for p in sorted(g.log_dir.glob("*.log"))
    )


def _closed_bags(tmp_path: Path) -> list[Path]:
    """Station 0's bags with metadata written (closed)."""
    return [b for b in (tmp_path / "run" / "bags").glob("station_0/*")
            if (b / "metadata.yaml").is_file()]


@pytest.mark.slow
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("victim", VICTIMS)
def test_kill9_and_restart_mid_round(ros_context, graph_factory, tiny_checkpoint, tmp_path,
                                     victim, seed):
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node
    from std_msgs.msg import UInt64

    from efm_interfaces.msg import EpisodeAck, WeightsUpdate
    from efm_ros.bag_io import read_custom_data
    from efm_ros.qos import LATCHED, RELIABLE

    params = practice_yaml(tmp_path / "practice.yaml", tiny_checkpoint, tmp_path / "run",
                           stations=("station_0",), updates=3, batch=8, max_steps=6)
    node = Node("test_observer", context=ros_context)
    executor = SingleThreadedExecutor(context=ros_context)
    executor.add_node(node)
    acks, weights, versions = [], [], []
    node.create_subscription(EpisodeAck, "/learner/acks", acks.append, RELIABLE)
    node.create_subscription(WeightsUpdate, "/learner/weights",
                             lambda m: weights.append(int(m.version)), LATCHED)
    node.create_subscription(UInt64, "/station_0/policy/version",
                             lambda m: versions.append(int(m.data)), LATCHED)
    rest = graph_factory(params, only=tuple(
        n for n in (*STATION, "learner", "coordinator") if n != victim))
    target = graph_factory(params, only=(victim,))
    rng = random.Random(f"fault-{victim}" if seed == 0 else f"fault-{victim}-{seed}")
    try:
        accepted = lambda: [a for a in acks if a.outcome == EpisodeAck.ACCEPTED]  # noqa: E731
        assert spin_until(executor, lambda: accepted(), timeout=90), _logs(rest, target)
        delay = rng.uniform(0.0, KILL_WINDOW_S)
        spin_until(executor, lambda: False, timeout=delay)  # a seeded random point
        target.kill()
        spin_until(executor, lambda: False, timeout=0.5)
        restarted = graph_factory(params, only=(victim,))
        assert spin_until(executor, lambda: weights and max(weights) >= ROUNDS,
                          timeout=150 * ROUNDS), _logs(rest, restarted)
        assert spin_until(executor, lambda: versions and versions[-1] >= ROUNDS, timeout=30), (
            versions, _logs(restarted))
        # a restarted recorder closes its first bag when its episode ends (under load that
        # can come after the last weights): wait for one, the check below reads them all
        assert spin_until(executor, lambda: bool(_closed_bags(tmp_path)), timeout=30), (
            _logs(restarted))
    finally:
        executor.shutdown()
        node.destroy_node()
    # versions never go back; a restarted learner announces its newest version again
    # (latched), which stations take as stale: equal neighbours only then
    assert weights == sorted(weights), weights
    assert victim == "learner" or weights == sorted(set(weights)), weights
    ids = (tmp_path / "run" / "learner" / "seen_episode_ids.txt").read_text().split()
    assert len(ids) == len(set(ids))  # nothing learned twice
    assert {a.episode_id for a in acks if a.outcome == EpisodeAck.ACCEPTED} <= set(ids)
    for graph in (rest, restarted):
        assert not {n: c for n, c in graph.poll().items()}, (graph.poll(), _logs(graph))
    from rosbags.highlevel import AnyReader

    closed = _closed_bags(tmp_path)
    assert closed
    for bag in closed:  # every bag closed before or after the kill is readable
        with AnyReader([bag]) as reader:
            assert reader.connections
        read_custom_data(bag)
    report = os.environ.get("EFM_FAULT_MATRIX_OUT")
    if report:  # the counts behind docs/RELIABILITY.md's table
        outcomes = Counter(a.outcome for a in acks)
        reasons = Counter(a.reason.split(":")[0] for a in acks if a.reason)
        with open(report, "a") as handle:
            handle.write(json.dumps({
                "victim": victim, "seed": seed, "rounds": ROUNDS,
                "kill_delay_s": round(delay, 2),
                "accepted": outcomes[EpisodeAck.ACCEPTED],
                "duplicate": outcomes[EpisodeAck.DUPLICATE],
                "refused": dict(reasons), "learned_ids": len(ids),
                "bags_closed": len(closed),
                "bags_open_at_kill": len(list((tmp_path / "run" / "bags").glob("station_0/*")))
                - len(closed),
                "versions_seen": sorted(set(versions)),
            }) + "\n")
