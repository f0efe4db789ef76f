"""Traffic-driven value families: request rates, bursty event counts, latencies.

Each generator takes a random generator and the sample timestamps (epoch s, from
:func:`streamrnn.corpus.sampling.sample_times`) and returns one value per timestamp,
float64. Their shapes come from a :class:`~streamrnn.corpus.load.TrafficLoad`.

* :func:`request_rate` — requests/s: the load times a level of 0.1–10 000 /s, correlated
  multiplicative log-normal noise (2–25 %), in half the series rare spikes (up to ~x11).
  Non-negative.
* :func:`event_counts` — events per sample: negative binomial (a Poisson count around a
  gamma-distributed rate, dispersion 0.3–50) around a mean of 0.05–1000 per sample, in
  60 % of series following the daily/weekly load, with Pareto-sized event storms.
  Non-negative integers, heavy-tailed.
* :func:`latency` — seconds or milliseconds: log-normal (σ 0.05–0.6) around a median of
  1e-4–1e3 that rises with the load, with occasional heavy-tailed tail spikes
  (incidents), in 30 % of series capped at a timeout. Strictly positive.

Pure numpy.
"""

from __future__ import annotations

import numpy as np

from streamrnn.arrays import FloatArray
from streamrnn.corpus.load import traffic_load
from streamrnn.corpus.noise import ar1, bursts, log_uniform

__all__ = ["event_counts", "latency", "request_rate"]

#: The largest Poisson mean drawn (numpy's Poisson sampler needs it finite and < 2**63).
_MAX_POISSON_MEAN = 1e12


def request_rate(rng: np.random.Generator, ts: FloatArray) -> FloatArray:
    """Requests per second: daily and weekly cycles, holidays, trend, multiplicative noise."""
    load = traffic_load(rng, ts)
    level_per_s = log_uniform(rng, 0.1, 1e4)
    sigma = rng.uniform(0.02, 0.25)
    noise = np.exp(sigma * ar1(rng, ts.size, rng.uniform(0.0, 0.8)) - 0.5 * sigma * sigma)
    values = level_per_s * load.relative * noise
    if rng.random() < 0.5:  # traffic spikes: heavy-tailed, but at most ~x11 the usual rate
        spikes = bursts(rng, ts.size, 10 ** rng.uniform(-3.5, -2.0), rng.uniform(2.0, 4.0), 0.6)
        values *= 1.0 + rng.uniform(0.2, 1.0) * np.minimum(spikes, 10.0)
    return values


def event_counts(rng: np.random.Generator, ts: FloatArray) -> FloatArray:
    """Events per sample: negative binomial around a (possibly cyclic) rate, with storms."""
    mean_count = log_uniform(rng, 0.05, 1000.0)
    rate = np.full(ts.size, mean_count)
    if rng.random() < 0.6:
        rate *= traffic_load(rng, ts).relative
    if rng.random() < 0.7:
        storms = bursts(
            rng, ts.size, 10 ** rng.uniform(-3.0, -1.5), rng.uniform(1.1, 2.5), rng.uniform(0, 0.8)
        )
        rate *= 1.0 + rng.uniform(1.0, 10.0) * storms
    dispersion = log_uniform(rng, 0.3, 50.0)
    rate *= rng.gamma(dispersion, 1.0 / dispersion, ts.size)
    return np.asarray(rng.poisson(np.minimum(rate, _MAX_POISSON_MEAN)), dtype=np.float64)


def latency(rng: np.random.Generator, ts: FloatArray) -> FloatArray:
    """A latency (s or ms): log-normal around a load-driven median, with tail spikes."""
    median = log_uniform(rng, 1e-4, 1e3) * traffic_load(rng, ts).relative ** rng.uniform(0, 0.6)
    sigma = rng.uniform(0.05, 0.6)
    values = median * np.exp(sigma * ar1(rng, ts.size, rng.uniform(0.0, 0.7)))
    incidents = bursts(
        rng, ts.size, 10 ** rng.uniform(-3.0, -1.7), rng.uniform(1.2, 2.5), rng.uniform(0, 0.7)
    )
    values *= 1.0 + rng.uniform(1.0, 10.0) * incidents
    if rng.random() < 0.3:  # requests time out: the latency cannot exceed the timeout
        values = np.minimum(values, float(np.median(values)) * rng.uniform(20.0, 200.0))
    return values
