"""PushTable: a LanguageTable-like MuJoCo domain (paper Appendix D.1).

Eight blocks, the LanguageTable set of four colours x four shapes (red moon, red
pentagon, blue moon, blue cube, green cube, green star, yellow star, yellow pentagon),
are placed without overlap on the board; a cylindrical end-effector pushes them.
Task families (``efm_sim.tasks``): ``block2block`` (the paper's Stage 2 family),
``block2location`` and ``separate``. Ground-truth success, for evaluation only:

* block2block: block centres closer than 0.075 m. LanguageTable uses 0.05 m with
  blocks ~1.4x smaller than ours (ours are ~0.05 m across), so the criterion is scaled;
* block2location: block centre within 0.07 m of the named board location;
* separate: block centres at least 0.18 m apart (they start touching).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from efm_sim import shapes, tasks
from efm_sim.tabletop import (
    EE_RADIUS,
    OBJECT_LIMIT,
    ObjectSpec,
    TabletopEnv,
    location_xy,
    sample_separated,
)

BLOCK_HALF_HEIGHT = 0.015
BLOCK_RADIUS = 0.03
"""Footprint radius used for placement and by the demonstrator (m)."""
BLOCK2BLOCK_THRESHOLD = 0.075
LOCATION_THRESHOLD = 0.07
SEPARATE_THRESHOLD = 0.18
PLACEMENT_LIMIT = 0.16
PLACEMENT_GAP = 0.02

COLOUR_RGBA: dict[str, str] = {
    "red": "0.86 0.12 0.12 1",
    "blue": "0.12 0.32 0.90 1",
    "green": "0.10 0.68 0.22 1",
    "yellow": "0.98 0.82 0.08 1",
}


def block_body_name(block: str) -> str:
    return block.replace(" ", "_")


def check_blocks(blocks: Sequence[str] | None) -> tuple[str, ...]:
    """Validated board blocks in canonical order (``None`` = all eight)."""
    chosen = tuple(tasks.BLOCKS if blocks is None else (tasks.normalize(b) for b in blocks))
    unknown = sorted(set(chosen) - set(tasks.BLOCKS))
    if unknown or len(chosen) < 2 or len(set(chosen)) != len(chosen):
        raise ValueError(
            f"blocks: need at least 2 distinct blocks out of {list(tasks.BLOCKS)}, got "
            f"{list(chosen)}" + (f" (unknown: {unknown})" if unknown else "")
        )
    return tuple(b for b in tasks.BLOCKS if b in chosen)


def _assets() -> str:
    h = BLOCK_HALF_HEIGHT
    return "\n    ".join(
        [
            shapes.mesh_xml("moon", *shapes.moon(0.031, h)),
            shapes.mesh_xml("star", *shapes.star(0.033, h)),
            shapes.mesh_xml("pentagon", *shapes.pentagon(0.028, h)),
        ]
    )


def _block_spec(block: str) -> ObjectSpec:
    colour, shape = block.split()
    rgba = COLOUR_RGBA[colour]
    name = block_body_name(block)
    if shape == "cube":
        size = f"0.021 0.021 {BLOCK_HALF_HEIGHT}"
        geom = f'<geom name="{name}" type="box" size="{size}" rgba="{rgba}"/>'
    else:
        geom = f'<geom name="{name}" type="mesh" mesh="{shape}" rgba="{rgba}"/>'
    return ObjectSpec(name=name, geoms_xml=geom, radius=BLOCK_RADIUS, half_height=BLOCK_HALF_HEIGHT)


class PushTableEnv(TabletopEnv):
    """LanguageTable-like pushing with language instructions (paper Appendix D.1).

    See ``TabletopEnv`` for observations, actions and ``info``. Families are sampled
    with weights block2block 0.5, block2location 0.25, separate 0.25 (LanguageTable's
    data is ~47% Block2Block, Appendix H) unless ``task_families`` restricts them or
    ``reset(options=...)`` names one.
    """

    env_name: ClassVar[str] = "pushtable"
    task_families: ClassVar[tuple[str, ...]] = tasks.PUSHTABLE_FAMILIES
    default_family_weights: ClassVar[tuple[float, ...]] = (0.5, 0.25, 0.25)

    def __init__(self, *args: Any, blocks: Sequence[str] | None = None, **kwargs: Any) -> None:
        """``blocks``: the blocks on the board (default: all eight). A smaller board (e.g.
        one block per colour) is our CPU-scale departure from LanguageTable's eight; the
        instructions then only name blocks that are present."""
        self.blocks = check_blocks(blocks)
        super().__init__(*args, **kwargs)

    def _object_specs(self) -> tuple[list[ObjectSpec], str]:
        return [_block_spec(b) for b in self.blocks], _assets()

    def _block_names(self) -> tuple[str, ...]:
        return self.blocks

    def block_xy(self, block: str) -> np.ndarray:
        """Ground-truth centre of ``block`` (e.g. "red moon")."""
        return self.object_xy(block_body_name(block))

    def goal_distance(self) -> float:
        """Ground-truth distance that defines success for the current task."""
        task = self.task
        assert task is not None and task.block is not None
        a = self.block_xy(task.block)
        if task.family == tasks.BLOCK2LOCATION:
            assert task.location is not None
            return float(np.linalg.norm(a - location_xy(task.location)))
        assert task.target is not None
        return float(np.linalg.norm(a - self.block_xy(task.target)))

    def task_success(self) -> bool:
        assert self.task is not None
        d = self.goal_distance()
        if self.task.family == tasks.BLOCK2BLOCK:
            return d < BLOCK2BLOCK_THRESHOLD
        if self.task.family == tasks.BLOCK2LOCATION:
            return d < LOCATION_THRESHOLD
        return d >= SEPARATE_THRESHOLD

    def _sample_scene(
        self, task: tasks.Task, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        n = len(self.blocks)
        radii = [BLOCK_RADIUS] * n
        for _ in range(100):
            if task.family == tasks.SEPARATE:
                assert task.block is not None and task.target is not None
                a = rng.uniform(-PLACEMENT_LIMIT + 0.04, PLACEMENT_LIMIT - 0.04, size=2)
                ang = rng.uniform(0, 2 * np.pi)
                b = a + (2 * BLOCK_RADIUS + 0.005) * np.array([np.cos(ang), np.sin(ang)])
                ia, ib = self.blocks.index(task.block), self.blocks.index(task.target)
                others = [i for i in range(n) if i not in (ia, ib)]
                rest = sample_separated(
                    rng,
                    radii[: len(others)],
                    PLACEMENT_LIMIT,
                    PLACEMENT_GAP,
                    fixed=[(a, BLOCK_RADIUS), (b, BLOCK_RADIUS)],
                )
                xy = np.zeros((n, 2))
                xy[ia], xy[ib] = a, b
                xy[others] = rest
            else:
                xy = sample_separated(rng, radii, PLACEMENT_LIMIT, PLACEMENT_GAP)
            if task.family == tasks.BLOCK2LOCATION:
                assert task.block is not None and task.location is not None
                a = xy[self.blocks.index(task.block)]
                if np.linalg.norm(a - location_xy(task.location)) < LOCATION_THRESHOLD + 0.03:
                    continue
            break
        yaw = rng.uniform(-np.pi, np.pi, size=(n, 1))
        ee = sample_separated(
            rng, [EE_RADIUS], OBJECT_LIMIT, 0.01, fixed=[(p, BLOCK_RADIUS) for p in xy]
        )[0]
        return np.hstack([xy, yaw]), ee
