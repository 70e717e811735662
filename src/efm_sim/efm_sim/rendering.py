"""Offscreen MuJoCo renderers that are closed before the interpreter exits.

A ``mujoco.Renderer`` holds a GL (EGL / OSMesa) context; one still open when MuJoCo's own
exit hook terminates EGL crashes the process at exit. Every env makes its renderers here.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import weakref

os.environ.setdefault("MUJOCO_GL", "egl")  # before MuJoCo picks a GL backend

import mujoco

_LIVE: weakref.WeakSet[mujoco.Renderer] = weakref.WeakSet()
_REGISTERED = False


def _close_all() -> None:
    # Registered after the first Renderer exists, so it runs before MuJoCo's own
    # eglTerminate hook (atexit is LIFO).
    for renderer in list(_LIVE):
        with contextlib.suppress(Exception):
            renderer.close()


def new_renderer(model: mujoco.MjModel, height: int, width: int) -> mujoco.Renderer:
    """A renderer for ``model`` at ``height`` x ``width``, closed at exit if still open."""
    global _REGISTERED
    renderer = mujoco.Renderer(model, height, width)
    _LIVE.add(renderer)
    if not _REGISTERED:
        atexit.register(_close_all)
        _REGISTERED = True
    return renderer
