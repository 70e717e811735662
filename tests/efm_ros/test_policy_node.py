"""policy node contract: actions through the embodiment adapter and safety layer, the
watchdog, dry-run, weight hot-swap without missed ticks, and remote (Appendix J.1) mode."""

from __future__ import annotations

import numpy as np
import pytest
from ros_harness import spin_until
from tests_efm_ros_helpers import observation, write_tiny_checkpoint


@pytest.fixture
def make_graph(ros_context, tiny_checkpoint):
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node
    from rclpy.parameter import Parameter

    from efm_ros.policy_node import PolicyNode
    from efm_ros.qos import RELIABLE

    made = []

    def make(**params):
        from efm_interfaces.msg import ActionCommand

        params.setdefault("model.checkpoint", str(tiny_checkpoint))
        params.setdefault("policy.instruction", "push the red star to the blue cube")
        nodes = [
            PolicyNode(
                context=ros_context,
                namespace="station_0",
                parameter_overrides=[Parameter(k, value=v) for k, v in params.items()],
            )
        ]
        client = Node("test_client", context=ros_context, namespace="station_0")
        executor = SingleThreadedExecutor(context=ros_context)
        for n in (*nodes, client):
            executor.add_node(n)
        commands: list = []
        client.create_subscription(ActionCommand, "action_command", commands.append, RELIABLE)
        made.append((nodes, client, executor))
        return nodes[0], client, executor, commands

    yield make
    for nodes, client, executor in made:
        executor.shutdown()
        for n in (*nodes, client):
            n.destroy_node()


def _publisher(client, executor):
    from efm_interfaces.msg import Observation
    from efm_ros.qos import SENSOR

    pub = client.create_publisher(Observation, "observation", SENSOR)
    assert spin_until(executor, lambda: pub.get_subscription_count() > 0)
    return pub


def test_lockstep_actions_are_tokenized_and_within_limits(make_graph):
    node, client, executor, commands = make_graph(**{"control.trigger": "observation"})
    pub = _publisher(client, executor)
    for step in range(5):
        pub.publish(observation([0.1 * step, 0.0], step=step, stamp=client))
        assert spin_until(executor, lambda s=step: len(commands) > s), node.diag.counters
    assert [c.step for c in commands] == [0, 1, 2, 3, 4]
    for c in commands:
        assert not c.hold and c.chunk_length == 1 and list(c.names) == ["dx", "dy"]
        assert np.all(np.abs(c.values) <= 0.03 + 1e-6)
        assert len(c.action_tokens) == 2 and c.policy_version == 0
        decoded = node.host.current().model.action_tokenizer.decode(np.array(c.action_tokens))
        np.testing.assert_allclose(decoded, c.values, atol=0.03 / 32 + 1e-6)


def test_actions_beyond_the_embodiment_limits_are_clipped(make_graph, tmp_path):
    """A policy whose action range (+-0.3) is ten times PushTable's limit (+-0.03): every
    command stays within the limit, and some were clipped (so the test sees the clip)."""
    wide = write_tiny_checkpoint(tmp_path / "wide", seed=3, action_limit=0.3)
    node, client, executor, commands = make_graph(
        **{"control.trigger": "observation", "model.checkpoint": str(wide)}
    )
    pub = _publisher(client, executor)
    for step in range(20):
        pub.publish(observation([np.sin(step), np.cos(step)], step=step, stamp=client))
        assert spin_until(executor, lambda s=step: len(commands) > s), node.diag.counters
    values = np.array([c.values for c in commands])
    assert np.all(np.abs(values) <= 0.03 + 1e-6)
    assert np.sum(np.isclose(np.abs(values), 0.03, atol=1e-6)) >= 5  # clipped, not small


