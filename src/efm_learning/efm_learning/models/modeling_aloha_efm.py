"""``aloha_efm``: the ALOHA insertion EFM (paper Appendices D.3, E.2), trained from scratch.

What it sees (Appendix D.3): two stacked images per observation, ``cam_high`` over
``cam_low`` and left wrist over right wrist with a black band between the views (built
by :func:`efm_sim.aloha_layout.stack_aloha_views`, the one stacking function used for
datasets and at inference), and the 14 current joints as 14 input tokens of 256 bins
(Appendix E.2: normalised to [-1, 1], then binned like the actions).

What it predicts (the paper's single model, two heads, Section 2.1): a 10 Hz policy over
5-step chunks of 14 joint targets = 70 action tokens of 256 bins over [-1, 1], and the
steps-to-go distribution, one bin per 10 Hz step over 0..300.

Network (CPU scale, in place of PaLI 3B): one conv tower (every layer stride 2, ReLU)
shared by the images, each image's last map flattened and the concatenation projected
to the trunk width, so the model knows which image (and which view, top or bottom) a
feature came from. Each joint token is looked up in its own embedding table (position x
bin), initialised with sinusoids of the bin's value so neighbouring bins start alike
(unseen bins otherwise start random and generalise badly from a few hundred demos), and
the 14 embeddings are flattened (in place of PaLI appending them to the text prompt). One
MLP trunk, two linear heads.

Departures from the paper: no pretraining and no text (one task; the instruction is
ignored); action tokens are predicted in parallel (see ``base``), not autoregressively;
no previous frame. Joints are normalised inside the model (``joint_low``/``joint_high``),
so it takes raw ``qpos`` and returns raw joint targets: actors need no conversion.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from efm_learning.models.base import EFM, Batch
from efm_learning.models.configuration_aloha_efm import AlohaEFMConfig
from efm_learning.tokenizers import UniformActionTokenizer
from efm_sim import keys
from efm_sim.aloha_layout import (
    OBS_IMAGES,
    VIEW_ORDER,
    normalize_joints,
    resize_area,
    stack_aloha_views,
    unnormalize_joints,
)

#: model batch key: int64 ``(B, 14)`` joint input tokens
JOINT_TOKENS = "observation.state.tokens"


class AlohaEFM(EFM):
    """Stacked camera pairs + joint tokens -> 70 action tokens and steps-to-go bins."""

    config: AlohaEFMConfig
    needs_images = True

    def __init__(self, config: AlohaEFMConfig) -> None:
        super().__init__(config)
        c = config
        self.joint_tokenizer = UniformActionTokenizer(
            action_dim=c.state_dim, chunk=1, bins=c.joint_bins, low=-1.0, high=1.0
        )
        convs, in_ch, side = [], 3, c.image_size
        for i, out_ch in enumerate(c.channels):
            kernel = 5 if i == 0 else 3
            convs.append(nn.Conv2d(in_ch, out_ch, kernel, 2, padding=kernel // 2))
            in_ch, side = out_ch, side // 2
        self.convs = nn.ModuleList(convs)
        self.image_fc = nn.Linear(c.num_images * in_ch * side * side, c.hidden_size)
        self.joint_embedding = nn.Embedding(c.state_dim * c.joint_bins, c.joint_embed_dim)
        self._init_joint_embedding()
        self.register_buffer(
            "_joint_offsets", torch.arange(c.state_dim) * c.joint_bins, persistent=False
        )
        self.joint_fc = nn.Linear(c.state_dim * c.joint_embed_dim, 64)
        self.trunk = nn.Sequential(
            nn.Linear(c.hidden_size + 64, c.hidden_size), nn.LayerNorm(c.hidden_size), nn.ReLU(),
            nn.Linear(c.hidden_size, c.hidden_size), nn.ReLU(),
        )
        self.action_head = nn.Linear(c.hidden_size, self.num_action_tokens * self.action_vocab)
        self.steps_head = nn.Linear(c.hidden_size, c.steps_to_go.num_bins)

    def _init_joint_embedding(self) -> None:
        """Token k of every joint starts as sinusoids of its bin centre value in [-1, 1]."""
        c = self.config
        tok = self.joint_tokenizer
        values = torch.as_tensor(tok.low + (np.arange(c.joint_bins) + 0.5) * tok.bin_width)
        half = max(1, c.joint_embed_dim // 2)
        freqs = math.pi * 2.0 ** torch.linspace(-1.0, 3.0, half)
        angles = values.float().reshape(-1, 1) * freqs
        table = torch.cat([torch.sin(angles), torch.cos(angles)], 1)[:, : c.joint_embed_dim]
        if table.shape[1] < c.joint_embed_dim:
            table = F.pad(table, (0, c.joint_embed_dim - table.shape[1]))
        with torch.no_grad():
            self.joint_embedding.weight.copy_(table.repeat(c.state_dim, 1))

    # -- joints and actions: raw <-> [-1, 1] <-> tokens (Appendix E.2) -----------------
    def normalize(self, joints: np.ndarray) -> np.ndarray:
        return normalize_joints(joints, self.config.joint_low, self.config.joint_high)

    def unnormalize(self, joints: np.ndarray) -> np.ndarray:
        return unnormalize_joints(joints, self.config.joint_low, self.config.joint_high)

    def encode_actions(self, actions: np.ndarray) -> np.ndarray:
        """Raw joint-target chunks ``(..., 5, 14)`` or flat ``(..., 70)`` -> 70 tokens."""
        actions = np.asarray(actions, dtype=np.float64)
        shape = self.action_tokenizer.action_shape
        if actions.shape[-1] == math.prod(shape) and actions.shape[-len(shape):] != shape:
            actions = actions.reshape(*actions.shape[:-1], *shape)
        return self.action_tokenizer.encode(self.normalize(actions))

    def decode_actions(self, tokens: torch.Tensor) -> np.ndarray:
        """70 tokens -> raw joint targets ``(..., 5, 14)`` (bin centres, unnormalised)."""
        normalized = self.action_tokenizer.decode(tokens.cpu().numpy())
        return self.unnormalize(normalized)

    def encode_joints(self, joints: np.ndarray) -> np.ndarray:
        """Raw ``(..., 14)`` joints -> 14 input tokens (Appendix D.3)."""
        return self.joint_tokenizer.encode(self.normalize(joints))

    # -- inputs ------------------------------------------------------------------------
    def stacked_images(self, observations: Mapping[str, Any]) -> np.ndarray:
        """uint8 ``(B, num_images, S, S, 3)`` from ``OBS_IMAGES``: already stacked images
        (resized to ``image_size`` if needed) or, with 4 images where 2 are expected, the
        four raw views in ``VIEW_ORDER``, stacked here."""
        c = self.config
        images = observations.get(OBS_IMAGES)
        if images is None and c.num_images == 1 and keys.OBS_IMAGE in observations:
            images = np.asarray(observations[keys.OBS_IMAGE])[:, None]
        if images is None:
            raise ValueError(f"aloha_efm needs {OBS_IMAGES!r} (B, {c.num_images}, H, W, 3)")
        images = np.asarray(images)
        if images.ndim != 5 or images.shape[-1] != 3 or images.dtype != np.uint8:
            raise ValueError(f"{OBS_IMAGES} must be uint8 (B, N, H, W, 3), got "
                             f"{images.dtype} {images.shape}")
        n = images.shape[1]
        if n == len(VIEW_ORDER) and c.num_images == 2:
            views = {cam: images[:, i] for i, cam in enumerate(VIEW_ORDER)}
            return stack_aloha_views(views, c.image_size, c.band_px)
        if n != c.num_images:
            raise ValueError(f"aloha_efm takes {c.num_images} images per observation (or the "
                             f"4 raw views), got {n}")
        return resize_area(images, c.image_size, c.image_size)

    def prepare_observations(self, observations: Mapping[str, Any]) -> dict[str, Any]:
        state = observations.get(keys.OBS_STATE)
        if state is None:
            raise ValueError(f"aloha_efm needs {keys.OBS_STATE!r}: the 14 joints")
        state = np.asarray(state)
        if state.ndim != 2 or state.shape[1] != self.config.state_dim:
            raise ValueError(f"{keys.OBS_STATE} must be (B, {self.config.state_dim}), "
                             f"got {state.shape}")
        images = self.stacked_images(observations)
        if len(images) != len(state):
            raise ValueError(f"{len(images)} image sets for {len(state)} states")
        return {
            OBS_IMAGES: torch.as_tensor(images, device=self.device),
            JOINT_TOKENS: torch.as_tensor(self.encode_joints(state), device=self.device),
        }

    def featurizer(self) -> Any:
        """Stage 1 pool rows: raw joints + the stacked pair at model size (aloha_data)."""
        size, band = self.config.image_size, self.config.band_px

        def featurize(episode: Any) -> dict[str, np.ndarray]:
            views = getattr(episode, "views", None)
            if not views:
                raise ValueError("aloha_efm needs ALOHA episodes with the four camera views "
                                 "(efm_learning.aloha_data)")
            return {keys.OBS_STATE: episode.states,
                    OBS_IMAGES: stack_aloha_views(views, size, band)}

        return featurize

    def example_observations(self, n: int = 2, seed: int = 0) -> dict[str, Any]:
        rng = np.random.default_rng(seed)
        c = self.config
        low, high = np.asarray(c.joint_low), np.asarray(c.joint_high)
        return {
            keys.OBS_STATE: rng.uniform(low, high, (n, c.state_dim)).astype(np.float32),
            OBS_IMAGES: rng.integers(
                0, 256, (n, c.num_images, c.image_size, c.image_size, 3), dtype=np.uint8
            ),
        }

    # -- network -----------------------------------------------------------------------
    def augment(self, batch: dict[str, Any], generator: torch.Generator) -> dict[str, Any]:
        """Random shift (DrQ-style, edge padding) of every image by up to ``random_shift``
        pixels, independently per image. Stage 1 only."""
        pad = self.config.random_shift
        if pad == 0:
            return batch
        images = batch[OBS_IMAGES]  # uint8 (B, N, S, S, 3)
        b, n, h, w, _ = images.shape
        flat = images.reshape(b * n, h, w, 3).permute(0, 3, 1, 2).float()
        padded = F.pad(flat, (pad,) * 4, mode="replicate")
        dy, dx = torch.randint(0, 2 * pad + 1, (2, b * n), generator=generator).tolist()
        shifted = torch.stack(
            [padded[i, :, y:y + h, x:x + w] for i, (y, x) in enumerate(zip(dy, dx, strict=True))]
        )
        out = shifted.permute(0, 2, 3, 1).reshape(b, n, h, w, 3).to(images.dtype)
        return {**batch, OBS_IMAGES: out}

    def _trunk(self, batch: Batch) -> torch.Tensor:
        images = batch[OBS_IMAGES]
        b, n, h, w, _ = images.shape
        x = images.reshape(b * n, h, w, 3).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)
        for conv in self.convs:
            x = F.relu(conv(x))
        image = F.relu(self.image_fc(x.reshape(b, -1)))
        tokens = batch[JOINT_TOKENS].long() + self._joint_offsets
        joints = F.relu(self.joint_fc(self.joint_embedding(tokens).flatten(1)))
        return self.trunk(torch.cat([image, joints], dim=1))

    def _action_logits(self, batch: Batch) -> torch.Tensor:
        logits = self.action_head(self._trunk(batch))
        return logits.view(-1, self.num_action_tokens, self.action_vocab)

    def steps_to_go_logits(self, batch: Batch) -> torch.Tensor:
        return self.steps_head(self._trunk(batch))

    def encoder_modules(self) -> list[nn.Module]:
        """The vision encoder (frozen in Stage 2, Appendix A.3)."""
        return [self.convs, self.image_fc]

    def stage2_parameters(self) -> list[nn.Parameter]:
        if not self.config.freeze_encoder_in_stage2:
            return super().stage2_parameters()
        frozen = {id(p) for m in self.encoder_modules() for p in m.parameters()}
        return [p for p in self.parameters() if p.requires_grad and id(p) not in frozen]
