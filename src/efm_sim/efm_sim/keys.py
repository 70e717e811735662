"""Shared key constants for episodes, datasets and batches (LeRobot-like names).

Every package (dataset writer/reader, learners, ROS adapters) uses these strings, so
renaming a field happens in one place. Keys marked "ground truth" exist for evaluation
and debugging only and must never be fed to a policy, reward model or success detector
(paper Section 3: rewards and success come from the learned steps-to-go model).
"""

from __future__ import annotations

OBS_IMAGE = "observation.image"
"""Current camera frame, uint8 (H, W, 3)."""

OBS_PREV_IMAGE = "observation.previous_image"
"""Previous camera frame, uint8 (H, W, 3); the paper feeds two frames (Appendix D.1)."""
OBS_IMAGES = "observation.images"
"""Every camera image of an observation, uint8 (N, H, W, 3), in the order the embodiment
declares (ALOHA: the two stacked images of Appendix D.3)."""
OBS_PREV_IMAGES = "observation.previous_images"
"""The previous frame of each of ``OBS_IMAGES`` (same shape)."""

OBS_STATE = "observation.state"
"""Proprioception / low-dimensional state, float32 (PushTable: end-effector xy;
PointMass: [pos(2), vel(2), goal(2)])."""

OBS_ENV_STATE = "observation.environment_state"
"""Ground-truth object poses (PushTable: x, y, yaw per object). Evaluation/debug only."""

ACTION = "action"
"""Action applied at step t, float32 (T, action_dim)."""

INSTRUCTION = "instruction"
TASK_FAMILY = "task_family"

SUCCESS = "success"
"""Ground-truth success (evaluation only, never a learning input)."""

LENGTH = "length"
"""Number of actions T in an episode (observations have T + 1 entries)."""

ENV_NAME = "env_name"
SEED = "seed"
EPISODE_INDEX = "episode_index"
FRAME_INDEX = "frame_index"
STEPS_TO_GO = "steps_to_go"
"""T - t for transition t of a successful episode (paper Section 3); learners compute it."""

NEXT_OBS_IMAGE = "next.observation.image"
NEXT_OBS_STATE = "next.observation.state"
DONE = "done"
"""True on the last transition of an episode."""

SCHEMA_VERSION = "schema_version"

__all__ = [
    "ACTION",
    "DONE",
    "ENV_NAME",
    "EPISODE_INDEX",
    "FRAME_INDEX",
    "INSTRUCTION",
    "LENGTH",
    "NEXT_OBS_IMAGE",
    "NEXT_OBS_STATE",
    "OBS_ENV_STATE",
    "OBS_IMAGE",
    "OBS_IMAGES",
    "OBS_PREV_IMAGE",
    "OBS_PREV_IMAGES",
    "OBS_STATE",
    "SCHEMA_VERSION",
    "SEED",
    "STEPS_TO_GO",
    "SUCCESS",
    "TASK_FAMILY",
]
