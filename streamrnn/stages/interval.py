"""Forecast intervals that hold their coverage: per series, online adaptive quantiles.

The forecast head predicts a spread, and a central interval of ``±z·spread`` with the
Gaussian ``z`` of a level covers that level only if the model's spread is right *and* its
errors are Gaussian. Neither holds everywhere: a global model is over-confident on a series
noisier than the ones it was trained on, and metric residuals have heavy tails. So, per
series and per level p of :data:`LEVELS`, the interval's half-width in spreads is learned
online from the series' own standardised errors ``z = (value - forecast) / spread``:

    w ← w · exp(RATE · (miss - (1 - p))),   miss = |z| > w

This is adaptive conformal inference on the log scale (Gibbs & Candès 2021, "Adaptive
Conformal Inference Under Distribution Shift"): ``w`` stops moving exactly when misses occur
at the rate 1 - p, whatever the distribution of ``z``, and it follows a change of the error
distribution within about 1 / RATE points. A series starts at the Gaussian ``z`` of each
level; ``w`` is kept within [exp(-3), exp(3)] times it.

Every scored point teaches it, anomalous or not (the interval is a statement about all the
values to come), except a value beyond ``VALUE_LIMIT`` (:mod:`.features`), which is as if
it had not arrived; the spread alone stays the model's (raw scores use it unchanged).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from streamrnn.stages import schema
from streamrnn.stages.jit import stage

__all__ = ["COLUMNS", "GAUSSIAN_Z", "LEVELS", "RATE", "IntervalState", "half_widths", "learn"]

#: Central coverage levels of the published intervals.
LEVELS = (0.5, 0.8, 0.95)
#: The Gaussian half-widths of those levels, in standard deviations (the starting point).
GAUSSIAN_Z = (0.6744897501960817, 1.2815515655446004, 1.959963984540054)
#: Step of the log half-width per point (about 1 / RATE points to follow a change).
RATE = 0.02
#: Bound of the log of the learned half-width over its Gaussian start.
LOG_RATIO_LIMIT = 3.0


class IntervalState(NamedTuple):
    """Per series: ``log_ratio`` (len(LEVELS), float32) the log of each level's half-width
    over its Gaussian ``z`` (0: not learned yet)."""

    log_ratio: np.ndarray


COLUMNS = (schema.Column("interval_log_ratio", np.float32, (len(LEVELS),)),)

_Z = np.array(GAUSSIAN_Z)
_MISS_RATE = np.array([1.0 - p for p in LEVELS])


@stage
def half_widths(st: IntervalState, s: int, spread: float, out: np.ndarray) -> None:
    """Half-widths (value units) of the central intervals of :data:`LEVELS` around the
    forecast of series ``s`` with ``spread`` (value units) into ``out`` (len(LEVELS));
    NaN with no spread."""
    for i in range(len(LEVELS)):
        out[i] = _Z[i] * math.exp(st.log_ratio[s, i]) * spread


@stage
def learn(st: IntervalState, s: int, z: float) -> None:
    """Learn one standardised error ``z`` (residual / spread; NaN: nothing to learn)."""
    if not math.isfinite(z):
        return
    magnitude = abs(z)
    for i in range(len(LEVELS)):
        log_ratio = st.log_ratio[s, i]
        miss = 1.0 if magnitude > _Z[i] * math.exp(log_ratio) else 0.0
        updated = log_ratio + RATE * (miss - _MISS_RATE[i])
        st.log_ratio[s, i] = min(max(updated, -LOG_RATIO_LIMIT), LOG_RATIO_LIMIT)
