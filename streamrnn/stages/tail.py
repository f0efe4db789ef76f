"""Tail calibration: how improbable a raw score is, given the series' own recent raw scores.

The raw score is compared with the running (exponentially weighted) mean and spread of that
series' earlier raw scores; the tail probability is the two-sided Gaussian
``p = erfc(|z| / sqrt(2))`` of that distance. Calibrating per series corrects a model whose
predicted spread is off (an untrained model, a series unlike its training data) without a
hand-set threshold. Raw scores are clipped before they are learned so one wild point cannot
inflate the spread for long.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from streamrnn.stages import schema
from streamrnn.stages.ewstats import ew_update
from streamrnn.stages.features import clip
from streamrnn.stages.jit import stage
from streamrnn.stages.tail_probability import LN2, LN10, log_ndtr, score_from_log10_tail

__all__ = ["COLUMNS", "TailParams", "TailState", "learn", "score"]

#: Raw scores are clipped to this magnitude before they are learned.
LEARN_CLIP = 10.0
#: Smallest spread of raw scores, so a perfectly forecast series stays finite.
MIN_SPREAD = 1e-3
#: Raw scores a series must have learned before its points score above 0.
MIN_LEARNED = 2


class TailParams(NamedTuple):
    """Weight of the newest raw score in the running mean and variance."""

    alpha: float


class TailState(NamedTuple):
    """Per series: EW mean, variance and count of raw scores."""

    mean: np.ndarray
    var: np.ndarray
    count: np.ndarray  # type: ignore[assignment]  # the column, not tuple.count


COLUMNS = tuple(schema.Column(n) for n in ("tail_mean", "tail_var", "tail_count"))


@stage
def score(st: TailState, p: TailParams, s: int, raw: float) -> float:
    """The score of ``raw`` (NaN: 0) from what the series has learned; learns nothing."""
    spread = max(math.sqrt(st.var[s]), MIN_SPREAD)
    z = 0.0
    if math.isfinite(raw) and st.count[s] >= MIN_LEARNED:
        z = abs(raw - st.mean[s]) / spread
    # Two-sided tail, in decades, computed in log space so it never underflows.
    return score_from_log10_tail(-(log_ndtr(-z) + LN2) / LN10)


@stage
def learn(st: TailState, p: TailParams, s: int, raw: float) -> None:
    """Add a finite raw score (clipped to ±:data:`LEARN_CLIP`) to the series' statistics."""
    if math.isfinite(raw):
        ew_update(st.mean, st.var, st.count, s, clip(raw, -LEARN_CLIP, LEARN_CLIP), p.alpha)
