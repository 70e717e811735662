"""camera_ingest contract with real rclpy nodes and topics on the test's own domain:
stamp synchronisation, previous frame, the paper's ALOHA layout (Appendix D.3), the
CompressedImage path, QoS, parameter validation and every kind of bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
from ros_harness import spin_until

NS = "/station_0"


def _stamp(seconds: float):
    from builtin_interfaces.msg import Time

    nanoseconds = round(seconds * 1e9)
    return Time(sec=nanoseconds // 10**9, nanosec=nanoseconds % 10**9)


def _solid(colour, shape=(48, 64)) -> np.ndarray:
    image = np.empty((*shape, 3), dtype=np.uint8)
    image[:] = colour
    return image


def _frame(colour, stamp_s: float, shape=(48, 64)):
    """An rgb8 Image of one colour (or of the given array) stamped ``stamp_s``."""
    from efm_ros.conversions import image_to_msg

    image = colour if isinstance(colour, np.ndarray) else _solid(colour, shape)
    return image_to_msg(image, stamp=_stamp(stamp_s))


class Graph:
    """A CameraIngestNode and a tester node (publishers, observation sink) on one executor."""

    def __init__(self, context, params: dict, cameras=("top",), compressed=False) -> None:
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.node import Node
        from rclpy.parameter import Parameter
        from sensor_msgs.msg import CompressedImage, Image, JointState
        from std_msgs.msg import String

        from efm_interfaces.msg import Observation
        from efm_ros.camera_ingest import CameraIngestNode
        from efm_ros.qos import LATCHED, RELIABLE, SENSOR

        params = {"cameras.names": list(cameras), "output.size": [48, 64], **params}
        if compressed:
            params["cameras.compressed"] = [True] * len(cameras)
        self.tester = Node("tester", namespace=NS, context=context)
        self.executor = SingleThreadedExecutor(context=context)
        self.executor.add_node(self.tester)
        self.instruction = self.tester.create_publisher(String, "instruction", LATCHED)
        self.node = CameraIngestNode(
            namespace=NS,
            context=context,
            parameter_overrides=[Parameter(k, value=v) for k, v in params.items()],
        )
        self.executor.add_node(self.node)
        kind, suffix = (CompressedImage, "/compressed") if compressed else (Image, "")
        self.cameras = {
            name: self.tester.create_publisher(kind, f"camera/{name}/image_raw{suffix}", SENSOR)
            for name in cameras
        }
        self.joints = self.tester.create_publisher(JointState, "joint_states", SENSOR)
        self.events = self.tester.create_publisher(String, "episode/events", RELIABLE)
        self.observations: list[Observation] = []
        self.tester.create_subscription(
            Observation, "observation", self.observations.append, SENSOR
        )
        pubs = [*self.cameras.values(), self.events]
        assert self.spin(lambda: all(p.get_subscription_count() > 0 for p in pubs))
        assert self.spin(lambda: self.node.observation_pub.get_subscription_count() > 0)

    def spin(self, predicate, timeout: float = 5.0) -> bool:
        return spin_until(self.executor, predicate, timeout)

    def count(self, key: str) -> int:
        return self.node.diag.counters[key]

    def send(self, camera: str, msg) -> None:
        """Publish one frame and wait until the node has taken it."""
        before = self.count(f"frames_in.{camera}")
        self.cameras[camera].publish(msg)
        assert self.spin(lambda: self.count(f"frames_in.{camera}") > before), camera

    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()
        self.tester.destroy_node()


@pytest.fixture
def graph(ros_context):
    made: list[Graph] = []

    def make(params: dict | None = None, **kwargs) -> Graph:
        made.append(Graph(ros_context, params or {}, **kwargs))
        return made[-1]

    yield make
    for g in made:
        g.close()


def _pixels(image_msg) -> np.ndarray:
    from efm_ros.conversions import msg_to_image

    return msg_to_image(image_msg)


def test_sync_within_tolerance_previous_frame_and_drop_outside(graph):
    g = graph({"sync.tolerance_s": 0.01}, cameras=("a", "b"))
    g.send("a", _frame((10, 0, 0), 1.000))
    assert g.observations == []  # b has no frame yet
    g.send("b", _frame((0, 20, 0), 1.006))
    assert g.spin(lambda: len(g.observations) == 1)
    first = g.observations[0]
    assert list(first.camera_names) == ["a", "b"] and first.step == 0
    assert first.header.stamp == _stamp(1.006)  # the newest frame's stamp
    assert list(first.previous_images) == []
    assert (_pixels(first.images[0]) == (10, 0, 0)).all()
    assert (_pixels(first.images[1]) == (0, 20, 0)).all()

    # 50 ms apart: outside the 10 ms tolerance, no set.
    g.send("a", _frame((11, 0, 0), 1.100))
    g.send("b", _frame((0, 21, 0), 1.150))
    g.spin(lambda: False, timeout=0.2)
    assert len(g.observations) == 1
    # a new "a" frame 5 ms from the waiting "b" completes a set; the old "a" is dropped
    g.send("a", _frame((12, 0, 0), 1.145))
    assert g.spin(lambda: len(g.observations) == 2)
    second = g.observations[1]
    assert second.step == 1 and second.header.stamp == _stamp(1.150)
    assert (_pixels(second.images[0]) == (12, 0, 0)).all()
    assert (_pixels(second.images[1]) == (0, 21, 0)).all()
    # previous frame = the images of the previous Observation
    assert (_pixels(second.previous_images[0]) == (10, 0, 0)).all()
    assert (_pixels(second.previous_images[1]) == (0, 20, 0)).all()
    assert g.count("dropped.unsynced") == 1
    assert g.count("observations_out") == 2


def test_episode_start_resets_step_and_previous_frame(graph):
    g = graph()
    for i in range(3):
        g.send("top", _frame((i, i, i), 1.0 + 0.1 * i))
    assert g.spin(lambda: len(g.observations) == 3)
    assert [o.step for o in g.observations] == [0, 1, 2]
    g.events.publish(_event({"event": "start", "episode_id": "ep-1"}))
    assert g.spin(lambda: g.count("episodes") == 1)
    g.send("top", _frame((9, 9, 9), 2.0))
    assert g.spin(lambda: len(g.observations) == 4)
    assert g.observations[3].step == 0 and list(g.observations[3].previous_images) == []


def test_max_rate_keeps_previous_one_control_step_old(graph):
    g = graph({"output.max_rate_hz": 10.0})
    for i in range(7):  # 30 Hz frames -> published at 0, 100, 200 ms
        g.send("top", _frame((i, 0, 0), 1.0 + i / 30))
    assert g.spin(lambda: len(g.observations) == 3)
    assert [int(_pixels(o.images[0])[0, 0, 0]) for o in g.observations] == [0, 3, 6]
    assert int(_pixels(g.observations[2].previous_images[0])[0, 0, 0]) == 3
    assert g.count("sets_skipped_rate") == 4


def test_aloha_stacked_layout_is_pixel_exact(graph):
    cameras = ("top", "table", "left_wrist", "right_wrist")
    g = graph({"output.layout": "aloha_stacked", "output.size": [224, 224]}, cameras=cameras)
    colours = {"top": (255, 0, 0), "table": (0, 255, 0), "left_wrist": (0, 0, 255)}
    colours["right_wrist"] = (255, 255, 0)
    top = _solid(colours["top"])
    top[:, 32:] = (7, 8, 9)  # left half / right half: checks orientation through the resize
    for name in cameras:
        g.send(name, _frame(top if name == "top" else colours[name], 5.0))
    assert g.spin(lambda: len(g.observations) == 1)
    obs = g.observations[0]
    assert list(obs.camera_names) == ["top+table", "left_wrist+right_wrist"]
    first, second = (_pixels(img) for img in obs.images)
    assert first.shape == second.shape == (224, 224, 3)
    # (224 - 4) / 2 = 110 rows per view, a 4-row black band at rows 110..113
    assert (first[:110, :112] == (255, 0, 0)).all() and (first[:110, 112:] == (7, 8, 9)).all()
    assert (first[110:114] == 0).all()
    assert (first[114:] == (0, 255, 0)).all()
    assert (second[:110] == (0, 0, 255)).all()
    assert (second[110:114] == 0).all()
    assert (second[114:] == (255, 255, 0)).all()


def test_resize_area_and_nearest_are_exact():
    from efm_ros.camera_ingest import crop, resize

    image = (np.arange(16, dtype=np.uint8).reshape(4, 4, 1) * 10).repeat(3, axis=2)
    np.testing.assert_array_equal(resize(image, 2, 2)[..., 0], [[25, 45], [105, 125]])
    np.testing.assert_array_equal(resize(image, 2, 2, "nearest")[..., 0], [[50, 70], [130, 150]])
    # 3 -> 2 columns (column means 60, 70, 80): output pixels cover [0, 1.5) and [1.5, 3)
    # -> (60 + 0.5 * 70) / 1.5 = 63.3 and (0.5 * 70 + 80) / 1.5 = 76.7
    np.testing.assert_array_equal(resize(image[:, :3], 1, 2)[..., 0], [[63, 77]])
    np.testing.assert_array_equal(crop(image, [1, 2, 2, 0])[..., 0], [[60, 70], [100, 110]])
    with pytest.raises(ValueError, match="does not fit"):
        crop(image, [3, 0, 2, 0])


def test_compressed_image_path(graph):
    from efm_ros.conversions import image_to_compressed_msg

    g = graph(compressed=True)
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
    g.send("top", image_to_compressed_msg(image, fmt="png", stamp=_stamp(1.0)))
    assert g.spin(lambda: len(g.observations) == 1)
    np.testing.assert_array_equal(_pixels(g.observations[0].images[0]), image)  # lossless

    smooth = np.zeros((48, 64, 3), dtype=np.uint8)
    smooth[:, :, 0] = np.linspace(0, 255, 64, dtype=np.uint8)
    g.send("top", image_to_compressed_msg(smooth, fmt="jpeg", stamp=_stamp(1.1)))
    assert g.spin(lambda: len(g.observations) == 2)
    decoded = _pixels(g.observations[1].images[0]).astype(int)
    assert np.abs(decoded - smooth).mean() < 3

    bad = image_to_compressed_msg(image, fmt="png", stamp=_stamp(1.2))
    bad.data = bytes(bad.data)[:40]  # truncated
    g.send("top", bad)
    assert g.spin(lambda: g.count("rejected.decode") == 1)
    tiff = image_to_compressed_msg(image, fmt="png", stamp=_stamp(1.3))
    tiff.format = "tiff"
    g.send("top", tiff)
    assert g.spin(lambda: g.count("rejected.decode") == 2)
    assert len(g.observations) == 2


def test_proprioception_and_latched_instruction(graph, ros_context):
    from sensor_msgs.msg import JointState
    from std_msgs.msg import String

    g = graph({"proprio.enabled": True, "proprio.names": ["j1", "j2"]})
    # a late-joining subscriber of the latched topic still gets the instruction
    g.instruction.publish(String(data="push the red star to the blue cube"))
    assert g.spin(lambda: g.node.instruction != "")
    g.send("top", _frame((1, 1, 1), 1.0))
    g.spin(lambda: False, timeout=0.1)
    assert g.observations == [] and g.count("sets_waiting_joint_states") == 1

    joints = JointState(name=["j2", "j3", "j1"], position=[2.0, 3.0, 1.0])
    joints.header.stamp = _stamp(1.05)
    g.joints.publish(joints)
    assert g.spin(lambda: g.count("joint_states_in") == 1)
    g.send("top", _frame((2, 2, 2), 1.1))
    assert g.spin(lambda: len(g.observations) == 1)
    obs = g.observations[0]
    assert list(obs.proprio_names) == ["j1", "j2"]
    np.testing.assert_array_equal(obs.proprioception, [1.0, 2.0])
    assert obs.instruction == "push the red star to the blue cube"


def _event(payload) -> object:
    from std_msgs.msg import String

    return String(data=payload if isinstance(payload, str) else json.dumps(payload))


def test_bad_input_is_counted_on_diagnostics_never_crashes(graph):
    from diagnostic_msgs.msg import DiagnosticArray
    from sensor_msgs.msg import JointState

    from efm_ros.qos import RELIABLE

    g = graph({"proprio.enabled": True, "proprio.names": ["j1"]})
    statuses = []
    g.tester.create_subscription(
        DiagnosticArray, "/diagnostics", lambda m: statuses.extend(m.status), RELIABLE
    )
    ok = JointState(name=["j1"], position=[0.5])
    ok.header.stamp = _stamp(1.9)
    g.joints.publish(ok)
    assert g.spin(lambda: g.count("joint_states_in") == 1)

    wrong_encoding = _frame((1, 2, 3), 1.0)
    wrong_encoding.encoding = "32FC1"
    bad_step = _frame((1, 2, 3), 1.0)
    bad_step.step = 10
    bad_size = _frame((1, 2, 3), 1.0)
    bad_size.data = bytes(bad_size.data)[:-3]
    empty = _frame((1, 2, 3), 1.0)
    empty.height, empty.width, empty.step, empty.data = 0, 0, 0, b""
    for msg in (wrong_encoding, bad_step, bad_size, empty):
        g.send("top", msg)
    g.send("top", _frame((1, 2, 3), 2.0))
    assert g.spin(lambda: len(g.observations) == 1)
    g.send("top", _frame((1, 2, 3), 1.5))  # older than the last frame
    nan = JointState(name=["j1"], position=[float("nan")])
    g.joints.publish(nan)
    missing = JointState(name=["j9"], position=[1.0])
    g.joints.publish(missing)
    g.events.publish(_event("{not json"))
    g.events.publish(_event({"event": "pause", "episode_id": "x"}))
    expected = {
        "rejected.encoding": 1,
        "rejected.image_size": 2,
        "rejected.empty_image": 1,
        "rejected.out_of_order": 1,
        "rejected.joint_state_nan": 1,
        "rejected.joint_state": 1,
        "rejected.episode_event": 2,
    }

    def reported() -> dict[str, int]:
        mine = [s for s in statuses if s.name == f"{NS}/camera_ingest"]
        return {kv.key: int(float(kv.value)) for kv in mine[-1].values} if mine else {}

    assert g.spin(lambda: all(reported().get(k) == v for k, v in expected.items()), 4), reported()
    assert any(s.level == s.WARN for s in statuses if s.name == f"{NS}/camera_ingest")
    # joint state 1.1 s older than the frames: refused as stale
    g.send("top", _frame((4, 5, 6), 3.0))
    assert g.spin(lambda: g.count("rejected.joint_state_stale") == 1)
    # still alive and correct after all of it
    ok.header.stamp = _stamp(3.0)
    g.joints.publish(ok)
    assert g.spin(lambda: g.count("joint_states_in") == 2)
    g.send("top", _frame((4, 5, 6), 3.1))
    assert g.spin(lambda: len(g.observations) == 2)
    assert (_pixels(g.observations[1].images[0]) == (4, 5, 6)).all()


def test_parameter_validation(graph):
    from rclpy.parameter import Parameter

    g = graph({"sync.tolerance_s": 0.02})
    set_params = g.node.set_parameters
    result = set_params([Parameter("sync.tolerance_s", value=-0.5)])[0]
    assert not result.successful and "tolerance_s" in result.reason
    result = set_params([Parameter("output.resize", value="bicubic")])[0]
    assert not result.successful and "one of" in result.reason
    result = set_params([Parameter("output.layout", value="aloha_stacked")])[0]
    assert not result.successful and "read-only" in result.reason
    assert set_params([Parameter("sync.tolerance_s", value=0.05)])[0].successful
    assert g.node.sync.tolerance_ns == 50_000_000
    assert set_params([Parameter("output.resize", value="nearest")])[0].successful
    assert g.node.resize_method == "nearest"


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"output.layout": "aloha_stacked"}, "exactly 4 cameras"),
        ({"cameras.names": ["a", "b"], "cameras.topics": ["x"]}, "2 entries"),
        ({"cameras.names": ["a", "a"]}, "unique"),
        ({"output.size": [224]}, "height, width"),
        ({"output.crop": [0, 0, -1, 4]}, "non-negative"),
    ],
)
def test_bad_configuration_fails_loudly(ros_context, params, message):
    from rclpy.exceptions import InvalidParameterValueException
    from rclpy.parameter import Parameter

    from efm_ros.camera_ingest import CameraIngestNode

    overrides = [Parameter(k, value=v) for k, v in params.items()]
    with pytest.raises((ValueError, InvalidParameterValueException), match=message):
        CameraIngestNode(context=ros_context, parameter_overrides=overrides)


def test_console_script_process_and_endpoint_qos(ros_context, ros_process):
    """The module runs as its own process; its endpoints carry the documented QoS."""
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node
    from rclpy.qos import DurabilityPolicy, ReliabilityPolicy

    proc = ros_process(
        "-m",
        "efm_ros.camera_ingest",
        "--ros-args",
        "-r",
        f"__ns:={NS}",
        "-p",
        "proprio.enabled:=true",
        name="ingest",
    )
    proc.wait_for_output("camera_ingest ready")
    probe = Node("probe", context=ros_context)
    executor = SingleThreadedExecutor(context=ros_context)
    executor.add_node(probe)

    def endpoint(kind: str, topic: str):
        infos = getattr(probe, f"get_{kind}_info_by_topic")(topic)
        infos = [i for i in infos if i.node_name == "camera_ingest"]
        return infos[0].qos_profile if infos else None

    try:
        expected = [
            ("publishers", f"{NS}/observation", ReliabilityPolicy.BEST_EFFORT, None),
            ("publishers", "/diagnostics", ReliabilityPolicy.RELIABLE, None),
            ("subscriptions", f"{NS}/camera/top/image_raw", ReliabilityPolicy.BEST_EFFORT, None),
            ("subscriptions", f"{NS}/joint_states", ReliabilityPolicy.BEST_EFFORT, None),
            (
                "subscriptions",
                f"{NS}/instruction",
                ReliabilityPolicy.RELIABLE,
                DurabilityPolicy.TRANSIENT_LOCAL,
            ),
            ("subscriptions", f"{NS}/episode/events", ReliabilityPolicy.RELIABLE, None),
        ]
        for kind, topic, reliability, durability in expected:
            assert spin_until(executor, lambda k=kind, t=topic: endpoint(k, t) is not None, 10), (
                topic
            )
            qos = endpoint(kind, topic)
            assert qos.reliability == reliability, topic
            if durability is not None:
                assert qos.durability == durability, topic
    finally:
        executor.shutdown()
        probe.destroy_node()
    assert proc.stop() == 0, proc.log_path.read_text()
    assert "Traceback" not in proc.log_path.read_text()


def test_frames_wait_for_the_joint_state_with_their_stamp(graph):
    """A driver publishes image t, then joint_states t (one stamp): the observation must
    carry joints t, never the older joints t-1 still at hand when the image arrives."""
    from sensor_msgs.msg import JointState

    g = graph({"proprio.enabled": True, "proprio.names": ["j1"]})
    old = JointState(name=["j1"], position=[1.0])
    old.header.stamp = _stamp(1.0)
    g.joints.publish(old)
    assert g.spin(lambda: g.count("joint_states_in") == 1)
    g.send("top", _frame((5, 5, 5), 1.1))  # image t arrives first ...
    assert g.spin(lambda: g.count("sets_waiting_joint_states") == 1)
    new = JointState(name=["j1"], position=[2.0])
    new.header.stamp = _stamp(1.1)
    g.joints.publish(new)  # ... then joints t with the same stamp
    assert g.spin(lambda: len(g.observations) == 1)
    np.testing.assert_array_equal(g.observations[0].proprioception, [2.0])
    # no matching joint state at all: after sync.tolerance_s the nearest one is used
    g.send("top", _frame((6, 6, 6), 1.2))
    assert g.spin(lambda: len(g.observations) == 2)
    np.testing.assert_array_equal(g.observations[1].proprioception, [2.0])
