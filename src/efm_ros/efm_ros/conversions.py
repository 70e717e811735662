"""Messages <-> numpy arrays, validated (STYLE.md: nodes are thin adapters).

Images are converted with numpy (ROS 2 ``cv_bridge`` is not installable from PyPI; see
PLATFORM.md). Every field read from a message is checked; bad input raises
:class:`ValueError` with a reason the node logs and counts, never crashes on.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
from builtin_interfaces.msg import Time
from sensor_msgs.msg import CompressedImage, Image, JointState

from efm_interfaces.msg import Observation

#: encodings accepted from cameras, with their channel count
ENCODINGS = {"rgb8": 3, "bgr8": 3, "mono8": 1, "rgba8": 4, "bgra8": 4}


def image_to_msg(
    array: np.ndarray, *, encoding: str = "rgb8", stamp: Time | None = None, frame_id: str = ""
) -> Image:
    """Build a ``sensor_msgs/Image`` from an ``(H, W, C)`` or ``(H, W)`` uint8 array."""
    image = np.asarray(array)
    if image.dtype != np.uint8:
        raise ValueError(f"image must be uint8, got {image.dtype}")
    if encoding not in ENCODINGS:
        raise ValueError(f"unsupported encoding {encoding!r}; valid: {sorted(ENCODINGS)}")
    channels = ENCODINGS[encoding]
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3 or image.shape[2] != channels or 0 in image.shape:
        raise ValueError(f"{encoding} image must have shape (H, W, {channels}), got {array.shape}")
    msg = Image()
    if stamp is not None:
        msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    msg.height, msg.width = int(image.shape[0]), int(image.shape[1])
    msg.encoding = encoding
    msg.is_bigendian = 0
    msg.step = msg.width * channels
    msg.data = np.ascontiguousarray(image).tobytes()  # bytes: ~30x faster than an array
    return msg


def msg_to_image(msg: Image) -> np.ndarray:
    """``sensor_msgs/Image`` -> ``(H, W, 3)`` uint8 RGB (mono is repeated, alpha dropped).

    Refuses unknown encodings, empty images, a ``step`` that does not match the width, and
    a data size that does not match ``step * height``.
    """
    if msg.encoding not in ENCODINGS:
        raise ValueError(f"unsupported image encoding {msg.encoding!r}; valid: {sorted(ENCODINGS)}")
    channels = ENCODINGS[msg.encoding]
    if msg.height == 0 or msg.width == 0:
        raise ValueError(f"empty image ({msg.width}x{msg.height})")
    if msg.step < msg.width * channels:
        raise ValueError(
            f"image step {msg.step} is smaller than width*channels = {msg.width * channels}"
        )
    data = np.frombuffer(bytes(msg.data), dtype=np.uint8)
    if data.size != msg.step * msg.height:
        raise ValueError(
            f"image data has {data.size} bytes, expected step*height = {msg.step * msg.height}"
        )
    rows = data.reshape(msg.height, msg.step)[:, : msg.width * channels]
    image = rows.reshape(msg.height, msg.width, channels)
    if msg.encoding in ("bgr8", "bgra8"):
        image = image[:, :, 2::-1]
    elif msg.encoding == "rgba8":
        image = image[:, :, :3]
    elif channels == 1:
        image = np.repeat(image, 3, axis=2)
    return np.ascontiguousarray(image)


def make_observation(
    *,
    station: str,
    step: int,
    instruction: str,
    images: dict[str, np.ndarray],
    previous_images: dict[str, np.ndarray] | None = None,
    proprioception: Sequence[float] = (),
    proprio_names: Sequence[str] = (),
    stamp: Time | None = None,
    frame_id: str = "",
) -> Observation:
    """Build an ``efm_interfaces/Observation`` from arrays (cameras in dict order)."""
    if len(proprioception) != len(proprio_names):
        raise ValueError(
            f"{len(proprioception)} proprioception values but {len(proprio_names)} names"
        )
    state = np.asarray(proprioception, dtype=np.float32)
    if not np.all(np.isfinite(state)):
        raise ValueError("proprioception contains NaN/inf")
    msg = Observation()
    if stamp is not None:
        msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    msg.station = station
    msg.step = int(step)
    msg.instruction = instruction
    msg.camera_names = list(images)
    msg.images = [image_to_msg(img, stamp=stamp, frame_id=frame_id) for img in images.values()]
    if previous_images:
        if list(previous_images) != list(images):
            raise ValueError("previous_images must name the same cameras as images, same order")
        msg.previous_images = [
            image_to_msg(img, stamp=stamp, frame_id=frame_id) for img in previous_images.values()
        ]
    msg.proprio_names = list(proprio_names)
    msg.proprioception = state.tolist()
    return msg


def observation_arrays(msg: Observation) -> dict[str, object]:
    """Validate an Observation and return its content as arrays.

    Returns ``{"images": {name: (H,W,3) uint8}, "previous_images": {...} (current frame
    repeated when absent), "proprioception": float32 array, "proprio_names": [...],
    "instruction": str, "station": str, "step": int}``.
    """
    names = list(msg.camera_names)
    if len(names) != len(msg.images):
        raise ValueError(f"{len(msg.images)} images but {len(names)} camera names")
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate camera names {names}")
    if msg.previous_images and len(msg.previous_images) != len(names):
        raise ValueError(f"{len(msg.previous_images)} previous images for {len(names)} cameras")
    images = {name: msg_to_image(img) for name, img in zip(names, msg.images, strict=True)}
    if msg.previous_images:
        previous = {
            name: msg_to_image(img) for name, img in zip(names, msg.previous_images, strict=True)
        }
        for name in names:
            if previous[name].shape != images[name].shape:
                raise ValueError(f"camera {name!r}: previous frame shape differs from current")
    else:
        previous = dict(images)
    state = np.asarray(msg.proprioception, dtype=np.float32)
    if len(msg.proprio_names) != state.size:
        raise ValueError(f"{state.size} proprioception values but {len(msg.proprio_names)} names")
    if not np.all(np.isfinite(state)):
        raise ValueError("proprioception contains NaN/inf")
    return {
        "images": images,
        "previous_images": previous,
        "proprioception": state,
        "proprio_names": list(msg.proprio_names),
        "instruction": msg.instruction,
        "station": msg.station,
        "step": int(msg.step),
    }


#: CompressedImage formats accepted (image_transport writes e.g. "rgb8; jpeg compressed bgr8")
COMPRESSED_FORMATS = ("jpeg", "jpg", "png")


def compressed_to_image(msg: CompressedImage) -> np.ndarray:
    """``sensor_msgs/CompressedImage`` (jpeg or png) -> ``(H, W, 3)`` uint8 RGB, via Pillow.

    Refuses unknown formats, empty payloads and data Pillow cannot decode.
    """
    import io

    from PIL import Image as PilImage
    from PIL import UnidentifiedImageError

    fmt = msg.format.lower()
    if not any(name in fmt for name in COMPRESSED_FORMATS):
        raise ValueError(f"unsupported compressed image format {msg.format!r}; valid: jpeg, png")
    data = bytes(msg.data)
    if not data:
        raise ValueError("empty compressed image")
    try:
        with PilImage.open(io.BytesIO(data)) as pil:
            image = np.asarray(pil.convert("RGB"))
    except (UnidentifiedImageError, OSError, SyntaxError) as error:
        raise ValueError(f"cannot decode {msg.format!r} image: {error}") from error
    if 0 in image.shape:
        raise ValueError(f"empty image {image.shape}")
    return image


def image_to_compressed_msg(
    array: np.ndarray, *, fmt: str = "png", stamp: Time | None = None, frame_id: str = ""
) -> CompressedImage:
    """Encode an ``(H, W, 3)`` uint8 RGB array as a jpeg or png ``sensor_msgs/CompressedImage``."""
    import io

    from PIL import Image as PilImage

    if fmt not in ("jpeg", "png"):
        raise ValueError(f"fmt must be 'jpeg' or 'png', got {fmt!r}")
    image = np.asarray(array)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3 or 0 in image.shape:
        raise ValueError(f"expected a non-empty (H, W, 3) uint8 image, got {image.shape}")
    buffer = io.BytesIO()
    PilImage.fromarray(image).save(buffer, format=fmt.upper())
    msg = CompressedImage(format=fmt, data=buffer.getvalue())
    if stamp is not None:
        msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    return msg


def joint_positions(msg: JointState, names: Sequence[str]) -> np.ndarray:
    """Positions of ``names`` (in that order) from a ``sensor_msgs/JointState`` as float32.

    Refuses name/position length mismatches, missing joints and NaN/inf values.
    """
    if len(msg.name) != len(msg.position):
        raise ValueError(
            f"joint_states has {len(msg.name)} names but {len(msg.position)} positions"
        )
    index = {name: i for i, name in enumerate(msg.name)}
    missing = [name for name in names if name not in index]
    if missing:
        raise ValueError(f"joint_states lacks joints {missing}")
    values = np.asarray([msg.position[index[name]] for name in names], dtype=np.float32)
    if not np.all(np.isfinite(values)):
        raise ValueError("joint_states contains NaN/inf positions")
    return values


#: what an episode id may be: it names a bag folder and a spool file on disk
EPISODE_ID_PATTERN = re.compile(r"[A-Za-z0-9_\-][A-Za-z0-9_.\-]{0,127}")


def check_episode_id(episode_id: object) -> str:
    """An episode id that is safe as a file or folder name, or ValueError.

    1 to 128 of letters, digits, ``_ . -``, not starting with a dot: no path separators,
    NUL bytes, ``..`` or names past a file system's 255-byte limit (issue 17, defect 6).
    """
    if not isinstance(episode_id, str) or not EPISODE_ID_PATTERN.fullmatch(episode_id):
        shown = repr(episode_id)
        shown = shown if len(shown) <= 80 else shown[:77] + "..."
        raise ValueError(f"episode_id must match {EPISODE_ID_PATTERN.pattern}, got {shown}")
    return episode_id


#: keys of an ``episode/events`` message (std_msgs/String JSON), per event
EPISODE_EVENT_KEYS = {
    "start": {
        "required": {"episode_id"},
        "optional": {"instruction", "policy_version", "start_ns"},
    },
    "stop": {"required": {"episode_id"}, "optional": {"success", "length", "outcome"}},
}
#: how an episode ended (stop event ``outcome``); the last two are never learned from
EPISODE_OUTCOMES = ("success", "max_steps", "aborted", "intervened")


def parse_episode_event(text: str) -> dict[str, object]:
    """Validate one ``episode/events`` JSON message and return it as a dict.

    ``{"event": "start", "episode_id": str, "instruction": str, "policy_version": int >= 0,
    "start_ns": int >= 0}`` (observations stamped before ``start_ns`` are the previous
    episode's)
    or ``{"event": "stop", "episode_id": str, "success": bool, "length": int >= 0,
    "outcome": one of EPISODE_OUTCOMES}``.
    ``episode_id`` must be a safe folder name (letters, digits, ``_ . -``). Unknown events
    or keys are refused (a misspelt key must not be dropped silently).
    """
    import json

    try:
        event = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"episode event is not JSON: {error}") from error
    if not isinstance(event, dict):
        raise ValueError(f"episode event must be a JSON object, got {type(event).__name__}")
    kind = event.get("event")
    if kind not in EPISODE_EVENT_KEYS:
        raise ValueError(f"episode event 'event' must be one of {sorted(EPISODE_EVENT_KEYS)}")
    keys = EPISODE_EVENT_KEYS[kind]
    given = set(event) - {"event"}
    if keys["required"] - given:
        raise ValueError(f"{kind} event lacks {sorted(keys['required'] - given)}")
    unknown = given - keys["required"] - keys["optional"]
    if unknown:
        raise ValueError(f"{kind} event has unknown keys {sorted(unknown)}")
    check_episode_id(event["episode_id"])
    checks = {
        "instruction": lambda v: isinstance(v, str),
        "policy_version": lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0,
        "start_ns": lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0,
        "success": lambda v: isinstance(v, bool),
        "length": lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0,
        "outcome": lambda v: v in EPISODE_OUTCOMES,
    }
    for key in given - {"episode_id"}:
        if not checks[key](event[key]):
            raise ValueError(f"{kind} event: invalid {key} {event[key]!r}")
    return event


def stamp_ns(msg) -> int:
    """A message's header stamp in nanoseconds: the key pairing an action with the
    observation it answers (ActionCommand.header.stamp = Observation.header.stamp)."""
    return int(msg.header.stamp.sec) * 1_000_000_000 + int(msg.header.stamp.nanosec)
