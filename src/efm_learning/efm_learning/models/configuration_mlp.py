"""Config of the ``mlp`` backend: low-dimensional state in, two MLP trunks (PointMass)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from efm_learning.config import ConfigError
from efm_learning.models.base import EFMConfig


@dataclass
class MLPConfig(EFMConfig):
    """Two trunks of ``num_layers`` x ``hidden_size`` (the pointmass notebook: 3 x 256),
    one for the action tokens and one for the steps-to-go bins."""

    type: Literal["mlp"] = "mlp"
    #: length of ``observation.state`` (PointMass: pos, vel, goal = 6)
    state_dim: int = 6
    hidden_size: int = 256
    num_layers: int = 3
    activation: Literal["relu", "gelu", "tanh"] = "relu"

    def __post_init__(self) -> None:
        if self.state_dim < 1:
            raise ConfigError(f"state_dim: must be >= 1, got {self.state_dim}")
        if self.hidden_size < 1 or self.num_layers < 1:
            raise ConfigError("hidden_size and num_layers must be >= 1")
