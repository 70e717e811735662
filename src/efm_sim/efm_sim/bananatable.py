"""BananaTable: the novel task of paper Appendix D.2 (no demonstrations exist).

The PushTable board with all blocks removed and one banana: an elongated, curved body
made of a chain of capsules. Instructions: "<push|move|slide|nudge> the banana to the
<left|top left|top center|top right|right|bottom right|bottom|bottom left|center> of the
table". Because the banana is long and its friction acts at its centre, pushing it away
from its middle makes it spin around itself (paper Section 4.3, Figure 9) rather than
translate. Ground-truth success (evaluation only): banana centre within 0.07 m of the
named location.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from efm_sim import tasks
from efm_sim.tabletop import (
    EE_RADIUS,
    OBJECT_LIMIT,
    ObjectSpec,
    TabletopEnv,
    location_xy,
    sample_separated,
)

BANANA_NAME = "banana"
BANANA_ARC_RADIUS = 0.11
BANANA_ARC_ANGLE = np.deg2rad(85.0)
BANANA_SEGMENTS = 6
BANANA_THICKNESS = 0.016
BANANA_LENGTH = BANANA_ARC_RADIUS * BANANA_ARC_ANGLE
LOCATION_THRESHOLD = 0.07
BANANA_LIMIT = 0.16
"""The banana's centre stays within [-0.16, 0.16]^2 so the whole fruit stays on the board."""
BANANA_RGBA = "0.98 0.86 0.20 1"
TIP_RGBA = "0.40 0.28 0.10 1"


def banana_points(n: int = BANANA_SEGMENTS + 1) -> np.ndarray:
    """Centre-line points of the banana arc, centred on their mean (body origin)."""
    ang = np.pi / 2 + np.linspace(-BANANA_ARC_ANGLE / 2, BANANA_ARC_ANGLE / 2, n)
    pts = BANANA_ARC_RADIUS * np.column_stack([np.cos(ang), np.sin(ang)])
    return pts - pts.mean(axis=0)


def _banana_geoms() -> str:
    pts = banana_points()
    h = BANANA_THICKNESS
    geoms = []
    for i in range(len(pts) - 1):
        (x0, y0), (x1, y1) = pts[i], pts[i + 1]
        # Thinner towards the tips, like a banana.
        r = h * (0.75 if i in (0, len(pts) - 2) else 1.0)
        geoms.append(
            f'<geom type="capsule" fromto="{x0:.5f} {y0:.5f} 0 {x1:.5f} {y1:.5f} 0" '
            f'size="{r:.4f}" rgba="{BANANA_RGBA}"/>'
        )
    for x, y in (pts[0], pts[-1]):
        geoms.append(
            f'<geom type="sphere" pos="{x:.5f} {y:.5f} 0.002" size="{0.7 * h:.4f}" '
            f'rgba="{TIP_RGBA}" contype="0" conaffinity="0"/>'
        )
    return "\n      ".join(geoms)


class BananaTableEnv(TabletopEnv):
    """One banana on the table, pushed to one of nine named locations (Appendix D.2).

    See ``TabletopEnv`` for observations, actions and ``info``. The only family is
    ``"banana2location"``; there is no demonstrator (it is the novel task).
    """

    env_name: ClassVar[str] = "bananatable"
    task_families: ClassVar[tuple[str, ...]] = tasks.BANANATABLE_FAMILIES

    def _object_specs(self) -> tuple[list[ObjectSpec], str]:
        spec = ObjectSpec(
            name=BANANA_NAME,
            geoms_xml=_banana_geoms(),
            radius=BANANA_LENGTH / 2,
            mass=0.12,
            yaw_inertia=0.12 * BANANA_LENGTH**2 / 12,
            half_height=BANANA_THICKNESS,
            slide_friction=0.18,
            yaw_friction=0.004,
            limit=BANANA_LIMIT,
        )
        return [spec], ""

    def _block_names(self) -> tuple[str, ...]:
        return ()

    def banana_pose(self) -> np.ndarray:
        """Ground-truth [x, y, yaw] of the banana."""
        return self.object_poses()[0]

    def goal_distance(self) -> float:
        assert self.task is not None and self.task.location is not None
        return float(np.linalg.norm(self.banana_pose()[:2] - location_xy(self.task.location)))

    def task_success(self) -> bool:
        return self.goal_distance() < LOCATION_THRESHOLD

    def _sample_scene(
        self, task: tasks.Task, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        assert task.location is not None
        goal = location_xy(task.location)
        for _ in range(100):
            xy = rng.uniform(-0.15, 0.15, size=2)
            if np.linalg.norm(xy - goal) >= LOCATION_THRESHOLD + 0.05:
                break
        yaw = rng.uniform(-np.pi, np.pi)
        ee = sample_separated(
            rng, [EE_RADIUS], OBJECT_LIMIT, 0.01, fixed=[(xy, BANANA_LENGTH / 2)]
        )[0]
        return np.array([[xy[0], xy[1], yaw]]), ee