def test_commands_carry_the_sampled_tokens_not_a_re_encoding(make_graph, tmp_path):
    """LanguageTable tokens (sign, magnitude) with magnitude 0 decode to 0 whatever the
    sign; re-encoding the executed value gave the other sign, so the learner credited
    tokens the policy never sampled (practice over ROS got worse while in-process
    improved). The command must carry the sampled tokens."""
    lt = {"type": "language_table", "action_dim": 2, "max_delta": 0.03}
    ckpt = write_tiny_checkpoint(tmp_path / "lt", seed=4, tokenizer=lt)
    node, client, executor, commands = make_graph(
        **{"control.trigger": "observation", "model.checkpoint": str(ckpt)}
    )
    model = node.host.current().model
    sampled = np.array([[1, 0, 1, 0]])  # both axes: sign 1, magnitude 0
    values = model.action_tokenizer.decode(sampled).astype(np.float32)
    assert not np.array_equal(model.encode_actions(values), sampled)  # not the identity
    model.act = lambda batch, greedy=False: (sampled, values)
    pub = _publisher(client, executor)
    pub.publish(observation([0.0, 0.0], step=0, stamp=client))
    assert spin_until(executor, lambda: any(not c.hold for c in commands))
    moved = next(c for c in commands if not c.hold)
    assert list(moved.action_tokens) == [1, 0, 1, 0]
    np.testing.assert_allclose(moved.values, [0.0, 0.0])


def test_safety_limits_clip_refuse_nan_and_rate_limit():
    from efm_ros.embodiments import get_embodiment
    from efm_ros.safety import SafetyLimits

    limits = SafetyLimits(get_embodiment("pushtable"))
    np.testing.assert_allclose(limits.limit(np.array([[0.5, -0.5]])), [[0.03, -0.03]])
    np.testing.assert_allclose(limits.limit(np.array([[0.01, -0.02]])), [[0.01, -0.02]])
    for bad in ([[np.nan, 0.0]], [[0.0, np.inf]], [[0.01, 0.0, 0.0]]):
        with pytest.raises(ValueError):
            limits.limit(np.array(bad))
    rate = SafetyLimits(get_embodiment("pushtable"), max_change_per_tick=0.005)
    out = rate.limit(np.array([[0.0, 0.0], [0.03, -0.03], [0.03, -0.03]]))
    np.testing.assert_allclose(out, [[0.0, 0.0], [0.005, -0.005], [0.01, -0.01]])
    np.testing.assert_allclose(rate.limit(np.array([[0.03, 0.0]])), [[0.015, -0.005]])
    rate.reset()  # after a hold the next action starts afresh
    np.testing.assert_allclose(rate.limit(np.array([[0.03, 0.0]])), [[0.03, 0.0]])


def test_max_change_per_tick_bounds_consecutive_actions(make_graph):
    _node, client, executor, commands = make_graph(
        **{"control.trigger": "observation", "safety.max_change_per_tick": 0.002}
    )
    pub = _publisher(client, executor)
    for step in range(12):
        pub.publish(observation([np.sin(step), np.cos(step)], step=step, stamp=client))
        assert spin_until(executor, lambda s=step: len(commands) > s)
    values = np.array([c.values for c in commands])
    assert np.max(np.abs(np.diff(values, axis=0))) <= 0.002 + 1e-6


def test_watchdog_holds_when_observations_stop(make_graph):
    node, client, executor, commands = make_graph(
        **{"control.rate_hz": 20.0, "safety.observation_timeout_s": 0.2}
    )
    pub = _publisher(client, executor)
    for step in range(3):
        pub.publish(observation([0.0, 0.0], step=step, stamp=client))
        spin_until(executor, lambda: False, timeout=0.06)
    assert spin_until(executor, lambda: any(not c.hold for c in commands))
    assert spin_until(executor, lambda: commands[-1].hold, timeout=2.0)
    holds_before = sum(c.hold for c in commands)
    spin_until(executor, lambda: False, timeout=0.3)
    assert sum(c.hold for c in commands) == holds_before  # one hold, no motion, no spam
    assert node.diag.counters["watchdog.holds"] >= 1


