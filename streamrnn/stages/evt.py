"""Extreme-value calibration: how extreme is this residual among the series' own extremes?

After SPOT (Siffer, Fouque, Termier, Largouët 2017, "Anomaly Detection in Streams with
Extreme Value Theory", KDD): the magnitudes ``x = |raw|`` above a high quantile ``t`` of a
series (its *peaks*) follow a generalised Pareto distribution, so the tail probability of a
magnitude beyond ``t`` is ``p = phi * (1 + gamma (x - t) / sigma) ** (-1 / gamma)`` with
``phi`` the rate of peaks. Unlike a Gaussian tail this knows how heavy the series' own tail
is: a bursty series whose bursts are routine needs a much larger burst to score high.

Everything is streaming, a handful of numbers per series: ``t`` tracks the ``quantile`` of
``x`` by stochastic approximation, ``phi`` is an exponentially weighted rate, and
``gamma``/``sigma`` come from exponentially weighted moments of the excesses ``x - t``
(method of moments: ``gamma = (1 - m^2/v) / 2``, ``sigma = m (1 + m^2/v) / 2``). Below ``t``
the tail probability is interpolated in log space between 1 (at 0) and ``phi`` (at ``t``).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from streamrnn.stages import schema
from streamrnn.stages.features import clip
from streamrnn.stages.jit import stage
from streamrnn.stages.tail_probability import LN10, score_from_log10_tail

__all__ = ["COLUMNS", "EVTParams", "EVTState", "learn", "score"]

#: Magnitudes a series must have learned, and peaks it must have seen, before it scores.
MIN_LEARNED = 30
MIN_PEAKS = 5
#: The shape parameter is kept in this range (heavy tails up to gamma = 0.5).
GAMMA_RANGE = (-0.4, 0.5)
_GAMMA_LOW, _GAMMA_HIGH = GAMMA_RANGE
#: The moment ratio m²/v is kept in this range (bounds gamma's estimate).
_RATIO_LOW, _RATIO_HIGH = 1e-3, 1e3
#: Weight floor of the newest excess in the moment estimates.
EXCESS_ALPHA = 0.02
#: Step of the quantile tracker, relative to the running mean magnitude.
QUANTILE_STEP = 0.05
#: The running mean magnitude averages at most this many points (then forgets).
MEAN_WINDOW = 200.0


class EVTParams(NamedTuple):
    """``quantile`` above which magnitudes are peaks; ``rate_alpha`` weight of the newest
    point in the peak rate."""

    quantile: float
    rate_alpha: float


class EVTState(NamedTuple):
    """Per series: threshold, peak rate, excess mean and variance, peaks, points, mean
    magnitude."""

    t: np.ndarray
    phi: np.ndarray
    m: np.ndarray
    v: np.ndarray
    peaks: np.ndarray
    n: np.ndarray
    mean: np.ndarray


COLUMNS = tuple(
    schema.Column(f"evt_{name}") for name in ("t", "phi", "m", "v", "peaks", "n", "mean")
)


@stage
def score(st: EVTState, p: EVTParams, s: int, raw: float) -> float:
    """The score of ``raw`` (NaN: 0) from what the series has learned; learns nothing."""
    if not (math.isfinite(raw) and st.n[s] >= MIN_LEARNED and st.peaks[s] >= MIN_PEAKS):
        return 0.0
    x = abs(raw)
    t = max(st.t[s], 1e-9)
    phi = clip(st.phi[s], 1e-6, 1.0)
    m = max(st.m[s], 1e-9)
    ratio = clip(m * m / max(st.v[s], 1e-18), _RATIO_LOW, _RATIO_HIGH)
    gamma = clip(0.5 * (1.0 - ratio), _GAMMA_LOW, _GAMMA_HIGH)
    sigma = max(0.5 * m * (1.0 + ratio), 1e-9)
    excess = max(x - t, 0.0)
    base = 1.0 + gamma * excess / sigma
    # log10 of the GPD survival; a bounded tail (gamma < 0) beyond its end is certain.
    if abs(gamma) < 1e-6:
        gpd = -excess / sigma / LN10
    elif base > 0:
        gpd = -math.log10(max(base, 1e-300)) / gamma
    else:
        gpd = -math.inf
    log10_p = math.log10(phi) + gpd if x > t else math.log10(phi) * min(x / t, 1.0)
    return score_from_log10_tail(-log10_p)


@stage
def learn(st: EVTState, p: EVTParams, s: int, raw: float) -> None:
    """Add a finite raw score's magnitude: quantile tracker, peak rate, excess moments."""
    if not math.isfinite(raw):
        return
    x = abs(raw)
    old_n = st.n[s]
    n = old_n + 1.0
    mean = st.mean[s] + (x - st.mean[s]) / min(n, MEAN_WINDOW)
    t = st.t[s] if old_n > 0 else x
    above = 1.0 if x > t else 0.0
    # Quantile tracking (stochastic approximation), scaled by the typical magnitude.
    t = max(t + QUANTILE_STEP * mean * (above - (1.0 - p.quantile)), 0.0)
    st.phi[s] = st.phi[s] + max(p.rate_alpha, 1.0 / n) * (above - st.phi[s])
    peaks = st.peaks[s] + above
    weight = max(EXCESS_ALPHA, 1.0 / max(peaks, 1.0))
    excess = max(x - t, 0.0)
    delta = excess - st.m[s]
    if above > 0:
        st.v[s] = (1 - weight) * (st.v[s] + weight * delta * delta)
        st.m[s] = st.m[s] + weight * delta
    st.t[s] = t
    st.peaks[s] = peaks
    st.n[s] = n
    st.mean[s] = mean
