"""ALOHA bimanual peg insertion on gym-aloha's vx300s MuJoCo model (Appendices D.3, E.2).

The paper's third domain is Aloha Single-Insertion: two ViperX 300s arms pick up a red
peg (right arm) and a blue socket (left arm) and insert the peg until it touches the pin
inside the socket. This env loads gym-aloha's joint-position model
(``bimanual_viperx_insertion.xml``) from the installed ``gym_aloha`` package (asset files
are never copied) and edits it in memory with ``mujoco.MjSpec``:

* four cameras of a real station: ``cam_high`` (gym-aloha's ``top`` view, above the
  table looking down), ``cam_low`` (front edge of the table, low, looking across the
  workspace), ``cam_left_wrist`` / ``cam_right_wrist`` (fixed on each ``gripper_link``,
  above the gripper, looking forward and down at the fingers, like the RealSense D405 on a
  station's wrist mount);
* a ``grasp`` site between the fingertips of each gripper (used by the demonstrator's IK);
* offscreen buffer sized to the frame; shadows and multisampling off (CPU rendering).

Conventions (gym-aloha / ACT, and a station's 14-value state):
  Action (14,) float32 = per arm (left, then right) 6 absolute joint targets in radians
  [waist, shoulder, elbow, forearm_roll, wrist_angle, wrist_rotate] and 1 normalised
  gripper target (0 = closed, 1 = open: finger position = CLOSE + g * (OPEN - CLOSE)).
  Targets beyond a joint's range are clipped to the actuator ``ctrlrange``, grippers to
  [0, 1]; wrong shapes and NaN/inf raise ValueError.
  Observation dict: ``qpos`` (14,) joint positions with the normalised finger position
  in slots 6 and 13; ``qvel`` (14,) joint velocities (gripper normalised likewise);
  ``effort`` (14,) actuator forces/torques (left finger actuator for the grippers);
  ``images`` (only when cameras are on): ``{cam: uint8 (H, W, 3)}``.
  Control at 50 Hz (``DT = 0.02`` s, 10 physics steps of 2 ms).
  ``info``: ``stage`` (0-4, gym-aloha's contact reward: 1 both grippers touch their
  object, 2 both grasped and off the table, 3 peg touches socket in the air, 4 peg
  touches the pin), ``max_stage`` over the episode, ``success`` (stage 4). All ground
  truth, for evaluation only (the paper adds a small bonus when the simulator's success
  condition holds, Section 4.1.3; it never feeds a policy). Reward = float(success).

Reset: arms at the model's home keyframe, peg centre x ~ U[0.1, 0.2], socket x ~
U[-0.2, -0.1], both y ~ U[0.4, 0.6], z = 0.05 (they drop onto the table), drawn from
gymnasium's ``np_random`` seeded by ``reset(seed=...)`` (gym-aloha's ranges; not its
exact numbers, which come from a separate ``RandomState``).
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

os.environ.setdefault("MUJOCO_GL", "egl")

import gymnasium as gym
import mujoco
import numpy as np
from gymnasium import spaces

from efm_sim._validation import validate_action
from efm_sim.aloha_layout import (
    ARM_JOINTS,
    ARMS,
    GRIPPER_POSITION_CLOSE,
    GRIPPER_POSITION_OPEN,
    STATE_NAMES,
    normalize_gripper,
    unnormalize_gripper,
)
from efm_sim.rendering import new_renderer

DT = 0.02
"""Control period (s): 50 Hz, as the ALOHA driver and gym-aloha."""
CONTROL_HZ = 50
CAMERAS: tuple[str, ...] = ("cam_high", "cam_low", "cam_left_wrist", "cam_right_wrist")
"""Camera names of a (non-mobile) ALOHA station, in recording order."""
DEFAULT_IMAGE_SIZE: tuple[int, int] = (480, 640)
"""(height, width) of a station's RealSense colour stream."""
MAX_EPISODE_STEPS = 400
GRIPPER_INDICES: tuple[int, int] = (6, 13)


PEG_X_RANGE = (0.1, 0.2)
SOCKET_X_RANGE = (-0.2, -0.1)
OBJECT_Y_RANGE = (0.4, 0.6)
OBJECT_DROP_Z = 0.05

