"""The ``mlp`` backend: an EFM for low-dimensional states (the paper's pointmass, Sec. 3).

As in the public pointmass notebook there are two separate trunks (3 x 256), one per
head. Unlike the notebook, actions are *tokenized* (a categorical per action dimension,
Appendix E.2 style) instead of an unbounded Gaussian, so the Stage 2 policy cannot push
action means to infinity (the notebook diverged that way in 2 of 6 seeds), and
steps-to-go labels are proper bin indices. Inputs are standardised with statistics
fitted on the Stage 1 training split and stored with the weights.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from efm_learning.models.base import EFM, Batch
from efm_learning.models.configuration_mlp import MLPConfig
from efm_sim import keys

_ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh}


def mlp_trunk(inputs: int, hidden: int, layers: int, activation: str) -> nn.Sequential:
    """``layers`` x (Linear, activation)."""
    modules: list[nn.Module] = []
    width = inputs
    for _ in range(layers):
        modules += [nn.Linear(width, hidden), _ACTIVATIONS[activation]()]
        width = hidden
    return nn.Sequential(*modules)


class MLPEFM(EFM):
    """State -> (action-token logits, steps-to-go logits) with two MLP trunks."""

    config: MLPConfig

    def __init__(self, config: MLPConfig) -> None:
        super().__init__(config)
        c = config
        self.register_buffer("state_mean", torch.zeros(c.state_dim))
        self.register_buffer("state_std", torch.ones(c.state_dim))
        self.action_trunk = mlp_trunk(c.state_dim, c.hidden_size, c.num_layers, c.activation)
        self.action_head = nn.Linear(c.hidden_size, self.num_action_tokens * self.action_vocab)
        self.steps_trunk = mlp_trunk(c.state_dim, c.hidden_size, c.num_layers, c.activation)
        self.steps_head = nn.Linear(c.hidden_size, c.steps_to_go.num_bins)

    def fit_to_data(self, states: np.ndarray) -> None:
        self.set_state_normalization(states.mean(axis=0), states.std(axis=0))

    def set_state_normalization(self, mean: np.ndarray, std: np.ndarray) -> None:
        """Standardise inputs with training-split statistics (std floored at 1e-8)."""
        self.state_mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
        self.state_std.copy_(torch.as_tensor(np.maximum(std, 1e-8), dtype=torch.float32))

    def prepare_observations(self, observations: Mapping[str, Any]) -> dict[str, Any]:
        state = torch.as_tensor(np.asarray(observations[keys.OBS_STATE]), dtype=torch.float32)
        if state.ndim != 2 or state.shape[1] != self.config.state_dim:
            raise ValueError(
                f"{keys.OBS_STATE} must be (B, {self.config.state_dim}), got {tuple(state.shape)}"
            )
        return {keys.OBS_STATE: state.to(self.device)}

    def _features(self, batch: Batch) -> torch.Tensor:
        return (batch[keys.OBS_STATE] - self.state_mean) / self.state_std

    def _action_logits(self, batch: Batch) -> torch.Tensor:
        hidden = self.action_trunk(self._features(batch))
        return self.action_head(hidden).view(-1, self.num_action_tokens, self.action_vocab)

    def steps_to_go_logits(self, batch: Batch) -> torch.Tensor:
        return self.steps_head(self.steps_trunk(self._features(batch)))
