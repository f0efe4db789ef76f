"""The forecast head's inference step: state and target time features → change and spread.

From the top layer's decayed state and the time features of the point being forecast, a
two-layer network (tanh hidden layer) outputs, in the series' step-scale units, the expected
change from the previous value and the log-variance of that change (clamped to
:data:`LOG_VAR_RANGE`). Compiled inference form of the head of
:class:`streamrnn.forecast.gru.RecurrentForecaster`; the hidden layer runs as one BLAS call
over the rows stepped together (at least two: see :mod:`.cell`).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from streamrnn.stages.activations import tanh
from streamrnn.stages.blas import BlasScratch, matmul
from streamrnn.stages.features import clip
from streamrnn.stages.jit import stage

__all__ = ["LOG_VAR_RANGE", "HeadWeights", "fill_input", "hidden_layer", "output"]

#: The head's log-variance output is clamped to this range (variance in normalised units²).
LOG_VAR_RANGE = (-12.0, 8.0)
_LOG_VAR_LOW, _LOG_VAR_HIGH = LOG_VAR_RANGE


class HeadWeights(NamedTuple):
    """One model's head, float32: ``w1_t`` (H + TIME_FEATURE_COUNT, HH) and ``b1`` (HH,)
    the hidden layer; ``w2`` (2, HH) and ``b2`` (2,) the output (change, log-variance)."""

    w1_t: np.ndarray
    b1: np.ndarray
    w2: np.ndarray
    b2: np.ndarray


@stage
def fill_input(head_in: np.ndarray, a: int, hd: np.ndarray, top: int, target: np.ndarray) -> None:
    """Row ``a`` of the head's input: the decayed top-layer state ``hd[top, a]``, then the
    masked time features ``target`` of the point to forecast."""
    hidden = hd.shape[2]
    for c in range(hidden):
        head_in[a, c] = hd[top, a, c]
    for c in range(target.shape[0]):
        head_in[a, hidden + c] = target[c]


@stage
def hidden_layer(
    hw: HeadWeights, head_in: np.ndarray, m: int, z1: np.ndarray, room: BlasScratch
) -> None:
    """The hidden layer's products of rows 0..m-1 (over at least two rows) into ``z1``."""
    matmul(head_in, hw.w1_t, z1, max(m, 2), room)


@stage
def output(hw: HeadWeights, z1: np.ndarray, a: int) -> tuple[float, float]:
    """(change, log-variance) of row ``a`` from its hidden-layer products ``z1[a]``."""
    delta = hw.b2[0]
    log_var = hw.b2[1]
    for r in range(hw.b1.shape[0]):
        act = tanh(z1[a, r] + hw.b1[r])
        delta += hw.w2[0, r] * act
        log_var += hw.w2[1, r] * act
    return float(delta), clip(float(log_var), _LOG_VAR_LOW, _LOG_VAR_HIGH)
