"""Recorded practice bags -> a Stage 1 dataset (issue 15, item 5): a real practice graph
records episode bags; efm-bags-to-dataset turns them into efm_sim.dataset files whose
actions and states are exactly what the actor sent the learner for the same episodes;
bags that were not closed, or that miss steps the episode had, are skipped with the reason;
a second run converts nothing new."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml
from practice_graph import practice_yaml
from ros_harness import spin_until


@pytest.mark.slow
def test_practice_bags_become_a_dataset_with_the_episodes_the_learner_got(
    ros_context, graph_factory, tiny_checkpoint, tmp_path, capsys
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
    # a robot's pace (20 Hz), not lockstep as fast as the CPU allows: at hundreds of steps
    # per second best-effort observations are dropped and those bags are (rightly) refused
    deployment = yaml.safe_load(params.read_text())
    deployment["/**/sim_robot"]["ros__parameters"].update(
        {"control.realtime": True, "control.rate_hz": 20.0})
    params.write_text(yaml.safe_dump(deployment))
    graph = graph_factory(params)
    node = Node("observer", context=ros_context)
    executor = SingleThreadedExecutor(context=ros_context)
    executor.add_node(node)
    sent: dict[str, LabelledEpisode] = {}
    node.create_subscription(LabelledEpisode, "/learner/episodes",
                             lambda m: sent.setdefault(m.episode_id, m), RELIABLE)
    try:
        assert spin_until(executor, lambda: len(sent) >= 6, timeout=120), graph.log_dir
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
    summary = json.loads(capsys.readouterr().out)
    assert summary["skipped"]["station_0/broken"].startswith("the episode was not closed")
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


def _synthetic_bag(path, length: int, commanded_steps: list[int], observed_steps: int,
                   start_step: int = 0):
    """A closed episode bag as episode_recorder writes it: observations stamped by step
    (1 s apart), the commands answering ``commanded_steps``, the stop's ``length``."""
    from rclpy.serialization import serialize_message

    from efm_interfaces.msg import ActionCommand
    from efm_ros.bag_io import EPISODE_METADATA_KEY, BagWriter, make_typestore
    from efm_ros.conversions import make_observation
    from efm_ros.qos import RELIABLE, SENSOR

    writer = BagWriter(path, make_typestore())
    writer.add_topic("/s/observation", "efm_interfaces/msg/Observation", SENSOR)
    writer.add_topic("/s/action_command", "efm_interfaces/msg/ActionCommand", RELIABLE)
    for step in range(observed_steps):
        obs = make_observation(station="s", step=step, instruction="go",
                               images={}, proprioception=[float(step), -float(step)],
                               proprio_names=["x", "y"])
        obs.header.stamp.sec = 100 + step
        writer.write("/s/observation", step * 10 + 1, serialize_message(obs))
        if step in commanded_steps:
            cmd = ActionCommand(step=step, names=["dx", "dy"], values=[0.1 * step, 0.0])
            cmd.header.stamp = obs.header.stamp
            writer.write("/s/action_command", step * 10 + 2, serialize_message(cmd))
    writer.set_custom_data(EPISODE_METADATA_KEY, json.dumps({
        "complete": True, "length": length, "success": False, "outcome": "max_steps",
        "instruction": "go", "episode_start_ns": (100 + start_step) * 1_000_000_000}))
    writer.close()


def test_bags_missing_steps_or_from_the_previous_episode(tmp_path):
    """A bag whose recorder missed an action of the episode is refused with the reason (it
    is not the episode the learner got); observations stamped before the actor's episode
    start (the previous episode's, recorded while the start event was in flight) and the
    commands answering them are not part of the episode."""
    from efm_ros.bags_to_dataset import convert_bags
    from efm_sim.dataset import episode_path, read_episode

    bags = tmp_path / "bags"
    _synthetic_bag(bags / "missed", length=3, commanded_steps=[0, 2], observed_steps=4)
    _synthetic_bag(bags / "late_start", length=2, commanded_steps=[0, 1, 2], observed_steps=4,
                   start_step=1)
    _synthetic_bag(bags / "whole", length=3, commanded_steps=[0, 1, 2], observed_steps=4)
    result = convert_bags(bags, tmp_path / "out", progress=False)
    assert set(result.skipped) == {"missed"}
    assert "holds 2 of the episode's 3 steps" in result.skipped["missed"]
    index = json.loads((tmp_path / "out" / "bags.json").read_text())
    late = read_episode(episode_path(tmp_path / "out", index["late_start"]))
    np.testing.assert_allclose(late.actions[:, 0], [0.1, 0.2], atol=1e-6)
    np.testing.assert_allclose(late.states[:, 0], [1, 2, 3])
    whole = read_episode(episode_path(tmp_path / "out", index["whole"]))
    np.testing.assert_allclose(whole.actions[:, 0], [0.0, 0.1, 0.2], atol=1e-6)
