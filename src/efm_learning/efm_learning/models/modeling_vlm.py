"""``vlm``: a Hugging Face PaliGemma as an RT-2 style EFM (paper Appendix A.1, App. E).

The paper fine-tunes PaLI-3B, a vision-language model, with RT-2's recipe: continuous
actions are discretised and each bin is a token of the model's own vocabulary; the
steps-to-go bins are tokens as well, and the text prompt says which of the two answers
is wanted (Section 2.1). This backend does the same with PaliGemma, loaded by
transformers from a local directory (or a tiny random config in tests).

Sequence fed to the decoder (PaliGemma's prefix-LM layout, 1-indexed positions)::

    [image tokens (current frame, previous frame)] [bos] [task prompt] [instruction]
    [state tokens] [sep "\\n"] | [a_1 ... a_{K-1}]

* The *prefix* (everything before ``|``) attends bidirectionally, as PaliGemma was
  pretrained; the suffix is causal.
* Reserved ids: the last ``num_bins`` ids of the vocabulary are the steps-to-go bins,
  the ``max(action_vocab)`` ids before them the action bins (shared by every action
  token, as in RT-2), and, when ``state_bins > 0``, the ``state_bins`` ids before those
  the proprioception bins. Each distribution is a softmax over its reserved ids only
  (RT-2's constrained decoding), so the rest of the vocabulary can never be emitted.
* Steps-to-go: the reserved-bin logits at the last prefix position of the
  steps-to-go prompt.
* Actions: the reserved-bin logits at the last prefix position and at the suffix
  positions, i.e. ``p(a_k | o, g, a_<k)``. Training and ``action_log_prob`` use teacher
  forcing (one forward); ``sample_action_tokens`` decodes the K tokens autoregressively
  with the KV cache. Both give the same log-probabilities (tested).
* Instructions are tokenised by the tokenizer found in ``model_dir``, or byte by byte
  (``tokenizer: bytes``, the tiny test config). Instructions of different lengths are
  right-padded *inside* the prefix with masked pad tokens and positions counted over
  real tokens only, so padding does not change any output (tested).
* Images: uint8 frames are resized to the vision tower's size (bilinear, antialiased)
  and scaled to [-1, 1] (SigLIP's 0.5 / 0.5 normalisation). ``frames: two_images``
  feeds current and previous frame as two images (paper App. D.1: "the two images given
  to PaLI represent the current and previous frame"); ``side_by_side`` concatenates them
  horizontally into one image (half the image tokens).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from efm_learning.config import ConfigError
from efm_learning.models.base import _MASKED, ACTION_TOKENS, EFM, Batch
from efm_learning.models.configuration_vlm import VLMConfig, tiny_paligemma_kwargs
from efm_sim import keys

logger = logging.getLogger(__name__)

#: batch keys produced by ``prepare_observations``
PIXELS = "vlm.pixel_values"
TEXT_IDS = "vlm.text_ids"
TEXT_MASK = "vlm.text_mask"

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
#: byte fallback: pad 0, eos 1, bos 2, byte b -> 3 + b
_BYTE_OFFSET = 3
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "tokenizer_config.json")
_STATE_CLIP = 3.0


class ByteTokenizer:
    """UTF-8 bytes as ids ``3 + b`` (the tokenizer of the tiny test config)."""

    pad_id, eos_id, bos_id = 0, 1, 2
    max_id = _BYTE_OFFSET + 255

    def encode(self, text: str) -> list[int]:
        return [_BYTE_OFFSET + b for b in text.encode("utf-8")]


class HFTokenizer:
    """The tokenizer of a local Hugging Face model directory."""

    def __init__(self, path: str) -> None:
        from transformers import AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        tok = self.tokenizer
        self.bos_id = tok.bos_token_id if tok.bos_token_id is not None else 2
        self.pad_id = tok.pad_token_id if tok.pad_token_id is not None else 0
        self.eos_id = tok.eos_token_id if tok.eos_token_id is not None else 1
        self.max_id = None

    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])


def build_paligemma(config: VLMConfig) -> nn.Module:
    """PaliGemmaForConditionalGeneration from ``model_dir`` (local files only) or the
    tiny random config."""
    from transformers import PaliGemmaConfig, PaliGemmaForConditionalGeneration

    dtype = _DTYPES[config.dtype]
    if config.model_dir is not None:
        path = str(Path(config.model_dir).expanduser())
        return PaliGemmaForConditionalGeneration.from_pretrained(
            path, dtype=dtype, local_files_only=True
        )
    pg_config = PaliGemmaConfig(**tiny_paligemma_kwargs(config.tiny or {}))
    return PaliGemmaForConditionalGeneration(pg_config).to(dtype)


def build_tokenizer(config: VLMConfig) -> ByteTokenizer | HFTokenizer:
    if config.tokenizer == "bytes" or config.model_dir is None:
        return ByteTokenizer()
    path = Path(config.model_dir).expanduser()
    if any((path / name).is_file() for name in _TOKENIZER_FILES):
        return HFTokenizer(str(path))
    logger.warning(
        "vlm: no tokenizer in %s, instructions are fed as bytes (ids 3..258); copy the "
        "checkpoint's tokenizer files there for a pretrained model", path
    )
    return ByteTokenizer()


class VLMEFM(EFM):
    """PaliGemma prompted for action tokens or a steps-to-go token (RT-2 style)."""

    config: VLMConfig
    needs_images = True

    def __init__(self, config: VLMConfig) -> None:
        super().__init__(config)
        c = config
        self.vlm = build_paligemma(c)
        if c.gradient_checkpointing:  # renamed activation_checkpointing in transformers 5
            enable = getattr(self.vlm, "activation_checkpointing_enable", None)
            (enable or self.vlm.gradient_checkpointing_enable)()
        vision = self.vlm.config.vision_config
        self.image_size = int(vision.image_size)
        self.tokens_per_image = (vision.image_size // vision.patch_size) ** 2
        self.num_frames = 2 if c.frames == "two_images" else 1
        self.softcap = getattr(self.vlm.config.get_text_config(), "final_logit_softcapping", None)
        self.tokenizer = build_tokenizer(c)

        # reserved ids at the end of the vocabulary: [state | actions | steps-to-go]
        vocab = int(self.vlm.config.get_text_config().vocab_size)
        num_bins = c.steps_to_go.num_bins
        steps_start = vocab - num_bins
        action_start = steps_start - self.action_vocab
        state_start = action_start - c.state_bins
        self.reserved_start = state_start
        tok = self.tokenizer
        prompts = {
            "action": [tok.bos_id, *tok.encode(c.action_prompt)],
            "steps_to_go": [tok.bos_id, *tok.encode(c.steps_to_go_prompt)],
        }
        sep = tok.encode("\n") or [tok.eos_id]
        used = [i for ids in prompts.values() for i in ids] + sep + [tok.pad_id]
        highest = max(used + ([tok.max_id] if tok.max_id is not None else []))
        if state_start <= highest:
            raise ConfigError(
                f"vocab_size {vocab} is too small: the reserved ids ({c.state_bins} state + "
                f"{self.action_vocab} action + {num_bins} steps-to-go) start at {state_start} "
                f"but text ids go up to {highest}"
            )

        def ids(values: Sequence[int]) -> torch.Tensor:
            return torch.tensor(list(values), dtype=torch.long)

        self.register_buffer("_action_ids", ids(range(action_start, steps_start)), False)
        self.register_buffer("_steps_ids", ids(range(steps_start, vocab)), False)
        self.register_buffer("_state_ids", ids(range(state_start, action_start)), False)
        self.register_buffer("_prompt_action", ids(prompts["action"]), False)
        self.register_buffer("_prompt_steps", ids(prompts["steps_to_go"]), False)
        self.register_buffer("_sep", ids(sep), False)
        self.register_buffer("state_mean", torch.zeros(c.state_dim))
        self.register_buffer("state_std", torch.ones(c.state_dim))
        self._text_cache: dict[str, list[int]] = {}

        if c.freeze_vision:
            for p in self.vision_tower.parameters():
                p.requires_grad_(False)
            self.vision_tower.eval()

    # -- plumbing ----------------------------------------------------------------------
    @property
    def vision_tower(self) -> nn.Module:
        return self.vlm.model.vision_tower

    def train(self, mode: bool = True) -> VLMEFM:
        super().train(mode)
        if self.config.freeze_vision:
            self.vision_tower.eval()
        return self

    def stage2_parameters(self) -> list[nn.Parameter]:
        """Everything but the vision tower, which Stage 2 keeps frozen (Appendix A.3)."""
        frozen = {id(p) for p in self.vision_tower.parameters()}
        return [p for p in self.parameters() if p.requires_grad and id(p) not in frozen]

    def fit_to_data(self, states: np.ndarray) -> None:
        """Standardisation of the proprioception tokens (training-split statistics)."""
        states = np.asarray(states, dtype=np.float64)
        if states.ndim == 2 and states.shape[1] == self.config.state_dim:
            self.state_mean.copy_(torch.as_tensor(states.mean(0), dtype=torch.float32))
            std = np.maximum(states.std(0), 1e-6)
            self.state_std.copy_(torch.as_tensor(std, dtype=torch.float32))

    def featurizer(self) -> Any:
        """Stage 1 pool rows: state and raw frames (the pool derives the previous frame)."""

        def featurize(episode: Any) -> dict[str, np.ndarray]:
            if episode.images is None:
                raise ValueError("the vlm backend needs episodes with images (observation.image)")
            return {keys.OBS_STATE: episode.states, keys.OBS_IMAGE: episode.images}

        return featurize

    # -- inputs ------------------------------------------------------------------------
    def _check_images(self, images: Any, key: str, n: int | None) -> np.ndarray:
        images = np.asarray(images)
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(
                f"{key} must be uint8 (B, H, W, 3), got {images.dtype} {images.shape}"
            )
        if n is not None and len(images) != n:
            raise ValueError(f"{key} has {len(images)} frames, expected {n}")
        return images

    def _pixels(self, current: np.ndarray, previous: np.ndarray) -> torch.Tensor:
        """uint8 frames -> ``(B, frames, 3, S, S)`` in [-1, 1], the vision tower's dtype."""
        if current.shape != previous.shape:
            raise ValueError(
                f"{keys.OBS_IMAGE} {current.shape} and {keys.OBS_PREV_IMAGE} "
                f"{previous.shape} must have the same shape"
            )
        both = torch.as_tensor(np.stack([current, previous], axis=1), device=self.device)
        if self.num_frames == 1:  # side by side: (B, 1, H, 2W, 3)
            both = torch.cat([both[:, 0], both[:, 1]], dim=2).unsqueeze(1)
        b, f = both.shape[:2]
        x = both.flatten(0, 1).permute(0, 3, 1, 2).float().div(255.0)
        size = self.image_size
        if x.shape[-2:] != (size, size):
            x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True,
                              align_corners=False)
        x = x.sub(0.5).div(0.5)
        dtype = next(self.vision_tower.parameters()).dtype
        return x.reshape(b, f, 3, size, size).to(dtype)

    def _instruction_ids(self, text: str) -> list[int]:
        ids = self._text_cache.get(text)
        if ids is None:
            ids = self.tokenizer.encode(" " + text)[: self.config.max_instruction_tokens]
            ids = [i for i in ids if i < self.reserved_start]  # never a reserved answer id
            if len(self._text_cache) < 4096:
                self._text_cache[text] = ids
        return ids

    def _state_tokens(self, state: Any, n: int) -> torch.Tensor:
        s = torch.as_tensor(np.asarray(state), dtype=torch.float32, device=self.device)
        if s.ndim != 2 or s.shape != (n, self.config.state_dim):
            raise ValueError(
                f"{keys.OBS_STATE} must be ({n}, {self.config.state_dim}), got {tuple(s.shape)}"
            )
        if not torch.isfinite(s).all():
            raise ValueError(f"{keys.OBS_STATE} contains NaN or inf")
        z = ((s - self.state_mean) / self.state_std).clamp(-_STATE_CLIP, _STATE_CLIP)
        bins = self.config.state_bins
        index = ((z + _STATE_CLIP) / (2 * _STATE_CLIP) * bins).long().clamp(0, bins - 1)
        return self._state_ids[index]

    def prepare_observations(self, observations: Mapping[str, Any]) -> dict[str, Any]:
        """Frames, instruction and (optionally) state -> pixel tensor and text ids."""
        if keys.OBS_IMAGE not in observations:
            raise ValueError(f"the vlm backend needs {keys.OBS_IMAGE} (uint8 (B, H, W, 3))")
        images = self._check_images(observations[keys.OBS_IMAGE], keys.OBS_IMAGE, None)
        n = len(images)
        if n == 0:
            raise ValueError("empty batch")
        previous = observations.get(keys.OBS_PREV_IMAGE)
        previous = images if previous is None else self._check_images(
            previous, keys.OBS_PREV_IMAGE, n
        )
        texts = observations.get(keys.INSTRUCTION)
        if texts is None:
            texts = [""] * n
        elif isinstance(texts, str):
            texts = [texts] * n
        texts = [str(t) for t in texts]
        if len(texts) != n:
            raise ValueError(f"{keys.INSTRUCTION} has {len(texts)} entries, expected {n}")
        rows = [self._instruction_ids(t) for t in texts]
        width = max(len(r) for r in rows)
        ids = torch.full((n, width), self.tokenizer.pad_id, dtype=torch.long)
        mask = torch.zeros((n, width), dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
            mask[i, : len(r)] = 1
        ids, mask = ids.to(self.device), mask.to(self.device)
        if self.config.state_bins:
            if keys.OBS_STATE not in observations:
                raise ValueError(f"state_bins > 0: the vlm backend needs {keys.OBS_STATE}")
            state = self._state_tokens(observations[keys.OBS_STATE], n)
            ids = torch.cat([ids, state], 1)
            mask = torch.cat([mask, torch.ones_like(state)], 1)
        return {PIXELS: self._pixels(images, previous), TEXT_IDS: ids, TEXT_MASK: mask}

    def fixed_shape_batch(self, batch: dict[str, Any]) -> dict[str, Any]:
        """Text right-padded with masked pads to ``max_instruction_tokens`` (+ the state
        tokens), the width an exported ONNX graph is traced at; masked pads change no
        output (positions count real tokens only)."""
        width = self.config.max_instruction_tokens + (
            self.config.state_dim if self.config.state_bins else 0)
        ids, mask = batch[TEXT_IDS], batch[TEXT_MASK]
        extra = width - ids.shape[1]
        if extra < 0:
            raise ValueError(f"text is {ids.shape[1]} tokens, more than the {width} allowed")
        if extra == 0:
            return batch
        pad = ids.new_full((ids.shape[0], extra), self.tokenizer.pad_id)
        return {**batch, TEXT_IDS: torch.cat([ids, pad], 1),
                TEXT_MASK: torch.cat([mask, torch.zeros_like(pad)], 1)}

    # -- the network -------------------------------------------------------------------
    def _prefix(self, batch: Batch, task: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Prefix embeddings ``(B, T, D)`` and attention mask ``(B, T)`` for a task."""
        pixels = batch[PIXELS]
        b, f = pixels.shape[:2]
        grad = torch.is_grad_enabled() and not self.config.freeze_vision
        with torch.set_grad_enabled(grad):
            vision = self.vision_tower(pixel_values=pixels.flatten(0, 1)).last_hidden_state
        images = self.vlm.model.multi_modal_projector(vision)
        images = images.reshape(b, f * images.shape[1], images.shape[2])
        prompt = self._prompt_action if task == "action" else self._prompt_steps
        text_ids = batch[TEXT_IDS]
        ids = torch.cat([prompt.expand(b, -1), text_ids, self._sep.expand(b, -1)], 1)
        embed = self.vlm.get_input_embeddings()
        embeds = torch.cat([images.to(embed.weight.dtype), embed(ids)], 1)
        ones = torch.ones(b, images.shape[1] + prompt.numel(), dtype=torch.long,
                          device=pixels.device)
        mask = torch.cat([ones, batch[TEXT_MASK], torch.ones_like(self._sep).expand(b, -1)], 1)
        return embeds, mask

    def _reserved_logits(self, hidden: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """float32 logits of the reserved ``ids`` only (the LM head restricted to them)."""
        weight = self.vlm.get_output_embeddings().weight[ids]
        logits = F.linear(hidden, weight).float()
        if self.softcap is not None:
            logits = torch.tanh(logits / self.softcap) * self.softcap
        return logits

    def _decoder(self, embeds: torch.Tensor, mask: torch.Tensor, prefix_len: int,
                 cache: bool = False) -> Any:
        """PaliGemma's decoder with a bidirectional prefix and a causal suffix."""
        token_type = torch.zeros_like(mask)
        token_type[:, prefix_len:] = 1
        return self.vlm.model(
            inputs_embeds=embeds,
            attention_mask=mask,
            position_ids=mask.cumsum(1),  # PaliGemma positions are 1-indexed
            token_type_ids=token_type,
            use_cache=cache,
        )

    def steps_to_go_logits(self, batch: Batch) -> torch.Tensor:
        embeds, mask = self._prefix(batch, "steps_to_go")
        hidden = self._decoder(embeds, mask, embeds.shape[1]).last_hidden_state[:, -1]
        return self._reserved_logits(hidden, self._steps_ids)

    def _check_tokens(self, tokens: torch.Tensor, n: int) -> torch.Tensor:
        tokens = torch.as_tensor(tokens, device=self.device).long()
        if tokens.shape != (n, self.num_action_tokens):
            raise ValueError(
                f"action tokens must be ({n}, {self.num_action_tokens}), got {tuple(tokens.shape)}"
            )
        sizes = torch.tensor(self.action_tokenizer.vocab_sizes, device=self.device)
        if ((tokens < 0) | (tokens >= sizes)).any():
            raise ValueError(
                f"action tokens out of range; per-position vocab sizes {sizes.tolist()}"
            )
        return tokens

    def teacher_forced_action_logits(self, batch: Batch, tokens: torch.Tensor) -> torch.Tensor:
        """Unmasked ``(B, K, V)`` logits of ``p(a_k | o, g, a_<k)`` along ``tokens``."""
        n = batch[PIXELS].shape[0]
        tokens = self._check_tokens(tokens, n)
        embeds, mask = self._prefix(batch, "action")
        prefix_len = embeds.shape[1]
        if self.num_action_tokens > 1:
            given = self.vlm.get_input_embeddings()(self._action_ids[tokens[:, :-1]])
            embeds = torch.cat([embeds, given], 1)
            mask = torch.cat([mask, torch.ones_like(tokens[:, :-1])], 1)
        hidden = self._decoder(embeds, mask, prefix_len).last_hidden_state[:, prefix_len - 1 :]
        return self._reserved_logits(hidden, self._action_ids)

    def _action_logits(self, batch: Batch) -> torch.Tensor:
        """Teacher forced along ``batch[ACTION_TOKENS]`` when present, else along the
        greedy decode."""
        if ACTION_TOKENS in batch:
            return self.teacher_forced_action_logits(batch, batch[ACTION_TOKENS])
        return self.decode(batch, greedy=True)[2]

    def action_log_prob(self, batch: Batch, tokens: torch.Tensor) -> torch.Tensor:
        """Autoregressive ``log pi(a | o, g) = sum_k log p(a_k | o, g, a_<k)``, ``(B,)``."""
        logits = self.teacher_forced_action_logits(batch, tokens)
        logits = logits.masked_fill(self._invalid_action_tokens, _MASKED)
        tokens = torch.as_tensor(tokens, device=self.device).long()
        log_probs = F.log_softmax(logits, dim=-1)
        return log_probs.gather(-1, tokens.unsqueeze(-1)).squeeze(-1).sum(-1)

    def decode(
        self, batch: Batch, greedy: bool = False, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Autoregressive decoding of the K action tokens with the KV cache, each step
        restricted to the reserved action ids valid at that position.

        Returns ``(tokens (B, K), log_prob (B,), masked logits (B, K, V))``."""
        embeds, mask = self._prefix(batch, "action")
        out = self._decoder(embeds, mask, embeds.shape[1], cache=True)
        cache, hidden = out.past_key_values, out.last_hidden_state[:, -1]
        position = mask.cumsum(1)[:, -1:]
        chosen, steps = [], []
        for k in range(self.num_action_tokens):
            logits = self._reserved_logits(hidden, self._action_ids)
            logits = logits.masked_fill(self._invalid_action_tokens[k], _MASKED)
            if greedy:
                token = logits.argmax(-1)
            else:
                probs = F.softmax(logits, dim=-1)
                token = torch.multinomial(probs, 1, generator=generator).squeeze(-1)
            chosen.append(token)
            steps.append(logits)
            if k + 1 < self.num_action_tokens:
                mask = torch.cat([mask, torch.ones_like(position)], 1)
                position = position + 1
                step_embed = self.vlm.get_input_embeddings()(self._action_ids[token])
                out = self.vlm.model(
                    inputs_embeds=step_embed.unsqueeze(1),
                    attention_mask=mask,
                    position_ids=position,
                    past_key_values=cache,
                    use_cache=True,
                )
                cache, hidden = out.past_key_values, out.last_hidden_state[:, -1]
        tokens = torch.stack(chosen, 1)
        logits = torch.stack(steps, 1)
        log_prob = F.log_softmax(logits, -1).gather(-1, tokens.unsqueeze(-1)).squeeze(-1).sum(-1)
        return tokens, log_prob, logits

    @torch.no_grad()
    def sample_action_tokens(
        self, batch: Batch, greedy: bool = False, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Sample (or greedily decode) the K action tokens autoregressively, ``(B, K)``."""
        return self.decode(batch, greedy=greedy, generator=generator)[0]
