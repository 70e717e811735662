"""Config of ``vlm``: a Hugging Face PaliGemma model as an RT-2 style EFM (Appendix A.1).

Exactly one of ``model_dir`` (a local checkpoint directory, never downloaded) and
``tiny`` (a random-initialised test-size PaliGemma config) chooses the network.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from efm_learning.config import ConfigError
from efm_learning.models.base import EFMConfig

#: the test-size PaliGemma that ``tiny: {}`` builds (entries of ``tiny`` override it)
TINY_PALIGEMMA: dict[str, Any] = {
    "vision_config": {
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "image_size": 32,
        "patch_size": 8,
    },
    "text_config": {
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "num_key_value_heads": 1,
        "head_dim": 32,
        "vocab_size": 640,
    },
    # unused by this backend (it merges image features itself), kept valid
    "image_token_id": 259,
}


def tiny_paligemma_kwargs(tiny: dict[str, Any]) -> dict[str, Any]:
    """``TINY_PALIGEMMA`` deep-merged with ``tiny`` (PaliGemmaConfig keyword arguments)."""
    out = copy.deepcopy(TINY_PALIGEMMA)
    for key, value in tiny.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key].update(value)
        else:
            out[key] = value
    out["vision_config"].setdefault("model_type", "siglip_vision_model")
    out["text_config"].setdefault("model_type", "gemma")
    hidden = out["text_config"]["hidden_size"]
    out.setdefault("projection_dim", hidden)
    out["vision_config"].setdefault("projection_dim", out["projection_dim"])
    return out


@dataclass
class VLMConfig(EFMConfig):
    """PaliGemma (SigLIP ViT + Gemma decoder) prompted for action tokens or a
    steps-to-go token; both answers are reserved ids at the end of its vocabulary."""

    type: Literal["vlm"] = "vlm"
    #: local Hugging Face PaliGemma directory (config.json + safetensors weights, and
    #: ideally the tokenizer); loaded with ``local_files_only``, nothing is downloaded
    model_dir: str | None = None
    #: test only: a random-initialised PaliGemma from these PaliGemmaConfig overrides
    #: of ``TINY_PALIGEMMA`` (``{}`` = the defaults); everything lives in the checkpoint
    tiny: dict[str, Any] | None = None
    #: "auto": the tokenizer in ``model_dir`` when there is one, else bytes; "bytes":
    #: UTF-8 byte b -> id 3 + b (pad 0, eos 1, bos 2), the tiny config's tokenizer
    tokenizer: Literal["auto", "bytes"] = "auto"
    #: current + previous frame (Appendix D.1) as two images ("two_images", 2 x the
    #: image tokens) or side by side in one image ("side_by_side", half the width each)
    frames: Literal["two_images", "side_by_side"] = "two_images"
    #: keep the SigLIP vision tower frozen (Stage 2 always excludes it, Appendix A.3;
    #: the paper trains everything in Stage 1, set false to do the same)
    freeze_vision: bool = True
    #: weights dtype; use bfloat16 on a GPU (logits and losses are computed in float32)
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    #: instruction tokens kept (longer instructions are truncated)
    max_instruction_tokens: int = 48
    #: the two task prompts, placed before the instruction (they must differ)
    action_prompt: str = "act:"
    steps_to_go_prompt: str = "steps to go:"
    #: proprioception length (``observation.state``); must match the dataset
    state_dim: int = 2
    #: 0: no proprioception in the prompt; N >= 2: each standardised state component
    #: (clipped to +-3 std) becomes one of N reserved tokens (Appendix E.2, joints)
    state_bins: int = 0
    #: recompute activations in the backward pass (saves GPU memory on real checkpoints)
    gradient_checkpointing: bool = False

    def __post_init__(self) -> None:
        if (self.model_dir is None) == (self.tiny is None):
            raise ConfigError(
                "model_dir: give exactly one of model_dir (a local PaliGemma checkpoint "
                "directory) and tiny (a random-initialised test config)"
            )
        if self.model_dir is not None:
            path = Path(self.model_dir).expanduser()
            if not (path / "config.json").is_file():
                raise ConfigError(
                    f"model_dir: {self.model_dir!r} is not a local Hugging Face model "
                    "directory (no config.json); download a PaliGemma checkpoint there "
                    "first, nothing is fetched from a hub"
                )
            model_type = json.loads((path / "config.json").read_text()).get("model_type")
            if model_type != "paligemma":
                raise ConfigError(
                    f"model_dir: {self.model_dir!r} holds a {model_type!r} model; "
                    "allowed model_type: 'paligemma'"
                )
        if self.max_instruction_tokens < 0:
            raise ConfigError(
                f"max_instruction_tokens: must be >= 0, got {self.max_instruction_tokens}"
            )
        if self.state_dim < 0:
            raise ConfigError(f"state_dim: must be >= 0, got {self.state_dim}")
        if self.state_bins == 1 or self.state_bins < 0:
            raise ConfigError(f"state_bins: must be 0 (off) or >= 2, got {self.state_bins}")
        if self.state_bins and not self.state_dim:
            raise ConfigError("state_bins: needs state_dim >= 1")
        if not self.action_prompt or self.action_prompt == self.steps_to_go_prompt:
            raise ConfigError(
                "action_prompt: must be non-empty and differ from steps_to_go_prompt "
                "(the prompts tell the two tasks apart)"
            )
