"""Weights over the network (issue 16, item 5): a station with no shared filesystem gets
each version from the learner's get_weights service in chunks, resumes a partial download,
refuses bytes that do not match the WeightsUpdate, and the learner serves only the two
files of versions it published."""

from __future__ import annotations

import contextlib
import hashlib
import shutil
import threading

import numpy as np
import pytest
from ros_harness import spin_until
from tests_efm_ros_helpers import observation, write_tiny_checkpoint


def _sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


@contextlib.contextmanager
def _spinning(executor):
    """Spin ``executor`` on a thread, as a node's does while its loader thread fetches."""
    stop = threading.Event()
    spinner = threading.Thread(
        target=lambda: [executor.spin_once(0.05) for _ in iter(stop.is_set, True)], daemon=True)
    spinner.start()
    try:
        yield
    finally:
        stop.set()
        spinner.join(timeout=2.0)


@pytest.fixture
def graph(ros_context):
    from rclpy.executors import MultiThreadedExecutor

    made, executor = [], MultiThreadedExecutor(num_threads=3, context=ros_context)

    def add(node):
        made.append(node)
        executor.add_node(node)
        return node

    yield add, executor
    executor.shutdown()
    for node in made:
        node.destroy_node()


def _policy(ros_context, checkpoint, cache):
    from rclpy.parameter import Parameter

    from efm_ros.policy_node import PolicyNode

    return PolicyNode(context=ros_context, namespace="station_0",
                      cli_args=["--ros-args", "-r", "weights:=/learner/weights"],
                      parameter_overrides=[
        Parameter("model.checkpoint", value=str(checkpoint)),
        Parameter("weights.cache_dir", value=str(cache)),
        Parameter("control.trigger", value="observation"),
        Parameter("policy.greedy", value=True),
        Parameter("policy.instruction", value="push the red star to the blue cube"),
    ])


def test_a_station_gets_a_version_from_a_real_learner_over_ros(ros_context, graph, tmp_path):
    """The learner publishes v3 as ros:///learner/get_weights; a station whose disk has
    only its Stage 1 checkpoint downloads v3, checks it and acts with it."""
    from rclpy.node import Node
    from rclpy.parameter import Parameter

    from efm_interfaces.msg import ActionCommand, Observation, WeightsUpdate
    from efm_learning.checkpoint import load_checkpoint
    from efm_ros.learner_node import LearnerNode
    from efm_ros.qos import LATCHED, RELIABLE, SENSOR

    add, executor = graph
    stage1 = write_tiny_checkpoint(tmp_path / "stage1", seed=0)
    learner_out = tmp_path / "learner"
    v3 = write_tiny_checkpoint(learner_out / "policy" / "v3", seed=7)
    learner = add(LearnerNode(context=ros_context, parameter_overrides=[
        Parameter("model.policy_checkpoint", value=str(stage1)),
        Parameter("output_dir", value=str(learner_out)),
        Parameter("weights.transport", value="ros"),
        Parameter("weights.chunk_bytes", value=4096),  # many chunks
    ]))
    station_disk = tmp_path / "station_disk"
    station_disk.mkdir()
    shutil.copytree(stage1, station_disk / "stage1")
    policy = add(_policy(ros_context, station_disk / "stage1", station_disk / "cache"))
    client = add(Node("test_client", context=ros_context, namespace="station_0"))
    seen: list = []
    client.create_subscription(WeightsUpdate, "/learner/weights", seen.append, LATCHED)
    assert spin_until(executor, lambda: policy.version == 3, timeout=30.0), policy.diag.counters
    assert spin_until(executor, lambda: seen)
    assert seen[-1].uri == "ros:///learner/get_weights" and seen[-1].version == 3
    fetched = station_disk / "cache" / "station_0" / "v3"
    assert _sha(fetched / "model.safetensors") == _sha(v3 / "model.safetensors")
    size = (v3 / "model.safetensors").stat().st_size + (v3 / "config.json").stat().st_size
    assert learner.weights_server.served_bytes == size and size > 2 * 4096  # 3+ chunks
    # it acts with v3's weights
    commands: list = []
    client.create_subscription(ActionCommand, "action_command", commands.append, RELIABLE)
    pub = client.create_publisher(Observation, "observation", SENSOR)
    assert spin_until(executor, lambda: pub.get_subscription_count() > 0)
    pub.publish(observation([0.1, -0.2], step=0, stamp=client))
    assert spin_until(executor, lambda: commands)
    model, _ = load_checkpoint(v3)
    tokens, _ = model.eval().act({"observation.state": np.array([[0.1, -0.2]], np.float32)},
                                 greedy=True)
    assert list(commands[0].action_tokens) == tokens[0].tolist()
    assert commands[0].policy_version == 3