GRASP_SITE_OFFSET = (0.14, 0.0, 0.0)
"""Grasp site in each ``gripper_link`` frame: between the finger pads, 1.4 cm from the tips."""
WRIST_CAMERA_POS = (0.06, 0.0, 0.075)
WRIST_CAMERA_TARGET = (0.22, 0.0, -0.04)
WRIST_CAMERA_FOVY = 60.0
LOW_CAMERA_POS = (0.0, -0.05, 0.2)
LOW_CAMERA_TARGET = (0.0, 0.6, 0.04)
LOW_CAMERA_FOVY = 65.0
NEAR_PLANE = 0.02
"""Camera near clipping plane (m)."""

PEG_GEOM = "red_peg"
PIN_GEOM = "pin"
TABLE_GEOM = "table"
SOCKET_GEOMS: tuple[str, ...] = ("socket-1", "socket-2", "socket-3", "socket-4")


def gym_aloha_assets() -> Path:
    """Directory of gym-aloha's MuJoCo assets in the installed package (not imported)."""
    spec = importlib.util.find_spec("gym_aloha")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            "gym-aloha is not installed; the ALOHA env loads its MuJoCo assets "
            "(install the efm lock, which pins gym-aloha)"
        )
    assets = Path(next(iter(spec.submodule_search_locations))) / "assets"
    if not (assets / "bimanual_viperx_insertion.xml").is_file():
        raise FileNotFoundError(f"{assets} has no bimanual_viperx_insertion.xml")
    return assets


def _look_at_quat(pos: Sequence[float], target: Sequence[float], up: Sequence[float]) -> np.ndarray:
    """Quaternion of a MuJoCo camera at ``pos`` looking at ``target`` (camera looks along -z)."""
    z = np.asarray(pos, float) - np.asarray(target, float)
    z /= np.linalg.norm(z)
    x = np.cross(np.asarray(up, float), z)
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    quat = np.zeros(4)
    mujoco.mju_mat2Quat(quat, np.column_stack([x, y, z]).ravel())
    return quat


def build_model(height: int, width: int) -> mujoco.MjModel:
    """gym-aloha's insertion model plus the station's four cameras and grasp sites."""
    spec = mujoco.MjSpec.from_file(str(gym_aloha_assets() / "bimanual_viperx_insertion.xml"))
    top = spec.camera("top")
    world = spec.worldbody
    high = world.add_camera(name="cam_high", pos=list(top.pos), fovy=top.fovy)
    high.mode = top.mode
    high.targetbody = top.targetbody
    world.add_camera(
        name="cam_low",
        pos=list(LOW_CAMERA_POS),
        quat=list(_look_at_quat(LOW_CAMERA_POS, LOW_CAMERA_TARGET, (0, 0, 1))),
        fovy=LOW_CAMERA_FOVY,
    )
    for arm in ARMS:
        link = spec.body(f"vx300s_{arm}/gripper_link")
        link.add_camera(
            name=f"cam_{arm}_wrist",
            pos=list(WRIST_CAMERA_POS),
            quat=list(_look_at_quat(WRIST_CAMERA_POS, WRIST_CAMERA_TARGET, (0, 0, 1))),
            fovy=WRIST_CAMERA_FOVY,
        )
        link.add_site(
            name=f"{arm}_grasp",
            pos=list(GRASP_SITE_OFFSET),
            size=[0.005, 0.005, 0.005],
            rgba=[0, 1, 0, 0],
        )
    spec.visual.global_.offwidth = max(int(width), 64)
    spec.visual.global_.offheight = max(int(height), 64)
    spec.visual.quality.shadowsize = 0
    spec.visual.quality.offsamples = 0
    model = spec.compile()
    # gym-aloha's near plane (0.1 x extent = 17 cm) would clip the fingers in wrist views.
    model.vis.map.znear = NEAR_PLANE / model.stat.extent
    return model




