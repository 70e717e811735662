"""Embodiment adapters: what a station's commands, joints and cameras look like.

Nodes never hard-code an embodiment: they look one up here by name (the ``embodiment``
parameter) and validate every ActionCommand against it. PushTable/BananaTable take one
2-D end-effector delta per 5 Hz tick (paper Appendix D.1); ALOHA takes 14 joint targets
in chunks of 5 predicted at 10 Hz and executed by a 50 Hz driver (Appendix D.3), with
four cameras stacked into two images. Adding an embodiment is adding an entry.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from efm_interfaces.msg import ActionCommand
from efm_sim.aloha_layout import JOINT_HIGH, JOINT_LOW, STATE_NAMES


@dataclass(frozen=True)
class Embodiment:
    """Static description of one robot type."""

    name: str
    #: one name per commanded degree of freedom
    action_names: tuple[str, ...]
    #: actions per command (ALOHA: 5)
    chunk_length: int
    #: time between the actions of a chunk [s]
    period_s: float
    #: per-dof command limits (clipped, in command units)
    action_low: tuple[float, ...]
    action_high: tuple[float, ...]
    #: proprioception names published on joint_states
    proprio_names: tuple[str, ...]
    #: camera names (topics ``camera/<name>/image_raw``)
    camera_names: tuple[str, ...]
    #: command units, for documentation and rviz labels
    units: str = "m"

    @property
    def dof(self) -> int:
        return len(self.action_names)

    def clip(self, values: np.ndarray) -> np.ndarray:
        """Clip a ``(chunk, dof)`` array to the command limits."""
        return np.clip(values, self.action_low, self.action_high)

    def command_values(self, msg: ActionCommand) -> np.ndarray:
        """Validate an ActionCommand for this embodiment; return ``(chunk, dof)`` float64.

        Raises ValueError naming the problem (names, chunk size, value count, NaN/inf).
        A ``hold`` command returns an empty ``(0, dof)`` array.
        """
        if msg.hold:
            return np.zeros((0, self.dof))
        names = tuple(msg.names)
        if names and names != self.action_names:
            raise ValueError(f"command names {list(names)} != {list(self.action_names)}")
        if msg.chunk_length < 1:
            raise ValueError(f"chunk_length must be >= 1, got {msg.chunk_length}")
        values = np.asarray(msg.values, dtype=np.float64)
        if values.size != msg.chunk_length * self.dof:
            raise ValueError(
                f"{values.size} values for chunk_length {msg.chunk_length} x {self.dof} dof"
            )
        if not np.all(np.isfinite(values)):
            raise ValueError("command contains NaN/inf")
        return values.reshape(msg.chunk_length, self.dof)


#: ALOHA's 14 joints, left arm then right arm (Appendix D.3): commanded and observed alike
ALOHA_JOINTS = STATE_NAMES
_TABLE_LIMIT = 0.03  # m per tick, efm_sim's TabletopEnv action clip

EMBODIMENTS: dict[str, Embodiment] = {
    "pushtable": Embodiment(
        name="pushtable",
        action_names=("dx", "dy"),
        chunk_length=1,
        period_s=0.2,
        action_low=(-_TABLE_LIMIT,) * 2,
        action_high=(_TABLE_LIMIT,) * 2,
        proprio_names=("ee_x", "ee_y"),
        camera_names=("top",),
    ),
    "pointmass": Embodiment(
        name="pointmass",
        action_names=("ax", "ay"),
        chunk_length=1,
        period_s=0.1,
        action_low=(-1.0, -1.0),
        action_high=(1.0, 1.0),
        proprio_names=("x", "y", "vx", "vy", "goal_x", "goal_y"),
        camera_names=(),
        units="normalised acceleration",
    ),
    "aloha": Embodiment(
        name="aloha",
        action_names=ALOHA_JOINTS,
        chunk_length=5,
        period_s=0.1,
        # what aloha_efm decodes and aloha_bridge executes: vx300s joint targets, not the
        # model's [-1, 1] tokens (clipping at +-1 would cut every joint at 1 rad)
        action_low=JOINT_LOW,
        action_high=JOINT_HIGH,
        proprio_names=ALOHA_JOINTS,
        camera_names=("top", "table", "left_wrist", "right_wrist"),
        units="joint position [rad]; gripper 0 closed .. 1 open",
    ),
}
EMBODIMENTS["bananatable"] = Embodiment(
    **{**EMBODIMENTS["pushtable"].__dict__, "name": "bananatable"}
)


def get_embodiment(name: str) -> Embodiment:
    """Look an embodiment up by name; unknown names list the valid ones."""
    try:
        return EMBODIMENTS[name]
    except KeyError:
        raise ValueError(f"unknown embodiment {name!r}; valid: {sorted(EMBODIMENTS)}") from None