@pytest.fixture
def served(ros_context, graph, tmp_path):
    """A WeightsServer of published v1 (4 KiB chunks) and a station's fetcher."""
    from rclpy.node import Node

    from efm_ros.weights_transfer import WeightsFetcher, WeightsServer

    add, executor = graph
    v1 = write_tiny_checkpoint(tmp_path / "published" / "v1", seed=4)
    host = add(Node("learner", context=ros_context))
    server = WeightsServer(host, "~/get_weights", lambda v: v1 if v == 1 else None, 4096)
    station = add(Node("station", context=ros_context))
    fetcher = WeightsFetcher(station, tmp_path / "cache", chunk=4096, timeout_s=5.0)
    with _spinning(executor):  # fetch() blocks; the executor must spin meanwhile
        yield v1, server, fetcher, tmp_path / "cache" / "v1"


def test_a_partial_download_is_resumed_and_a_corrupt_one_restarted(served):
    from efm_learning.checkpoint import load_checkpoint

    v1, server, fetcher, cache = served
    model = (v1 / "model.safetensors").read_bytes()
    cache.mkdir(parents=True)
    (cache / "model.safetensors.part").write_bytes(model[:10000])  # an interrupted download
    uri = "ros:///learner/get_weights"
    path = fetcher.fetch(uri, 1, _sha(v1 / "model.safetensors"), _sha(v1 / "config.json"))
    config_size = (v1 / "config.json").stat().st_size
    assert server.served_bytes == len(model) - 10000 + config_size  # resumed, not restarted
    load_checkpoint(path)  # the local SHA256SUMS verifies
    assert not list(cache.glob("*.part"))

    (path / "model.safetensors").unlink()
    (cache / "model.safetensors.part").write_bytes(b"\0" * 10000)  # garbage from elsewhere
    served_before = server.served_bytes
    fetcher.fetch(uri, 1, _sha(v1 / "model.safetensors"), _sha(v1 / "config.json"))
    assert server.served_bytes - served_before == len(model) - 10000 + len(model)
    assert _sha(path / "model.safetensors") == _sha(v1 / "model.safetensors")


def test_bytes_that_do_not_match_the_weights_update_are_refused(served):
    from efm_ros.weights_transfer import FetchError

    v1, _server, fetcher, cache = served
    uri = "ros:///learner/get_weights"
    with pytest.raises(FetchError, match="does not match"):
        fetcher.fetch(uri, 1, "a" * 64, _sha(v1 / "config.json"))
    assert not (cache / "model.safetensors").exists()
    with pytest.raises(FetchError, match="needs the WeightsUpdate's sha256"):
        fetcher.fetch(uri, 1, _sha(v1 / "model.safetensors"), "")
    with pytest.raises(FetchError, match="not published"):
        fetcher.fetch(uri, 2, _sha(v1 / "model.safetensors"), _sha(v1 / "config.json"))
    with pytest.raises(ValueError, match="fully/qualified"):
        fetcher.fetch("ros://otherhost/learner/get_weights", 1, "a" * 64, "b" * 64)


@pytest.mark.parametrize("file,offset,reason", [
    ("../../etc/passwd", 0, "one of"),
    ("trainer_state.safetensors", 0, "one of"),
    ("SHA256SUMS", 0, "one of"),
    ("model.safetensors", 10**9, "beyond"),
])
def test_the_server_sends_only_the_two_files_of_published_versions(served, file, offset,
                                                                    reason):
    from efm_interfaces.srv import GetWeights

    _v1, server, _fetcher, _cache = served
    reply = server.on_request(GetWeights.Request(version=1, file=file, offset=offset,
                                                 max_bytes=100), GetWeights.Response())
    assert not reply.ok and reason in reply.message and len(reply.data) == 0
    reply = server.on_request(GetWeights.Request(version=1, file="config.json", max_bytes=10**8),
                              GetWeights.Response())
    assert reply.ok and len(reply.data) <= 4096  # capped at the server's chunk


def test_a_lost_chunk_answer_is_asked_for_again(ros_context, graph, tmp_path):
    """A response that never arrives (seen under load: 8 stations pulling 64 MB) costs one
    call timeout, then the same offset is asked again, not the whole download."""
    import time

    from rclpy.node import Node

    from efm_ros.weights_transfer import WeightsFetcher, WeightsServer

    add, executor = graph
    v1 = write_tiny_checkpoint(tmp_path / "published" / "v1", seed=5)
    host = add(Node("learner", context=ros_context))
    server = WeightsServer(host, "~/get_weights", lambda v: v1 if v == 1 else None, 4096)
    answer = server.on_request
    calls = []

    def slow_first(request, response):  # the first answer comes too late to count
        calls.append(request.offset)
        if len(calls) == 1:
            time.sleep(0.8)
        return answer(request, response)

    server.service.callback = slow_first
    station = add(Node("station", context=ros_context))
    fetcher = WeightsFetcher(station, tmp_path / "cache", chunk=4096, call_timeout_s=0.5)
    with _spinning(executor):
        path = fetcher.fetch("ros:///learner/get_weights", 1, _sha(v1 / "model.safetensors"),
                             _sha(v1 / "config.json"))
    # config.json at 0 (lost), at 0 again, then model.safetensors' three chunks: nothing
    # else is asked twice
    assert fetcher.retried_calls == 1 and calls == [0, 0, 0, 4096, 8192]
    assert _sha(path / "model.safetensors") == _sha(v1 / "model.safetensors")
