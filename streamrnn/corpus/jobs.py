"""The scheduled-work value family: metrics driven by a cycle shorter than a day.

Cron jobs, batch windows, cache refreshes, garbage-collection and compaction cycles make a
metric repeat every few minutes to every few hours, independently of the time of day.

* :func:`scheduled_work` — a cycle of period 2 minutes to 12 hours (log-uniform, in time:
  a gap skips part of it), a fundamental plus a second harmonic of random phase, in 30 %
  of series sharpened into an on/off shape; its amplitude 0–3 noise sds (20 % of series
  nearly none); AR(1) noise (coefficient 0–0.9); a linear trend; and one or two regime
  changes between 30 % and 90 % of the series, each a level shift of 2–6 noise sds, the
  amplitude times 0.3–3 or the noise times 0.3–3, acting from its point onwards. Values
  are in a scale drawn log-uniformly in [0.01, 10 000], around a level of -2 to 10 scales.

Pure numpy.
"""

from __future__ import annotations

import numpy as np

from streamrnn.arrays import FloatArray
from streamrnn.corpus.noise import ar1, log_uniform, regime_changes

__all__ = ["scheduled_work"]

#: Range of the cycle's period, seconds (log-uniform).
PERIOD_RANGE_S = (120.0, 12 * 3600.0)


def scheduled_work(rng: np.random.Generator, ts: FloatArray) -> FloatArray:
    """A sub-daily cycle with AR(1) noise, a trend and regime changes (see the module)."""
    n = ts.size
    t = ts - ts[0]
    tau = t / max(float(t[-1]), 1.0)
    scale = log_uniform(rng, 1e-2, 1e4)
    noise_sd = scale * rng.uniform(0.05, 0.5)
    amplitude = noise_sd * (rng.uniform(0.0, 0.1) if rng.random() < 0.2 else rng.uniform(0.5, 3))
    period_s = log_uniform(rng, *PERIOD_RANGE_S)
    phase = 2.0 * np.pi * t / period_s + rng.uniform(0.0, 2.0 * np.pi)
    shape = np.sin(phase) + rng.uniform(0.0, 0.5) * np.sin(2.0 * phase + rng.uniform(0, 6.3))
    if rng.random() < 0.3:
        shape = np.tanh(rng.uniform(2.0, 6.0) * shape)

    level_offset, amp_mult, noise_mult = regime_changes(rng, n, noise_sd)

    level = scale * rng.uniform(-2.0, 10.0)
    trend = scale * rng.normal(0.0, 1.0)
    values = (
        level
        + level_offset
        + trend * tau
        + amplitude * amp_mult * shape
        + noise_sd * noise_mult * ar1(rng, n, rng.uniform(0.0, 0.9))
    )
    return np.asarray(values, dtype=np.float64)
