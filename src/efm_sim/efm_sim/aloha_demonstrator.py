"""Scripted bimanual demonstrator for ALOHA peg insertion (paper Stage 1 data, Appendix D.3).

The paper's ALOHA demonstrations come from people teleoperating (and from a policy
trained on them); here a script plays that role. It reads the peg and socket poses at
``t = 0`` (as a person looking at the table would), plans end-effector waypoints for each
gripper (tilted gripper, hover above the object, descend, close, lift to either side of a
meeting point, push the peg into the socket, hold) and turns them into the 14 joint
targets of the ALOHA action by damped-least-squares inverse kinematics on MuJoCo site
Jacobians (``mj_jacSite``) evaluated on a scratch ``MjData``. While the objects are in the
air it looks again, like a teleoperator lining the peg up by eye: the right gripper is
steered so that the peg's leading end stays on the socket's axis, the left so that the
socket stays at the meeting point (ground-truth poses; policies never see them).

Human flavour, scaled by ``suboptimality`` in [0, 1] and drawn from the episode RNG: a
per-episode speed, per-segment timing jitter, the two arms starting at different times,
jittered hover heights, grasp points, gripper tilt and meeting point, and smooth hand
tremor (AR(1)) on the end-effector targets, quieter during the precise phases.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import mujoco
import numpy as np

from efm_sim.aloha import ARMS, AlohaInsertionEnv

X_AXIS = np.array([1.0, 0.0, 0.0])
PEG_HALF_LENGTH = 0.06
"""Half length of the red peg along its x axis (m)."""
PIN_TIP_OFFSET = 0.04
"""Distance from the socket centre to the pin's +x face (m): peg contact at 0.10."""
PEG_REST_Z = 0.01
SOCKET_REST_Z = 0.022
"""Object centre heights once they rest on the table (m)."""
SOCKET_HALF_LENGTH = 0.06
GRASP_TO_CENTRE = 0.03
"""Grasp points sit 3 cm from the object centres (socket: -x side, peg: +x side)."""
PRE_INSERT_GAP = 0.04
"""Peg tip to socket opening before the push (m)."""
PUSH_PAST_CONTACT = 0.008
"""The push aims this far past the pin face (m)."""
ALIGN_GAIN = 0.1
ALIGN_TOLERANCE = 0.003
"""The push pauses while the peg's end is further than this off the socket axis (m)."""
MAX_WAIT = 60
MAX_AXIAL_CORRECTION = 0.01


def _smoothstep(u: float) -> float:
    """Minimum-jerk profile on [0, 1] (zero velocity and acceleration at both ends)."""
    u = min(max(u, 0.0), 1.0)
    return u * u * u * (10.0 + u * (-15.0 + 6.0 * u))


def gripper_rotation(arm: str, pitch: float) -> np.ndarray:
    """World orientation of a ``gripper_link`` pointing down by ``pitch`` (rad) towards the
    table centre, fingers closing along world y (the objects' short axis)."""
    c, s = np.cos(pitch), np.sin(pitch)
    if arm == "left":
        x, y = np.array([c, 0.0, -s]), np.array([0.0, 1.0, 0.0])
    else:
        x, y = np.array([-c, 0.0, -s]), np.array([0.0, -1.0, 0.0])
    return np.column_stack([x, y, np.cross(x, y)])


