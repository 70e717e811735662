"""Shared MuJoCo table-top scene and gymnasium env for PushTable and BananaTable.

A LanguageTable-like station (paper Appendix D.1): a flat square board, a cylindrical
end-effector that moves in the board plane and pushes, objects that slide and spin on
the board (planar x/y/yaw joints with friction), and a top-down orthographic RGB camera
(shadows off for fast CPU rendering). Control runs at 10 Hz: each ``step`` sets the
end-effector position target to ``current position + action`` (clipped to the board)
and runs 20 physics substeps of 5 ms.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, ClassVar

os.environ.setdefault("MUJOCO_GL", "egl")


import gymnasium as gym
import mujoco
import numpy as np
from gymnasium import spaces

from efm_sim import tasks
from efm_sim._validation import validate_action
from efm_sim.rendering import new_renderer

BOARD_HALF = 0.25
"""Half side of the square board (m)."""
EE_RADIUS = 0.02
EE_LIMIT = 0.24
"""End-effector centre stays within [-EE_LIMIT, EE_LIMIT]^2."""
OBJECT_LIMIT = 0.19
"""Object centres stay within [-OBJECT_LIMIT, OBJECT_LIMIT]^2 (joint limits)."""
ACTION_LIMIT = 0.03
"""Max end-effector displacement per control step and axis (m); 0.3 m/s at 10 Hz."""
CONTROL_HZ = 10
TIMESTEP = 0.005
SUBSTEPS = round(1.0 / (CONTROL_HZ * TIMESTEP))
LOCATION_OFFSET = 0.14
"""Board locations ("top left", ...) sit at +-LOCATION_OFFSET from the centre."""
DEFAULT_IMAGE_SIZE = 96

BOARD_RGBA = "0.93 0.92 0.88 1"
RIM_RGBA = "0.35 0.33 0.30 1"
EE_RGBA = "0.15 0.15 0.17 1"




def location_xy(name: str) -> np.ndarray:
    """Board coordinates of a named location (x right, y towards the image top)."""
    fx, fy = tasks.LOCATIONS[name]
    return np.array([fx, fy]) * LOCATION_OFFSET


@dataclass(frozen=True)
class ObjectSpec:
    """A pushable object: its geoms (XML), mass/inertia, footprint radius, friction."""

    name: str
    geoms_xml: str
    radius: float
    mass: float = 0.1
    yaw_inertia: float = 4e-5
    half_height: float = 0.015
    slide_friction: float = 0.15
    yaw_friction: float = 0.002
    limit: float = OBJECT_LIMIT
    """Centre stays within [-limit, limit]^2 (slide joint range)."""


def scene_xml(
    objects: list[ObjectSpec], assets_xml: str, width: int, height: int, model: str
) -> str:
    """MJCF of the table, end-effector, camera and ``objects``."""
    bodies = []
    for o in objects:
        bodies.append(
            f"""
    <body name="{o.name}" pos="0 0 {o.half_height}">
      <joint name="{o.name}_x" type="slide" axis="1 0 0" limited="true"
             range="{-o.limit} {o.limit}" frictionloss="{o.slide_friction}" damping="2"/>
      <joint name="{o.name}_y" type="slide" axis="0 1 0" limited="true"
             range="{-o.limit} {o.limit}" frictionloss="{o.slide_friction}" damping="2"/>
      <joint name="{o.name}_yaw" type="hinge" axis="0 0 1"
             frictionloss="{o.yaw_friction}" damping="0.002"/>
      <inertial pos="0 0 0" mass="{o.mass}"
                diaginertia="{o.yaw_inertia} {o.yaw_inertia} {o.yaw_inertia}"/>
      {o.geoms_xml}
    </body>"""
        )
    off = max(width, height, 64)
    return f"""
<mujoco model="{model}">
  <compiler angle="radian"/>
  <option timestep="{TIMESTEP}" integrator="implicitfast"/>
  <visual>
    <global offwidth="{off}" offheight="{off}"/>
    <quality shadowsize="0" offsamples="0"/>
    <headlight ambient="0.55 0.55 0.55" diffuse="0.45 0.45 0.45" specular="0 0 0"/>
  </visual>
  <default>
    <geom contype="1" conaffinity="1" condim="3" friction="0.5 0.005 0.0001"
          solref="0.01 1" solimp="0.95 0.99 0.001"/>
  </default>
  <asset>
    {assets_xml}
  </asset>
  <worldbody>
    <geom name="rim" type="box" size="{BOARD_HALF + 0.02} {BOARD_HALF + 0.02} 0.004"
          pos="0 0 -0.012" rgba="{RIM_RGBA}" contype="0" conaffinity="0"/>
    <geom name="board" type="box" size="{BOARD_HALF} {BOARD_HALF} 0.005" pos="0 0 -0.005"
          rgba="{BOARD_RGBA}" contype="0" conaffinity="0"/>
    <camera name="top" pos="0 0 1.0" xyaxes="1 0 0 0 1 0" projection="orthographic"
            fovy="{2 * (BOARD_HALF + 0.02)}"/>
    <body name="ee" pos="0 0 0.03">
      <joint name="ee_x" type="slide" axis="1 0 0" limited="true" range="{-EE_LIMIT} {EE_LIMIT}"/>
      <joint name="ee_y" type="slide" axis="0 1 0" limited="true" range="{-EE_LIMIT} {EE_LIMIT}"/>
      <geom name="ee" type="cylinder" size="{EE_RADIUS} 0.03" mass="0.3" rgba="{EE_RGBA}"/>
    </body>
    {"".join(bodies)}
  </worldbody>
  <actuator>
    <position name="ee_x" joint="ee_x" kp="300" kv="20" ctrllimited="true"
              ctrlrange="{-EE_LIMIT} {EE_LIMIT}" forcelimited="true" forcerange="-20 20"/>
    <position name="ee_y" joint="ee_y" kp="300" kv="20" ctrllimited="true"
              ctrlrange="{-EE_LIMIT} {EE_LIMIT}" forcelimited="true" forcerange="-20 20"/>
  </actuator>
