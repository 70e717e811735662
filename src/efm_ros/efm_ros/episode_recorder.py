"""``episode_recorder``: one rosbag2 bag (MCAP storage) per episode of a station.

Episode boundaries come from the actor on ``episode/events`` (std_msgs/String JSON,
RELIABLE QoS) — a topic rather than a service because efm_interfaces has no recorder
service and std_srvs/Trigger cannot carry the episode id:

  ``{"event": "start", "episode_id": "station_0-000042", "instruction": "...",
     "policy_version": 3, "start_ns": 1764680000000000000}``
  ``{"event": "stop", "episode_id": "station_0-000042", "success": true, "length": 57}``

(validated by :func:`efm_ros.conversions.parse_episode_event`; unknown keys are refused).
A start opens ``<recorder.output_dir>/<station>/<episode_id>/``; every message on the
recorded topics is written as received (raw CDR bytes, receive time as the log time, like
``ros2 bag record``) until the matching stop. Episode metadata (station, episode id,
instruction, policy version, the actor's ``episode_start_ns`` (observations stamped
earlier, recorded while the start was in flight, are the previous episode's), success,
length, ``complete``) is stored twice: as
``std_msgs/String`` JSON on ``<ns>/episode/metadata`` inside the bag (at start and at stop)
and under ``custom_data["efm.episode"]`` in metadata.yaml. A start while another episode is
open closes that one first with ``complete: false``; ^C / shutdown does the same, so every
bag stays readable. A stop closes the bag ``recorder.stop_grace_s`` later, so that the
episode's last observation, published just before the stop on another (best-effort) topic
and delivered in any order, is in the bag (a start meanwhile closes it at once). Likewise
the first messages of an episode can arrive before its start event (even before the
previous episode's stop): the recorder always keeps the last ``recorder.preroll_s`` of
messages and writes those received after the actor's ``start_ns`` into the new bag.
After closing, a summary (path, messages, MB, MB/s) is published on ``episode/recorded``
(std_msgs/String JSON, RELIABLE).
"""

from __future__ import annotations

import json
import time
from collections import deque
from pathlib import Path
from typing import Any

from rclpy.node import Node
from rclpy.qos import QoSProfile
from rosbags.rosbag2 import WriterError
from std_msgs.msg import String

from efm_ros.bag_io import EPISODE_METADATA_KEY, BagWriter, import_message, make_typestore
from efm_ros.conversions import parse_episode_event
from efm_ros.diagnostics import Diagnostics
from efm_ros.params import Parameters
from efm_ros.qos import LATCHED, RELIABLE, SENSOR
from efm_ros.spin import NodeEntry, run_node

QOS_PROFILES: dict[str, QoSProfile] = {"sensor": SENSOR, "reliable": RELIABLE, "latched": LATCHED}
DEFAULT_TOPICS = (
    ("camera/top/image_raw", "sensor_msgs/msg/Image", "sensor"),
    ("observation", "efm_interfaces/msg/Observation", "sensor"),
    ("action_command", "efm_interfaces/msg/ActionCommand", "reliable"),
    ("steps_to_go/prediction", "efm_interfaces/msg/StepsToGoPrediction", "reliable"),
)
METADATA_TOPIC = "episode/metadata"


class _Episode:
    """The open bag and what is known about its episode."""

    def __init__(self, writer: BagWriter, metadata: dict[str, Any]) -> None:
        self.writer = writer
        self.metadata = metadata
        self.started = time.monotonic()


