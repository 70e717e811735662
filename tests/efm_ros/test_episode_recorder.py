"""episode_recorder contract with real rclpy nodes and topics on the test's own domain:
one MCAP bag per episode read back with ``rosbags`` and ``mcap``, episode metadata, event
validation, QoS, parameter validation, and a readable bag after SIGINT mid-episode."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from ros_harness import spin_until

NS = "/station_0"


def _event(**payload):
    from std_msgs.msg import String

    return String(data=json.dumps(payload))


def _observation(step: int):
    from efm_ros.conversions import make_observation

    image = np.full((24, 32, 3), step, dtype=np.uint8)
    return make_observation(
        station="station_0", step=step, instruction="stack the blocks", images={"top": image}
    )


class Rig:
    """A tester node publishing a station's topics, optionally with an in-process recorder."""

    def __init__(self, context, output_dir: Path | None, **params) -> None:
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.node import Node
        from rclpy.parameter import Parameter
        from sensor_msgs.msg import Image
        from std_msgs.msg import String

        from efm_interfaces.msg import ActionCommand, Observation, StepsToGoPrediction
        from efm_ros.qos import RELIABLE, SENSOR

        self.tester = Node("tester", namespace=NS, context=context)
        self.executor = SingleThreadedExecutor(context=context)
        self.executor.add_node(self.tester)
        self.node = None
        if output_dir is not None:
            from efm_ros.episode_recorder import EpisodeRecorderNode

            params = {"recorder.output_dir": str(output_dir), **params}
            self.node = EpisodeRecorderNode(
                namespace=NS,
                context=context,
                parameter_overrides=[Parameter(k, value=v) for k, v in params.items()],
            )
            self.executor.add_node(self.node)
        self.pubs = {
            "camera/top/image_raw": self.tester.create_publisher(
                Image, "camera/top/image_raw", SENSOR
            ),
            "observation": self.tester.create_publisher(Observation, "observation", SENSOR),
            "action_command": self.tester.create_publisher(
                ActionCommand, "action_command", RELIABLE
            ),
            "steps_to_go/prediction": self.tester.create_publisher(
                StepsToGoPrediction, "steps_to_go/prediction", RELIABLE
            ),
        }
        self.events = self.tester.create_publisher(String, "episode/events", RELIABLE)
        self.recorded: list[dict] = []
        self.tester.create_subscription(
            String, "episode/recorded", lambda m: self.recorded.append(json.loads(m.data)), RELIABLE
        )

    def spin(self, predicate, timeout: float = 5.0) -> bool:
        return spin_until(self.executor, predicate, timeout)

    def wait_connected(self, timeout: float = 10.0) -> None:
        pubs = [*self.pubs.values(), self.events]
        assert self.spin(lambda: all(p.get_subscription_count() > 0 for p in pubs), timeout)

    def count(self, key: str) -> int:
        return self.node.diag.counters[key]

    def publish(self, topic: str, msg) -> None:
        """Publish and wait until the in-process recorder has taken it."""
        before = self.count("messages_recorded") + self.count("messages_outside_episode")
        self.pubs[topic].publish(msg)
        assert self.spin(
            lambda: (
                self.count("messages_recorded") + self.count("messages_outside_episode") > before
            )
        ), topic

    def event(self, **payload) -> None:
        before = self.count("episodes_started") + self.node.diag.rejected
        before += self.count("episodes_closed")
        self.events.publish(_event(**payload))
        assert self.spin(
            lambda: (
                self.count("episodes_started")
                + self.node.diag.rejected
                + self.count("episodes_closed")
                > before
            )
        ), payload

    def close(self) -> None:
        self.executor.shutdown()
        if self.node is not None:
            self.node.destroy_node()
        self.tester.destroy_node()


@pytest.fixture
def rig(ros_context, tmp_path):
    made: list[Rig] = []

    def make(output_dir: Path | None = tmp_path / "bags", **params) -> Rig:
        made.append(Rig(ros_context, output_dir, **params))
        return made[-1]

    yield make
    for r in made:
        r.close()


