"""rosbag2 (MCAP storage, metadata version 9) writing with the ``rosbags`` library.

``rosbag2_py`` is not installable from PyPI (PLATFORM.md), so episode bags are written with
``rosbags``. Bags written here are what ``ros2 bag record -s mcap`` writes on a robot
computer: same metadata version, storage, message definitions and RIHS01 type hashes
(custom ``efm_interfaces`` types are registered from their ``.msg`` text, so their hashes are
computed the way rosidl computes them). Message payloads are CDR bytes exactly as they came
off the wire (raw subscriptions) or from ``rclpy.serialization.serialize_message``.

Only the ``rclpy`` QoS enums and ``serialize_message`` are used from ROS; no node here.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml
from rclpy.qos import QoSProfile
from rclpy.serialization import serialize_message
from rosbags.interfaces import (
    Connection,
    Qos,
    QosDurability,
    QosHistory,
    QosLiveliness,
    QosReliability,
    QosTime,
)
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_types_from_msg, get_typestore
from rosbags.typesys.store import Typestore

#: rosbag2 metadata version written (rosbag2 on Jazzy/Kilted writes 9)
BAG_VERSION = 9
#: type store matching the ROS distribution of the wheels (Kilted)
STORE = Stores.ROS2_KILTED
#: custom interface packages registered in every store
CUSTOM_PACKAGES = ("efm_interfaces",)
#: ``custom_data`` key holding the episode metadata JSON in metadata.yaml
EPISODE_METADATA_KEY = "efm.episode"


def interface_msg_dir(package: str) -> Path:
    """The folder with ``package``'s ``.msg`` files: installed share dir, else the repo source."""
    try:
        from ament_index_python.packages import PackageNotFoundError, get_package_share_directory

        try:
            share = Path(get_package_share_directory(package)) / "msg"
            if share.is_dir():
                return share
        except (PackageNotFoundError, ValueError):
            pass
    except (ImportError, OSError):  # OSError: AMENT_PREFIX_PATH unset
        pass
    source = Path(__file__).resolve().parents[2] / package / "msg"
    if source.is_dir():
        return source
    raise FileNotFoundError(
        f"no msg folder for interface package {package!r}: install it (scripts/setup.sh) or "
        "set AMENT_PREFIX_PATH"
    )


def register_package(typestore: Typestore, package: str) -> None:
    """Register every message of ``package`` (parsed from its ``.msg`` text) in ``typestore``."""
    types: dict[str, Any] = {}
    for path in sorted(interface_msg_dir(package).glob("*.msg")):
        types.update(get_types_from_msg(path.read_text(), f"{package}/msg/{path.stem}"))
    typestore.register(types)


def make_typestore(packages: Iterable[str] = CUSTOM_PACKAGES) -> Typestore:
    """A Kilted type store with the custom interface ``packages`` registered."""
    typestore = get_typestore(STORE)
    for package in packages:
        register_package(typestore, package)
    return typestore


def ros_type_name(msg_class: type) -> str:
    """``sensor_msgs.msg.Image`` class -> ``"sensor_msgs/msg/Image"``."""
    package = msg_class.__module__.split(".")[0]
    return f"{package}/msg/{msg_class.__name__}"


def import_message(type_name: str) -> type:
    """``"sensor_msgs/msg/Image"`` -> the rclpy message class (ValueError when unknown)."""
    parts = type_name.split("/")
    if len(parts) != 3 or parts[1] != "msg" or not all(parts):
        raise ValueError(f"message type must look like 'pkg/msg/Name', got {type_name!r}")
    try:
        return getattr(importlib.import_module(f"{parts[0]}.msg"), parts[2])
    except (ImportError, AttributeError) as error:
        raise ValueError(f"unknown message type {type_name!r}: {error}") from error


def bag_qos(profile: QoSProfile) -> Qos:
    """An rclpy QoS profile as the ``offered_qos_profiles`` entry rosbag2 stores."""

    def duration(value: Any) -> QosTime:
        nanoseconds = int(getattr(value, "nanoseconds", 0))
        return QosTime(sec=nanoseconds // 10**9, nsec=nanoseconds % 10**9)

    return Qos(
        history=QosHistory[profile.history.name],
        depth=int(profile.depth),
        reliability=QosReliability[profile.reliability.name],
        durability=QosDurability[profile.durability.name],
        deadline=duration(profile.deadline),
        lifespan=duration(profile.lifespan),
        liveliness=QosLiveliness[profile.liveliness.name],
        liveliness_lease_duration=duration(profile.liveliness_lease_duration),
        avoid_ros_namespace_conventions=bool(profile.avoid_ros_namespace_conventions),
    )


class BagWriter:
    """One rosbag2 MCAP bag: declare topics, write CDR bytes, close (metadata.yaml last).

    The bag folder must not exist yet. ``bytes_written`` and ``write_seconds`` give the
    throughput; ``close`` is idempotent so shutdown paths may call it again.
    """

    def __init__(self, path: Path | str, typestore: Typestore | None = None) -> None:
        self.path = Path(path)
        self.typestore = typestore if typestore is not None else make_typestore()
        self._writer = Writer(self.path, version=BAG_VERSION, storage_plugin=StoragePlugin.MCAP)
        self._writer.open()
        self._connections: dict[str, Connection] = {}
        self.message_counts: dict[str, int] = {}
        self.bytes_written = 0
        self.write_seconds = 0.0
        self.closed = False

    def add_topic(self, topic: str, type_name: str, qos: QoSProfile | None = None) -> None:
        """Declare ``topic`` (absolute name) carrying ``type_name`` (``pkg/msg/Name``)."""
        if topic in self._connections:
            raise ValueError(f"topic {topic!r} already declared")
        if type_name not in self.typestore.fielddefs:
            register_package(self.typestore, type_name.split("/")[0])
        self._connections[topic] = self._writer.add_connection(
            topic,
            type_name,
            typestore=self.typestore,
            offered_qos_profiles=[bag_qos(qos)] if qos is not None else [],
        )
        self.message_counts[topic] = 0

    def write(self, topic: str, timestamp_ns: int, data: bytes | memoryview) -> None:
        """Append one serialised (CDR) message received at ``timestamp_ns``."""
        start = time.perf_counter()
        self._writer.write(self._connections[topic], int(timestamp_ns), data)
        self.write_seconds += time.perf_counter() - start
        self.bytes_written += len(data)
        self.message_counts[topic] += 1

    def write_message(self, topic: str, timestamp_ns: int, msg: Any) -> None:
        """Serialise an rclpy message with ``serialize_message`` and append it."""
        self.write(topic, timestamp_ns, serialize_message(msg))

    def set_custom_data(self, key: str, value: str) -> None:
        """Store ``key: value`` under ``custom_data`` in metadata.yaml (written at close)."""
        self._writer.set_custom_data(key, value)

    def close(self) -> None:
        """Finish the MCAP file and write metadata.yaml; safe to call twice."""
        if not self.closed:
            self.closed = True
            self._writer.close()


def read_custom_data(path: Path | str) -> dict[str, str]:
    """``custom_data`` of a bag's metadata.yaml (empty dict when absent)."""
    meta = yaml.safe_load((Path(path) / "metadata.yaml").read_text())
    return dict(meta["rosbag2_bagfile_information"].get("custom_data") or {})