class EpisodeRecorderNode(Node):
    """Records the configured topics of one station into one bag per episode."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__("episode_recorder", **kwargs)
        self.episode: _Episode | None = None  # first: destroy_node() relies on it
        p = Parameters(self)
        self.station: str = p.declare("station", "station_0", "Station name.", read_only=True)
        self.output_dir = Path(
            p.declare(
                "recorder.output_dir",
                "episodes",
                "Bags go to <output_dir>/<station>/<episode_id>/.",
                read_only=True,
                validator=lambda v: None if v else "recorder.output_dir must not be empty",
            )
        )
        topics = p.declare(
            "recorder.topics",
            [t for t, _, _ in DEFAULT_TOPICS],
            "Topics recorded (relative to the station namespace, or absolute).",
            read_only=True,
            validator=lambda v: None if len(set(v)) == len(v) else "topics must be unique",
        )
        types = p.declare(
            "recorder.types",
            [t for _, t, _ in DEFAULT_TOPICS],
            "Message type of each recorded topic (pkg/msg/Name), same order.",
            read_only=True,
            validator=lambda v: (
                None
                if len(v) == len(topics)
                else f"recorder.types needs {len(topics)} entries, got {len(v)}"
            ),
        )
        qos_names = p.declare(
            "recorder.qos",
            [q for _, _, q in DEFAULT_TOPICS],
            f"Subscription QoS of each recorded topic, one of {sorted(QOS_PROFILES)}.",
            read_only=True,
            validator=lambda v: (
                f"recorder.qos needs {len(topics)} entries of {sorted(QOS_PROFILES)}, got {list(v)}"
                if len(v) != len(topics) or any(q not in QOS_PROFILES for q in v)
                else None
            ),
        )
        self.stop_grace_s: float = p.declare(
            "recorder.stop_grace_s",
            0.3,
            "Seconds a bag stays open after its stop event, for messages still in flight.",
            read_only=True,
            validator=lambda v: None if 0.0 <= v <= 10.0 else "stop_grace_s must be in [0, 10]",
        )
        self.preroll_s: float = p.declare(
            "recorder.preroll_s",
            1.0,
            "Seconds of the latest messages always kept; those received after the actor's "
            "start_ns go into the new bag (the start event can arrive late).",
            read_only=True,
            validator=lambda v: None if 0.0 <= v <= 10.0 else "preroll_s must be in [0, 10]",
        )
        self.preroll_bytes: int = p.declare(
            "recorder.preroll_max_mb", 256, "Memory bound of the pre-roll buffer (MB).",
            read_only=True,
            validator=lambda v: None if v >= 0 else "preroll_max_mb must be >= 0",
        ) * 1_000_000
        self.preroll: deque[tuple[int, int, bytes]] = deque()  # (receive ns, topic, CDR)
        self.preroll_size = 0
        self.closing = None  # the one-shot timer of a stopped episode's bag
        self.typestore = make_typestore()
        self.diag = Diagnostics(self)
        self.total_bytes = 0
        self.total_write_s = 0.0

        # (absolute topic, type name, QoS) of every recorded topic, checked up front.
        self.recorded: list[tuple[str, str, QoSProfile]] = []
        for index, (topic, type_name, qos_name) in enumerate(
            zip(topics, types, qos_names, strict=True)
        ):
            msg_class = import_message(type_name)  # ValueError: fail loudly at start-up
            qos = QOS_PROFILES[qos_name]
            self.recorded.append((self.resolve_topic_name(topic), type_name, qos))
            self.create_subscription(
                msg_class,
                topic,
                lambda data, i=index: self.on_message(i, data),
                qos,
                raw=True,
            )
        self.metadata_topic = self.resolve_topic_name(METADATA_TOPIC)
        self.event_sub = self.create_subscription(String, "episode/events", self.on_event, RELIABLE)
        self.recorded_pub = self.create_publisher(String, "episode/recorded", RELIABLE)
        self.get_logger().info(
            f"episode_recorder ready: {len(self.recorded)} topic(s) "
            f"{[t for t, _, _ in self.recorded]} -> {self.output_dir / self.station}"
        )

    # -- inputs ---------------------------------------------------------------------------
    def on_message(self, index: int, data: bytes) -> None:
        """Write one raw (CDR) message of recorded topic ``index`` to the open bag."""
        now = self.get_clock().now().nanoseconds
        self._keep(now, index, data)  # may belong to the next episode, even while one is open
        if self.episode is None:
            self.diag.count("messages_outside_episode")
            return
        self.episode.writer.write(self.recorded[index][0], now, data)
        self.diag.count("messages_recorded")

    def _keep(self, now: int, index: int, data: bytes) -> None:
        """The pre-roll: the last ``preroll_s`` of messages, bounded in bytes."""
        self.preroll.append((now, index, data))
        self.preroll_size += len(data)
        oldest = now - int(self.preroll_s * 1e9)
        while self.preroll and (
            self.preroll[0][0] < oldest or self.preroll_size > self.preroll_bytes
        ):
            self.preroll_size -= len(self.preroll.popleft()[2])

    def on_event(self, msg: String) -> None:
        try:
            event = parse_episode_event(msg.data)
        except ValueError as error:
            self.diag.reject("episode_event", str(error))
            return
        if event["event"] == "start":
            self.start_episode(event)
        elif self.episode is None:
            self.diag.reject("episode_event", f"stop for {event['episode_id']!r}: none open")
        elif event["episode_id"] != self.episode.metadata["episode_id"]:
            self.diag.reject(
                "episode_event",
                f"stop for {event['episode_id']!r} but {self.episode.metadata['episode_id']!r} "
                "is open",
            )
        else:
            self.episode.metadata.update(
                {k: event[k] for k in ("success", "length", "outcome") if k in event},
                complete=True,
            )
            if self.stop_grace_s <= 0.0:
                self.close_episode()
            elif self.closing is None:
                self.closing = self.create_timer(self.stop_grace_s, self.close_episode)

    # -- bags -----------------------------------------------------------------------------
    def start_episode(self, event: dict[str, Any]) -> None:
        """Open the bag of a new episode (closing an open one as incomplete)."""
        if self.episode is not None and self.episode.metadata["complete"]:
            self.close_episode()  # stopped, still in its grace period
        if self.episode is not None:
            self.get_logger().warning(
                f"episode {self.episode.metadata['episode_id']!r} was not stopped before "
                f"{event['episode_id']!r} started; closing it as incomplete"
            )
            self.episode.metadata["reason"] = f"superseded by {event['episode_id']}"
            self.close_episode()
        path = self.output_dir / self.station / str(event["episode_id"])
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            writer = BagWriter(path, self.typestore)
        except (WriterError, OSError) as error:
            self.diag.reject("episode_event", f"cannot open bag {path}: {error}")
            return
        for topic, type_name, qos in self.recorded:
            writer.add_topic(topic, type_name, qos)
        writer.add_topic(self.metadata_topic, "std_msgs/msg/String", RELIABLE)
        metadata = {
            "station": self.station,
            "episode_id": event["episode_id"],
            "instruction": event.get("instruction", ""),
            "policy_version": event.get("policy_version", 0),
            "episode_start_ns": event.get("start_ns"),
            "success": None,
            "length": None,
            "complete": False,
            "start_time_ns": self.get_clock().now().nanoseconds,
        }
        self.episode = _Episode(writer, metadata)
        start_ns = event.get("start_ns")
        for received, index, data in self.preroll if start_ns is not None else ():
            if received >= start_ns:  # sent after the actor began the episode
                writer.write(self.recorded[index][0], received, data)
                self.diag.count("messages_recorded_from_preroll")
        self.preroll.clear()
        self.preroll_size = 0
        self._write_metadata(self.episode)
        self.diag.count("episodes_started")
        self.get_logger().info(f"recording episode {event['episode_id']!r} -> {path}")

    def _write_metadata(self, episode: _Episode) -> None:
        text = json.dumps(episode.metadata, sort_keys=True)
        episode.writer.write_message(
            self.metadata_topic, self.get_clock().now().nanoseconds, String(data=text)
        )

    def close_episode(self) -> dict[str, Any] | None:
        """Close the open bag (if any) with its final metadata; returns the summary."""
        if self.closing is not None:
            self.destroy_timer(self.closing)
            self.closing = None
        episode, self.episode = self.episode, None
        if episode is None:
            return None
        writer = episode.writer
        episode.metadata["stop_time_ns"] = self.get_clock().now().nanoseconds
        self._write_metadata(episode)
        writer.set_custom_data(EPISODE_METADATA_KEY, json.dumps(episode.metadata, sort_keys=True))
        writer.close()
        seconds = max(time.monotonic() - episode.started, 1e-9)
        megabytes = writer.bytes_written / 1e6
        self.total_bytes += writer.bytes_written
        self.total_write_s += writer.write_seconds
        summary = {
            "episode_id": episode.metadata["episode_id"],
            "path": str(writer.path),
            "complete": episode.metadata["complete"],
            "messages": sum(writer.message_counts.values()),
            "megabytes": round(megabytes, 3),
            "mb_per_s": round(megabytes / seconds, 3),
            "write_mb_per_s": round(megabytes / max(writer.write_seconds, 1e-9), 1),
        }
        self.diag.count("episodes_closed")
        self.diag.counters["megabytes_recorded"] = round(self.total_bytes / 1e6, 3)
        state = "complete" if summary["complete"] else "INCOMPLETE"
        self.get_logger().info(
            f"episode {summary['episode_id']!r} closed ({state}): {summary['messages']} messages, "
            f"{megabytes:.1f} MB, {summary['mb_per_s']:.1f} MB/s recorded, "
            f"{summary['write_mb_per_s']:.0f} MB/s write speed -> {writer.path}"
        )
        if self.context.ok():
            self.recorded_pub.publish(String(data=json.dumps(summary)))
        return summary

    def close_on_shutdown(self) -> None:
        """Close the open bag (readable; marked incomplete unless it was already stopped
        and only waiting out its grace period); a no-op when none is open."""
        if self.episode is not None:
            if not self.episode.metadata["complete"]:
                self.episode.metadata.setdefault("reason", "recorder shut down")
            self.close_episode()

    def destroy_node(self) -> None:
        self.close_on_shutdown()
        super().destroy_node()


ENTRY = NodeEntry(EpisodeRecorderNode, on_shutdown=EpisodeRecorderNode.close_on_shutdown)


def main(args: list[str] | None = None) -> None:
    # bags are closed before the rmw teardown (efm_ros.spin.run_node's on_shutdown)
    run_node(ENTRY, args)


if __name__ == "__main__":
    main()