def _read_both(path: Path) -> tuple[dict, dict]:
    """Messages per topic as read by rosbags (deserialised) and by mcap (decoded)."""
    from mcap.reader import make_reader
    from mcap_ros2.decoder import DecoderFactory
    from rosbags.highlevel import AnyReader

    by_rosbags: dict[str, list] = {}
    with AnyReader([path]) as reader:
        for connection, _, raw in reader.messages():
            msg = reader.deserialize(raw, connection.msgtype)
            by_rosbags.setdefault(connection.topic, []).append(msg)
    by_mcap: dict[str, list] = {}
    for path_mcap in path.glob("*.mcap"):
        with path_mcap.open("rb") as stream:
            reader = make_reader(stream, decoder_factories=[DecoderFactory()])
            for _, channel, _, msg in reader.iter_decoded_messages():
                by_mcap.setdefault(channel.topic, []).append(msg)
    return by_rosbags, by_mcap


def test_episode_round_trip_with_metadata(rig, tmp_path):
    from efm_interfaces.msg import ActionCommand, StepsToGoPrediction
    from efm_ros.bag_io import read_custom_data
    from efm_ros.conversions import image_to_msg

    r = rig()
    r.wait_connected()
    r.publish("observation", _observation(99))  # before any episode: not recorded
    assert r.count("messages_outside_episode") == 1
    r.event(event="start", episode_id="ep-7", instruction="stack the blocks", policy_version=3)
    for step in range(3):
        r.publish("camera/top/image_raw", image_to_msg(np.full((24, 32, 3), step, np.uint8)))
        r.publish("observation", _observation(step))
        r.publish("action_command", ActionCommand(step=step, names=["dx"], values=[0.1 * step]))
        r.publish("steps_to_go/prediction", StepsToGoPrediction(expected_steps=10.0 - step))
    r.event(event="stop", episode_id="ep-7", success=True, length=3)
    assert r.spin(lambda: len(r.recorded) == 1)
    summary = r.recorded[0]
    path = tmp_path / "bags" / "station_0" / "ep-7"
    assert summary["path"] == str(path) and summary["complete"] is True
    assert summary["messages"] == 12 + 2 and summary["mb_per_s"] > 0

    by_rosbags, by_mcap = _read_both(path)
    for by in (by_rosbags, by_mcap):
        assert [o.step for o in by[f"{NS}/observation"]] == [0, 1, 2]
        assert [round(a.values[0], 3) for a in by[f"{NS}/action_command"]] == [0.0, 0.1, 0.2]
        assert [p.expected_steps for p in by[f"{NS}/steps_to_go/prediction"]] == [10, 9, 8]
        assert len(by[f"{NS}/camera/top/image_raw"]) == 3
        pixels = np.frombuffer(bytes(by[f"{NS}/observation"][2].images[0].data), np.uint8)
        assert (pixels == 2).all() and pixels.size == 24 * 32 * 3
        first, last = (json.loads(m.data) for m in by[f"{NS}/episode/metadata"])
        assert first["complete"] is False and first["success"] is None
        assert last["complete"] is True and last["success"] is True and last["length"] == 3
        assert last["instruction"] == "stack the blocks" and last["policy_version"] == 3
        assert last["station"] == "station_0" and last["episode_id"] == "ep-7"
    assert json.loads(read_custom_data(path)["efm.episode"]) == last


def test_last_observation_after_the_stop_event_is_still_recorded(rig, tmp_path):
    """The actor publishes the stop right after the episode's last observation, on another
    topic: delivered in either order, that observation belongs to the bag (the grace period);
    a start during the grace period closes the stopped bag at once, as complete."""
    from efm_ros.bag_io import read_custom_data

    r = rig(**{"recorder.stop_grace_s": 2.0})
    r.wait_connected()
    r.event(event="start", episode_id="ep-1")
    r.publish("observation", _observation(0))
    r.events.publish(_event(event="stop", episode_id="ep-1", success=False, length=1))
    assert r.spin(lambda: r.node.episode is not None and r.node.episode.metadata["complete"])
    r.publish("observation", _observation(1))  # arrived after the stop: still this episode's
    assert r.count("messages_outside_episode") == 0 and not r.recorded
    r.event(event="start", episode_id="ep-2")  # closes ep-1 now, not after 2 s
    assert r.spin(lambda: len(r.recorded) == 1, timeout=1.0)
    assert r.recorded[0]["episode_id"] == "ep-1" and r.recorded[0]["complete"] is True
    meta = json.loads(read_custom_data(tmp_path / "bags" / "station_0" / "ep-1")["efm.episode"])
    assert meta["complete"] is True and "reason" not in meta
    by_rosbags, _ = _read_both(tmp_path / "bags" / "station_0" / "ep-1")
    assert [o.step for o in by_rosbags[f"{NS}/observation"]] == [0, 1]
    r.event(event="stop", episode_id="ep-2", success=True, length=0)
    assert r.spin(lambda: len(r.recorded) == 2, timeout=5.0)  # closed by the grace timer
    r.publish("observation", _observation(2))
    assert r.count("messages_outside_episode") == 1


