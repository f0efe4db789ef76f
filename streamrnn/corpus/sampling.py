"""When a synthetic metric is sampled: nominal interval, jitter, irregular reporting, gaps.

Production scrapes are nearly regular (a scrape every 10 s to 1 h, a little jitter), some
sources report irregularly (event-driven pushes), and every source loses samples: a
missed scrape now and then, and a few long outages. This module draws the timestamps; the
value families (:mod:`.traffic`, :mod:`.resources`, ...) then fill them in, so one
sampling model serves every family.

Pure numpy; knows nothing of the value families.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from streamrnn.arrays import FloatArray

__all__ = ["INTERVAL_MIX_S", "Sampling", "sample_durations_s", "sample_times"]

#: Nominal sampling interval (s) -> probability: 10 s, 1, 5, 10 and 60 minutes.
INTERVAL_MIX_S: dict[float, float] = {
    10.0: 0.15,
    60.0: 0.25,
    300.0: 0.25,
    600.0: 0.15,
    3600.0: 0.20,
}

#: Corpus epoch range (s) the first timestamp is drawn from: 2020-09-13 plus up to a year,
#: so every weekday and time of day starts some series.
_START_TS = 1_600_000_000.0
_START_SPREAD_S = 365 * 86_400.0
#: Probability that a series reports irregularly (gamma-distributed intervals).
_P_IRREGULAR = 0.15
#: The most long gaps (outages) a series has, and their length range (x nominal interval).
_MAX_LONG_GAPS = 4
_LONG_GAP_FACTOR = (2.0, 50.0)
#: The most a regular series' interval jitters (fraction of nominal).
_MAX_JITTER = 0.05
#: The highest per-sample probability of a single missed scrape.
_MAX_P_MISSED = 0.02


class Sampling(NamedTuple):
    """The timestamps of one series and the nominal interval they were drawn around."""

    #: Epoch seconds, float64, strictly increasing.
    ts: FloatArray
    #: The nominal sampling interval (s) before jitter, misses and gaps.
    interval_s: float


def sample_times(rng: np.random.Generator, points: int) -> Sampling:
    """Draw ``points`` strictly increasing timestamps (epoch s) for one series.

    The nominal interval comes from :data:`INTERVAL_MIX_S`. Most series (85 %) are
    regular with a jitter of up to ±5 % of the interval; the rest report irregularly,
    with gamma-distributed intervals (shape 2–20, mean the nominal interval, never below a
    tenth of it). On top of that, single scrapes go missing (up to 2 % of samples, each
    lengthening one interval by the nominal interval) and 0–4 long gaps, log-uniform in
    2x–50x the nominal interval, are cut in. ``points`` >= 1.
    """
    intervals = np.array(list(INTERVAL_MIX_S))
    interval_s = float(rng.choice(intervals, p=list(INTERVAL_MIX_S.values())))
    if rng.random() < _P_IRREGULAR:
        shape = rng.uniform(2.0, 20.0)
        steps = np.maximum(rng.gamma(shape, 1.0 / shape, points), 0.1)
    else:
        jitter = rng.uniform(0.001, _MAX_JITTER)
        steps = 1.0 + rng.uniform(-jitter, jitter, points)
    missed = rng.random(points) < rng.uniform(0.0, _MAX_P_MISSED)
    steps[missed] += 1.0
    n_gaps = int(rng.integers(0, _MAX_LONG_GAPS + 1))
    at = rng.choice(points, size=min(n_gaps, points), replace=False)
    low, high = np.log(_LONG_GAP_FACTOR[0]), np.log(_LONG_GAP_FACTOR[1])
    steps[at] = np.exp(rng.uniform(low, high, at.size))
    start = _START_TS + rng.uniform(0.0, _START_SPREAD_S)
    return Sampling(start + np.cumsum(steps * interval_s), interval_s)


def sample_durations_s(ts: FloatArray) -> FloatArray:
    """The time (s) each sample covers: the interval since the previous sample.

    The first sample has no predecessor; it is given the median interval, so a process
    simulated per sample (arrivals, counter increments) starts at its typical pace.
    """
    durations = np.empty_like(ts)
    if ts.size == 0:
        return durations
    durations[1:] = np.diff(ts)
    durations[0] = float(np.median(durations[1:])) if ts.size > 1 else 1.0
    return durations
