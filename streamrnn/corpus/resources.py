"""Resource value families: CPU and memory utilisation (%), queue depths.

Each generator takes a random generator and the sample timestamps (epoch s) and returns
one float64 value per timestamp.

* :func:`cpu_utilisation` — % in [0, 100]: a mean utilisation of 5–60 % following the
  traffic load with correlated noise; in half the series the load's peak exceeds the
  capacity (100–140 %), so the busiest hours are clipped at 100; in a quarter, one to
  three runaway episodes pin it at 100 for 10–200 samples.
* :func:`memory_utilisation` — % in [0, 100]: a base of 10–60 % that, in 70 % of series,
  leaks 0.2–20 % a day and drops back to the base on each process restart (every 0.5–20
  days on average): a sawtooth, saturated at 100 when the leak outruns the restarts. It
  moves a little (up to ±3 %) with the load and has small noise.
* :func:`utilisation` — the family of both: CPU in 60 % of series, memory in 40 %.
* :func:`queue_depth` — items waiting, non-negative integers: a single-server queue fed by
  Poisson arrivals that follow the load (fully or faintly, with bursts) and drained by
  Poisson service at a mean utilisation of 30–90 %, so the queue builds up at peaks and
  bursts and drains to 0. It is the Lindley recursion (:func:`lindley`), one step per
  sample interval (a long gap is one coarse step).

Pure numpy.
"""

from __future__ import annotations

import numpy as np

from streamrnn.arrays import FloatArray
from streamrnn.corpus.load import traffic_load
from streamrnn.corpus.noise import ar1, bursts, log_uniform
from streamrnn.corpus.sampling import sample_durations_s
from streamrnn.stages.features import DAY_S

__all__ = ["cpu_utilisation", "lindley", "memory_utilisation", "queue_depth", "utilisation"]

_FULL = 100.0


def utilisation(rng: np.random.Generator, ts: FloatArray) -> FloatArray:
    """CPU (60 %) or memory (40 %) utilisation in percent, in [0, 100]."""
    if rng.random() < 0.6:
        return cpu_utilisation(rng, ts)
    return memory_utilisation(rng, ts)


def cpu_utilisation(rng: np.random.Generator, ts: FloatArray) -> FloatArray:
    """CPU % in [0, 100] following the load, clipped at 100 when demand exceeds capacity."""
    relative = traffic_load(rng, ts).relative
    mean_pct = rng.uniform(5.0, 60.0)
    if rng.random() < 0.5:  # over-subscribed: the peak demand exceeds the capacity
        mean_pct = rng.uniform(100.0, 140.0) / float(np.max(relative))
    wobble = 1.0 + rng.uniform(0.02, 0.15) * ar1(rng, ts.size, rng.uniform(0.3, 0.9))
    values = mean_pct * relative * wobble + rng.normal(0.0, rng.uniform(0.2, 3.0), ts.size)
    if rng.random() < 0.25:  # runaway processes pin the CPU for a while
        for start in rng.integers(0, ts.size, int(rng.integers(1, 4))):
            values[start : start + int(rng.integers(10, 201))] = _FULL
    return np.asarray(np.clip(values, 0.0, _FULL), dtype=np.float64)


def memory_utilisation(rng: np.random.Generator, ts: FloatArray) -> FloatArray:
    """Memory % in [0, 100]: a slow leak that drops back to the base on restarts."""
    base_pct = rng.uniform(10.0, 60.0)
    leak_pct_per_day = 0.0 if rng.random() < 0.3 else log_uniform(rng, 0.2, 20.0)
    mean_uptime_s = log_uniform(rng, 0.5, 20.0) * DAY_S
    span_s = float(ts[-1] - ts[0])
    restarts_ts = np.sort(ts[0] + rng.uniform(0.0, span_s, rng.poisson(span_s / mean_uptime_s)))
    started_ts = np.concatenate([[ts[0] - rng.uniform(0.0, mean_uptime_s)], restarts_ts])
    uptime_s = ts - started_ts[np.searchsorted(started_ts, ts, side="right") - 1]
    values = base_pct + leak_pct_per_day * uptime_s / DAY_S
    values += rng.uniform(0.0, 3.0) * (traffic_load(rng, ts).relative - 1.0)  # caches, buffers
    values += rng.normal(0.0, rng.uniform(0.05, 1.0), ts.size)
    return np.asarray(np.clip(values, 0.0, _FULL), dtype=np.float64)


def queue_depth(rng: np.random.Generator, ts: FloatArray) -> FloatArray:
    """Items in a queue: builds up when arrivals exceed service, drains to 0."""
    durations_s = sample_durations_s(ts)
    per_sample = durations_s / float(np.median(durations_s))
    mean_arrivals = log_uniform(rng, 0.2, 500.0)  # per typical sample interval
    # Some queues feel the daily cycle fully, some (buffered upstream) only faintly.
    arrival_rate = mean_arrivals * traffic_load(rng, ts).relative ** rng.uniform(0.2, 1.0)
    surges = bursts(rng, ts.size, 10 ** rng.uniform(-3.0, -1.5), rng.uniform(1.2, 2.5), 0.8)
    arrival_rate *= 1.0 + rng.uniform(0.5, 3.0) * surges
    # Scaled back to the drawn mean, so the utilisation below is the series' mean load and
    # the queue drains between peaks (heavy-tailed surges would otherwise overload it).
    arrival_rate *= mean_arrivals / float(np.mean(arrival_rate))
    service_rate = mean_arrivals / rng.uniform(0.3, 0.9)
    arrivals = rng.poisson(arrival_rate * per_sample)
    served = rng.poisson(service_rate * per_sample)
    return lindley((arrivals - served).astype(np.float64))


def lindley(net_arrivals: FloatArray) -> FloatArray:
    """Queue depth after each step of ``q[i] = max(0, q[i-1] + net_arrivals[i])``, q = 0 before.

    In closed form, so no Python loop: with S the running sum of the net arrivals,
    ``q[i] = S[i] - min(0, min(S[:i+1]))`` — the queue is how far S has risen above its
    lowest point so far (or above 0, if it never went below).
    """
    running = np.cumsum(net_arrivals)
    return np.asarray(running - np.minimum(np.minimum.accumulate(running), 0.0), np.float64)