def test_shutdown_during_the_grace_period_keeps_a_stopped_bag_complete(rig, tmp_path):
    from efm_ros.bag_io import read_custom_data

    r = rig(**{"recorder.stop_grace_s": 5.0})
    r.wait_connected()
    r.event(event="start", episode_id="ep-g")
    r.events.publish(_event(event="stop", episode_id="ep-g", success=True, length=0))
    assert r.spin(lambda: r.node.episode is not None and r.node.episode.metadata["complete"])
    r.node.close_on_shutdown()
    meta = json.loads(read_custom_data(tmp_path / "bags" / "station_0" / "ep-g")["efm.episode"])
    assert meta["complete"] is True and "reason" not in meta
    r.event(event="start", episode_id="ep-h")  # open, not stopped: shut down -> incomplete
    r.node.close_on_shutdown()
    meta = json.loads(read_custom_data(tmp_path / "bags" / "station_0" / "ep-h")["efm.episode"])
    assert meta["complete"] is False and meta["reason"] == "recorder shut down"


def test_messages_that_arrive_before_the_start_event_are_recorded(rig, tmp_path):
    """The first observations of an episode can arrive before its start event (another
    topic): those received after the actor's ``start_ns`` are written from the pre-roll;
    older ones (the previous episode's) are not."""
    r = rig()
    r.wait_connected()
    r.publish("observation", _observation(7))  # before the actor began: not this episode's
    start_ns = r.node.get_clock().now().nanoseconds
    r.publish("observation", _observation(0))
    r.publish("observation", _observation(1))
    r.event(event="start", episode_id="ep-late", start_ns=start_ns)
    r.publish("observation", _observation(2))
    assert r.count("messages_recorded_from_preroll") == 2
    r.event(event="stop", episode_id="ep-late", success=False, length=2)
    assert r.spin(lambda: len(r.recorded) == 1)
    by_rosbags, _ = _read_both(tmp_path / "bags" / "station_0" / "ep-late")
    assert [o.step for o in by_rosbags[f"{NS}/observation"]] == [0, 1, 2]


def test_event_validation_and_superseded_episode(rig, tmp_path):
    r = rig()
    r.wait_connected()
    from std_msgs.msg import String

    bad = [
        String(data="{not json"),
        _event(event="start"),  # no episode_id
        _event(event="start", episode_id="../escape"),
        _event(event="start", episode_id="ep", policy_version=-1),
        _event(event="start", episode_id="ep", instruciton="typo"),
        _event(event="stop", episode_id="ep"),  # nothing open
    ]
    for i, msg in enumerate(bad, start=1):
        r.events.publish(msg)
        assert r.spin(lambda n=i: r.count("rejected.episode_event") == n), msg.data
    assert not (tmp_path / "bags" / "escape").exists()

    r.event(event="start", episode_id="a")
    r.event(event="stop", episode_id="b", success=False, length=1)  # wrong id: refused
    assert r.count("rejected.episode_event") == len(bad) + 1
    r.event(event="start", episode_id="b")  # "a" closed as incomplete first
    assert r.spin(lambda: len(r.recorded) == 1)
    assert r.recorded[0]["episode_id"] == "a" and r.recorded[0]["complete"] is False
    from efm_ros.bag_io import read_custom_data

    meta = json.loads(read_custom_data(tmp_path / "bags" / "station_0" / "a")["efm.episode"])
    assert meta["reason"] == "superseded by b"
    r.event(event="start", episode_id="b")  # same id again: bag exists, refused
    assert r.count("rejected.episode_event") == len(bad) + 2


