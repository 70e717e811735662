"""Action tokenizers, RT-2 style (paper Appendix E).

Continuous actions are discretised into tokens so one model can predict them as a
sequence of categorical distributions:

* :class:`LanguageTableActionTokenizer` (Appendix E.1): a 2-D end-effector delta becomes
  4 tokens ``(sign_x, magnitude_x, sign_y, magnitude_y)`` with magnitudes in 0..10.
* :class:`UniformActionTokenizer` (Appendix E.2): each dimension in ``[low, high]``
  (ALOHA: ``[-1, 1]``) becomes one of 256 bins; action chunks (ALOHA: 5 steps x 14 joints
  = 70 tokens) are flattened row-major. The same tokenizer bins ALOHA's 14 joint inputs.

Both share :class:`ActionTokenizer`: ``encode`` maps actions of shape
``(..., chunk, dim)`` (or ``(..., dim)`` when ``chunk == 1``) to int64 tokens of shape
``(..., tokens_per_action)``; ``decode`` maps tokens back; ``vocab_sizes[i]`` is the number
of classes the model must predict for token position ``i``.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass

import numpy as np

from efm_learning.validation import finite_array, integer_array


class ActionTokenizer(abc.ABC):
    """Maps continuous actions (chunks) to token sequences and back."""

    #: continuous values per step of the action
    action_dim: int
    #: consecutive steps per action chunk (1 for no chunking)
    chunk: int

    @property
    @abc.abstractmethod
    def vocab_sizes(self) -> tuple[int, ...]:
        """Number of classes at each token position."""

    @property
    def tokens_per_action(self) -> int:
        """Tokens for one action chunk."""
        return len(self.vocab_sizes)

    @property
    def action_shape(self) -> tuple[int, ...]:
        """Shape of one (unbatched) action: ``(dim,)`` or ``(chunk, dim)``."""
        return (self.action_dim,) if self.chunk == 1 else (self.chunk, self.action_dim)

    def encode(self, actions: object) -> np.ndarray:
        """Tokenize actions of shape ``(..., *action_shape)``; out-of-range values are clipped."""
        array = finite_array(actions, "actions")
        n = len(self.action_shape)
        if array.ndim < n or array.shape[array.ndim - n :] != self.action_shape:
            raise ValueError(f"actions must end in shape {self.action_shape}, got {array.shape}")
        batch = array.shape[: array.ndim - n]
        flat = array.reshape(*batch, self.chunk * self.action_dim)
        return self._encode_flat(flat)

    def decode(self, tokens: object) -> np.ndarray:
        """Map tokens of shape ``(..., tokens_per_action)`` back to continuous actions."""
        array = np.asarray(tokens)
        if array.ndim < 1 or array.shape[-1] != self.tokens_per_action:
            raise ValueError(
                f"tokens must end in dimension {self.tokens_per_action}, got shape {array.shape}"
            )
        highs = np.asarray(self.vocab_sizes) - 1
        checked = integer_array(array, "tokens", low=0, high=int(highs.max()))
        if checked.size and np.any(checked > highs):
            raise ValueError(f"tokens exceed the vocabulary sizes {self.vocab_sizes}")
        flat = self._decode_flat(checked)
        return flat.reshape(*array.shape[:-1], *self.action_shape)

    @abc.abstractmethod
    def _encode_flat(self, flat: np.ndarray) -> np.ndarray: ...

    @abc.abstractmethod
    def _decode_flat(self, tokens: np.ndarray) -> np.ndarray: ...


@dataclass(frozen=True)
class LanguageTableActionTokenizer(ActionTokenizer):
    """2-D delta -> ``(sign, magnitude 0..10, sign, magnitude 0..10)`` (Appendix E.1).

    ``max_delta`` is the largest action magnitude per axis (the env's clip); magnitude
    token ``k`` stands for ``k / 10 * max_delta``. The sign token is 0 for ``>= 0`` and 1
    for negative; a zero magnitude decodes to 0 whatever its sign.
    """

    max_delta: float = 1.0
    magnitude_levels: int = 11
    action_dim: int = 2
    chunk: int = 1

    def __post_init__(self) -> None:
        if not (np.isfinite(self.max_delta) and self.max_delta > 0):
            raise ValueError(f"max_delta must be a positive number, got {self.max_delta}")
        if self.magnitude_levels < 2:
            raise ValueError(f"magnitude_levels must be >= 2, got {self.magnitude_levels}")
        if self.action_dim != 2 or self.chunk != 1:
            raise ValueError("LanguageTable actions are a single 2-D delta (action_dim=2, chunk=1)")

    @property
    def vocab_sizes(self) -> tuple[int, ...]:
        return (2, self.magnitude_levels) * self.action_dim

    @property
    def resolution(self) -> float:
        """Action change between neighbouring magnitude tokens."""
        return self.max_delta / (self.magnitude_levels - 1)

    def _encode_flat(self, flat: np.ndarray) -> np.ndarray:
        clipped = np.clip(flat, -self.max_delta, self.max_delta)
        sign = (clipped < 0).astype(np.int64)
        magnitude = np.rint(np.abs(clipped) / self.resolution).astype(np.int64)
        return np.stack([sign, magnitude], axis=-1).reshape(*flat.shape[:-1], -1)

    def _decode_flat(self, tokens: np.ndarray) -> np.ndarray:
        pairs = tokens.reshape(*tokens.shape[:-1], self.action_dim, 2)
        sign = np.where(pairs[..., 0] == 1, -1.0, 1.0)
        return sign * pairs[..., 1] * self.resolution


@dataclass(frozen=True)
class UniformActionTokenizer(ActionTokenizer):
    """Each dimension in ``[low, high]`` -> one of ``bins`` equal bins (Appendix E.2).

    ALOHA: ``action_dim=14, chunk=5, bins=256, low=-1, high=1`` gives 70 tokens.
    Decoding returns bin centres, so a round trip is exact to half a bin width.
    """

    action_dim: int
    chunk: int = 1
    bins: int = 256
    low: float = -1.0
    high: float = 1.0

    def __post_init__(self) -> None:
        if self.action_dim < 1 or self.chunk < 1:
            raise ValueError(
                f"action_dim and chunk must be >= 1, got {self.action_dim} and {self.chunk}"
            )
        if self.bins < 2:
            raise ValueError(f"bins must be >= 2, got {self.bins}")
        if not (np.isfinite(self.low) and np.isfinite(self.high) and self.low < self.high):
            raise ValueError(f"need finite low < high, got low={self.low}, high={self.high}")

    @property
    def vocab_sizes(self) -> tuple[int, ...]:
        return (self.bins,) * (self.action_dim * self.chunk)

    @property
    def bin_width(self) -> float:
        """Width of one bin in action units."""
        return (self.high - self.low) / self.bins

    def _encode_flat(self, flat: np.ndarray) -> np.ndarray:
        scaled = (np.clip(flat, self.low, self.high) - self.low) / self.bin_width
        return np.clip(np.floor(scaled), 0, self.bins - 1).astype(np.int64)

    def _decode_flat(self, tokens: np.ndarray) -> np.ndarray:
        return self.low + (tokens + 0.5) * self.bin_width


def aloha_action_tokenizer() -> UniformActionTokenizer:
    """ALOHA actions: 14 joints x chunk 5 -> 70 tokens of 256 bins over [-1, 1] (App. E.2)."""
    return UniformActionTokenizer(action_dim=14, chunk=5, bins=256, low=-1.0, high=1.0)


def aloha_joint_tokenizer() -> UniformActionTokenizer:
    """ALOHA joint inputs: 14 joints -> 14 tokens binned like the actions (Appendix E.2)."""
    return UniformActionTokenizer(action_dim=14, chunk=1, bins=256, low=-1.0, high=1.0)
