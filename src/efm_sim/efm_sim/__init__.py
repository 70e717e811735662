"""efm_sim: simulation domains and scripted demonstrators (paper Appendix D).

PointMass (the paper's pointmass notebook), PushTable (LanguageTable-like, Appendix D.1),
BananaTable (Appendix D.2) and ALOHA insertion (Appendix D.3, ``efm_sim.aloha``), plus
the episode dataset formats. Knows nothing of ROS and never imports rclpy or torch.

    >>> import efm_sim
    >>> env = efm_sim.make_env("pointmass")
"""

from __future__ import annotations

import importlib
import os
from typing import Any

import gymnasium as gym

# MuJoCo picks its GL backend at import time; EGL works headless on CPU (llvmpipe).
os.environ.setdefault("MUJOCO_GL", "egl")

__version__ = "0.1.0"

_ENV_CLASSES: dict[str, str] = {
    "pointmass": "efm_sim.pointmass:PointMassEnv",
    "pushtable": "efm_sim.pushtable:PushTableEnv",
    "bananatable": "efm_sim.bananatable:BananaTableEnv",
}
GYM_IDS: dict[str, str] = {
    "pointmass": "efm/PointMass-v0",
    "pushtable": "efm/PushTable-v0",
    "bananatable": "efm/BananaTable-v0",
}
ENV_NAMES: tuple[str, ...] = tuple(_ENV_CLASSES)
"""Single-arm, single-camera domains (Appendices D.1, D.2 and the pointmass notebook)."""
# ALOHA bimanual insertion (Appendix D.3): 14 joints, four cameras; needs gym-aloha's
# assets, loaded only when the env is built.
_ENV_CLASSES["aloha_insertion"] = "efm_sim.aloha:AlohaInsertionEnv"
GYM_IDS["aloha_insertion"] = "efm/AlohaInsertion-v0"
ALL_ENV_NAMES: tuple[str, ...] = tuple(_ENV_CLASSES)


def env_class(name: str) -> type[gym.Env]:
    """The environment class registered under ``name`` (ValueError if unknown)."""
    if name not in _ENV_CLASSES:
        raise ValueError(f"unknown env {name!r}; valid names: {list(ALL_ENV_NAMES)}")
    module, cls = _ENV_CLASSES[name].split(":")
    return getattr(importlib.import_module(module), cls)


def make_env(name: str, **kwargs: Any) -> gym.Env:
    """Build the environment ``name`` ("pointmass", "pushtable", "bananatable",
    "aloha_insertion").

    Keyword arguments go to the environment's constructor (e.g. ``image_size=224``,
    ``max_episode_steps``, ``terminate_on_success``, ``render_mode="rgb_array"``).
    Time limits are enforced inside each env (``truncated=True``), not by a wrapper.
    """
    return env_class(name)(**kwargs)


def _register() -> None:
    for name, gym_id in GYM_IDS.items():
        if gym_id not in gym.registry:
            gym.register(id=gym_id, entry_point=_ENV_CLASSES[name])


_register()

__all__ = ["ALL_ENV_NAMES", "ENV_NAMES", "GYM_IDS", "env_class", "make_env"]
