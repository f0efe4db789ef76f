"""The recurrent forecaster: stacked GRU (or LSTM) cells with GRU-D decay and a Gaussian head.

Shapes use K for series stepped together, T for points per series in one call (padded),
S for state rows (``num_layers`` for a GRU, ``2 * num_layers`` for an LSTM: h then c) and
H for the hidden size.

For each point the model first *decays* the state left by the series' previous point
according to the gap before this point (GRU-D, Che et al. 2018, "Recurrent Neural Networks
for Multivariate Time Series with Missing Values"): ``gamma = exp(-max(0, W·delta + b))``
per hidden unit, ``h <- gamma·h + (1 - gamma)·h_prior`` with a learned prior, so after a
long gap the state moves toward the prior. From that state and the *time features of the
point being forecast* (see :mod:`streamrnn.stages.features`) the head outputs, in the
series' normalised units, the expected change from the previous value and the log-variance
of that change. The cells then consume the point itself and leave the state for the next.

The head predicts a *change from the last value* (a persistence skip connection), so an
untrained model with small random weights forecasts close to the last value rather than
noise; training teaches it when to deviate.

This is the model's training form (it needs autograd); serving runs its compiled inference
export (:mod:`streamrnn.forecast.export`, :mod:`streamrnn.stages.cell` and
:mod:`streamrnn.stages.head`). Pure torch; knows nothing of Kafka.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

import torch
from torch import nn

from streamrnn.stages.features import (
    DECAY_FEATURES,
    INPUT_SIZE,
    TIME_DELTA_FEATURES,
    TIME_FEATURE_COUNT,
    TIME_FEATURES,
    VALUE_FEATURE_COUNT,
)
from streamrnn.stages.head import LOG_VAR_RANGE

__all__ = ["ForecastStep", "ModelSpec", "RecurrentForecaster"]

#: Indices (in the time features) of the gap features that drive the decay.
_DECAY_INPUTS = [TIME_FEATURES.index(name) for name in DECAY_FEATURES]


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """The architecture of a forecaster (stored in artifacts)."""

    cell: Literal["gru", "lstm"] = "gru"
    hidden_size: int = 64
    num_layers: int = 1
    #: GRU-D decay of the state by the gap before each point.
    decay: bool = True
    #: Feed the gap features (log gap ratio, log gap, gap flag); off = a plain sequence model.
    time_delta_features: bool = True

    def as_dict(self) -> dict[str, Any]:
        """Plain values, for artifacts."""
        return asdict(self)

    @property
    def state_rows(self) -> int:
        """Rows of state per series: h per layer, plus c per layer for an LSTM."""
        return self.num_layers * (2 if self.cell == "lstm" else 1)


@dataclass(frozen=True, slots=True)
class ForecastStep:
    """Outputs of one batched step.

    delta_mean: (K, T) forecast of (value - previous value) / scale for each point.
    log_var: (K, T) log-variance of that forecast, same units.
    state: (S, K, H) state after each series' last valid point.
    """

    delta_mean: torch.Tensor
    log_var: torch.Tensor
    state: torch.Tensor


class RecurrentForecaster(nn.Module):
    """A stacked recurrent forecaster stepped for many series at once; see the module doc."""

    input_mask: torch.Tensor
    target_mask: torch.Tensor

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        self.spec = spec
        h = spec.hidden_size
        cell_type = nn.GRUCell if spec.cell == "gru" else nn.LSTMCell
        self.cells = nn.ModuleList(
            cell_type(INPUT_SIZE if layer == 0 else h, h) for layer in range(spec.num_layers)
        )
        self.decay = (
            nn.ModuleList(nn.Linear(len(_DECAY_INPUTS), h) for _ in range(spec.num_layers))
            if spec.decay
            else None
        )
        self.h_prior = nn.Parameter(torch.zeros(spec.num_layers, h))
        head_hidden = max(8, h // 2)
        self.head = nn.Sequential(
            nn.Linear(h + TIME_FEATURE_COUNT, head_hidden), nn.Tanh(), nn.Linear(head_hidden, 2)
        )
        final = self.head[2]
        assert isinstance(final, nn.Linear)
        nn.init.normal_(final.weight, std=0.05)
        nn.init.zeros_(final.bias)
        target_mask = torch.ones(TIME_FEATURE_COUNT)
        if not spec.time_delta_features:
            for name in TIME_DELTA_FEATURES:
                target_mask[TIME_FEATURES.index(name)] = 0.0
        self.register_buffer("target_mask", target_mask)
        self.register_buffer(
            "input_mask", torch.cat([torch.ones(VALUE_FEATURE_COUNT), target_mask])
        )

    def initial_state(self, k: int) -> torch.Tensor:
        """The state of ``k`` series that have seen nothing, (S, K, H)."""
        return torch.zeros(self.spec.state_rows, k, self.spec.hidden_size)

    def step(
        self,
        state: torch.Tensor,
        inputs: torch.Tensor,
        target_features: torch.Tensor,
        lengths: torch.Tensor | None = None,
    ) -> ForecastStep:
        """Forecast every point of K series, then advance their states.

        Args:
            state: (S, K, H) state after each series' previous point.
            inputs: (K, T, INPUT_SIZE) features of each point, padded after ``lengths``.
            target_features: (K, T, TIME_FEATURE_COUNT) time features of each point,
                used to forecast that same point from the state before it.
            lengths: (K,) valid points per series (>= 1); None when all T are valid.
        """
        t_max = inputs.shape[1]
        before: list[torch.Tensor] = []
        for t in range(t_max):
            decayed = self.decay_state(state, target_features[:, t])
            before.append(decayed[self.spec.num_layers - 1])
            advanced = self.advance(decayed, inputs[:, t])
            if lengths is not None:
                advanced = torch.where((lengths > t).view(1, -1, 1), advanced, state)
            state = advanced
        delta_mean, log_var = self.predict(torch.stack(before, dim=1), target_features)
        return ForecastStep(delta_mean, log_var, state)

    def decay_state(self, state: torch.Tensor, target_features: torch.Tensor) -> torch.Tensor:
        """The state (S, K, H) decayed by the gap before the next point (identity without decay).

        ``target_features`` (K, TIME_FEATURE_COUNT) are the time features of that next point.
        Only the h rows decay; an LSTM's c rows are kept.
        """
        if self.decay is None:
            return state
        gap = (target_features * self.target_mask)[:, _DECAY_INPUTS]
        rows = []
        for layer, lin in enumerate(self.decay):
            gamma = torch.exp(torch.clamp(lin(gap), min=0.0).neg())
            # gamma·h + (1 - gamma)·prior, in one op
            rows.append(torch.lerp(self.h_prior[layer].expand_as(gamma), state[layer], gamma))
        rows.extend(state[self.spec.num_layers :].unbind(0))
        return torch.stack(rows, dim=0)

    def advance(self, state: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
        """The state (S, K, H) after consuming one point per series, inputs (K, INPUT_SIZE)."""
        layers = self.spec.num_layers
        x = inputs * self.input_mask
        hs, cs = [], []
        for layer, cell in enumerate(self.cells):
            if self.spec.cell == "lstm":
                h, c = cell(x, (state[layer], state[layers + layer]))
                cs.append(c)
            else:
                h = cell(x, state[layer])
            hs.append(h)
            x = h
        return torch.stack(hs + cs, dim=0)

    def predict(
        self, h_top: torch.Tensor, target_features: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(delta mean, log variance) from the top layer's state and the target's features.

        Any leading shape: h_top (..., H), target_features (..., TIME_FEATURE_COUNT).
        """
        out = self.head(torch.cat([h_top, target_features * self.target_mask], dim=-1))
        return out[..., 0], out[..., 1].clamp(*LOG_VAR_RANGE)
