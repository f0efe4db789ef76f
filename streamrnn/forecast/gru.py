"""The recurrent forecaster: a GRU over per-point features and a Gaussian forecast head.

Shapes use K for series stepped together, T for points per series in one call (padded),
L for layers and H for the hidden size.

For each point the model reads the hidden state left by the series' previous point and the
*time features of the point being forecast* (see :mod:`streamrnn.forecast.features`) and
outputs, in the series' normalised units, the expected change from the previous value and
the log-variance of that change. The GRU then consumes the point itself and leaves the
state for the next one. A series' state therefore summarises everything it has seen; it is
kept by the caller between calls, one row per series.

The head predicts a *change from the last value* (a persistence skip connection), so an
untrained model with small random weights forecasts close to the last value rather than
noise; training teaches it when to deviate.

Pure torch; knows nothing of Kafka.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from streamrnn.forecast.features import INPUT_SIZE, TIME_FEATURE_COUNT

__all__ = ["ForecastStep", "GRUForecaster"]

#: The head's log-variance output is clamped to this range (variance in normalised units²).
LOG_VAR_RANGE = (-12.0, 8.0)


@dataclass(frozen=True, slots=True)
class ForecastStep:
    """Outputs of one batched step.

    delta_mean: (K, T) forecast of (value - previous value) / scale for each point.
    log_var: (K, T) log-variance of that forecast, same units.
    h_next: (L, K, H) hidden state after each series' last valid point.
    """

    delta_mean: torch.Tensor
    log_var: torch.Tensor
    h_next: torch.Tensor


class GRUForecaster(nn.Module):
    """A stacked GRU with a Gaussian one-step-ahead head, stepped for many series at once."""

    def __init__(self, hidden_size: int = 64, num_layers: int = 1) -> None:
        super().__init__()
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.rnn = nn.GRU(INPUT_SIZE, hidden_size, num_layers, batch_first=True)
        self.head = nn.Sequential(
            nn.Linear(hidden_size + TIME_FEATURE_COUNT, hidden_size),
            nn.Tanh(),
            nn.Linear(hidden_size, 2),
        )
        final = self.head[2]
        assert isinstance(final, nn.Linear)
        nn.init.normal_(final.weight, std=0.05)
        nn.init.zeros_(final.bias)

    def initial_state(self, k: int) -> torch.Tensor:
        """The hidden state of ``k`` series that have seen nothing, (L, K, H)."""
        return torch.zeros(self.num_layers, k, self.hidden_size)

    def step(
        self,
        h0: torch.Tensor,
        inputs: torch.Tensor,
        target_features: torch.Tensor,
        lengths: torch.Tensor,
    ) -> ForecastStep:
        """Forecast every point of K series, then advance their hidden states.

        Args:
            h0: (L, K, H) state after each series' previous point.
            inputs: (K, T, INPUT_SIZE) features of each point, padded after ``lengths``.
            target_features: (K, T, TIME_FEATURE_COUNT) time features of each point,
                used to forecast that same point from the state before it.
            lengths: (K,) int64, valid points per series (>= 1), on the CPU.
        """
        t = inputs.shape[1]
        if t == 1 or bool((lengths == t).all()):
            out, h_next = self.rnn(inputs, h0)
        else:
            packed = pack_padded_sequence(inputs, lengths, batch_first=True, enforce_sorted=False)
            packed_out, h_next = self.rnn(packed, h0)
            out, _ = pad_packed_sequence(packed_out, batch_first=True, total_length=t)
        # The state *before* each point: the stored state for the first, then the outputs.
        h_before = torch.cat([h0[-1].unsqueeze(1), out[:, :-1, :]], dim=1)
        head_out = self.head(torch.cat([h_before, target_features], dim=-1))
        delta_mean = head_out[..., 0]
        log_var = head_out[..., 1].clamp(*LOG_VAR_RANGE)
        return ForecastStep(delta_mean, log_var, h_next)
