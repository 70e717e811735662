"""Input checks shared by the environments (clear errors instead of silent NaNs)."""

from __future__ import annotations

import numpy as np
from gymnasium import spaces


def validate_action(action: object, space: spaces.Box) -> np.ndarray:
    """Return `action` as float64 clipped to `space`; raise ValueError on bad input.

    Wrong shapes and non-finite values (NaN/inf) are refused with a message that says
    what was expected; finite out-of-range values are clipped to [space.low, space.high].
    """
    try:
        arr = np.asarray(action, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(
            f"action must be numeric with shape {space.shape}, got {action!r}"
        ) from exc
    if arr.shape != space.shape:
        raise ValueError(f"action must have shape {space.shape}, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"action must be finite (no NaN/inf), got {arr.tolist()}")
    return np.clip(arr, space.low, space.high)