def test_watchdog_judges_the_stamp_not_the_arrival(make_graph):
    """Frames that keep arriving but were captured 1 s ago (a frozen or lagging camera)
    never move the robot; a frame stamped 1 s in the future neither (issue 17, defect 3)."""
    from builtin_interfaces.msg import Time

    node, client, executor, commands = make_graph(
        **{"control.trigger": "observation", "safety.observation_timeout_s": 0.2}
    )
    pub = _publisher(client, executor)
    for step in range(10):
        now = client.get_clock().now().nanoseconds
        for offset in (-1.0, 1.0):
            ns = now + int(offset * 1e9)
            stamp = Time(sec=ns // 10**9, nanosec=ns % 10**9)
            pub.publish(observation([0.0, 0.0], step=step, stamp=stamp))
        spin_until(executor, lambda: False, timeout=0.03)
    assert spin_until(executor, lambda: node.diag.counters["watchdog.holds"] >= 1)
    assert commands and all(c.hold for c in commands)
    pub.publish(observation([0.0, 0.0], step=99, stamp=client))  # a fresh frame: it acts
    assert spin_until(executor, lambda: any(not c.hold for c in commands))


def test_timer_acts_once_per_observation(make_graph):
    """At 20 Hz with one frame and a 1 s timeout the policy acts once, not ~20 times on
    the same frame (issue 17, defect 3: the actor refused those actions, so what the robot
    executed and what was recorded diverged)."""
    node, client, executor, commands = make_graph(
        **{"control.rate_hz": 20.0, "safety.observation_timeout_s": 1.0}
    )
    pub = _publisher(client, executor)
    pub.publish(observation([0.0, 0.0], step=0, stamp=client))
    spin_until(executor, lambda: False, timeout=0.8)
    moved = [c for c in commands if not c.hold]
    assert len(moved) == 1, [c.step for c in moved]
    assert node.diag.counters["ticks.no_new_observation"] >= 5
    pub.publish(observation([0.0, 0.0], step=1, stamp=client))
    assert spin_until(executor, lambda: len([c for c in commands if not c.hold]) == 2)


def test_bad_observations_never_move_the_robot(make_graph):
    node, client, executor, commands = make_graph(**{"control.trigger": "observation"})
    pub = _publisher(client, executor)
    bad = observation([0.0, 0.0], step=1, stamp=client)
    bad.proprioception = [float("nan"), 0.0]
    pub.publish(bad)
    assert spin_until(executor, lambda: node.diag.counters["rejected.observation"] == 1)
    assert all(c.hold for c in commands)


def test_dry_run_computes_but_never_publishes(make_graph):
    node, client, executor, commands = make_graph(
        **{"control.trigger": "observation", "safety.dry_run": True}
    )
    pub = _publisher(client, executor)
    for step in range(3):
        pub.publish(observation([0.0, 0.1], step=step, stamp=client))
    assert spin_until(executor, lambda: node.diag.counters["dry_run.suppressed"] == 3)
    assert commands == []


def test_hot_swap_on_weights_update_without_missing_ticks(make_graph, tmp_path):
    from std_msgs.msg import UInt64

    from efm_interfaces.msg import WeightsUpdate
    from efm_learning.checkpoint import sha256_file
    from efm_ros.qos import LATCHED

    node, client, executor, commands = make_graph(
        **{"control.rate_hz": 20.0, "safety.observation_timeout_s": 1.0}
    )
    versions = []
    client.create_subscription(UInt64, "policy/version", lambda m: versions.append(m.data), LATCHED)
    weights = client.create_publisher(WeightsUpdate, "weights", LATCHED)
    pub = _publisher(client, executor)
    new = write_tiny_checkpoint(tmp_path / "ckpt_v1", seed=1)
    sha = sha256_file(new / "model.safetensors")

    # A wrong sha256 is refused; the node keeps acting with version 0.
    weights.publish(WeightsUpdate(version=1, uri=str(new), sha256="0" * 64))
    step = 0
    while node.diag.counters["rejected.weights"] == 0 and step < 60:
        pub.publish(observation([0.0, 0.0], step=step, stamp=client))
        spin_until(executor, lambda: False, timeout=0.05)
        step += 1
    assert node.diag.counters["rejected.weights"] == 1 and node.version == 0

    weights.publish(WeightsUpdate(version=1, uri=f"file://{new}", sha256=sha))
    start = len(commands)
    while node.version != 1 and step < 200:
        pub.publish(observation([0.0, 0.0], step=step, stamp=client))
        spin_until(executor, lambda: False, timeout=0.05)
        step += 1
    for _ in range(6):  # a few more ticks on the new weights
        pub.publish(observation([0.0, 0.0], step=step, stamp=client))
        spin_until(executor, lambda: False, timeout=0.05)
        step += 1
    assert node.version == 1
    assert spin_until(executor, lambda: versions and versions[-1] == 1)
    during = commands[start:]
    assert any(c.policy_version == 1 for c in during)
    assert not any(c.hold for c in during)  # control never stalled into the watchdog
    stamps = [c.header.stamp.sec + c.header.stamp.nanosec * 1e-9 for c in during]
    assert max(np.diff(stamps)) < 0.25  # no tick lost to loading (period 0.05 s)


def test_remote_policy_server_and_client(ros_context, tiny_checkpoint):
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node
    from rclpy.parameter import Parameter

    from efm_interfaces.msg import ActionCommand, Observation
    from efm_ros.policy_node import PolicyNode
    from efm_ros.qos import RELIABLE, SENSOR

    server = PolicyNode(
        context=ros_context,
        parameter_overrides=[
            Parameter("mode", value="remote_server"),
            Parameter("model.checkpoint", value=str(tiny_checkpoint)),
            Parameter("model.version", value=3),
        ],
    )
    station = PolicyNode(
        context=ros_context,
        namespace="station_1",
        parameter_overrides=[
            Parameter("mode", value="remote_client"),
            Parameter("remote.service", value="/get_action"),
            Parameter("control.trigger", value="observation"),
            Parameter("policy.instruction", value="push the red star to the blue cube"),
        ],
    )
    client = Node("test_client", context=ros_context, namespace="station_1")
    executor = SingleThreadedExecutor(context=ros_context)
    for n in (server, station, client):
        executor.add_node(n)
    commands = []
    client.create_subscription(ActionCommand, "action_command", commands.append, RELIABLE)
    pub = client.create_publisher(Observation, "observation", SENSOR)
    try:
        assert spin_until(executor, lambda: pub.get_subscription_count() > 0)
        assert spin_until(executor, station.remote.service_is_ready)
        pub.publish(observation([0.2, 0.1], step=5, stamp=client))
        assert spin_until(executor, lambda: any(not c.hold for c in commands))
        moved = next(c for c in commands if not c.hold)
        assert moved.step == 5 and moved.policy_version == 3
        assert server.diag.counters["served"] == 1
        # the server's tokens travel with the command, so the actor can send a learnable
        # episode (issue 17, defect 1: tokens_per_action was 0 and the learner refused all)
        assert len(moved.action_tokens) == 2
        decoded = server.host.current().model.action_tokenizer.decode(
            np.array(moved.action_tokens)
        )
        np.testing.assert_allclose(decoded, moved.values, atol=0.03 / 32 + 1e-6)
    finally:
        executor.shutdown()
        for n in (server, station, client):
            n.destroy_node()


def test_shutdown_waits_for_a_weight_update_still_loading():
    """The policy node's on_shutdown joins a load in flight (a teardown under the loader
    thread aborted the process, exit -6 in CI); a load that outlasts the wait is reported."""
    import threading
    import types

    from efm_ros.model_host import LoadedModel, ModelHost
    from efm_ros.policy_node import ENTRY

    release = threading.Event()
    finished = []

    def slow_fetch(uri, version, sha, config_sha):
        release.wait(5.0)
        finished.append(version)
        raise ValueError("no such checkpoint")

    host = ModelHost(LoadedModel(None, 0, "", None, {}), fetch=slow_fetch)
    assert host.swap_async("ros://learner/v1", 1, "0" * 64, lambda loaded, error: None)
    assert not host.finish(timeout=0.2) and host.busy  # still loading: reported
    warnings = []
    node = types.SimpleNamespace(
        host=host, get_logger=lambda: types.SimpleNamespace(warning=warnings.append))
    threading.Timer(0.3, release.set).start()
    ENTRY.on_shutdown(node)
    assert finished == [1] and not host.busy and not warnings