def test_endpoint_qos(rig):
    from rclpy.qos import ReliabilityPolicy

    r = rig()
    expected = {
        f"{NS}/camera/top/image_raw": ReliabilityPolicy.BEST_EFFORT,
        f"{NS}/observation": ReliabilityPolicy.BEST_EFFORT,
        f"{NS}/action_command": ReliabilityPolicy.RELIABLE,
        f"{NS}/steps_to_go/prediction": ReliabilityPolicy.RELIABLE,
        f"{NS}/episode/events": ReliabilityPolicy.RELIABLE,
    }
    for topic, reliability in expected.items():
        infos = [
            i
            for i in r.tester.get_subscriptions_info_by_topic(topic)
            if i.node_name == "episode_recorder"
        ]
        assert len(infos) == 1 and infos[0].qos_profile.reliability == reliability, topic
    (pub,) = [
        i
        for i in r.tester.get_publishers_info_by_topic(f"{NS}/episode/recorded")
        if i.node_name == "episode_recorder"
    ]
    assert pub.qos_profile.reliability == ReliabilityPolicy.RELIABLE


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"recorder.topics": ["a", "b"], "recorder.types": ["std_msgs/msg/String"]}, "needs 2"),
        ({"recorder.topics": ["a"], "recorder.types": ["std_msgs/msg/String"]}, "recorder.qos"),
        (
            {
                "recorder.topics": ["a"],
                "recorder.types": ["std_msgs/msg/Nope"],
                "recorder.qos": ["reliable"],
            },
            "unknown message type",
        ),
        ({"recorder.output_dir": ""}, "must not be empty"),
    ],
)
def test_bad_configuration_fails_loudly(ros_context, tmp_path, params, message):
    from rclpy.exceptions import InvalidParameterValueException
    from rclpy.parameter import Parameter

    from efm_ros.episode_recorder import EpisodeRecorderNode

    params = {"recorder.output_dir": str(tmp_path), **params}
    overrides = [Parameter(k, value=v) for k, v in params.items()]
    with pytest.raises((ValueError, InvalidParameterValueException), match=message):
        EpisodeRecorderNode(context=ros_context, parameter_overrides=overrides)


def test_read_only_parameters_refuse_changes(rig):
    from rclpy.parameter import Parameter

    r = rig()
    result = r.node.set_parameters([Parameter("recorder.output_dir", value="/elsewhere")])[0]
    assert not result.successful and "read-only" in result.reason


def test_bag_readable_after_sigint_mid_episode(rig, ros_process, tmp_path):
    from diagnostic_msgs.msg import DiagnosticArray

    from efm_ros.qos import RELIABLE

    out = tmp_path / "bags"
    proc = ros_process(
        "-m",
        "efm_ros.episode_recorder",
        "--ros-args",
        "-r",
        f"__ns:={NS}",
        "-p",
        f"recorder.output_dir:={out}",
        name="recorder",
    )
    proc.wait_for_output("episode_recorder ready")
    r = rig(output_dir=None)
    recorded = []

    def on_diagnostics(msg: DiagnosticArray) -> None:
        for status in msg.status:
            if status.name == f"{NS}/episode_recorder":
                values = {kv.key: kv.value for kv in status.values}
                recorded.append(int(values.get("messages_recorded", 0)))

    r.tester.create_subscription(DiagnosticArray, "/diagnostics", on_diagnostics, RELIABLE)
    r.wait_connected(timeout=15)
    r.events.publish(
        _event(event="start", episode_id="ep-int", instruction="push", policy_version=1)
    )
    assert proc.wait_for_output("recording episode") is None
    for step in range(5):
        r.pubs["observation"].publish(_observation(step))
        r.spin(lambda: False, timeout=0.05)
    assert r.spin(lambda: bool(recorded) and recorded[-1] >= 4, timeout=10), proc.output()
    assert proc.stop() == 0  # SIGINT, like ^C
    log = proc.log_path.read_text()
    assert "Traceback" not in log and "INCOMPLETE" in log

    path = out / "station_0" / "ep-int"
    assert (path / "metadata.yaml").exists()
    by_rosbags, by_mcap = _read_both(path)
    for by in (by_rosbags, by_mcap):
        steps = [o.step for o in by[f"{NS}/observation"]]
        assert len(steps) >= 4 and steps == sorted(steps)
        last = json.loads(by[f"{NS}/episode/metadata"][-1].data)
        assert last["complete"] is False and last["reason"] == "recorder shut down"
        assert last["instruction"] == "push" and last["policy_version"] == 1
