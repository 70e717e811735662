"""``conv_efm``: an EFM that learns to see from its own demonstrations, on a CPU.

Why it exists: at CPU scale (hundreds of demonstrations, minutes of training) the
``small_efm`` backend's frozen ImageNet features did not let Stage 1 find the named
blocks on PushTable (docs/DEMO.md). This backend trains its image encoder from scratch:
a small conv tower sees the current frame, optionally stacked with the previous one (the
paper gives its EFM both frames, Appendix D.1; docs/PUSHTABLE.md says why the demo drops
it) plus two coordinate channels, each layer modulated by the
instruction embedding (FiLM; the frozen all-MiniLM-L6-v2 of ``small_efm``), and ends in
spatial-softmax keypoints, i.e. "where is what the instruction names". Keypoints, pooled
features, proprioception and the instruction feed one shared MLP trunk with the two
heads of the paper's single model (Section 2.1): action tokens and steps-to-go bins.

Departures from the paper's PaLI EFM (Appendix A.1): no web-scale pretraining of the
vision tower (the Section 4.2 "Scratch" setting for vision, pretrained text), and action
tokens are predicted in parallel (see ``base``). Stage 2 keeps the conv tower frozen and
updates the trunk and heads, as the paper freezes the image encoder (Appendix A.3).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from efm_learning.models.base import EFM, Batch
from efm_learning.models.configuration_conv_efm import ConvEFMConfig
from efm_learning.models.modeling_small_efm import TEXT, TEXT_DIM, TextEncoder
from efm_sim import keys


def resize_frames(images: np.ndarray, size: int) -> np.ndarray:
    """uint8 ``(B, H, W, 3)`` -> uint8 ``(B, size, size, 3)`` (block average when H is a
    multiple of ``size``, the camera's usual case; bilinear otherwise)."""
    images = np.asarray(images)
    h, w = images.shape[1:3]
    if h == size and w == size:
        return images
    if h == w and h % size == 0:
        k = h // size
        pooled = images.reshape(len(images), size, k, size, k, 3).mean(axis=(2, 4))
        return np.round(pooled).astype(np.uint8)
    x = torch.as_tensor(images).permute(0, 3, 1, 2).float()
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    return x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()


class SpatialSoftmax(nn.Module):
    """Per-channel softmax over the image -> expected (x, y) in [-1, 1] (2 x C values).

    ``standardize``: each channel's logits are z-scored over the image first. On a
    uniform table with a few small objects, raw logits differ at a handful of the 256
    cells, the softmax stays nearly uniform and every keypoint sits near the image centre
    (docs/PUSHTABLE.md); z-scored, a cell that differs from the rest gets a large score
    and the keypoint finds it."""

    def __init__(self, standardize: bool = False) -> None:
        super().__init__()
        self.log_temperature = nn.Parameter(torch.zeros(()))
        self.standardize = standardize

    def forward(self, fmap: torch.Tensor) -> torch.Tensor:
        h, w = fmap.shape[-2:]
        logits = fmap.flatten(2)
        if self.standardize:
            mean, std = logits.mean(-1, keepdim=True), logits.std(-1, keepdim=True)
            logits = (logits - mean) / (std + 1e-3)
        weights = F.softmax(logits / self.log_temperature.exp(), dim=-1)
        grid = self._grid(h, w, fmap.device, weights.dtype)  # (h * w, 2): x, y per cell
        return torch.matmul(weights, grid).transpose(1, 2).flatten(1)  # x's, then y's

    def _grid(self, h: int, w: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        key = (h, w, device, dtype)
        if getattr(self, "_grid_key", None) != key:
            ys = torch.linspace(-1.0, 1.0, h, device=device, dtype=dtype)
            xs = torch.linspace(-1.0, 1.0, w, device=device, dtype=dtype)
            grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
            self._grid_cache = torch.stack([grid_x.reshape(-1), grid_y.reshape(-1)], dim=1)
            self._grid_key = key
        return self._grid_cache


class ConvEFM(EFM):
    """Two frames + instruction + proprioception -> action tokens and steps-to-go."""

    config: ConvEFMConfig
    needs_images = True

    def __init__(self, config: ConvEFMConfig) -> None:
        super().__init__(config)
        c = config
        self._text = [TextEncoder(pretrained=c.pretrained)] if c.text_encoder == "minilm" else []
        self.register_buffer("state_mean", torch.zeros(c.state_dim))
        self.register_buffer("state_std", torch.ones(c.state_dim))
        in_ch = (6 if c.previous_frame else 3) + 2  # frame t (and t-1) + (x, y) channels
        if c.encoder == "plain":
            self._init_plain(c, in_ch)
        else:
            self._init_film(c, in_ch)
        self.action_head = nn.Linear(c.hidden_size, self.num_action_tokens * self.action_vocab)
        self.steps_head = nn.Linear(c.hidden_size, c.steps_to_go.num_bins)

    def _init_plain(self, c: ConvEFMConfig, in_ch: int) -> None:
        convs = []
        side = c.image_size
        for i, out_ch in enumerate(c.channels):
            kernel = 5 if i == 0 else 3
            convs.append(nn.Conv2d(in_ch, out_ch, kernel, 2, padding=kernel // 2))
            in_ch, side = out_ch, (side + 1) // 2
        self.convs = nn.ModuleList(convs)
        self.norms = self.films = nn.ModuleList()
        self.keypoint_conv = self.spatial_softmax = self.state_to_image = None
        self.image_fc = nn.Linear(in_ch * side * side, c.hidden_size)
        self.state_proj = nn.Linear(c.state_dim, 64)
        self.text_proj = nn.Linear(TEXT_DIM, 64)
        self.trunk = nn.Sequential(nn.Linear(c.hidden_size + 2 * 64, c.hidden_size), nn.ReLU())

    def _init_film(self, c: ConvEFMConfig, in_ch: int) -> None:
        convs, norms, films = [], [], []
        for i, out_ch in enumerate(c.channels):
            kernel, stride = (5, 2) if i == 0 else (3, 2 if i == 1 else 1)
            convs.append(nn.Conv2d(in_ch, out_ch, kernel, stride, padding=kernel // 2))
            norms.append(nn.GroupNorm(8, out_ch, affine=False))
            films.append(nn.Linear(TEXT_DIM, 2 * out_ch))
            in_ch = out_ch
        self.convs, self.norms, self.films = (nn.ModuleList(m) for m in (convs, norms, films))
        for film in self.films:  # start as the identity modulation (gamma 1, beta 0)
            nn.init.zeros_(film.weight)
            nn.init.zeros_(film.bias)
        self.keypoint_conv = nn.Conv2d(in_ch, c.num_keypoints, 1)
        self.spatial_softmax = SpatialSoftmax()
        self.early_conv = self.early_softmax = None
        if c.early_keypoints:
            self.early_conv = nn.Conv2d(c.channels[0], c.early_keypoints, 1)
            self.early_softmax = SpatialSoftmax(standardize=True)
        keypoints = c.num_keypoints + c.early_keypoints
        width = 2 * keypoints * (2 if c.relative_keypoints else 1) + in_ch + 2 * 64
        self.state_proj = nn.Linear(c.state_dim, 64)
        # where the end-effector is in image coordinates (learned from the data)
        self.state_to_image = nn.Linear(c.state_dim, 2) if c.relative_keypoints else None
        self.text_proj = nn.Linear(TEXT_DIM, 64)
        self.trunk = nn.Sequential(
            nn.Linear(width, c.hidden_size), nn.LayerNorm(c.hidden_size), nn.ReLU(),
            nn.Linear(c.hidden_size, c.hidden_size), nn.ReLU(),
        )

    def augment(self, batch: dict[str, Any], generator: torch.Generator) -> dict[str, Any]:
        """Random shift (DrQ-style) of the frames by up to ``random_shift`` pixels with
        edge padding; both frames of an observation move together. Stage 1 only."""
        pad = self.config.random_shift
        if pad == 0:
            return batch
        frames = batch[keys.OBS_IMAGE]  # uint8 (B, H, W, C)
        b, h, w, _ = frames.shape
        padded = F.pad(frames.permute(0, 3, 1, 2).float(), (pad,) * 4, mode="replicate")
        dy, dx = torch.randint(0, 2 * pad + 1, (2, b), generator=generator).tolist()
        shifted = torch.stack(
            [padded[i, :, y:y + h, x:x + w] for i, (y, x) in enumerate(zip(dy, dx, strict=True))]
        )
        return {**batch, keys.OBS_IMAGE: shifted.permute(0, 2, 3, 1).to(frames.dtype)}

    def encoder_modules(self) -> list[nn.Module]:
        """The vision encoder and its read-out (frozen in Stage 2, Appendix A.3)."""
        if self.config.encoder == "plain":
            return [self.convs, self.image_fc]
        modules = [self.convs, self.norms, self.films, self.keypoint_conv, self.spatial_softmax]
        return modules + [m for m in (self.early_conv, self.early_softmax) if m is not None]

    def fit_to_data(self, states: np.ndarray) -> None:
        self.state_mean.copy_(torch.as_tensor(states.mean(0), dtype=torch.float32))
        self.state_std.copy_(torch.as_tensor(np.maximum(states.std(0), 1e-6), dtype=torch.float32))

    def featurizer(self) -> Any:
        """Stage 1 pool rows: state + frames already reduced to ``image_size``."""
        size = self.config.image_size

        def featurize(episode: Any) -> dict[str, np.ndarray]:
            if episode.images is None:
                raise ValueError("conv_efm needs episodes with images (observation.image)")
            frames = resize_frames(episode.images, size)
            return {keys.OBS_STATE: episode.states, keys.OBS_IMAGE: frames}

        return featurize

    def prepare_observations(self, observations: Mapping[str, Any]) -> dict[str, Any]:
        size = self.config.image_size
        images = resize_frames(observations[keys.OBS_IMAGE], size)
        prev = resize_frames(observations.get(keys.OBS_PREV_IMAGE, images), size)
        if prev.shape != images.shape:
            raise ValueError(f"previous frames {prev.shape} do not match frames {images.shape}")
        n = len(images)
        stacked = np.concatenate([images, prev], axis=-1) if self.config.previous_frame else images
        frames = torch.as_tensor(stacked, device=self.device)
        state = observations.get(keys.OBS_STATE)
        if state is None:
            state = np.zeros((n, self.config.state_dim), dtype=np.float32)
        texts = observations.get(keys.INSTRUCTION)
        if self._text and texts is not None:
            text = self._text[0](list(texts)).to(self.device)
        else:
            text = torch.zeros(n, TEXT_DIM, device=self.device)
        return {
            keys.OBS_IMAGE: frames,  # uint8 (B, H, W, 6 or 3): frame t (then frame t-1)
            keys.OBS_STATE: torch.as_tensor(np.asarray(state), dtype=torch.float32,
                                            device=self.device),
            TEXT: text,
        }

    def prepare_for_training(self, compile: bool = False) -> None:
        """Channels-last conv weights (the frames arrive NHWC, so the oneDNN convolutions
        skip a layout conversion) and, with ``compile``, an inductor-compiled trunk for
        training steps; evaluation keeps the eager trunk (other batch sizes would
        recompile). Side by side: docs/LEARNING.md "Stage 1 speed"."""
        self.to(memory_format=torch.channels_last)
        if compile:
            self._compiled_trunk = torch.compile(self._eager_trunk)

    def _trunk(self, batch: Batch) -> torch.Tensor:
        compiled = getattr(self, "_compiled_trunk", None)
        if compiled is not None and self.training and torch.is_grad_enabled():
            return compiled(batch)
        return self._eager_trunk(batch)

    def _eager_trunk(self, batch: Batch) -> torch.Tensor:
        frames = batch[keys.OBS_IMAGE].permute(0, 3, 1, 2).float().div(127.5).sub(1.0)
        b, _, h, w = frames.shape
        ys = torch.linspace(-1.0, 1.0, h, device=frames.device).view(1, 1, h, 1).expand(b, 1, h, w)
        xs = torch.linspace(-1.0, 1.0, w, device=frames.device).view(1, 1, 1, w).expand(b, 1, h, w)
        x = torch.cat([frames, xs, ys], dim=1)
        text = batch[TEXT]
        state = (batch[keys.OBS_STATE] - self.state_mean) / self.state_std
        if self.config.encoder == "plain":
            for conv in self.convs:
                x = F.relu(conv(x))
            image = F.relu(self.image_fc(x.flatten(1)))
            return self.trunk(torch.cat([image, self.state_proj(state), self.text_proj(text)], 1))
        early = None
        for conv, norm, film in zip(self.convs, self.norms, self.films, strict=True):
            gamma, beta = film(text).unsqueeze(-1).unsqueeze(-1).chunk(2, dim=1)
            x = F.relu(norm(conv(x)) * (1.0 + gamma) + beta)
            early = x if early is None else early
        keypoints = self.spatial_softmax(self.keypoint_conv(x))
        if self.early_conv is not None:
            k0 = self.early_softmax(self.early_conv(early))  # (B, 2 K0): x's then y's
            k1, n0 = keypoints, self.config.early_keypoints
            n1 = self.config.num_keypoints
            keypoints = torch.cat([k1[:, :n1], k0[:, :n0], k1[:, n1:], k0[:, n0:]], 1)
        parts = [keypoints, x.mean(dim=(2, 3)), self.state_proj(state), self.text_proj(text)]
        ee = None
        if self.state_to_image is not None:
            ee = self.state_to_image(state)  # (B, 2): end-effector (x, y) in the image
            k = self.config.num_keypoints + self.config.early_keypoints
            parts.append(torch.cat([keypoints[:, :k] - ee[:, :1], keypoints[:, k:] - ee[:, 1:]], 1))
        features = torch.cat(parts, dim=1)
        return self.trunk(features)

    def _action_logits(self, batch: Batch) -> torch.Tensor:
        logits = self.action_head(self._trunk(batch))
        return logits.view(-1, self.num_action_tokens, self.action_vocab)

    def steps_to_go_logits(self, batch: Batch) -> torch.Tensor:
        return self.steps_head(self._trunk(batch))

    def stage2_parameters(self) -> list[nn.Parameter]:
        """Trunk and heads; the conv tower stays as Stage 1 left it (Appendix A.3)."""
        if not self.config.freeze_encoder_in_stage2:
            return super().stage2_parameters()
        frozen = {id(p) for m in self.encoder_modules() for p in m.parameters()}
        return [p for p in self.parameters() if p.requires_grad and id(p) not in frozen]
