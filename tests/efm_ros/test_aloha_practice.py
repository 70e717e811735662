"""An ALOHA practice round over ROS 2, in simulation (issue 14 item 4, issue 15 item 3):
the deployment of make demo-aloha (config/aloha_sim_practice.yaml: the station file with
interbotix_sim standing in for the four Interbotix arms), so every command goes through
aloha_bridge to the xs_sdk topics, and a real learner and coordinator. Episodes of
70-token chunks (5 x 14 joints) reach the learner, which learns a version that the
station's policy then acts with."""

from __future__ import annotations

import pytest
from practice_graph import TINY_ALOHA, aloha_sim_yaml, write_tiny_aloha_checkpoint
from ros_harness import spin_until


def _logs(graph) -> str:
    return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-2500:]}"
                     for p in sorted(graph.log_dir.glob("*.log")))


@pytest.mark.slow
def test_an_aloha_practice_round_runs_through_the_bridge(ros_context, graph_factory, tmp_path):
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node
    from std_msgs.msg import UInt64

    from efm_interfaces.msg import EpisodeAck, LabelledEpisode, WeightsUpdate
    from efm_ros.conversions import observation_arrays
    from efm_ros.node_set import load_params, practice_nodes
    from efm_ros.qos import LATCHED, RELIABLE

    checkpoint = write_tiny_aloha_checkpoint(tmp_path / "aloha_v0")
    params = aloha_sim_yaml(tmp_path / "aloha.yaml", checkpoint, tmp_path / "run",
                            max_steps=4, updates=1, batch=8)
    names = [s.name for s in practice_nodes(load_params(params), sim=True)]
    assert names[:2] == ["interbotix_sim", "aloha_bridge"] and "sim_robot" not in names

    node = Node("aloha_observer", context=ros_context)
    executor = SingleThreadedExecutor(context=ros_context)
    executor.add_node(node)
    seen = {"episodes": [], "acks": [], "weights": [], "version": 0, "scene_resets": 0}
    node.create_subscription(LabelledEpisode, "/learner/episodes", seen["episodes"].append,
                             RELIABLE)
    node.create_subscription(EpisodeAck, "/learner/acks", seen["acks"].append, RELIABLE)
    node.create_subscription(WeightsUpdate, "/learner/weights", seen["weights"].append, LATCHED)
    node.create_subscription(UInt64, "/station_0/policy/version",
                             lambda m: seen.__setitem__("version", m.data), LATCHED)

    def on_diagnostics(msg: DiagnosticArray) -> None:
        for status in msg.status:
            if status.name.endswith("interbotix_sim"):
                values = {kv.key: kv.value for kv in status.values}
                seen["scene_resets"] = int(values.get("scene_resets", 0))

    node.create_subscription(DiagnosticArray, "/diagnostics", on_diagnostics, RELIABLE)
    graph = graph_factory(params)
    try:
        assert spin_until(executor, lambda: any(w.version >= 1 for w in seen["weights"]),
                          timeout=240), _logs(graph)
        assert spin_until(executor, lambda: seen["version"] >= 1, timeout=60), _logs(graph)
        assert spin_until(executor, lambda: seen["scene_resets"] >= 2, timeout=30), _logs(graph)
    finally:
        codes = graph.stop()
        executor.shutdown()
        node.destroy_node()
    assert not {n: c for n, c in codes.items() if c != 0}, (codes, _logs(graph))
    accepted = [a for a in seen["acks"] if a.outcome == EpisodeAck.ACCEPTED]
    assert len(accepted) >= 2, [(a.episode_id, a.outcome, a.reason) for a in seen["acks"]]
    episode = seen["episodes"][0]
    assert episode.tokens_per_action == 70 and episode.length == 4
    assert len(episode.action_tokens) == 4 * 70
    arrays = observation_arrays(episode.observations[0])
    size = TINY_ALOHA["image_size"]
    assert [im.shape for im in arrays["images"].values()] == [(size, size, 3)] * 2
    assert arrays["proprioception"].shape == (14,)
