"""Recorded practice bags -> a Stage 1 dataset (issue 15, item 5): a real practice graph
records episode bags; efm-bags-to-dataset turns them into efm_sim.dataset files whose
actions and states are exactly what the actor sent the learner for the same episodes;
bags that were not closed are skipped with the reason; a second run converts nothing new."""

from __future__ import annotations

import json

import numpy as np
import pytest
from practice_graph import practice_yaml
from ros_harness import spin_until


@pytest.mark.slow
def test_practice_bags_become_a_dataset_with_the_episodes_the_learner_got(
    ros_context, graph_factory, tiny_checkpoint, tmp_path
):
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node

    from efm_interfaces.msg import LabelledEpisode
    from efm_ros.bags_to_dataset import main
    from efm_ros.conversions import observation_arrays
    from efm_ros.qos import RELIABLE
    from efm_sim.dataset import EpisodeDataset, episode_path, read_episode

    params = practice_yaml(tmp_path / "p.yaml", tiny_checkpoint, tmp_path / "run",
                           stations=("station_0",), max_steps=5, updates=1000)
    graph = graph_factory(params)
    node = Node("observer", context=ros_context)
    executor = SingleThreadedExecutor(context=ros_context)
    executor.add_node(node)
    sent: dict[str, LabelledEpisode] = {}
    node.create_subscription(LabelledEpisode, "/learner/episodes",
                             lambda m: sent.setdefault(m.episode_id, m), RELIABLE)
    try:
        assert spin_until(executor, lambda: len(sent) >= 3, timeout=120), graph.log_dir
    finally:
        executor.shutdown()
        node.destroy_node()
        graph.stop()
    bags = tmp_path / "run" / "bags"
    (bags / "station_0" / "broken").mkdir()
    (bags / "station_0" / "broken" / "metadata.yaml").write_text(
        "rosbag2_bagfile_information: {custom_data: {}}\n")
    out = tmp_path / "dataset"
    assert main([str(bags), str(out), "--quiet", "--env-name", "pointmass"]) == 0
    index = json.loads((out / "bags.json").read_text())
    converted = {name.split("/")[-1]: number for name, number in index.items()}
    assert "broken" not in converted
    checked = 0
    for episode_id, labelled in sent.items():
        if episode_id not in converted:
            continue  # still open when the graph stopped
        episode = read_episode(episode_path(out, converted[episode_id]))
        t = int(labelled.length)
        assert episode.length == t and episode.states.shape[0] == t + 1
        np.testing.assert_allclose(
            episode.actions, np.asarray(labelled.actions).reshape(t, -1), atol=1e-6)
        states = np.stack([observation_arrays(o)["proprioception"]
                           for o in labelled.observations])
        np.testing.assert_allclose(episode.states[:t], states, atol=1e-6)
        assert episode.instruction == labelled.instruction
        assert episode.success == labelled.success  # the detector's call, not ground truth
        assert episode.attrs["success_source"] == "learned_detector"
        checked += 1
    assert checked >= 2, (list(sent), converted)
    assert len(list(EpisodeDataset(out).iter_episodes())) == len(converted)  # Stage 1's reader
    mtimes = sorted(p.stat().st_mtime_ns for p in out.glob("episode_*.hdf5"))
    assert main([str(bags), str(out), "--quiet"]) == 0
    assert sorted(p.stat().st_mtime_ns for p in out.glob("episode_*.hdf5")) == mtimes
