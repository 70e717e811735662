"""Procedural prism meshes for the LanguageTable-like blocks (paper Appendix D.1).

Each shape is an outline in the xy plane (counter-clockwise) plus a triangulation of
its top face; ``prism`` extrudes it into a closed, outward-facing triangle mesh that
MuJoCo renders as-is (collisions use its convex hull).
"""

from __future__ import annotations

import numpy as np


def prism(
    points: np.ndarray,
    outline: list[int],
    triangles: list[tuple[int, int, int]],
    half_height: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Extrude a triangulated 2-D polygon. Returns (vertices (V,3), faces (F,3)).

    ``outline`` lists point indices counter-clockwise; ``triangles`` (CCW) cover the face.
    """
    pts = np.asarray(points, dtype=np.float64)
    n = len(pts)
    bottom = np.column_stack([pts, np.full(n, -half_height)])
    top = np.column_stack([pts, np.full(n, half_height)])
    vertices = np.vstack([bottom, top])
    faces: list[tuple[int, int, int]] = []
    for a, b, c in triangles:
        faces.append((a + n, b + n, c + n))  # top, normal +z
        faces.append((a, c, b))  # bottom, normal -z
    for k in range(len(outline)):
        i, j = outline[k], outline[(k + 1) % len(outline)]
        faces.append((i, j, j + n))
        faces.append((i, j + n, i + n))
    return vertices, np.asarray(faces, dtype=np.int64)


def _fan(outline_pts: np.ndarray) -> tuple[np.ndarray, list[int], list[tuple[int, int, int]]]:
    """Star-shaped polygon: points = [centre, outline...], fan triangulation."""
    m = len(outline_pts)
    points = np.vstack([[0.0, 0.0], outline_pts])
    outline = list(range(1, m + 1))
    tris = [(0, 1 + k, 1 + (k + 1) % m) for k in range(m)]
    return points, outline, tris


def regular_polygon(n: int, radius: float, phase: float = np.pi / 2) -> np.ndarray:
    ang = phase + 2 * np.pi * np.arange(n) / n
    return radius * np.column_stack([np.cos(ang), np.sin(ang)])


def pentagon(radius: float, half_height: float) -> tuple[np.ndarray, np.ndarray]:
    return prism(*_fan(regular_polygon(5, radius)), half_height)


def star(
    radius: float, half_height: float, inner_ratio: float = 0.48
) -> tuple[np.ndarray, np.ndarray]:
    ang = np.pi / 2 + np.pi * np.arange(10) / 5
    r = np.where(np.arange(10) % 2 == 0, radius, radius * inner_ratio)
    return prism(*_fan(np.column_stack([r * np.cos(ang), r * np.sin(ang)])), half_height)


def moon(radius: float, half_height: float, segments: int = 12) -> tuple[np.ndarray, np.ndarray]:
    """Crescent opening towards +x: an outer arc and an offset inner arc sharing tips."""
    tip = np.deg2rad(60.0)
    c = 0.45 * radius  # inner circle centre on the +x axis
    tip_xy = radius * np.array([np.cos(tip), np.sin(tip)])
    r_in = float(np.hypot(tip_xy[0] - c, tip_xy[1]))
    psi = float(np.arctan2(tip_xy[1], tip_xy[0] - c))
    t = np.linspace(0.0, 1.0, segments + 1)
    outer = radius * np.column_stack(
        [np.cos(tip + t * (2 * np.pi - 2 * tip)), np.sin(tip + t * (2 * np.pi - 2 * tip))]
    )
    inner_ang = psi + t * (2 * np.pi - 2 * psi)
    inner = np.column_stack([c + r_in * np.cos(inner_ang), r_in * np.sin(inner_ang)])
    # Points: outer 0..S, inner 1..S-1 (tips shared with the outer arc).
    points = np.vstack([outer, inner[1:-1]])
    s = segments

    def inner_idx(i: int) -> int:
        if i == 0:
            return 0
        if i == s:
            return s
        return s + i  # inner[i] stored at s + 1 + (i - 1)

    tris: list[tuple[int, int, int]] = []
    for i in range(s):
        if i < s - 1:
            tris.append((i, i + 1, inner_idx(i + 1)))
        if i > 0:
            tris.append((i, inner_idx(i + 1), inner_idx(i)))
    outline = list(range(s + 1)) + [inner_idx(i) for i in range(s - 1, 0, -1)]
    return prism(points, outline, tris, half_height)


def mesh_xml(name: str, vertices: np.ndarray, faces: np.ndarray) -> str:
    """A MuJoCo ``<mesh>`` element with inline vertices and faces."""
    v = " ".join(f"{x:.6f}" for x in vertices.ravel())
    f = " ".join(str(int(i)) for i in faces.ravel())
    return f'<mesh name="{name}" vertex="{v}" face="{f}"/>'
