"""The one place the learner touches efm_sim environments: build them and turn their
observations into the shared batch keys (``efm_sim.keys``)."""

from __future__ import annotations

from typing import Any

import numpy as np

from efm_sim import keys


def make_env(name: str, **kwargs: Any) -> Any:
    """``efm_sim.make_env`` (imported lazily so the learner core never needs MuJoCo)."""
    import efm_sim

    return efm_sim.make_env(name, **kwargs)


def observation_to_keys(
    obs: Any, info: dict[str, Any], previous_image: np.ndarray | None = None
) -> dict[str, Any]:
    """Env observation -> ``{observation.state, [observation.image,
    observation.previous_image], instruction}``. PointMass observations are flat arrays;
    tabletop observations are dicts with ``proprio`` and ``image``."""
    if isinstance(obs, dict):
        out: dict[str, Any] = {keys.OBS_STATE: np.asarray(obs["proprio"], dtype=np.float32)}
        if "image" in obs:
            image = np.asarray(obs["image"])
            out[keys.OBS_IMAGE] = image
            out[keys.OBS_PREV_IMAGE] = image if previous_image is None else previous_image
    else:
        out = {keys.OBS_STATE: np.asarray(obs, dtype=np.float32)}
    out[keys.INSTRUCTION] = str(info.get("instruction", ""))
    return out


def ground_truth_success(info: dict[str, Any]) -> bool:
    """The simulator's success flag: evaluation and diagnostics only, never learning."""
    return bool(info.get("success", False))
