"""Monotone counters turned into rates, as a Prometheus ``rate()`` panel shows them.

A process exports a cumulative counter (requests served, bytes sent); the monitoring
system samples it and plots its per-second rate. The counter only grows, except when the
process restarts and it starts again from 0. Prometheus treats any decrease between two
samples as such a reset and counts the new value itself as the increase since the
previous sample (the process cannot have counted less than that since it restarted);
:func:`prometheus_increase` does the same. A restart after which the counter is already
above its old value goes unnoticed, in Prometheus and here.

* :func:`counter_samples` — the counter itself at each timestamp, and where it reset;
* :func:`counter_rate` — the value family: the counter's per-second rate between
  successive samples. Non-negative.

The counted events arrive as a Poisson process whose rate (0.01–1e6 per second: requests
or bytes) follows the traffic load; the counter has been up for 0–30 days at the first
sample, and restarts about 0–4 times over the series. Pure numpy.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from streamrnn.arrays import BoolArray, FloatArray
from streamrnn.corpus.load import traffic_load
from streamrnn.corpus.noise import log_uniform
from streamrnn.corpus.sampling import sample_durations_s
from streamrnn.stages.features import DAY_S

__all__ = ["CounterSamples", "counter_rate", "counter_samples", "prometheus_increase"]

_MAX_RESETS = 4.0
_MAX_UPTIME_S = 30 * DAY_S


class CounterSamples(NamedTuple):
    """A cumulative counter at each sample, and the samples just after a process restart."""

    #: Counter values: non-negative integers (as float64), non-decreasing except at resets.
    counter: FloatArray
    #: True at the first sample after a restart (the counter began again from 0).
    reset: BoolArray


def counter_samples(rng: np.random.Generator, ts: FloatArray) -> CounterSamples:
    """Simulate a cumulative counter sampled at ``ts`` (epoch s), with restarts."""
    durations_s = sample_durations_s(ts)
    mean_rate_per_s = log_uniform(rng, 0.01, 1e6)
    rate_per_s = mean_rate_per_s * traffic_load(rng, ts).relative
    increments = rng.poisson(rate_per_s * durations_s).astype(np.float64)
    reset = rng.random(ts.size) < rng.uniform(0.0, _MAX_RESETS) / ts.size
    reset[0] = False
    # A restart falls somewhere in its sample's interval: only the events after it count.
    increments[reset] = np.floor(increments[reset] * rng.uniform(0.0, 1.0, int(reset.sum())))
    # At the first sample the process has already been up for a while (0–30 days).
    increments[0] = np.floor(mean_rate_per_s * rng.uniform(0.0, _MAX_UPTIME_S))
    # The counter is the running sum of increments since the latest restart.
    running = np.cumsum(increments)
    segment_start = np.maximum.accumulate(np.where(reset, np.arange(ts.size), 0))
    before_segment = running[segment_start] - increments[segment_start]
    return CounterSamples(running - before_segment, reset)


def prometheus_increase(counter: FloatArray) -> FloatArray:
    """The increase between successive samples (length ``len(counter) - 1``).

    Where the counter decreased it was reset, and the new value is the increase.
    """
    after = counter[1:]
    delta = np.diff(counter)
    return np.where(delta < 0.0, after, delta)


def counter_rate(rng: np.random.Generator, ts: FloatArray) -> FloatArray:
    """The per-second rate of a counter with restarts, from successive samples."""
    first_interval_s = sample_durations_s(ts)[0]
    sampled_ts = np.concatenate([[ts[0] - first_interval_s], ts])  # one sample before
    samples = counter_samples(rng, sampled_ts)
    return prometheus_increase(samples.counter) / np.diff(sampled_ts)
