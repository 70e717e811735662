"""``camera_ingest``: N camera streams -> one time-aligned ``efm_interfaces/Observation``.

The EFM sees the current and the previous camera frame (paper Appendix D.1) and, on ALOHA,
four cameras stacked pairwise into two 224x224 images with a black band between the views
(Appendix D.3), plus the joint positions.

Topics (relative to the station namespace):
  subscribes ``cameras.topics[i]`` (sensor_msgs/Image, SENSOR QoS) or, where
  ``cameras.compressed[i]``, ``<topic>/compressed`` (sensor_msgs/CompressedImage, jpeg/png);
  ``joint_states`` (sensor_msgs/JointState, SENSOR) when ``proprio.enabled``;
  ``instruction`` (std_msgs/String, LATCHED): the current goal g;
  ``episode/events`` (std_msgs/String JSON, RELIABLE): a ``start`` event resets the step
  counter and the previous frames (``previous_images`` is empty at an episode's first step).
  publishes ``observation`` (efm_interfaces/Observation, SENSOR) and ``/diagnostics``.

Frames are matched by header stamp (ApproximateTime-like): a set is published when every
camera has a frame and all stamps lie within ``sync.tolerance_s``; frames left behind by a
published set, or pushed out of the per-camera queue, are counted as dropped. The
Observation's stamp is the newest frame's. Proprioception is the joint state nearest to
that stamp: when none within ``sync.tolerance_s`` has arrived yet, the set waits up to
``sync.tolerance_s`` (wall time) for one (a driver publishing its image and joint states
with one stamp must never have frame t paired with joints t-1, or every action would
answer a half-stale observation), then takes the nearest within ``proprio.max_age_s``
(cameras and joints on separate clocks). Bad input is counted and logged, never raised.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from rclpy.node import Node
from sensor_msgs.msg import CompressedImage, Image, JointState
from std_msgs.msg import String

from efm_interfaces.msg import Observation
from efm_ros.conversions import (
    ENCODINGS,
    compressed_to_image,
    joint_positions,
    make_observation,
    msg_to_image,
    parse_episode_event,
)
from efm_ros.conversions import stamp_ns as _stamp_ns
from efm_ros.diagnostics import Diagnostics
from efm_ros.params import Parameters
from efm_ros.qos import LATCHED, RELIABLE, SENSOR
from efm_ros.spin import NodeEntry, run_node

LAYOUTS = ("per_camera", "aloha_stacked", "proprio_only")
RESIZE_METHODS = ("area", "nearest")
#: cameras of the ALOHA layout, in ``cameras.names`` order: (top, table), (left, right wrist)
ALOHA_CAMERAS = 4


# -- image geometry (numpy only) ----------------------------------------------------------
def _area_axis(image: np.ndarray, size: int, axis: int) -> np.ndarray:
    """Box-filter ``image`` to ``size`` samples along ``axis``, with exact fractional coverage.

    Output pixel ``i`` covers ``[i * L / size, (i + 1) * L / size)`` of the ``L`` input pixels;
    each input pixel it overlaps contributes in proportion to the overlap. The few (at most
    ``ceil(L / size) + 1``) overlapped pixels are gathered as whole slices, so the cost is a
    handful of vectorised multiply-adds rather than a per-pixel loop.
    """
    length = image.shape[axis]
    if length == size:
        return image.astype(np.float32, copy=False)
    edges = np.linspace(0.0, float(length), size + 1)
    first = np.floor(edges[:-1]).astype(np.intp)
    widths = edges[1:] - edges[:-1]
    shape = [1] * image.ndim
    shape[axis] = size
    out_shape = list(image.shape)
    out_shape[axis] = size
    out = np.zeros(out_shape, dtype=np.float32)
    for k in range(int(np.ceil(length / size)) + 1):
        index = first + k
        overlap = np.minimum(edges[1:], index + 1) - np.maximum(edges[:-1], index)
        weight = (np.clip(overlap, 0.0, None) / widths).astype(np.float32)
        if not weight.any():
            continue
        out += np.take(image, np.minimum(index, length - 1), axis=axis) * weight.reshape(shape)
    return out


def resize(image: np.ndarray, height: int, width: int, method: str = "area") -> np.ndarray:
    """Resize an ``(H, W, C)`` uint8 image with numpy: ``area`` (box filter) or ``nearest``."""
    in_h, in_w = image.shape[:2]
    if (in_h, in_w) == (height, width):
        return image
    if method == "nearest":
        rows = np.minimum(((np.arange(height) + 0.5) * in_h / height).astype(np.intp), in_h - 1)
        cols = np.minimum(((np.arange(width) + 0.5) * in_w / width).astype(np.intp), in_w - 1)
        return image[rows[:, None], cols]
    if method != "area":
        raise ValueError(f"resize method must be one of {RESIZE_METHODS}, got {method!r}")
    out = _area_axis(_area_axis(image, height, 0), width, 1)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def crop(image: np.ndarray, box: Sequence[int]) -> np.ndarray:
    """Crop ``[top, left, height, width]`` (0 height/width: to the edge); ValueError if outside."""
    top, left, height, width = (int(v) for v in box)
    in_h, in_w = image.shape[:2]
    height = height or in_h - top
    width = width or in_w - left
    if top < 0 or left < 0 or height <= 0 or width <= 0 or top + height > in_h:
        raise ValueError(f"crop {list(box)} does not fit a {in_w}x{in_h} image")
    if left + width > in_w:
        raise ValueError(f"crop {list(box)} does not fit a {in_w}x{in_h} image")
    return image[top : top + height, left : left + width]


def stack_pair(
    upper: np.ndarray,
    lower: np.ndarray,
    height: int,
    width: int,
    band: int,
    resizer: Callable[[np.ndarray, int, int], np.ndarray],
) -> np.ndarray:
    """Two views stacked vertically with a black band (paper Appendix D.3).

    ``upper`` fills rows ``[0, h0)`` and ``lower`` rows ``[h0 + band, height)``, each resized
    to the full ``width``, with ``h0 = (height - band) // 2``.
    """
    upper_h = (height - band) // 2
    lower_h = height - band - upper_h
    out = np.zeros((height, width, 3), dtype=np.uint8)
    out[:upper_h] = resizer(upper, upper_h, width)
    out[upper_h + band :] = resizer(lower, lower_h, width)
    return out


# -- synchronisation ----------------------------------------------------------------------
class StampSynchronizer:
    """Approximate-time matching of N streams by header stamp (message_filters is absent).

    ``add`` queues a frame and returns ``(newest_stamp_ns, [item per stream])`` when the new
    frame completes a set whose stamps span at most ``tolerance_ns``: for each other stream
    the queued frame closest to the new one is taken. Frames older than a published set's
    member are dropped, as is the oldest frame when a queue overflows (``dropped`` counts
    both). Stamps must increase per stream (ValueError otherwise).
    """

    def __init__(self, streams: int, tolerance_ns: int, queue_size: int) -> None:
        self.tolerance_ns = int(tolerance_ns)
        self.queue_size = int(queue_size)
        self._queues: list[deque[tuple[int, Any]]] = [deque() for _ in range(streams)]
        self._last: list[int | None] = [None] * streams
        self.dropped = 0

    def add(self, stream: int, stamp_ns: int, item: Any) -> tuple[int, list[Any]] | None:
        last = self._last[stream]
        if last is not None and stamp_ns <= last:
            raise ValueError(
                f"stamp {stamp_ns * 1e-9:.6f} s is not after the previous {last * 1e-9:.6f} s"
            )
        self._last[stream] = stamp_ns
        queue = self._queues[stream]
        queue.append((stamp_ns, item))
        if len(queue) > self.queue_size:
            queue.popleft()
            self.dropped += 1
        picks = []
        for index, other in enumerate(self._queues):
            if index == stream:
                picks.append(len(queue) - 1)
            elif not other:
                return None
            else:
                picks.append(min(range(len(other)), key=lambda k: abs(other[k][0] - stamp_ns)))
        stamps = [self._queues[i][k][0] for i, k in enumerate(picks)]
        if max(stamps) - min(stamps) > self.tolerance_ns:
            return None
        items = []
        for index, pick in enumerate(picks):
            queue = self._queues[index]
            for _ in range(pick):
                queue.popleft()
                self.dropped += 1
            items.append(queue.popleft()[1])
        return max(stamps), items


def _check_image(msg: Image) -> tuple[str, str] | None:
    """Cheap header checks of a raw Image: ``(reason, detail)`` or None when it looks valid."""
    if msg.encoding not in ENCODINGS:
        return "encoding", f"unsupported encoding {msg.encoding!r}; valid: {sorted(ENCODINGS)}"
    if msg.height == 0 or msg.width == 0 or len(msg.data) == 0:
        return "empty_image", f"empty image ({msg.width}x{msg.height}, {len(msg.data)} bytes)"
    channels = ENCODINGS[msg.encoding]
    if msg.step < msg.width * channels or len(msg.data) != msg.step * msg.height:
        return "image_size", (
            f"{msg.width}x{msg.height} {msg.encoding}: step {msg.step}, {len(msg.data)} bytes "
            f"(need step >= {msg.width * channels} and step*height bytes)"
        )
    return None


def _list_validator(name: str, length: int) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        if len(value) != length:
            return f"{name} needs {length} entries (one per camera), got {len(value)}"
        return None

    return check


class CameraIngestNode(Node):
    """Synchronises, crops, resizes / stacks camera frames and publishes Observations."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__("camera_ingest", **kwargs)
        p = Parameters(self)
        self.station: str = p.declare("station", "station_0", "Station name.", read_only=True)
        names = list(
            p.declare(
                "cameras.names",
                ["top"],
                "Camera names, in Observation order (aloha_stacked: top, table, left_wrist, "
                "right_wrist).",
                read_only=True,
                validator=lambda v: (
                    None if v and len(set(v)) == len(v) else "names must be non-empty and unique"
                ),
            )
        )
        topics = p.declare(
            "cameras.topics",
            [f"camera/{name}/image_raw" for name in names],
            "Image topic per camera (relative to the station namespace).",
            read_only=True,
            validator=_list_validator("cameras.topics", len(names)),
        )
        compressed = p.declare(
            "cameras.compressed",
            [False] * len(names),
            "Per camera: subscribe sensor_msgs/CompressedImage on '<topic>/compressed'.",
            read_only=True,
            validator=_list_validator("cameras.compressed", len(names)),
        )
        self.tolerance_s: float = p.declare(
            "sync.tolerance_s",
            0.02,
            "Largest stamp spread within one synchronised set [s].",
            min_value=1e-6,
            max_value=1.0,
            on_change=self._set_tolerance,
        )
        queue_size = p.declare(
            "sync.queue_size",
            10,
            "Frames queued per camera while waiting for a match.",
            read_only=True,
            min_value=1,
            max_value=100,
        )
        self.layout: str = p.declare(
            "output.layout",
            "per_camera",
            "per_camera: each camera resized to output.size; aloha_stacked: 4 views stacked "
            "pairwise with a black band into 2 images (paper Appendix D.3); proprio_only: no "
            "cameras, one Observation per joint_states message (state-based embodiments).",
            read_only=True,
            choices=LAYOUTS,
            validator=lambda v: (
                f"aloha_stacked needs exactly {ALOHA_CAMERAS} cameras, got {len(names)}"
                if v == "aloha_stacked" and len(names) != ALOHA_CAMERAS
                else None
            ),
        )
        size = p.declare(
            "output.size",
            [224, 224],
            "Output image [height, width] in pixels.",
            read_only=True,
            validator=lambda v: (
                None
                if len(v) == 2 and all(1 <= x <= 4096 for x in v)
                else "output.size must be [height, width], each in 1..4096"
            ),
        )
        self.size = (int(size[0]), int(size[1]))
        self.crop_box = [
            int(v)
            for v in p.declare(
                "output.crop",
                [0, 0, 0, 0],
                "Crop [top, left, height, width] applied to every camera before resizing "
                "(0 height/width: to the image edge; [0, 0, 0, 0]: no crop).",
                read_only=True,
                validator=lambda v: (
                    None
                    if len(v) == 4 and all(x >= 0 for x in v)
                    else "output.crop must be 4 non-negative integers [top, left, height, width]"
                ),
            )
        ]
        self.band_px: int = p.declare(
            "output.band_px",
            4,
            "aloha_stacked: black band between two stacked views [px].",
            read_only=True,
            min_value=0,
            max_value=64,
            validator=lambda v: (
                None if self.size[0] - v >= 2 else "output.band_px leaves no room for two views"
            ),
        )
        self.resize_method: str = p.declare(
            "output.resize",
            "area",
            "Resize filter: area (box average) or nearest.",
            choices=RESIZE_METHODS,
            on_change=self._set_resize,
        )
        self.max_rate_hz: float = p.declare(
            "output.max_rate_hz",
            0.0,
            "Publish at most this often (set it to the control rate so previous_images is one "
            "control step old); 0: every synchronised set [Hz].",
            min_value=0.0,
            max_value=1000.0,
            on_change=self._set_rate,
        )
        self.frame_id: str = p.declare(
            "output.frame_id", "base_link", "Observation header frame.", read_only=True
        )
        self.proprio_enabled: bool = p.declare(
            "proprio.enabled",
            False,
            "Add joint positions from joint_states to each Observation.",
            read_only=True,
        )
        self.proprio_names: list[str] = list(
            p.declare(
                "proprio.names",
                ["ee_x", "ee_y"],
                "Joints taken from joint_states, in Observation order.",
                read_only=True,
                validator=lambda v: None if v else "proprio.names must not be empty",
            )
        )
        self.proprio_max_age_s: float = p.declare(
            "proprio.max_age_s",
            0.5,
            "Largest |frame stamp - joint state stamp| accepted [s].",
            min_value=0.0,
            on_change=self._set_max_age,
        )

        self.camera_names = names
        if self.layout == "aloha_stacked":
            self.output_names = [f"{names[0]}+{names[1]}", f"{names[2]}+{names[3]}"]
        else:
            self.output_names = list(names)
        self.sync = StampSynchronizer(len(names), int(self.tolerance_s * 1e9), queue_size)
        self.diag = Diagnostics(self)
        self.instruction = ""
        self.step = 0
        self.previous: dict[str, np.ndarray] | None = None
        self.last_published_ns: int | None = None
        self.joints: tuple[int, np.ndarray] | None = None  # newest joint state
        self.joint_history: deque[tuple[int, np.ndarray]] = deque(maxlen=64)
        self.waiting_set: tuple[int, list[Image | CompressedImage]] | None = None
        self.wait_timer = None

        self.observation_pub = self.create_publisher(Observation, "observation", SENSOR)
        self.camera_subs = []
        if self.layout == "proprio_only":
            if not self.proprio_enabled:
                raise ValueError("output.layout proprio_only needs proprio.enabled: true")
            names, topics, compressed = [], [], []
        for index, (name, topic, is_compressed) in enumerate(
            zip(names, topics, compressed, strict=True)
        ):
            msg_type = CompressedImage if is_compressed else Image
            full_topic = f"{topic}/compressed" if is_compressed else topic
            self.camera_subs.append(
                self.create_subscription(
                    msg_type,
                    full_topic,
                    lambda msg, i=index: self.on_frame(i, msg),
                    SENSOR,
                )
            )
            self.get_logger().info(f"camera {name!r} <- {self.resolve_topic_name(full_topic)}")
        if self.proprio_enabled:
            self.joint_sub = self.create_subscription(
                JointState, "joint_states", self.on_joint_state, SENSOR
            )
        self.instruction_sub = self.create_subscription(
            String, "instruction", self.on_instruction, LATCHED
        )
        self.event_sub = self.create_subscription(
            String, "episode/events", self.on_episode_event, RELIABLE
        )
        self.get_logger().info(
            f"camera_ingest ready: {len(names)} camera(s), layout={self.layout}, "
            f"size={self.size[0]}x{self.size[1]}, tolerance={self.tolerance_s * 1e3:.1f} ms"
        )

    # -- parameter changes ----------------------------------------------------------------
    def _set_tolerance(self, value: float) -> None:
        self.tolerance_s = value
        if hasattr(self, "sync"):  # also called while declaring, before sync exists
            self.sync.tolerance_ns = int(value * 1e9)

    def _set_resize(self, value: str) -> None:
        self.resize_method = value

    def _set_rate(self, value: float) -> None:
        self.max_rate_hz = value

    def _set_max_age(self, value: float) -> None:
        self.proprio_max_age_s = value

    # -- inputs ---------------------------------------------------------------------------
    def on_frame(self, index: int, msg: Image | CompressedImage) -> None:
        """Validate a frame's header, queue it, publish when it completes a set."""
        name = self.camera_names[index]
        self.diag.count(f"frames_in.{name}")
        if isinstance(msg, Image):
            problem = _check_image(msg)
            if problem is not None:
                self.diag.reject(problem[0], f"camera {name!r}: {problem[1]}")
                return
        elif len(msg.data) == 0:
            self.diag.reject("empty_image", f"camera {name!r}: empty compressed image")
            return
        try:
            matched = self.sync.add(index, _stamp_ns(msg), msg)
        except ValueError as error:
            self.diag.reject("out_of_order", f"camera {name!r}: {error}")
            return
        self.diag.counters["dropped.unsynced"] = self.sync.dropped
        if matched is not None:
            self.publish_set(*matched)

    def on_joint_state(self, msg: JointState) -> None:
        try:
            values = joint_positions(msg, self.proprio_names)
        except ValueError as error:
            reason = "joint_state_nan" if "NaN" in str(error) else "joint_state"
            self.diag.reject(reason, str(error))
            return
        stamp = _stamp_ns(msg)
        if self.joints is not None and stamp < self.joints[0]:
            self.diag.reject(
                "out_of_order", f"joint_states stamp {stamp * 1e-9:.6f} s is older than the last"
            )
            return
        self.joints = (stamp, values)
        self.joint_history.append(self.joints)
        self.diag.count("joint_states_in")
        if self.waiting_set is not None and stamp >= self.waiting_set[0] - self.tolerance_ns:
            self.release_waiting_set()
        if self.layout == "proprio_only":
            observation = make_observation(
                station=self.station,
                step=self.step,
                instruction=self.instruction,
                images={},
                proprioception=values.tolist(),
                proprio_names=self.proprio_names,
                stamp=msg.header.stamp,
                frame_id=self.frame_id,
            )
            self.observation_pub.publish(observation)
            self.diag.count("observations_out")
            self.step += 1

    def on_instruction(self, msg: String) -> None:
        self.instruction = msg.data
        self.diag.count("instructions_in")
        self.get_logger().info(f"instruction: {msg.data!r}")

    def on_episode_event(self, msg: String) -> None:
        try:
            event = parse_episode_event(msg.data)
        except ValueError as error:
            self.diag.reject("episode_event", str(error))
            return
        if event["event"] == "start":
            self.step = 0
            self.previous = None
            self.waiting_set = None
            self.last_published_ns = None
            self.diag.count("episodes")

    # -- output ---------------------------------------------------------------------------
    def publish_set(
        self, stamp_ns: int, frames: list[Image | CompressedImage], wait: bool = True
    ) -> None:
        """Decode, crop, resize/stack one synchronised set and publish its Observation."""
        if (
            self.max_rate_hz > 0
            and self.last_published_ns is not None
            and stamp_ns - self.last_published_ns < 1e9 / self.max_rate_hz - self.tolerance_s * 1e9
        ):
            self.diag.count("sets_skipped_rate")
            return
        proprio: list[float] = []
        if self.proprio_enabled:
            joints = self.joints_for(stamp_ns, frames, wait)
            if joints is None:
                return
            proprio = joints.tolist()
        images: list[np.ndarray] = []
        for name, frame in zip(self.camera_names, frames, strict=True):
            try:
                image = (
                    msg_to_image(frame) if isinstance(frame, Image) else compressed_to_image(frame)
                )
                if any(self.crop_box):
                    image = crop(image, self.crop_box)
            except ValueError as error:
                reason = "crop" if "crop" in str(error) else "decode"
                self.diag.reject(reason, f"camera {name!r}: {error}")
                return
            images.append(image)
        outputs = self.layout_images(images)
        stamp = frames[int(np.argmax([_stamp_ns(f) for f in frames]))].header.stamp
        msg = make_observation(
            station=self.station,
            step=self.step,
            instruction=self.instruction,
            images=outputs,
            previous_images=self.previous,
            proprioception=proprio,
            proprio_names=self.proprio_names if self.proprio_enabled else (),
            stamp=stamp,
            frame_id=self.frame_id,
        )
        self.observation_pub.publish(msg)
        self.diag.count("observations_out")
        self.previous = outputs
        self.step += 1
        self.last_published_ns = stamp_ns

    def release_waiting_set(self) -> None:
        """Publish the set that waited for its joint state (now here, or timed out)."""
        if self.wait_timer is not None:
            self.destroy_timer(self.wait_timer)
            self.wait_timer = None
        if self.waiting_set is not None:
            waiting, self.waiting_set = self.waiting_set, None
            self.publish_set(*waiting, wait=False)

    @property
    def tolerance_ns(self) -> int:
        return int(self.tolerance_s * 1e9)

    def joints_for(
        self, stamp_ns: int, frames: list[Image | CompressedImage], wait: bool
    ) -> np.ndarray | None:
        """Joint positions for a frame set stamped ``stamp_ns``; None = not usable now
        (with ``wait`` the set is kept until a joint state at its stamp arrives or
        ``sync.tolerance_s`` passes)."""
        fresh = self.joints is not None and self.joints[0] >= stamp_ns - self.tolerance_ns
        if wait and not fresh:
            if self.waiting_set is not None:
                self.diag.count("sets_dropped_waiting_joint_states")
            self.waiting_set = (stamp_ns, frames)
            self.diag.count("sets_waiting_joint_states")
            if self.wait_timer is None:
                self.wait_timer = self.create_timer(
                    max(self.tolerance_s, 1e-3), self.release_waiting_set
                )
            return None
        if not self.joint_history:
            return None
        nearest_ns, values = min(self.joint_history, key=lambda j: abs(j[0] - stamp_ns))
        age_s = abs(stamp_ns - nearest_ns) * 1e-9
        if age_s > self.proprio_max_age_s:
            self.diag.reject(
                "joint_state_stale",
                f"joint_states is {age_s:.3f} s from the frames (> proprio.max_age_s)",
            )
            return None
        return values

    def layout_images(self, images: list[np.ndarray]) -> dict[str, np.ndarray]:
        """Apply ``output.layout`` to decoded RGB frames (one per camera, in order)."""
        height, width = self.size

        def resizer(image: np.ndarray, h: int, w: int) -> np.ndarray:
            return resize(image, h, w, self.resize_method)

        if self.layout == "aloha_stacked":
            pairs = [(images[0], images[1]), (images[2], images[3])]
            stacked = [stack_pair(a, b, height, width, self.band_px, resizer) for a, b in pairs]
            return dict(zip(self.output_names, stacked, strict=True))
        return {
            name: resizer(image, height, width)
            for name, image in zip(self.output_names, images, strict=True)
        }


ENTRY = NodeEntry(CameraIngestNode)


def main(args: list[str] | None = None) -> None:
    run_node(ENTRY, args)


if __name__ == "__main__":
    main()