class ArmIK:
    """Damped least squares IK for one arm's grasp site (6 joints, position + orientation)."""

    def __init__(self, env: AlohaInsertionEnv, arm: str, damping: float = 0.03) -> None:
        self.model = env.model
        self.scratch = mujoco.MjData(env.model)
        self.qadr = env.arm_qpos_adr(arm)
        self.dadr = env.arm_dof_adr(arm)
        self.site = env.model.site(f"{arm}_grasp").id
        jnt = env.model.dof_jntid[self.dadr]
        self.lo = env.model.jnt_range[jnt, 0]
        self.hi = env.model.jnt_range[jnt, 1]
        self.damping = damping
        self._jp = np.zeros((3, env.model.nv))
        self._jr = np.zeros((3, env.model.nv))

    def forward(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Grasp-site position and rotation matrix for arm joints ``q``."""
        self.scratch.qpos[self.qadr] = q
        mujoco.mj_kinematics(self.model, self.scratch)
        return (
            self.scratch.site_xpos[self.site].copy(),
            self.scratch.site_xmat[self.site].reshape(3, 3).copy(),
        )

    def solve(
        self, pos: np.ndarray, rot: np.ndarray, q0: np.ndarray, iters: int = 30
    ) -> np.ndarray:
        """Joints that put the grasp site at ``pos`` with orientation ``rot`` (from ``q0``)."""
        q = np.array(q0, dtype=np.float64)
        target = np.zeros(4)
        mujoco.mju_mat2Quat(target, rot.ravel())
        current, err_rot = np.zeros(4), np.zeros(3)
        m, d = self.model, self.scratch
        for _ in range(iters):
            d.qpos[self.qadr] = q
            mujoco.mj_kinematics(m, d)
            mujoco.mj_comPos(m, d)
            err_pos = pos - d.site_xpos[self.site]
            mujoco.mju_mat2Quat(current, d.site_xmat[self.site])
            mujoco.mju_subQuat(err_rot, target, current)  # in the site frame
            err_rot_w = d.site_xmat[self.site].reshape(3, 3) @ err_rot
            if np.linalg.norm(err_pos) < 2e-4 and np.linalg.norm(err_rot_w) < 2e-3:
                break
            mujoco.mj_jacSite(m, d, self._jp, self._jr, self.site)
            jac = np.vstack([self._jp[:, self.dadr], 0.3 * self._jr[:, self.dadr]])
            err = np.concatenate([err_pos, 0.3 * err_rot_w])
            lam2 = self.damping**2
            dq = jac.T @ np.linalg.solve(jac @ jac.T + lam2 * np.eye(6), err)
            q = np.clip(q + np.clip(dq, -0.2, 0.2), self.lo, self.hi)
        return q


@dataclass
class Waypoint:
    """End-effector key pose of one arm at control step ``t``."""

    t: float
    pos: np.ndarray
    pitch: float
    gripper: float
    align: bool = False
    """Steer by the observed object poses while moving to this waypoint."""


class AlohaInsertionDemonstrator:
    """Human-like scripted bimanual peg insertion (see module docstring).

    Args:
        suboptimality: 0 = clean, fast script; 1 = slower, shakier, more varied.
        env: the ``AlohaInsertionEnv`` to read object poses from (or ``bind`` later).
    """

    def __init__(self, suboptimality: float = 0.5, env: AlohaInsertionEnv | None = None) -> None:
        if not 0.0 <= suboptimality <= 1.0:
            raise ValueError(f"suboptimality must be in [0, 1], got {suboptimality}")
        self.suboptimality = float(suboptimality)
        self.env: AlohaInsertionEnv | None = None
        self._ik: dict[str, ArmIK] = {}
        self._rng = np.random.default_rng(0)
        self._plan: dict[str, list[Waypoint]] = {}
        self._q: dict[str, np.ndarray] = {}
        self._correction: dict[str, np.ndarray] = {}
        self._noise: dict[str, np.ndarray] = {}
        self._t = 0.0
        self._meet = np.zeros(3)
        self._push_window = (0.0, 0.0)
        self._waited = 0
        self._misalignment = 0.0
        if env is not None:
            self.bind(env)

    def describe(self) -> dict[str, Any]:
        """Settings recorded with every episode."""
        return {"demonstrator": "aloha_insertion_scripted", "suboptimality": self.suboptimality}

    def bind(self, env: Any) -> None:
        """Attach the env whose ground-truth state is observed."""
        if not isinstance(env, AlohaInsertionEnv):
            raise TypeError(
                f"AlohaInsertionDemonstrator needs an AlohaInsertionEnv, got {type(env).__name__}"
            )
        if env is not self.env:
            self.env = env
            self._ik = {arm: ArmIK(env, arm) for arm in ARMS}

    @property
    def plan(self) -> dict[str, list[Waypoint]]:
        """The current episode's waypoints per arm (read-only use)."""
        return self._plan

    # -- planning --------------------------------------------------------------------
    def reset(self, obs: Any, rng: np.random.Generator) -> None:
        env = self.env
        if env is None:
            raise RuntimeError("bind the demonstrator to a reset AlohaInsertionEnv first")
        q, self._rng = self.suboptimality, rng
        self._t = 0.0
        self._misalignment = 0.0
        peg, socket = env.peg_pose()[:2], env.socket_pose()[:2]
        speed = rng.uniform(1.0, 1.0 + 0.35 * q)  # >1 = slower

        def dur(nominal: float) -> float:
            return nominal * speed * rng.uniform(1.0 - 0.1 * q, 1.0 + 0.15 * q)

        self._meet = np.array(
            [
                -0.05 + rng.uniform(-0.02, 0.02) * q,
                0.5 + rng.uniform(-0.04, 0.04) * q,
                0.22 + rng.uniform(-0.03, 0.03) * q,
            ]
        )
        pitch = np.deg2rad(70.0) + rng.uniform(-1, 1) * np.deg2rad(8.0) * q
        # Left grasps the socket behind its centre, right the peg's trailing half.
        grasp = {
            "left": np.array(
                [
                    socket[0] - GRASP_TO_CENTRE + rng.uniform(-0.008, 0.008) * q,
                    socket[1],
                    SOCKET_REST_Z + 0.01,
                ]
            ),
            "right": np.array(
                [
                    peg[0] + GRASP_TO_CENTRE + rng.uniform(-0.008, 0.008) * q,
                    peg[1],
                    PEG_REST_Z + 0.012,
                ]
            ),
        }
        self._plan = {}
        for arm in ARMS:
            ik = self._ik[arm]
            q0 = env.data.qpos[ik.qadr].copy()
            pos0, rot0 = ik.forward(q0)
            pitch0 = float(np.arctan2(-rot0[2, 0], np.hypot(rot0[0, 0], rot0[1, 0])))
            g = grasp[arm]
            hover = g + np.array([0.0, 0.0, 0.08 + rng.uniform(-0.02, 0.02) * q])
            # Held objects: socket centre at the meeting point, peg tip 4 cm out of it.
            pre = self._meet - GRASP_TO_CENTRE * X_AXIS
            if arm == "right":
                reach = SOCKET_HALF_LENGTH + PRE_INSERT_GAP + PEG_HALF_LENGTH + GRASP_TO_CENTRE
                pre = self._meet + reach * X_AXIS
            lifted = g + np.array([0.0, 0.0, 0.12 + rng.uniform(-0.02, 0.02) * q])
            t = rng.uniform(0.0, 8.0) * q  # arms start at different times
            wps = [Waypoint(0.0, pos0, pitch0, float(obs["qpos"][6 if arm == "left" else 13]))]
            wps.append(Waypoint(t := t + dur(70), hover, pitch, 1.0))
            wps.append(Waypoint(t := t + dur(35), g, pitch, 1.0))
            wps.append(Waypoint(t := t + dur(15), g, pitch, 0.0))
            wps.append(Waypoint(t := t + dur(8), g, pitch, 0.0))
            wps.append(Waypoint(t := t + dur(25), lifted, pitch, 0.0))
            wps.append(Waypoint(t := t + dur(45), pre, pitch, 0.0))
            self._plan[arm] = wps
        # Both arms hold at the pre-insertion pose (lining up) until the later one is
        # there, then the right arm pushes the peg in.
        t_meet = max(self._plan[a][-1].t for a in ARMS) + dur(20)
        for arm in ARMS:
            last = self._plan[arm][-1]
            self._plan[arm].append(Waypoint(t_meet, last.pos.copy(), last.pitch, 0.0, True))
        t_push = t_meet + dur(40)
        self._push_window = (t_meet, t_push)
        self._waited = 0
        depth = PRE_INSERT_GAP + SOCKET_HALF_LENGTH - PIN_TIP_OFFSET + PUSH_PAST_CONTACT
        for arm in ARMS:
            last = self._plan[arm][-1]
            end = last.pos - depth * X_AXIS if arm == "right" else last.pos.copy()
            self._plan[arm].append(Waypoint(t_push, end, last.pitch, 0.0, True))
            self._plan[arm].append(Waypoint(t_push + 1e4, end.copy(), last.pitch, 0.0, True))
            self._q[arm] = env.data.qpos[self._ik[arm].qadr].copy()
            self._correction[arm] = np.zeros(3)
            self._noise[arm] = np.zeros(3)

    def _target(self, arm: str, t: float) -> tuple[np.ndarray, float, float, bool]:
        wps = self._plan[arm]
        for a, b in itertools.pairwise(wps):
            if t <= b.t:
                u = _smoothstep((t - a.t) / max(b.t - a.t, 1e-6))
                pos = a.pos + u * (b.pos - a.pos)
                return (
                    pos,
                    a.pitch + u * (b.pitch - a.pitch),
                    a.gripper + u * (b.gripper - a.gripper),
                    b.align,
                )
        last = wps[-1]
        return last.pos, last.pitch, last.gripper, last.align

    # -- control ---------------------------------------------------------------------
    def act(self, obs: Any) -> np.ndarray:
        env = self.env
        assert env is not None
        action = np.zeros(14, dtype=np.float32)
        q = self.suboptimality
        for i, arm in enumerate(ARMS):
            pos, pitch, grip, align = self._target(arm, self._t)
            if align:
                self._correction[arm] = self._align(arm, pos)
            quiet = 0.3 if align or grip < 0.5 else 1.0
            self._noise[arm] = 0.85 * self._noise[arm] + self._rng.normal(
                0.0, (0.0002 + 0.0008 * q) * quiet, size=3
            )
            target = pos + self._correction[arm] + self._noise[arm]
            self._q[arm] = self._ik[arm].solve(target, gripper_rotation(arm, pitch), self._q[arm])
            action[7 * i : 7 * i + 6] = self._q[arm]
            action[7 * i + 6] = np.clip(grip, 0.0, 1.0)
        # Push only while the peg's end is lined up with the socket (as a person would
        # pause and re-aim); give up waiting after MAX_WAIT steps.
        start, end = self._push_window
        pushing = start <= self._t < end
        if pushing and self._misalignment > ALIGN_TOLERANCE and self._waited < MAX_WAIT:
            self._waited += 1
        else:
            self._t += 1.0
        return action

    def _align(self, arm: str, nominal: np.ndarray) -> np.ndarray:
        """Integral correction that lines the held objects up (a teleoperator, by eye).

        Left: the socket centre follows the nominal path. Right: the peg's leading end
        follows the nominal path relative to the socket's actual pose (on its axis).
        """
        env = self.env
        assert env is not None
        socket = env.socket_pose()
        c = self._correction[arm]
        if arm == "left":
            err = nominal + GRASP_TO_CENTRE * X_AXIS - socket[:3]
            return np.clip(c + ALIGN_GAIN * err, -0.04, 0.04)
        axis = _x_axis(socket[3:])
        peg = env.peg_pose()
        tip = peg[:3] - _x_axis(peg[3:]) * PEG_HALF_LENGTH
        left_nominal, *_ = self._target("left", self._t)
        want = nominal - (GRASP_TO_CENTRE + PEG_HALF_LENGTH) * X_AXIS
        want_rel = want - (left_nominal + GRASP_TO_CENTRE * X_AXIS)
        rel = tip - socket[:3]
        along = float(want_rel[0] - rel @ axis)
        across = -(rel - (rel @ axis) * axis)
        self._misalignment = float(np.linalg.norm(across))
        c = c + ALIGN_GAIN * (across + along * axis)
        c_along = float(np.clip(c @ axis, -MAX_AXIAL_CORRECTION, MAX_AXIAL_CORRECTION))
        c_across = c - (c @ axis) * axis
        return np.clip(c_across, -0.04, 0.04) + c_along * axis


def _x_axis(quat: np.ndarray) -> np.ndarray:
    mat = np.zeros(9)
    mujoco.mju_quat2Mat(mat, quat)
    return mat.reshape(3, 3)[:, 0]


__all__ = ["AlohaInsertionDemonstrator", "ArmIK", "Waypoint", "gripper_rotation"]
