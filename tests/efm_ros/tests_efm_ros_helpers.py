"""Small builders shared by the node tests."""

from __future__ import annotations

import numpy as np


def observation(
    state,
    step: int = 0,
    image: np.ndarray | None = None,
    instruction: str = "",
    station: str = "station_0",
):
    """An efm_interfaces/Observation with a 2-D proprioception and an optional camera."""
    from efm_ros.conversions import make_observation

    images = {} if image is None else {"top": image}
    return make_observation(
        station=station,
        step=step,
        instruction=instruction,
        images=images,
        proprioception=list(state),
        proprio_names=["ee_x", "ee_y"],
    )
