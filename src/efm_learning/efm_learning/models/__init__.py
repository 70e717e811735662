"""Model backends behind the EFM interface, found by type name (LeRobot-style registry).

Each backend has ``configuration_<name>.py`` (a config dataclass) and
``modeling_<name>.py`` (an :class:`~efm_learning.models.base.EFM` subclass); both are
imported lazily, so optional dependencies (transformers for ``vlm``, the pretrained
encoders for ``small_efm``) are only needed when that backend is used.
"""

from __future__ import annotations

import importlib
from typing import Any

from efm_learning.config import ConfigError, from_dict, to_dict
from efm_learning.models.base import EFM, EFMConfig

#: type name -> (config class path, model class path)
_BACKENDS: dict[str, tuple[str, str]] = {
    "mlp": (
        "efm_learning.models.configuration_mlp:MLPConfig",
        "efm_learning.models.modeling_mlp:MLPEFM",
    ),
    "small_efm": (
        "efm_learning.models.configuration_small_efm:SmallEFMConfig",
        "efm_learning.models.modeling_small_efm:SmallEFM",
    ),
    "conv_efm": (
        "efm_learning.models.configuration_conv_efm:ConvEFMConfig",
        "efm_learning.models.modeling_conv_efm:ConvEFM",
    ),
    "aloha_efm": (
        "efm_learning.models.configuration_aloha_efm:AlohaEFMConfig",
        "efm_learning.models.modeling_aloha_efm:AlohaEFM",
    ),
    "vlm": (
        "efm_learning.models.configuration_vlm:VLMConfig",
        "efm_learning.models.modeling_vlm:VLMEFM",
    ),
}


def available_backends() -> list[str]:
    return sorted(_BACKENDS)


def register_backend(name: str, config_path: str, model_path: str) -> None:
    """Register a backend as ``"module:Class"`` paths (imported when first used)."""
    _BACKENDS[name] = (config_path, model_path)


def _load(path: str) -> Any:
    module, _, attr = path.partition(":")
    try:
        return getattr(importlib.import_module(module), attr)
    except ModuleNotFoundError as error:
        if error.name == module:
            raise ConfigError(
                f"model.type: the backend in {module} is not implemented yet; "
                f"use one of the implemented backends (mlp, small_efm, conv_efm)"
            ) from None
        raise


def _entry(name: Any) -> tuple[str, str]:
    if name not in _BACKENDS:
        raise ConfigError(
            f"model.type: got {name!r}; allowed values: {', '.join(available_backends())}"
        )
    return _BACKENDS[name]


def model_config_from_dict(data: dict[str, Any]) -> EFMConfig:
    """Build the backend config named by ``data['type']`` (keys checked, errors named)."""
    if not isinstance(data, dict) or "type" not in data:
        raise ConfigError(f"model.type: missing; allowed values: {', '.join(available_backends())}")
    config_cls = _load(_entry(data["type"])[0])
    return from_dict(config_cls, data, "model")


def model_config_to_dict(config: EFMConfig) -> dict[str, Any]:
    return to_dict(config)


def make_model(config: EFMConfig | dict[str, Any]) -> EFM:
    """Instantiate the backend for ``config`` (a config object or a plain dict)."""
    if isinstance(config, dict):
        config = model_config_from_dict(config)
    model_cls = _load(_entry(config.type)[1])
    return model_cls(config)


__all__ = [
    "EFM",
    "EFMConfig",
    "available_backends",
    "make_model",
    "model_config_from_dict",
    "model_config_to_dict",
    "register_backend",
]