</mujoco>
"""


class TabletopEnv(gym.Env[dict[str, np.ndarray], np.ndarray]):
    """Base class of PushTable and BananaTable (paper Appendix D.1, D.2).

    Observation (``gymnasium.spaces.Dict``):
      ``image``          uint8 (H, W, 3): current top-down frame;
      ``previous_image`` uint8 (H, W, 3): the frame before (equal to ``image`` after reset);
      ``proprio``        float32 (2,): end-effector xy (m).
    Action: float32 (2,) end-effector displacement per step, each axis in
    [-0.03, 0.03] m; larger values are clipped, NaN/inf or wrong shapes raise
    ValueError; the resulting target is clipped to the board.
    ``info``: ``instruction``, ``task_family``, ``success`` (ground truth, evaluation
    only: never a learning input). Reward = ground-truth success (evaluation only).
    ``reset(options={"task_family": ..., "instruction": ...})`` picks the task; unknown
    families/instructions raise ValueError listing the valid ones.
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["rgb_array"], "render_fps": CONTROL_HZ}
    env_name: ClassVar[str] = "tabletop"
    task_families: ClassVar[tuple[str, ...]] = ()
    default_family_weights: ClassVar[tuple[float, ...]] = ()

    def __init__(
        self,
        image_size: int | tuple[int, int] = DEFAULT_IMAGE_SIZE,
        max_episode_steps: int = 100,
        terminate_on_success: bool = True,
        render_mode: str | None = None,
        task_families: list[str] | tuple[str, ...] | None = None,
    ) -> None:
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")
        if max_episode_steps < 1:
            raise ValueError(f"max_episode_steps must be >= 1, got {max_episode_steps}")
        h, w = (image_size, image_size) if isinstance(image_size, int) else image_size
        if h < 8 or w < 8:
            raise ValueError(f"image_size must be at least 8x8, got {image_size}")
        self.height, self.width = int(h), int(w)
        self.max_episode_steps = int(max_episode_steps)
        self.terminate_on_success = bool(terminate_on_success)
        self.render_mode = render_mode
        fams = tuple(task_families) if task_families else self.task_families
        for fam in fams:
            tasks.check_family(fam, self.task_families)
        self.enabled_families = fams

        objects, assets = self._object_specs()
        self.objects = objects
        self.model = mujoco.MjModel.from_xml_string(
            scene_xml(objects, assets, self.width, self.height, self.env_name)
        )
        self.data = mujoco.MjData(self.model)
        self._renderer: mujoco.Renderer | None = None
        self._ee_qpos = np.array(
            [self.model.joint(f"ee_{a}").qposadr[0] for a in "xy"], dtype=np.int64
        )
        self._obj_qpos = np.array(
            [
                [self.model.joint(f"{o.name}_{a}").qposadr[0] for a in ("x", "y", "yaw")]
                for o in objects
            ],
            dtype=np.int64,
        )
        self._obj_index = {o.name: i for i, o in enumerate(objects)}

        img = spaces.Box(0, 255, shape=(self.height, self.width, 3), dtype=np.uint8)
        self.observation_space = spaces.Dict(
            {
                "image": img,
                "previous_image": img,
                "proprio": spaces.Box(-BOARD_HALF, BOARD_HALF, shape=(2,), dtype=np.float32),
            }
        )
        self.action_space = spaces.Box(-ACTION_LIMIT, ACTION_LIMIT, shape=(2,), dtype=np.float32)
        self.task: tasks.Task | None = None
        self.instruction = ""
        self._t = 0
        self._image = np.zeros((self.height, self.width, 3), np.uint8)
        self._prev_image = self._image

    # -- to be provided by subclasses ------------------------------------------------
    def _object_specs(self) -> tuple[list[ObjectSpec], str]:
        raise NotImplementedError

    def _sample_scene(
        self, task: tasks.Task, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        """Object poses (N, 3) [x, y, yaw] and end-effector xy for ``task``."""
        raise NotImplementedError

    def task_success(self) -> bool:
        """Ground-truth success of the current task (evaluation only)."""
        raise NotImplementedError

    # -- gymnasium API ---------------------------------------------------------------
    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        super().reset(seed=seed)
        self.task = self._task_from_options(dict(options or {}))
        self.instruction = self.task.instruction
        poses, ee = self._sample_scene(self.task, self.np_random)
        mujoco.mj_resetData(self.model, self.data)
        self.data.qpos[self._obj_qpos] = poses
        self.data.qpos[self._ee_qpos] = ee
        self.data.ctrl[:] = ee
        mujoco.mj_forward(self.model, self.data)
        self._t = 0
        self._image = self._render_camera()
        self._prev_image = self._image
        return self._obs(), self._info()

    def step(
        self, action: np.ndarray
    ) -> tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
        if self.task is None:
            raise RuntimeError("call reset() before step()")
        delta = validate_action(action, self.action_space)
        target = np.clip(self.ee_xy() + delta, -EE_LIMIT, EE_LIMIT)
        self.data.ctrl[:] = target
        mujoco.mj_step(self.model, self.data, nstep=SUBSTEPS)
        self._t += 1
        self._prev_image = self._image
        self._image = self._render_camera()
        info = self._info()
        terminated = bool(info["success"] and self.terminate_on_success)
        truncated = bool(not terminated and self._t >= self.max_episode_steps)
        return self._obs(), float(info["success"]), terminated, truncated, info

    def render(self) -> np.ndarray | None:
        if self.render_mode != "rgb_array":
            return None
        return self._image.copy()

    def close(self) -> None:
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None

    # -- state access (ground truth; for demonstrators, evaluation, debugging) --------
    @property
    def elapsed_steps(self) -> int:
        return self._t

    def ee_xy(self) -> np.ndarray:
        return self.data.qpos[self._ee_qpos].copy()

    def object_poses(self) -> np.ndarray:
        """Ground-truth (N, 3) [x, y, yaw] of all objects."""
        return self.data.qpos[self._obj_qpos].copy()

    def object_xy(self, name: str) -> np.ndarray:
        return self.data.qpos[self._obj_qpos[self._obj_index[name], :2]].copy()

    def object_state(self) -> np.ndarray:
        """Flat float32 ground truth for ``observation.environment_state``."""
        return self.object_poses().ravel().astype(np.float32)

    # -- internals ---------------------------------------------------------------------
    def _task_from_options(self, options: dict[str, Any]) -> tasks.Task:
        family = options.pop("task_family", None)
        instruction = options.pop("instruction", None)
        if options:
            raise ValueError(
                f"unknown reset options {sorted(options)}; valid: task_family, instruction"
            )
        if family is not None:
            tasks.check_family(family, self.task_families)
        if instruction is not None:
            task = tasks.parse_instruction(instruction, self.task_families)
            if family is not None and task.family != family:
                raise ValueError(
                    f"instruction {instruction!r} belongs to family {task.family!r}, not {family!r}"
                )
            absent = [b for b in (task.block, task.target) if b and b not in self._block_names()]
            if absent and task.family in tasks.PUSHTABLE_FAMILIES:
                raise ValueError(
                    f"instruction {instruction!r} names {absent}, which are not on this board "
                    f"(blocks: {list(self._block_names())})"
                )
            return task
        if family is None:
            weights = np.array(
                [self._family_weight(f) for f in self.enabled_families], dtype=np.float64
            )
            family = self.enabled_families[
                int(self.np_random.choice(len(weights), p=weights / weights.sum()))
            ]
        return tasks.sample_task(family, self.np_random, self._block_names())

    def _family_weight(self, family: str) -> float:
        if not self.default_family_weights:
            return 1.0
        return self.default_family_weights[self.task_families.index(family)]

    def _block_names(self) -> tuple[str, ...]:
        return tasks.BLOCKS

    def _render_camera(self) -> np.ndarray:
        if self._renderer is None:
            self._renderer = new_renderer(self.model, self.height, self.width)
        self._renderer.update_scene(self.data, camera="top")
        return self._renderer.render().copy()

    def _obs(self) -> dict[str, np.ndarray]:
        return {
            "image": self._image.copy(),
            "previous_image": self._prev_image.copy(),
            "proprio": self.ee_xy().astype(np.float32),
        }

    def _info(self) -> dict[str, Any]:
        assert self.task is not None
        return {
            "instruction": self.instruction,
            "task_family": self.task.family,
            "success": bool(self.task_success()),
        }


def sample_separated(
    rng: np.random.Generator,
    radii: list[float],
    limit: float,
    gap: float,
    fixed: list[tuple[np.ndarray, float]] | None = None,
    tries: int = 200,
) -> np.ndarray:
    """Sample centres in [-limit, limit]^2 with pairwise distance >= r_i + r_j + gap."""
    for _ in range(50):
        placed: list[tuple[np.ndarray, float]] = list(fixed or [])
        out = []
        for r in radii:
            for _ in range(tries):
                p = rng.uniform(-limit, limit, size=2)
                if all(np.linalg.norm(p - q) >= r + rq + gap for q, rq in placed):
                    break
            else:
                break
            placed.append((p, r))
            out.append(p)
        if len(out) == len(radii):
            return np.array(out)
    raise RuntimeError("could not place objects without overlap")
