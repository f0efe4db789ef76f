"""Anomaly likelihood: is the recent run of raw scores unusual for this series?

After Numenta's anomaly likelihood (Ahmad, Lavin, Purdy, Agha 2017, "Unsupervised real-time
anomaly detection for streaming data", Neurocomputing): the magnitude of each raw score,
``a = |raw|``, is averaged over a short recent window, and that short-run average is
compared with the long-run distribution of the same short-run averages of the series; the
tail probability is the one-sided Gaussian ``p = Q((short - long_mean) / long_sd)``. A
single large residual and a sustained run of moderately large ones both score high;
isolated noise does not. Windows are exponential (``short_alpha``, ``long_alpha``) so the
state is four numbers per series, not a buffer.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from streamrnn.stages import schema
from streamrnn.stages.ewstats import ew_update
from streamrnn.stages.jit import stage
from streamrnn.stages.tail_probability import LN10, log_ndtr, score_from_log10_tail

__all__ = ["COLUMNS", "LikelihoodParams", "LikelihoodState", "learn", "score"]

#: Magnitudes are clipped to this before they are learned (robust long-run statistics).
LEARN_CLIP = 10.0
#: Smallest long-run spread of magnitudes.
MIN_SPREAD = 1e-3
#: Magnitudes a series must have learned before its points score above 0.
MIN_LEARNED = 10


class LikelihoodParams(NamedTuple):
    """Weights of the newest point in the short-run average and the long-run statistics."""

    short_alpha: float
    long_alpha: float


class LikelihoodState(NamedTuple):
    """Per series: the short-run mean magnitude; the long-run mean, variance and count."""

    short: np.ndarray
    mean: np.ndarray
    var: np.ndarray
    count: np.ndarray  # type: ignore[assignment]  # the column, not tuple.count


COLUMNS = tuple(schema.Column(n) for n in ("lik_short", "lik_mean", "lik_var", "lik_count"))


@stage
def _short_with(st: LikelihoodState, p: LikelihoodParams, s: int, magnitude: float) -> float:
    weight = p.short_alpha if st.count[s] > 0 else 1.0
    return float(st.short[s] + weight * (magnitude - st.short[s]))


@stage
def score(st: LikelihoodState, p: LikelihoodParams, s: int, raw: float) -> float:
    """The score of ``raw`` (NaN: 0) from what the series has learned; learns nothing."""
    finite = math.isfinite(raw)
    short = _short_with(st, p, s, abs(raw) if finite else 0.0)
    spread = max(math.sqrt(st.var[s]), MIN_SPREAD)
    z = -math.inf
    if finite and st.count[s] >= MIN_LEARNED:
        z = (short - st.mean[s]) / spread
    return score_from_log10_tail(-log_ndtr(-z) / LN10)


@stage
def learn(st: LikelihoodState, p: LikelihoodParams, s: int, raw: float) -> None:
    """Add a finite raw score to the series' short run and long-run statistics."""
    if not math.isfinite(raw):
        return
    short = _short_with(st, p, s, min(abs(raw), LEARN_CLIP))
    ew_update(st.mean, st.var, st.count, s, short, p.long_alpha)
    st.short[s] = short
