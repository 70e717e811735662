"""Scripted, teleoperation-like demonstrators (paper Stage 1 data, Appendix D.1).

``PushTableDemonstrator`` pushes the named block like a person with a joystick would:
it reaches behind the block (going around it when needed), pushes it towards the goal
while steering to keep the end-effector, block and goal in line, and re-approaches when
the block slips or spins away. Human flavour, scaled by ``suboptimality`` in [0, 1]:
a per-episode speed, smooth hand-tremor noise (AR(1)), hesitation pauses, an initial
detour, imprecise (off-centre) contacts that need correcting, and occasional overshoot.
``suboptimality=0`` is a clean scripted pusher. Failures are kept by the generator and
marked ``success=False`` (the paper makes no optimality assumption).

The demonstrator reads ground-truth object positions, as a human watching the table
would; policies never do. PointMass demonstrators live in ``efm_sim.pointmass``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from efm_sim import tasks
from efm_sim.pointmass import StraightPDController, WaypointPDDemonstrator
from efm_sim.pushtable import BLOCK_RADIUS, PLACEMENT_LIMIT, PushTableEnv
from efm_sim.tabletop import ACTION_LIMIT, EE_LIMIT, EE_RADIUS, location_xy

CONTACT_OFFSET = BLOCK_RADIUS + EE_RADIUS - 0.002
"""Distance from block centre to end-effector centre when pushing (m)."""
CLEARANCE = BLOCK_RADIUS + EE_RADIUS + 0.02
"""How far to stay from a block while going around it (m)."""


def _unit(v: np.ndarray) -> np.ndarray:
    n = float(np.linalg.norm(v))
    return v / n if n > 1e-9 else np.array([1.0, 0.0])


def _perp(u: np.ndarray) -> np.ndarray:
    return np.array([-u[1], u[0]])


def _clip_norm(v: np.ndarray, limit: float) -> np.ndarray:
    n = float(np.linalg.norm(v))
    return v * (limit / n) if n > limit else v


class PushTableDemonstrator:
    """Human-like scripted pusher for every PushTable family.

    Args:
        suboptimality: 0 = clean and fast; 1 = slow, shaky, hesitant, detouring.
        env: the ``PushTableEnv`` to read object positions from (or ``bind`` later).
    """

    def __init__(self, suboptimality: float = 0.5, env: PushTableEnv | None = None) -> None:
        if not 0.0 <= suboptimality <= 1.0:
            raise ValueError(f"suboptimality must be in [0, 1], got {suboptimality}")
        self.suboptimality = float(suboptimality)
        self.env = env
        self._rng = np.random.default_rng(0)
        self._phase = "approach"
        self._noise = np.zeros(2)
        self._pause = 0
        self._detour: np.ndarray | None = None
        self._speed = ACTION_LIMIT
        self._contact_jitter = 0.0
        self._separate_goal = np.zeros(2)
        self._passed: set[str | None] = set()
        self._sides: dict[str, float] = {}

    def describe(self) -> dict[str, Any]:
        """Settings recorded with every episode."""
        return {"demonstrator": "pushtable_scripted", "suboptimality": self.suboptimality}

    def bind(self, env: Any) -> None:
        """Attach the env whose ground-truth state is observed (done by ``record_episode``)."""
        if not isinstance(env, PushTableEnv):
            raise TypeError(f"PushTableDemonstrator needs a PushTableEnv, got {type(env).__name__}")
        self.env = env

    def reset(self, obs: Any, rng: np.random.Generator) -> None:
        if self.env is None or self.env.task is None:
            raise RuntimeError("bind the demonstrator to a reset PushTableEnv first")
        q = self.suboptimality
        self._rng = rng
        self._phase = "approach"
        self._noise = np.zeros(2)
        self._pause = 0
        self._speed = ACTION_LIMIT * 0.95 * rng.uniform(1.0 - 0.45 * q, 1.0)
        self._contact_jitter = 0.0
        self._passed = set()
        self._sides = {}
        self._detour = (
            rng.uniform(-0.8 * EE_LIMIT, 0.8 * EE_LIMIT, size=2) if rng.random() < 0.6 * q else None
        )
        task = self.env.task
        if task.family == tasks.SEPARATE:
            self._separate_goal = self._choose_separate_goal()
        self._new_contact_jitter()

    # -- goals ---------------------------------------------------------------------------
    def _choose_separate_goal(self) -> np.ndarray:
        env, task = self.env, self.env.task  # type: ignore[union-attr]
        assert env is not None and task is not None and task.target is not None
        a, b = env.block_xy(task.block), env.block_xy(task.target)  # type: ignore[arg-type]
        away = _unit(a - b)
        for ang in (0, 30, -30, 60, -60, 90, -90, 120, -120):
            t = np.deg2rad(ang + self._rng.normal(0, 10 * self.suboptimality))
            d = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]]) @ away
            g = a + 0.22 * d
            if np.all(np.abs(g) <= PLACEMENT_LIMIT) and np.linalg.norm(g - b) > 0.2:
                return g
        return -np.sign(b) * PLACEMENT_LIMIT * 0.8

    def _block_goal(self) -> tuple[np.ndarray, np.ndarray]:
        """(block position, where the block should go) for the current task."""
        env = self.env
        assert env is not None and env.task is not None and env.task.block is not None
        task = env.task
        a = env.block_xy(task.block)
        if task.family == tasks.BLOCK2BLOCK:
            assert task.target is not None
            b = env.block_xy(task.target)
            goal = b - _unit(b - a) * 0.05
        elif task.family == tasks.BLOCK2LOCATION:
            assert task.location is not None
            goal = location_xy(task.location)
        else:
            goal = self._separate_goal
        return a, self._route_around(a, goal)

    def _route_around(self, a: np.ndarray, goal: np.ndarray) -> np.ndarray:
        """First via point that steers the pushed block around blocks in its way."""
        env = self.env
        assert env is not None and env.task is not None
        skip = {env.task.block, env.task.target} | self._passed
        d = goal - a
        length = float(np.linalg.norm(d))
        if length < 1e-6:
            return goal
        u, n = d / length, _perp(d / length)
        best: tuple[float, np.ndarray, str] | None = None
        for other in env.blocks:
            if other in skip:
                continue
            o = env.block_xy(other)
            t, off = float((o - a) @ u), float((o - a) @ n)
            in_way = 0.02 < t < length + BLOCK_RADIUS and abs(off) < 2 * BLOCK_RADIUS + 0.01
            if in_way and (best is None or t < best[0]):
                # Keep the side chosen first for this obstacle (no dithering).
                first_side = -np.sign(off) if abs(off) > 1e-3 else 1.0
                side = self._sides.setdefault(other, first_side)
                via = o + n * side * (2 * BLOCK_RADIUS + 0.03)
                if np.any(np.abs(via) > PLACEMENT_LIMIT + 0.02):
                    via = o - n * side * (2 * BLOCK_RADIUS + 0.03)
                best = (t, via, other)
        if best is None:
            return goal
        if np.linalg.norm(best[1] - a) < 0.035:
            self._passed.add(best[2])  # went round it; stop worrying about it
            return self._route_around(a, goal)
        return best[1]

    def _new_contact_jitter(self) -> None:
        self._contact_jitter = float(self._rng.normal(0.0, 0.007 * self.suboptimality))

    # -- control -------------------------------------------------------------------------
    def act(self, obs: Any) -> np.ndarray:
        env = self.env
        assert env is not None
        q, rng = self.suboptimality, self._rng
        ee = env.ee_xy()
        a, goal = self._block_goal()
        to_goal = goal - a
        u = _unit(to_goal)
        n = _perp(u)
        pre = a - u * CONTACT_OFFSET + n * self._contact_jitter
        rel = ee - a
        along, lateral = float(rel @ u), float(rel @ n)

        self._noise = 0.75 * self._noise + rng.normal(0.0, 0.0008 + 0.004 * q, size=2)
        if self._pause > 0:
            self._pause -= 1
            return self._finish(0.15 * self._noise)
        if rng.random() < 0.035 * q:
            self._pause = int(rng.integers(1, 4))

        if self._detour is not None:
            if np.linalg.norm(self._detour - ee) < 0.04:
                self._detour = None
            else:
                return self._finish(_clip_norm(self._detour - ee, self._speed) + self._noise)

        if self._phase == "push":
            lost = (
                abs(lateral) > 0.022
                or along > -0.6 * CONTACT_OFFSET
                or along < -CONTACT_OFFSET - 0.035
            )
            if lost:
                self._phase = "approach"
                self._new_contact_jitter()
            else:
                dist = float(np.linalg.norm(to_goal))
                speed = min(self._speed, 0.6 * dist + 0.006) * rng.uniform(1 - 0.3 * q, 1.0)
                # Push along the block->goal line and steer back onto it.
                delta = u * speed - n * (lateral - self._contact_jitter) * 0.7
                delta += u * (-(along + CONTACT_OFFSET)) * 0.3
                return self._finish(delta + 0.5 * self._noise)

        # Approach: reach the pre-push point, going around the block if it is in the way.
        target = pre
        if along > -0.7 * CONTACT_OFFSET:
            side = np.sign(lateral) if abs(lateral) > 1e-3 else rng.choice([-1.0, 1.0])
            if along > 0.0 and abs(lateral) < 0.9 * CLEARANCE:
                target = a + n * side * CLEARANCE + u * along  # step aside first
            else:
                target = a + n * side * CLEARANCE - u * CONTACT_OFFSET  # then come round
        if np.linalg.norm(ee - pre) < 0.01 + 0.006 * q:
            self._phase = "push"
        delta = _clip_norm(target - ee, self._speed) + self._repulsion(ee)
        return self._finish(_clip_norm(delta, self._speed) + self._noise)

    def _repulsion(self, ee: np.ndarray) -> np.ndarray:
        """Sidestep other blocks while reaching (people avoid knocking blocks over)."""
        env = self.env
        assert env is not None and env.task is not None
        push = np.zeros(2)
        for other in env.blocks:
            if other in (env.task.block, env.task.target):
                continue
            away = ee - env.block_xy(other)
            dist = float(np.linalg.norm(away))
            if dist < CLEARANCE:
                push += _unit(away) * 0.3 * (CLEARANCE - dist)
        return push

    def _finish(self, delta: np.ndarray) -> np.ndarray:
        return np.clip(delta, -ACTION_LIMIT, ACTION_LIMIT).astype(np.float32)


def make_demonstrator(env_name: str, **kwargs: Any) -> Any:
    """The demonstrator for ``env_name``; BananaTable has none (the novel task, D.2)."""
    if env_name == "pushtable":
        return PushTableDemonstrator(**kwargs)
    if env_name == "pointmass":
        return WaypointPDDemonstrator(**kwargs)
    if env_name == "bananatable":
        raise ValueError("bananatable has no demonstrator: it is the novel task (Appendix D.2)")
    raise ValueError(f"unknown env {env_name!r}; valid: ['pointmass', 'pushtable']")


__all__ = [
    "PushTableDemonstrator",
    "StraightPDController",
    "WaypointPDDemonstrator",
    "make_demonstrator",
]