class AlohaInsertionEnv(gym.Env[dict[str, Any], np.ndarray]):
    """ALOHA bimanual peg insertion, 50 Hz joint-position control (Appendices D.3, E.2).

    Args:
        image_size: (height, width) of every camera frame, or one int for square frames.
        cameras: cameras rendered into ``obs["images"]`` (default: all four); ``()`` or
            ``None`` turns rendering off (no ``images`` key), e.g. to measure a
            demonstrator quickly.
        max_episode_steps: time limit (``truncated=True``), 400 as ACT's scripted episodes.
        terminate_on_success: end the episode when the peg touches the pin.
        render_mode: None or "rgb_array" (``render()`` returns the ``cam_high`` frame).
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["rgb_array"], "render_fps": CONTROL_HZ}
    env_name: ClassVar[str] = "aloha_insertion"

    def __init__(
        self,
        image_size: int | tuple[int, int] = DEFAULT_IMAGE_SIZE,
        cameras: Sequence[str] | None = CAMERAS,
        max_episode_steps: int = MAX_EPISODE_STEPS,
        terminate_on_success: bool = True,
        render_mode: str | None = None,
    ) -> None:
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")
        if max_episode_steps < 1:
            raise ValueError(f"max_episode_steps must be >= 1, got {max_episode_steps}")
        h, w = (image_size, image_size) if isinstance(image_size, int) else image_size
        if h < 8 or w < 8:
            raise ValueError(f"image_size must be at least 8x8, got {image_size}")
        cams = tuple(cameras or ())
        unknown = [c for c in cams if c not in CAMERAS]
        if unknown or len(set(cams)) != len(cams):
            raise ValueError(f"cameras must be distinct names from {list(CAMERAS)}, got {cams}")
        self.height, self.width = int(h), int(w)
        self.cameras = cams
        self.max_episode_steps = int(max_episode_steps)
        self.terminate_on_success = bool(terminate_on_success)
        self.render_mode = render_mode

        self.model = build_model(self.height, self.width)
        self.data = mujoco.MjData(self.model)
        self.substeps = round(DT / self.model.opt.timestep)
        self._renderer: mujoco.Renderer | None = None
        m = self.model
        self._home_qpos = m.key_qpos[0].copy()
        # Per arm: 6 arm joints + the left finger (the station reads position[7]).
        self._arm_qpos: list[np.ndarray] = []
        self._arm_dof: list[np.ndarray] = []
        self._arm_act: list[np.ndarray] = []
        self._finger_act: list[tuple[int, int]] = []
        for arm in ARMS:
            joints = [m.joint(f"vx300s_{arm}/{j}") for j in (*ARM_JOINTS, "left_finger")]
            self._arm_qpos.append(np.array([j.qposadr[0] for j in joints]))
            self._arm_dof.append(np.array([j.dofadr[0] for j in joints]))
            acts = []
            for j in joints[:6]:
                acts.append(_actuator_of(m, j.id))
            self._arm_act.append(np.array(acts))
            left = _actuator_of(m, m.joint(f"vx300s_{arm}/left_finger").id)
            right = _actuator_of(m, m.joint(f"vx300s_{arm}/right_finger").id)
            self._finger_act.append((left, right))
        self._state_qpos = np.concatenate(self._arm_qpos)
        self._state_dof = np.concatenate(self._arm_dof)
        self._state_act = np.concatenate(
            [np.append(self._arm_act[i], self._finger_act[i][0]) for i in range(2)]
        )
        self._peg_qpos = m.joint("red_peg_joint").qposadr[0]
        self._socket_qpos = m.joint("blue_socket_joint").qposadr[0]
        self._geom = {
            name: m.geom(name).id for name in (PEG_GEOM, PIN_GEOM, TABLE_GEOM, *SOCKET_GEOMS)
        }
        self._right_finger_geom = m.geom("vx300s_right/10_right_gripper_finger").id
        self._left_finger_geom = m.geom("vx300s_left/10_left_gripper_finger").id

        arm_lo = [m.actuator_ctrlrange[a, 0] for i in range(2) for a in self._arm_act[i]]
        arm_hi = [m.actuator_ctrlrange[a, 1] for i in range(2) for a in self._arm_act[i]]
        low = np.array([*arm_lo[:6], 0.0, *arm_lo[6:], 0.0], dtype=np.float32)
        high = np.array([*arm_hi[:6], 1.0, *arm_hi[6:], 1.0], dtype=np.float32)
        self.action_space = spaces.Box(low, high, dtype=np.float32)
        joint_lo = np.array(
            [m.jnt_range[m.joint(f"vx300s_{a}/{j}").id, 0] for a in ARMS for j in ARM_JOINTS]
        )
        joint_hi = np.array(
            [m.jnt_range[m.joint(f"vx300s_{a}/{j}").id, 1] for a in ARMS for j in ARM_JOINTS]
        )
        # Soft joint limits can be exceeded slightly under contact: leave a margin.
        qlo = np.insert(joint_lo - 0.5, [6, 12], -1.0).astype(np.float32)
        qhi = np.insert(joint_hi + 0.5, [6, 12], 2.0).astype(np.float32)
        unbounded = spaces.Box(-np.inf, np.inf, shape=(14,), dtype=np.float32)
        obs_spaces: dict[str, spaces.Space[Any]] = {
            "qpos": spaces.Box(qlo, qhi, dtype=np.float32),
            "qvel": unbounded,
            "effort": unbounded,
        }
        if self.cameras:
            img = spaces.Box(0, 255, shape=(self.height, self.width, 3), dtype=np.uint8)
            obs_spaces["images"] = spaces.Dict({c: img for c in self.cameras})
        self.observation_space = spaces.Dict(obs_spaces)
        self._t = 0
        self._stage = 0
        self._max_stage = 0
        self._was_reset = False

    # -- gymnasium API ---------------------------------------------------------------
    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        super().reset(seed=seed)
        if options:
            raise ValueError(f"unknown reset options {sorted(options)}; this env takes none")
        rng = self.np_random
        peg = [rng.uniform(*PEG_X_RANGE), rng.uniform(*OBJECT_Y_RANGE), OBJECT_DROP_Z]
        socket = [rng.uniform(*SOCKET_X_RANGE), rng.uniform(*OBJECT_Y_RANGE), OBJECT_DROP_Z]
        mujoco.mj_resetData(self.model, self.data)
        self.data.qpos[:] = self._home_qpos
        self._hold_home_ctrl()
        self.set_object_poses([*peg, 1, 0, 0, 0], [*socket, 1, 0, 0, 0])
        self._t = 0
        self._stage = self._max_stage = self.contact_stage()
        self._was_reset = True
        return self._obs(), self._info()

    def step(self, action: np.ndarray) -> tuple[dict[str, Any], float, bool, bool, dict[str, Any]]:
        if not self._was_reset:
            raise RuntimeError("call reset() before step()")
        act = validate_action(action, self.action_space)
        self.apply_action(act)
        mujoco.mj_step(self.model, self.data, nstep=self.substeps)
        self._t += 1
        self._stage = self.contact_stage()
        self._max_stage = max(self._max_stage, self._stage)
        info = self._info()
        terminated = bool(info["success"] and self.terminate_on_success)
        truncated = bool(not terminated and self._t >= self.max_episode_steps)
        return self._obs(), float(info["success"]), terminated, truncated, info

    def render(self) -> np.ndarray | None:
        if self.render_mode != "rgb_array":
            return None
        return self.render_camera("cam_high")

    def close(self) -> None:
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None

    # -- control ---------------------------------------------------------------------
    def apply_action(self, action: np.ndarray) -> None:
        """Write a validated 14-value action into the actuators (no stepping)."""
        ctrl = self.data.ctrl
        for i in range(2):
            a = action[7 * i : 7 * i + 7]
            ctrl[self._arm_act[i]] = a[:6]
            finger = float(unnormalize_gripper(a[6]))
            left, right = self._finger_act[i]
            ctrl[left], ctrl[right] = finger, -finger
        lo, hi = self.model.actuator_ctrlrange.T
        np.clip(ctrl, lo, hi, out=ctrl)

    def _hold_home_ctrl(self) -> None:
        for i in range(2):
            q = self.data.qpos[self._arm_qpos[i]]
            self.data.ctrl[self._arm_act[i]] = q[:6]
            left, right = self._finger_act[i]
            self.data.ctrl[left], self.data.ctrl[right] = q[6], -q[6]

    # -- state access (ground truth; demonstrators, evaluation, debugging) -------------
    @property
    def elapsed_steps(self) -> int:
        return self._t

    def qpos(self) -> np.ndarray:
        """14-value station state: 6 joints + normalised gripper, per arm."""
        q = self.data.qpos[self._state_qpos].copy()
        q[list(GRIPPER_INDICES)] = normalize_gripper(q[list(GRIPPER_INDICES)])
        return q

    def qvel(self) -> np.ndarray:
        v = self.data.qvel[self._state_dof].copy()
        v[list(GRIPPER_INDICES)] /= GRIPPER_POSITION_OPEN - GRIPPER_POSITION_CLOSE
        return v

    def effort(self) -> np.ndarray:
        return self.data.actuator_force[self._state_act].copy()

    def arm_qpos_adr(self, arm: str) -> np.ndarray:
        """``qpos`` addresses of ``arm``'s 6 joints (waist .. wrist_rotate)."""
        return self._arm_qpos[ARMS.index(arm)][:6].copy()

    def arm_dof_adr(self, arm: str) -> np.ndarray:
        """``qvel``/Jacobian column addresses of ``arm``'s 6 joints."""
        return self._arm_dof[ARMS.index(arm)][:6].copy()

    def set_object_poses(self, peg: Sequence[float], socket: Sequence[float]) -> None:
        """Place peg and socket ([x, y, z, qw, qx, qy, qz]) and recompute contacts (tests,
        debugging); ``info`` of the next step reflects the new state."""
        self.data.qpos[self._peg_qpos : self._peg_qpos + 7] = peg
        self.data.qpos[self._socket_qpos : self._socket_qpos + 7] = socket
        mujoco.mj_forward(self.model, self.data)
        self._stage = self.contact_stage()

    def peg_pose(self) -> np.ndarray:
        """Ground-truth peg pose [x, y, z, qw, qx, qy, qz]."""
        return self.data.qpos[self._peg_qpos : self._peg_qpos + 7].copy()

    def socket_pose(self) -> np.ndarray:
        """Ground-truth socket pose [x, y, z, qw, qx, qy, qz]."""
        return self.data.qpos[self._socket_qpos : self._socket_qpos + 7].copy()

    def contacts(self) -> set[tuple[int, int]]:
        """Geom id pairs in contact now (each pair sorted)."""
        d = self.data
        return {
            (int(min(g1, g2)), int(max(g1, g2)))
            for g1, g2 in zip(d.contact.geom1[: d.ncon], d.contact.geom2[: d.ncon], strict=True)
        }

    def contact_stage(self) -> int:
        """gym-aloha's insertion contact reward (0-4); 4 = the peg touches the pin."""
        pairs = self.contacts()
        g = self._geom

        def touch(a: int, b: int) -> bool:
            return (min(a, b), max(a, b)) in pairs

        sockets = [g[s] for s in SOCKET_GEOMS]
        right_grip = touch(g[PEG_GEOM], self._right_finger_geom)
        left_grip = any(touch(s, self._left_finger_geom) for s in sockets)
        peg_table = touch(g[PEG_GEOM], g[TABLE_GEOM])
        socket_table = any(touch(s, g[TABLE_GEOM]) for s in sockets)
        peg_socket = any(touch(g[PEG_GEOM], s) for s in sockets)
        stage = 0
        if left_grip and right_grip:
            stage = 1
            if not peg_table and not socket_table:
                stage = 2
        if peg_socket and not peg_table and not socket_table:
            stage = 3
        if touch(g[PEG_GEOM], g[PIN_GEOM]):
            stage = 4
        return stage

    def task_success(self) -> bool:
        """Ground truth: the peg touches the pin (evaluation only)."""
        return self.contact_stage() == 4

    def render_camera(self, camera: str) -> np.ndarray:
        """One uint8 (H, W, 3) frame from ``camera`` (any of ``CAMERAS``)."""
        if camera not in CAMERAS:
            raise ValueError(f"unknown camera {camera!r}; valid: {list(CAMERAS)}")
        if self._renderer is None:
            self._renderer = new_renderer(self.model, self.height, self.width)
        self._renderer.update_scene(self.data, camera=camera)
        return self._renderer.render().copy()

    # -- internals ---------------------------------------------------------------------
    def _obs(self) -> dict[str, Any]:
        obs: dict[str, Any] = {
            "qpos": self.qpos().astype(np.float32),
            "qvel": self.qvel().astype(np.float32),
            "effort": self.effort().astype(np.float32),
        }
        if self.cameras:
            obs["images"] = {c: self.render_camera(c) for c in self.cameras}
        return obs

    def _info(self) -> dict[str, Any]:
        return {
            "stage": self._stage,
            "max_stage": self._max_stage,
            "success": self._stage == 4,
        }


def _actuator_of(model: mujoco.MjModel, joint_id: int) -> int:
    """Index of the actuator driving ``joint_id`` (KeyError if none)."""
    for a in range(model.nu):
        if (
            model.actuator_trntype[a] == mujoco.mjtTrn.mjTRN_JOINT
            and model.actuator_trnid[a, 0] == joint_id
        ):
            return a
    raise KeyError(f"no actuator drives joint {model.joint(joint_id).name}")


__all__ = [
    "CAMERAS",
    "CONTROL_HZ",
    "DT",
    "STATE_NAMES",
    "AlohaInsertionEnv",
    "build_model",
    "gym_aloha_assets",
    "normalize_gripper",
    "unnormalize_gripper",
]
