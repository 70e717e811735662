"""bag_io: rosbag2 MCAP bags written with ``rosbags`` read back by ``rosbags`` and ``mcap``,
custom efm_interfaces types included, with the type hashes rosidl computed."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

INTERFACE_TYPES = [
    "efm_interfaces/msg/ActionCommand",
    "efm_interfaces/msg/LabelledEpisode",
    "efm_interfaces/msg/Observation",
    "efm_interfaces/msg/PracticeStatus",
    "efm_interfaces/msg/StationStatus",
    "efm_interfaces/msg/StepsToGoPrediction",
    "efm_interfaces/msg/WeightsUpdate",
]


def _rosidl_hash(type_name: str) -> str:
    """The RIHS01 hash rosidl generated at build time (installed ``<Type>.json``)."""
    from ament_index_python.packages import get_package_share_directory

    package, _, name = type_name.split("/")
    path = Path(get_package_share_directory(package)) / "msg" / f"{name}.json"
    hashes = json.loads(path.read_text())["type_hashes"]
    return next(h["hash_string"] for h in hashes if h["type_name"] == type_name)


@pytest.mark.parametrize(
    "type_name",
    [*INTERFACE_TYPES, "sensor_msgs/msg/Image", "std_msgs/msg/String"],
)
def test_type_hashes_match_rosidl(type_name):
    from efm_ros.bag_io import make_typestore

    assert make_typestore().hash_rihs01(type_name) == _rosidl_hash(type_name)


def _messages():
    from efm_interfaces.msg import ActionCommand, StepsToGoPrediction
    from efm_ros.conversions import image_to_msg, make_observation

    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)
    obs = make_observation(
        station="station_0",
        step=4,
        instruction="push the red star to the blue cube",
        images={"top": image},
        previous_images={"top": image[::-1].copy()},
        proprioception=[0.25, -0.5],
        proprio_names=["ee_x", "ee_y"],
    )
    action = ActionCommand(
        station="station_0",
        step=4,
        policy_version=3,
        names=["dx", "dy"],
        chunk_length=1,
        values=[0.01, -0.02],
        period_s=0.2,
    )
    prediction = StepsToGoPrediction(probabilities=[0.25, 0.75], expected_steps=7.5, success=False)
    return image, {
        "/station_0/observation": ("efm_interfaces/msg/Observation", obs),
        "/station_0/action_command": ("efm_interfaces/msg/ActionCommand", action),
        "/station_0/steps_to_go/prediction": (
            "efm_interfaces/msg/StepsToGoPrediction",
            prediction,
        ),
        "/station_0/camera/top/image_raw": ("sensor_msgs/msg/Image", image_to_msg(image)),
    }


def test_round_trip_with_rosbags_and_mcap(tmp_path):
    from mcap.reader import make_reader
    from mcap_ros2.decoder import DecoderFactory
    from rclpy.serialization import deserialize_message, serialize_message
    from rosbags.highlevel import AnyReader

    from efm_ros.bag_io import BagWriter, read_custom_data
    from efm_ros.qos import LATCHED, SENSOR

    image, messages = _messages()
    path = tmp_path / "episode"
    writer = BagWriter(path)
    for topic, (type_name, _) in messages.items():
        writer.add_topic(topic, type_name, SENSOR)
    writer.add_topic("/station_0/instruction", "std_msgs/msg/String", LATCHED)
    for t, (topic, (_, msg)) in enumerate(messages.items()):
        writer.write_message(topic, 1_000 + t, msg)
    from std_msgs.msg import String

    writer.write_message("/station_0/instruction", 2_000, String(data="hello"))
    writer.set_custom_data("efm.episode", json.dumps({"success": True}))
    writer.close()
    writer.close()  # idempotent
    assert writer.bytes_written == sum(
        len(serialize_message(m)) for _, m in messages.values()
    ) + len(serialize_message(String(data="hello")))

    # metadata.yaml: what `ros2 bag info` reads
    meta = yaml.safe_load((path / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    assert meta["version"] == 9 and meta["storage_identifier"] == "mcap"
    assert meta["message_count"] == 5
    topics = {
        t["topic_metadata"]["name"]: t["topic_metadata"] for t in meta["topics_with_message_count"]
    }
    for topic, (type_name, _) in messages.items():
        assert topics[topic]["type"] == type_name
        assert topics[topic]["type_description_hash"] == _rosidl_hash(type_name)
    latched = topics["/station_0/instruction"]["offered_qos_profiles"][0]
    assert latched["durability"] == "transient_local" and latched["reliability"] == "reliable"
    assert read_custom_data(path) == {"efm.episode": '{"success": true}'}

    # rosbags: custom types come from the definitions stored in the bag itself
    with AnyReader([path]) as reader:
        read = {c.topic: (c, raw) for c, _, raw in reader.messages()}
        obs = reader.deserialize(
            read["/station_0/observation"][1], "efm_interfaces/msg/Observation"
        )
        assert obs.step == 4 and obs.instruction == "push the red star to the blue cube"
        assert list(obs.camera_names) == ["top"] and list(obs.proprio_names) == ["ee_x", "ee_y"]
        pixels = np.asarray(obs.images[0].data).reshape(24, 32, 3)
        np.testing.assert_array_equal(pixels, image)
        np.testing.assert_allclose(obs.proprioception, [0.25, -0.5])
        action = reader.deserialize(
            read["/station_0/action_command"][1], "efm_interfaces/msg/ActionCommand"
        )
        assert action.policy_version == 3 and list(action.names) == ["dx", "dy"]
        assert read["/station_0/observation"][0].digest == _rosidl_hash(
            "efm_interfaces/msg/Observation"
        )
    # stored as serialize_message produced them (compared decoded: CDR padding bytes are
    # not initialised by the serialiser, so two serialisations may differ there)
    for topic, (_, msg) in messages.items():
        fresh = serialize_message(msg)
        assert len(read[topic][1]) == len(fresh)
        stored = deserialize_message(bytes(read[topic][1]), type(msg))
        assert stored == deserialize_message(fresh, type(msg))  # float32 fields round

    # mcap + mcap-ros2-support: decodes from the ros2msg schemas in the file
    (mcap_file,) = path.glob("*.mcap")
    with mcap_file.open("rb") as stream:
        reader = make_reader(stream, decoder_factories=[DecoderFactory()])
        decoded = {
            channel.topic: (schema, message, msg)
            for schema, channel, message, msg in reader.iter_decoded_messages()
        }
    assert set(decoded) == {*messages, "/station_0/instruction"}
    schema, _, obs = decoded["/station_0/observation"]
    assert schema.name == "efm_interfaces/msg/Observation" and schema.encoding == "ros2msg"
    assert obs.step == 4 and obs.images[0].width == 32
    np.testing.assert_array_equal(np.frombuffer(obs.images[0].data, np.uint8), image.ravel())
    prediction = decoded["/station_0/steps_to_go/prediction"][2]
    assert prediction.expected_steps == 7.5 and list(prediction.probabilities) == [0.25, 0.75]
    assert decoded["/station_0/instruction"][2].data == "hello"
    assert decoded["/station_0/action_command"][1].log_time == 1_001


def test_writer_refuses_overwrites_and_unknown_types(tmp_path):
    from rosbags.rosbag2 import WriterError

    from efm_ros.bag_io import BagWriter, import_message

    (tmp_path / "exists").mkdir()
    with pytest.raises(WriterError, match="exists"):
        BagWriter(tmp_path / "exists")
    writer = BagWriter(tmp_path / "new")
    writer.add_topic("/a", "std_msgs/msg/String")
    with pytest.raises(ValueError, match="already declared"):
        writer.add_topic("/a", "std_msgs/msg/String")
    writer.close()
    with pytest.raises(ValueError, match="pkg/msg/Name"):
        import_message("std_msgs/String")
    with pytest.raises(ValueError, match="unknown message type"):
        import_message("std_msgs/msg/NoSuchThing")
    assert import_message("sensor_msgs/msg/Image").__name__ == "Image"
