"""Pictures of steps-to-go predictions for rviz (paper Figure 3): the camera frame with the
predicted distribution over remaining steps drawn beneath it, d and the success threshold
marked; and a MarkerArray with d as text and a bar."""

from __future__ import annotations

import numpy as np
from PIL import Image as PILImage
from PIL import ImageDraw
from visualization_msgs.msg import Marker, MarkerArray

CHART_HEIGHT = 90
GREEN = (40, 170, 60)
GREY = (110, 110, 110)
RED = (210, 50, 40)


def distribution_image(
    frame: np.ndarray | None,
    probabilities: np.ndarray,
    bin_values: np.ndarray,
    expected_steps: float,
    threshold: float,
    *,
    width: int = 320,
) -> np.ndarray:
    """RGB uint8 image: ``frame`` scaled to ``width`` on top, the distribution as bars below.

    Bars at or below the success threshold are green, the rest grey; a red line marks d.
    """
    probs = np.asarray(probabilities, dtype=np.float64)
    values = np.asarray(bin_values, dtype=np.float64)
    if probs.shape != values.shape or probs.ndim != 1 or probs.size == 0:
        raise ValueError(f"probabilities {probs.shape} and bin_values {values.shape} must match")
    top = None
    if frame is not None:
        scale = width / frame.shape[1]
        height = max(1, round(frame.shape[0] * scale))
        top = PILImage.fromarray(frame).resize((width, height), PILImage.NEAREST)
    canvas_h = (top.height if top else 0) + CHART_HEIGHT
    canvas = PILImage.new("RGB", (width, canvas_h), (250, 250, 250))
    if top:
        canvas.paste(top, (0, 0))
    draw = ImageDraw.Draw(canvas)
    y0 = canvas_h - 14  # baseline, room for the axis text below
    chart_top = canvas_h - CHART_HEIGHT + 16
    vmax = float(values[-1]) if values[-1] > 0 else 1.0
    peak = float(probs.max()) or 1.0
    bar_w = max(1.0, (width - 8) / probs.size)
    for k, (p, v) in enumerate(zip(probs, values, strict=True)):
        x0 = 4 + k * bar_w
        h = (y0 - chart_top) * p / peak
        color = GREEN if v <= threshold else GREY
        draw.rectangle([x0, y0 - h, x0 + max(bar_w - 1, 1), y0], fill=color)
    x_d = 4 + (width - 8) * min(max(expected_steps / vmax, 0.0), 1.0)
    draw.line([x_d, chart_top - 4, x_d, y0], fill=RED, width=2)
    label = f"d = {expected_steps:.1f} steps" + ("  SUCCESS" if expected_steps <= threshold else "")
    draw.text((4, chart_top - 15), label, fill=RED if expected_steps > threshold else GREEN)
    draw.text((4, y0 + 2), "0", fill=(0, 0, 0))
    draw.text((width - 30, y0 + 2), f"{vmax:.0f}", fill=(0, 0, 0))
    return np.asarray(canvas, dtype=np.uint8)


def steps_to_go_markers(
    expected_steps: float, threshold: float, max_steps: float, frame_id: str, stamp
) -> MarkerArray:
    """d as a text marker and a bar whose length is d / max_steps (green when d <= s)."""
    success = expected_steps <= threshold
    color = (0.16, 0.67, 0.24) if success else (0.8, 0.2, 0.15)
    text = Marker(ns="steps_to_go", id=0, type=Marker.TEXT_VIEW_FACING, action=Marker.ADD)
    text.text = f"d={expected_steps:.1f}" + (" (success)" if success else "")
    text.pose.position.z = 0.25
    text.scale.z = 0.04
    bar = Marker(ns="steps_to_go", id=1, type=Marker.CUBE, action=Marker.ADD)
    length = 0.3 * min(max(expected_steps / max(max_steps, 1e-6), 0.0), 1.0)
    bar.pose.position.x = length / 2
    bar.pose.position.z = 0.2
    bar.pose.orientation.w = 1.0
    bar.scale.x, bar.scale.y, bar.scale.z = max(length, 1e-3), 0.02, 0.02
    for marker in (text, bar):
        marker.header.frame_id = frame_id
        marker.header.stamp = stamp
        marker.color.r, marker.color.g, marker.color.b = color
        marker.color.a = 1.0
        marker.pose.orientation.w = 1.0
    return MarkerArray(markers=[text, bar])
