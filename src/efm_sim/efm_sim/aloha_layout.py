"""What an ALOHA policy sees and commands: stacked camera pairs and normalised joints.

Paper Appendix D.3: the four cameras become two images, ``cam_high`` over ``cam_low``
and ``cam_left_wrist`` over ``cam_right_wrist``, each pair stacked vertically with a black
band between the views; Appendix E.2: joints and actions live in [-1, 1] before they are
binned. This module is the one home of both conventions, used alike by the Stage 1 data
path (efm_learning.aloha_data), the model backend at inference (efm_learning's
``aloha_efm``) and, by design, the ROS ``camera_ingest`` stacking (numpy only: no torch,
no ROS, no MuJoCo).

Joint normalisation: each of the 14 values maps linearly from the env's action bounds to
[-1, 1]: the actuators' ``ctrlrange`` for the 6 arm joints of each arm and [0, 1] for the
normalised gripper (``efm_sim.aloha.AlohaInsertionEnv.action_space``, checked by a test).
The same map is used for the observed ``qpos`` and the commanded joint targets, as the
paper bins joints "in an identical manner as the actions".
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from efm_sim.keys import OBS_IMAGES, OBS_PREV_IMAGES

ARMS: tuple[str, str] = ("left", "right")
ARM_JOINTS: tuple[str, ...] = (
    "waist", "shoulder", "elbow", "forearm_roll", "wrist_angle", "wrist_rotate",
)
"""A vx300s arm's joints in ``joint_states`` order (the gripper follows)."""
STATE_NAMES: tuple[str, ...] = tuple(f"{arm}_{j}" for arm in ARMS for j in (*ARM_JOINTS, "gripper"))
"""Names of the 14 values of the station state and action (Appendix D.3): 6 joints + the
normalised gripper, left arm then right arm."""

#: the two stacked images of Appendix D.3: (upper view, lower view) each
STACKED_PAIRS: tuple[tuple[str, str], ...] = (
    ("cam_high", "cam_low"),
    ("cam_left_wrist", "cam_right_wrist"),
)
#: the four views in stacking order
VIEW_ORDER: tuple[str, ...] = tuple(cam for pair in STACKED_PAIRS for cam in pair)

GRIPPER_POSITION_OPEN = 0.05800
"""Follower finger position (m) that normalised gripper 1 maps to (ALOHA/ACT value)."""
GRIPPER_POSITION_CLOSE = 0.01844
"""Follower finger position (m) that normalised gripper 0 maps to."""


def normalize_gripper(position: np.ndarray | float) -> np.ndarray | float:
    """Finger position (m) -> normalised gripper (0 closed, 1 open)."""
    return (position - GRIPPER_POSITION_CLOSE) / (GRIPPER_POSITION_OPEN - GRIPPER_POSITION_CLOSE)


def unnormalize_gripper(value: np.ndarray | float) -> np.ndarray | float:
    """Normalised gripper (0 closed, 1 open) -> finger position (m)."""
    return GRIPPER_POSITION_CLOSE + value * (GRIPPER_POSITION_OPEN - GRIPPER_POSITION_CLOSE)


_PI = 3.14158  # the vx300s MJCF's ctrlrange for the +-pi joints (not numpy's pi)
ARM_LOW: tuple[float, ...] = (-_PI, -1.85005, -1.76278, -_PI, -1.8675, -_PI)
ARM_HIGH: tuple[float, ...] = (_PI, 1.25664, 1.6057, _PI, 2.23402, _PI)
#: per-joint bounds mapped to [-1, 1]: left arm 6 joints + gripper, then the right arm
JOINT_LOW: tuple[float, ...] = (*ARM_LOW, 0.0) * 2
JOINT_HIGH: tuple[float, ...] = (*ARM_HIGH, 1.0) * 2


def normalize_joints(
    values: np.ndarray,
    low: Sequence[float] = JOINT_LOW,
    high: Sequence[float] = JOINT_HIGH,
) -> np.ndarray:
    """``(..., 14)`` joint values -> [-1, 1] per joint (not clipped; Appendix E.2)."""
    lo, hi = np.asarray(low, np.float64), np.asarray(high, np.float64)
    out = 2.0 * (np.asarray(values, np.float64) - lo) / (hi - lo) - 1.0
    return out.astype(np.float32)


