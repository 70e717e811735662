"""The EFM interface: one model, two heads (paper Sections 2.1-2.2, Appendix A.1).

The paper prompts a single PaLI model either for action tokens (RT-2 style) or for a
steps-to-go token. Every backend here exposes the same two distributions:

* ``action_logits(batch)`` -> ``(B, tokens_per_action, V)``: one categorical per action
  token (positions whose vocabulary is smaller than ``V`` are masked);
* ``steps_to_go_logits(batch)`` -> ``(B, num_bins)``: the steps-to-go distribution.

and derives from them the quantities the two stages need: ``action_log_prob`` (BC NLL,
REINFORCE), ``sample_action_tokens`` (sampling or greedy), ``expected_steps_to_go``
(d(o, g), Eq. 1), and the Stage 1 losses. Departure from the paper: except for the
``vlm`` backend, action tokens are predicted in parallel (independent categoricals given
the observation) rather than autoregressively; for 2-D PointMass/LanguageTable actions
this loses little and keeps the small backends fast.

Batches are dicts keyed by :mod:`efm_sim.keys` constants plus :data:`ACTION_TOKENS` and
:data:`STEPS_TO_GO_BIN`; each backend's ``prepare_observations`` turns raw numpy
observations (from an env or a dataset) into such a batch.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from efm_learning.config import ConfigError
from efm_learning.steps_to_go import StepsToGoTokenizer, expected_steps
from efm_learning.tokenizers import (
    ActionTokenizer,
    LanguageTableActionTokenizer,
    UniformActionTokenizer,
)
from efm_sim import keys

#: batch key: int64 ``(B, tokens_per_action)`` tokenized actions
ACTION_TOKENS = "action.tokens"
#: batch key: int64 ``(B,)`` steps-to-go bin index (the Stage 1 label)
STEPS_TO_GO_BIN = "steps_to_go.bin"
#: batch key: bool ``(B,)`` optional: the bin is a lower bound, the label says "past this
#: bin" (a policy rollout that never succeeded; efm_learning.rollout_labels)
STEPS_TO_GO_PAST_BIN = "steps_to_go.past_bin"
#: batch key: int64 ``(B,)`` instruction class (optional auxiliary objective, fn. 2)
INSTRUCTION_ID = "instruction.id"

_MASKED = -1e9
Batch = Mapping[str, Any]


@dataclass
class ActionTokenizerConfig:
    """How continuous actions become tokens (Appendix E)."""

    #: "uniform": ``bins`` equal bins per dimension over [low, high] (E.2);
    #: "language_table": (sign, magnitude 0..10) per axis (E.1)
    type: Literal["uniform", "language_table"] = "uniform"
    action_dim: int = 2
    chunk: int = 1
    bins: int = 256
    #: bin range; ``None`` = fitted to the Stage 1 demonstrations (symmetric max |a|)
    low: float | None = None
    high: float | None = None
    #: language_table: largest magnitude per axis
    max_delta: float = 1.0

    def __post_init__(self) -> None:
        if self.action_dim < 1 or self.chunk < 1:
            raise ConfigError("action_dim and chunk must be >= 1")
        if self.type == "uniform" and self.bins < 2:
            raise ConfigError(f"bins: must be >= 2, got {self.bins}")
        if (self.low is None) != (self.high is None):
            raise ConfigError("low/high: give both or neither (neither = fit to the demos)")
        if self.low is not None and not self.low < self.high:
            raise ConfigError(f"low/high: need low < high, got {self.low}, {self.high}")

    @property
    def fitted(self) -> bool:
        return self.type == "language_table" or self.low is not None

    def build(self) -> ActionTokenizer:
        if self.type == "language_table":
            return LanguageTableActionTokenizer(max_delta=self.max_delta)
        if self.low is None or self.high is None:
            raise ConfigError(
                "model.action_tokenizer.low/high are unset: fit them to the dataset "
                "(efm sft does) or set them in the config"
            )
        return UniformActionTokenizer(
            action_dim=self.action_dim,
            chunk=self.chunk,
            bins=self.bins,
            low=self.low,
            high=self.high,
        )


@dataclass
class StepsToGoConfig:
    """Steps-to-go bins (Appendix E): ``num_bins`` over ``0..max_steps``."""

    max_steps: int = 140
    num_bins: int = 50

    def build(self) -> StepsToGoTokenizer:
        try:
            return StepsToGoTokenizer(max_steps=self.max_steps, num_bins=self.num_bins)
        except ValueError as error:
            raise ConfigError(str(error)) from None


@dataclass
class EFMConfig:
    """Fields shared by every backend; ``type`` names the backend in the registry."""

    type: str = "base"
    action_tokenizer: ActionTokenizerConfig = field(default_factory=ActionTokenizerConfig)
    steps_to_go: StepsToGoConfig = field(default_factory=StepsToGoConfig)
    #: instruction classes for the optional instruction-prediction auxiliary (0 = off)
    num_instructions: int = 0


class EFM(nn.Module, abc.ABC):
    """An embodied foundation model with an action head and a steps-to-go head."""

    config: EFMConfig

    def __init__(self, config: EFMConfig) -> None:
        super().__init__()
        self.config = config
        self.action_tokenizer = config.action_tokenizer.build()
        self.steps_tokenizer = config.steps_to_go.build()
        vocab = self.action_tokenizer.vocab_sizes
        self.num_action_tokens = len(vocab)
        self.action_vocab = max(vocab)
        mask = torch.zeros(len(vocab), self.action_vocab, dtype=torch.bool)
        for i, size in enumerate(vocab):
            mask[i, size:] = True
        self.register_buffer("_invalid_action_tokens", mask, persistent=False)
        values = torch.tensor(np.array(self.steps_tokenizer.bin_values), dtype=torch.float32)
        self.register_buffer("_steps_to_go_values", values, persistent=False)

    # -- backend hooks ---------------------------------------------------------------
    @abc.abstractmethod
    def prepare_observations(self, observations: Mapping[str, Any]) -> dict[str, Any]:
        """Turn stacked numpy observations (keys of efm_sim.keys, leading batch axis)
        into a model batch on this model's device."""

    @abc.abstractmethod
    def _action_logits(self, batch: Batch) -> torch.Tensor:
        """Unmasked ``(B, tokens_per_action, V)`` logits."""

    @abc.abstractmethod
    def steps_to_go_logits(self, batch: Batch) -> torch.Tensor:
        """``(B, num_bins)`` logits of the steps-to-go distribution (Section 2.1)."""

    def instruction_logits(self, batch: Batch) -> torch.Tensor:
        """Optional auxiliary: instruction class from the first and last frame (fn. 2)."""
        raise NotImplementedError(f"{type(self).__name__} has no instruction-prediction head")

    def augment(self, batch: dict[str, Any], generator: torch.Generator) -> dict[str, Any]:
        """Stage 1 training-batch augmentation (none by default; ``conv_efm`` shifts)."""
        return batch

    def prepare_for_training(self, compile: bool = False) -> None:
        """Stage 1 speed-ups that leave the maths unchanged (none by default)."""

    def fixed_shape_batch(self, batch: dict[str, Any]) -> dict[str, Any]:
        """The prepared batch with every non-batch axis at a fixed size, as an exported
        graph takes it (efm_learning.onnx_runtime); unchanged by default."""
        return batch

    def stage2_parameters(self) -> list[nn.Parameter]:
        """Parameters Stage 2 updates (the paper freezes the image encoder, A.3)."""
        return [p for p in self.parameters() if p.requires_grad]

    # -- shared behaviour ------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self._steps_to_go_values.device

    def action_logits(self, batch: Batch) -> torch.Tensor:
        """Masked ``(B, tokens_per_action, V)`` logits of the action-token distribution."""
        logits = self._action_logits(batch)
        return logits.masked_fill(self._invalid_action_tokens, _MASKED)

    def action_log_prob(self, batch: Batch, tokens: torch.Tensor) -> torch.Tensor:
        """``log pi(a_t | o_t, g)`` of tokenized actions ``(B, tokens)`` -> ``(B,)``."""
        log_probs = F.log_softmax(self.action_logits(batch), dim=-1)
        return log_probs.gather(-1, tokens.long().unsqueeze(-1)).squeeze(-1).sum(-1)

    def action_entropy(self, batch: Batch) -> torch.Tensor:
        """Sum over tokens of the per-token entropy, ``(B,)`` (a diagnostic)."""
        log_probs = F.log_softmax(self.action_logits(batch), dim=-1)
        return -(log_probs.exp() * log_probs).sum(-1).sum(-1)

    @torch.no_grad()
    def sample_action_tokens(
        self, batch: Batch, greedy: bool = False, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Sample (or take the mode of) each action token, ``(B, tokens_per_action)``."""
        logits = self.action_logits(batch)
        if greedy:
            return logits.argmax(-1)
        probs = F.softmax(logits, dim=-1)
        flat = probs.reshape(-1, probs.shape[-1])
        return torch.multinomial(flat, 1, generator=generator).reshape(probs.shape[:-1])

    def decode_actions(self, tokens: torch.Tensor) -> np.ndarray:
        """Continuous actions (numpy, float32) for action tokens."""
        return self.action_tokenizer.decode(tokens.cpu().numpy()).astype(np.float32)

    def encode_actions(self, actions: np.ndarray) -> np.ndarray:
        """Action tokens (int64) for continuous actions (clipped to the tokenizer range)."""
        return self.action_tokenizer.encode(actions)

    def steps_to_go_probs(self, batch: Batch) -> torch.Tensor:
        return F.softmax(self.steps_to_go_logits(batch), dim=-1)

    def expected_steps_to_go(self, batch: Batch, in_range: bool = False) -> torch.Tensor:
        """d(o, g) = E[steps-to-go] under the model (paper Eq. 1), ``(B,)``; ``in_range``:
        over every bin but the last (efm_learning.steps_to_go.expected_steps)."""
        return expected_steps(self.steps_to_go_probs(batch), self._steps_to_go_values, in_range)

    def encode_steps_to_go(self, steps: np.ndarray) -> np.ndarray:
        """Bin index (Stage 1 label) of each remaining-step count."""
        return self.steps_tokenizer.encode(steps)

    # -- Stage 1 objectives (Section 2.1) --------------------------------------------
    def bc_loss(self, batch: Batch) -> torch.Tensor:
        """Behavioural cloning NLL, ``-E[log p_action(a_t | o_t, g)]``."""
        return -self.action_log_prob(batch, batch[ACTION_TOKENS]).mean()

    def steps_to_go_loss(self, batch: Batch) -> torch.Tensor:
        """Steps-to-go NLL, ``-E[log p_steps-to-go(t' - t | o_t, g)]`` over bins.

        Rows flagged in :data:`STEPS_TO_GO_PAST_BIN` are censored labels (a rollout that
        never succeeded, paper Section 6): their NLL is ``-log P(bin > label bin)``."""
        logits = self.steps_to_go_logits(batch)
        bins = batch[STEPS_TO_GO_BIN].long()
        past = batch.get(STEPS_TO_GO_PAST_BIN)
        if past is None:
            return F.cross_entropy(logits, bins)
        log_p = F.log_softmax(logits, dim=-1)
        exact = -log_p.gather(1, bins[:, None])[:, 0]
        above = torch.arange(logits.shape[-1], device=logits.device)[None] > bins[:, None]
        above[:, -1] = True  # the last bin always counts as past (it holds ">= max")
        censored = -torch.logsumexp(log_p.masked_fill(~above, float("-inf")), dim=-1)
        return torch.where(past.bool(), censored, exact).mean()

    def instruction_loss(self, batch: Batch) -> torch.Tensor:
        """Instruction-prediction NLL (optional auxiliary, Section 2.1 footnote 2)."""
        return F.cross_entropy(self.instruction_logits(batch), batch[INSTRUCTION_ID].long())

    def forward(self, batches: Mapping[str, Batch]) -> dict[str, torch.Tensor]:
        """All requested objectives in one call (so DistributedDataParallel sees one
        forward per step): keys ``bc``, ``steps_to_go``, ``instruction`` give the Stage 1
        losses; ``log_prob`` gives per-sample ``log pi`` of ``batch[ACTION_TOKENS]``."""
        out = {}
        for objective, batch in batches.items():
            if objective == "log_prob":
                out[objective] = self.action_log_prob(batch, batch[ACTION_TOKENS])
            else:
                out[objective] = self.objective_loss(objective, batch)
        return out

    def featurizer(self) -> Any:
        """Episode -> per-observation arrays for the Stage 1 pool (state by default)."""
        from efm_learning.data import state_featurizer

        return state_featurizer

    def fit_to_data(self, states: np.ndarray) -> None:
        """Fit input normalisation to training-split states (no-op by default)."""

    def example_observations(self, n: int = 2, seed: int = 0) -> dict[str, Any]:
        """``n`` random raw observations of the shapes this backend takes (state, and a
        frame pair at the model's image size when it needs images); ONNX export traces
        the network with them (efm_learning.onnx_runtime)."""
        rng = np.random.default_rng(seed)
        c = self.config
        obs: dict[str, Any] = {
            keys.OBS_STATE: rng.standard_normal((n, getattr(c, "state_dim", 0)), np.float32),
            keys.INSTRUCTION: [f"example instruction {i}" for i in range(n)],
        }
        if getattr(self, "needs_images", False):
            size = int(getattr(c, "image_size", 64))
            for key in (keys.OBS_IMAGE, keys.OBS_PREV_IMAGE):
                obs[key] = rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
        return obs

    def objective_loss(self, objective: str, batch: Batch) -> torch.Tensor:
        if objective == "bc":
            return self.bc_loss(batch)
        if objective == "steps_to_go":
            return self.steps_to_go_loss(batch)
        if objective == "instruction":
            return self.instruction_loss(batch)
        raise ValueError(f"unknown objective {objective!r}; allowed: bc, steps_to_go, instruction")

    # -- numpy conveniences for actors -----------------------------------------------
    @torch.no_grad()
    def act(
        self,
        observations: Mapping[str, Any],
        greedy: bool = False,
        generator: torch.Generator | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Batched policy step: ``(tokens int64 (B, K), actions float32 (B, *shape))``."""
        batch = self.prepare_observations(observations)
        tokens = self.sample_action_tokens(batch, greedy=greedy, generator=generator)
        return tokens.cpu().numpy(), self.decode_actions(tokens)

    @torch.no_grad()
    def predict_steps_to_go(
        self, observations: Mapping[str, Any], in_range: bool = False
    ) -> np.ndarray:
        """d(o, g) for stacked numpy observations, float64 ``(B,)`` (``in_range``: see
        :meth:`expected_steps_to_go`)."""
        batch = self.prepare_observations(observations)
        return self.expected_steps_to_go(batch, in_range).double().cpu().numpy()


def stack_observations(items: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Stack per-env observation dicts into one batch dict (strings become lists)."""
    out: dict[str, Any] = {}
    for key in items[0]:
        values = [item[key] for item in items]
        if isinstance(values[0], str):
            out[key] = values
        else:
            out[key] = np.stack([np.asarray(v) for v in values])
    return out
