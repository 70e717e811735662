"""Config of ``aloha_efm``: the ALOHA insertion EFM (paper Appendices D.3, E.2) at CPU scale."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from efm_learning.config import ConfigError
from efm_learning.models.base import ActionTokenizerConfig, EFMConfig, StepsToGoConfig
from efm_sim.aloha_layout import JOINT_HIGH, JOINT_LOW

ALOHA_JOINTS = 14
ALOHA_CHUNK = 5


def _aloha_actions() -> ActionTokenizerConfig:
    """14 joints x 5 steps = 70 tokens, 256 bins over [-1, 1] (Appendix E.2)."""
    return ActionTokenizerConfig(
        type="uniform", action_dim=ALOHA_JOINTS, chunk=ALOHA_CHUNK, bins=256, low=-1.0, high=1.0
    )


def _aloha_steps_to_go() -> StepsToGoConfig:
    """One bin per 10 Hz policy step over 0..300 (Appendix E.2: 1500 driver steps / 5)."""
    return StepsToGoConfig(max_steps=300, num_bins=301)


@dataclass
class AlohaEFMConfig(EFMConfig):
    """Two stacked images + 14 joint tokens -> 70 action tokens and 301 steps-to-go bins.

    Joints (observed ``qpos`` and commanded targets) are normalised to [-1, 1] with
    ``joint_low`` / ``joint_high`` (default: the env's action bounds, efm_sim.aloha_layout)
    inside the model, so it takes and returns raw joint radians / gripper [0, 1].
    """

    type: Literal["aloha_efm"] = "aloha_efm"
    action_tokenizer: ActionTokenizerConfig = field(default_factory=_aloha_actions)
    steps_to_go: StepsToGoConfig = field(default_factory=_aloha_steps_to_go)
    #: side of each (square) stacked image; the paper's PaLI sees 224 (Appendix D.3)
    image_size: int = 64
    #: black rows between the two views of a stacked image
    band_px: int = 4
    #: stacked images per observation (Appendix D.3: 2)
    num_images: int = 2
    #: conv layers (each stride 2), shared by the images
    channels: list[int] = field(default_factory=lambda: [16, 32, 32, 32])
    #: proprioception length (the 14 joints)
    state_dim: int = ALOHA_JOINTS
    #: bins of each joint input token (Appendix E.2: 256, as the actions)
    joint_bins: int = 256
    #: width of each joint token's embedding (flattened: 14 x this)
    joint_embed_dim: int = 16
    joint_low: list[float] = field(default_factory=lambda: list(JOINT_LOW))
    joint_high: list[float] = field(default_factory=lambda: list(JOINT_HIGH))
    hidden_size: int = 256
    #: Stage 1 augmentation: random shift of each image by up to this many pixels
    random_shift: int = 0
    #: Stage 2 updates only the trunk and heads, keeping the conv tower frozen (A.3)
    freeze_encoder_in_stage2: bool = True

    def __post_init__(self) -> None:
        tok, stg = self.action_tokenizer, self.steps_to_go
        if tok.type != "uniform" or tok.action_dim != self.state_dim:
            raise ConfigError(
                f"action_tokenizer: aloha_efm needs type 'uniform' with action_dim = "
                f"state_dim = {self.state_dim}"
            )
        if (tok.low, tok.high) != (-1.0, 1.0):
            raise ConfigError("action_tokenizer.low/high: aloha_efm bins normalised joints, "
                              "set -1.0 and 1.0 (Appendix E.2)")
        if stg.num_bins < 2:
            raise ConfigError("steps_to_go.num_bins must be >= 2")
        if self.image_size < 16 or self.image_size % 2 ** len(self.channels):
            raise ConfigError(
                f"image_size: must be >= 16 and a multiple of 2^len(channels) = "
                f"{2 ** len(self.channels)}, got {self.image_size}"
            )
        if not 0 <= self.band_px <= self.image_size // 4:
            raise ConfigError(f"band_px: must be in [0, image_size / 4], got {self.band_px}")
        if self.num_images < 1:
            raise ConfigError(f"num_images: must be >= 1, got {self.num_images}")
        if not self.channels or any(c < 1 for c in self.channels):
            raise ConfigError("channels: need >= 1 layer, each >= 1")
        if len(self.joint_low) != self.state_dim or len(self.joint_high) != self.state_dim:
            raise ConfigError(f"joint_low/joint_high: need {self.state_dim} values each")
        if any(lo >= hi for lo, hi in zip(self.joint_low, self.joint_high, strict=True)):
            raise ConfigError("joint_low/joint_high: need low < high for every joint")
        if self.joint_bins < 2 or self.joint_embed_dim < 1 or self.hidden_size < 1:
            raise ConfigError("joint_bins must be >= 2; joint_embed_dim, hidden_size >= 1")
        if not 0 <= self.random_shift < self.image_size // 4:
            raise ConfigError(
                f"random_shift: must be in [0, image_size / 4), got {self.random_shift}"
            )