def unnormalize_joints(
    values: np.ndarray,
    low: Sequence[float] = JOINT_LOW,
    high: Sequence[float] = JOINT_HIGH,
) -> np.ndarray:
    """Inverse of :func:`normalize_joints`: [-1, 1] -> joint radians / gripper [0, 1]."""
    lo, hi = np.asarray(low, np.float64), np.asarray(high, np.float64)
    out = lo + (np.asarray(values, np.float64) + 1.0) * 0.5 * (hi - lo)
    return out.astype(np.float32)


def _area_matrix(length: int, size: int) -> np.ndarray:
    """``(size, length)`` box-filter weights: output sample i averages input interval
    ``[i L / size, (i + 1) L / size)``, fractional pixels weighted by their overlap."""
    edges = np.linspace(0.0, float(length), size + 1)
    pixels = np.arange(length)
    lo = np.maximum(edges[:-1, None], pixels[None, :])
    hi = np.minimum(edges[1:, None], pixels[None, :] + 1)
    weights = np.clip(hi - lo, 0.0, None)
    return (weights / weights.sum(1, keepdims=True)).astype(np.float32)


def resize_area(images: np.ndarray, height: int, width: int) -> np.ndarray:
    """uint8 ``(..., H, W, 3)`` -> ``(..., height, width, 3)`` by area averaging (box
    filter with fractional coverage; also upsamples, as nearest-like blocks)."""
    images = np.asarray(images)
    h, w = images.shape[-3:-1]
    if (h, w) == (height, width):
        return images
    rows, cols = _area_matrix(h, height), _area_matrix(w, width)
    out = np.einsum("oh,...hwc->...owc", rows, images.astype(np.float32), optimize=True)
    out = np.einsum("pw,...owc->...opc", cols, out, optimize=True)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def stack_views(upper: np.ndarray, lower: np.ndarray, size: int, band: int) -> np.ndarray:
    """Two views ``(..., H, W, 3)`` -> one ``(..., size, size, 3)`` image (Appendix D.3).

    ``upper`` fills rows ``[0, h0)`` and ``lower`` rows ``[h0 + band, size)``, each resized
    to the full width, with ``h0 = (size - band) // 2``; the ``band`` rows between are black
    (the geometry of efm_ros.camera_ingest's ``aloha_stacked`` layout).
    """
    if not 0 <= band <= size - 2:
        raise ValueError(f"band must be in [0, size - 2 = {size - 2}], got {band}")
    upper, lower = np.asarray(upper), np.asarray(lower)
    if upper.shape[:-3] != lower.shape[:-3]:
        raise ValueError(f"views disagree on leading shape: {upper.shape} vs {lower.shape}")
    upper_h = (size - band) // 2
    lower_h = size - band - upper_h
    out = np.zeros((*upper.shape[:-3], size, size, 3), dtype=np.uint8)
    out[..., :upper_h, :, :] = resize_area(upper, upper_h, size)
    out[..., upper_h + band :, :, :] = resize_area(lower, lower_h, size)
    return out


def stack_aloha_views(views: Mapping[str, np.ndarray], size: int, band: int) -> np.ndarray:
    """The four ALOHA views -> the two stacked images of Appendix D.3.

    ``views`` maps ``cam_high``, ``cam_low``, ``cam_left_wrist``, ``cam_right_wrist`` to
    uint8 frames ``(..., H, W, 3)`` (any common leading shape, e.g. time); returns uint8
    ``(..., 2, size, size, 3)``: image 0 = cam_high over cam_low, image 1 = left wrist over
    right wrist, a ``band``-row black band between the two views of each.
    """
    missing = [cam for cam in VIEW_ORDER if cam not in views]
    if missing:
        raise ValueError(f"ALOHA stacking needs cameras {list(VIEW_ORDER)}; missing {missing}")
    pairs = [stack_views(views[a], views[b], size, band) for a, b in STACKED_PAIRS]
    return np.stack(pairs, axis=-4)


__all__ = [
    "JOINT_HIGH",
    "JOINT_LOW",
    "OBS_IMAGES",
    "OBS_PREV_IMAGES",
    "STACKED_PAIRS",
    "VIEW_ORDER",
    "normalize_joints",
    "resize_area",
    "stack_aloha_views",
    "stack_views",
    "unnormalize_joints",
]
