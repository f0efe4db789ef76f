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

__all__ = [
    "AT_95",
    "COLUMNS",
    "GAUSSIAN_Z",
    "LEVELS",
    "RATE",
    "IntervalState",
    "half_widths",
    "learn",
    "step",
    "widths_per_spread",
]

#: Central coverage levels of the published intervals.
LEVELS = (0.5, 0.8, 0.95)
#: Where the 95 % level (the published ``lower``/``upper``) is in :data:`LEVELS`.
AT_95 = LEVELS.index(0.95)
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
def step(st: IntervalState, s: int, spread: float, z: float, out: np.ndarray) -> None:
    """The interval stage of one point of series ``s``: its half-widths (value units) for
    ``spread`` (value units; NaN: none) into ``out`` (len(LEVELS)), then learn its
    standardised error ``z`` (residual / spread; NaN: nothing to learn). One ``exp`` a level:
    the widths the point is published with are the ones it is judged against."""
    learnable = math.isfinite(z)
    magnitude = abs(z)
    for i in range(len(LEVELS)):
        log_ratio = st.log_ratio[s, i]
        width = _Z[i] * math.exp(log_ratio)  # in spreads
        out[i] = width * spread
        if learnable:
            miss = 1.0 if magnitude > width else 0.0
            updated = log_ratio + RATE * (miss - _MISS_RATE[i])
            st.log_ratio[s, i] = min(max(updated, -LOG_RATIO_LIMIT), LOG_RATIO_LIMIT)


@stage
def half_widths(st: IntervalState, s: int, spread: float, out: np.ndarray) -> None:
    """:func:`step` without learning: the half-widths for ``spread`` into ``out``."""
    step(st, s, spread, math.nan, out)


@stage
def learn(st: IntervalState, s: int, z: float) -> None:
    """:func:`step` without widths: learn one standardised error ``z``."""
    step(st, s, math.nan, z, np.empty(len(LEVELS)))


def widths_per_spread(log_ratio: np.ndarray) -> np.ndarray:
    """:func:`step`'s half-widths in spreads for rows of learned ``log_ratio`` (..., len(
    LEVELS)), vectorised (the engine's k-step intervals)."""
    widths: np.ndarray = _Z * np.exp(log_ratio.astype(np.float64))
    return widths
