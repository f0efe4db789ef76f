"""Gauge value families: slowly trending gauges, flat-lines with rare steps, sensors.

Each generator takes a random generator and the sample timestamps (epoch s) and returns
one float64 value per timestamp.

* :func:`trending_gauge` — e.g. disk usage in bytes (1e6–1e13): grows by 5–150 % over
  the series (80 % of series) or shrinks by 5–30 %, in irregular increments (in half the
  series faster in busy hours), in 30 % of series with one to three clean-ups (a 5–40 %
  drop), with small noise (1e-6–1e-3 of the level).
* :func:`flat_line` — a configuration-like value that stays put and steps rarely (0–3
  times over the series): an integer 0–64 (replicas, partitions) in 40 % of series, else
  a real level (±1e-3–1e6) that is exactly flat or has tiny noise (1e-6–1e-4 of it).
* :func:`sensor` — e.g. a temperature: a smooth daily cycle (warmest in the local
  afternoon) plus AR(1) weather-like drift and a little Gaussian measurement noise, in
  40 % of series quantised to the sensor's resolution. 60 % are temperatures in °C
  (-5–60 °C, daily swing 0.3–8 °C), the rest other sensors of scale 0.01–10 000.

Pure numpy.
"""

from __future__ import annotations

import numpy as np

from streamrnn.arrays import FloatArray
from streamrnn.corpus.load import draw_utc_offset_s, local_hours, traffic_load
from streamrnn.corpus.noise import ar1, log_uniform
from streamrnn.corpus.sampling import sample_durations_s

__all__ = ["flat_line", "sensor", "trending_gauge"]

#: The most steps a flat-line takes over a series.
_MAX_STEPS = 3


def trending_gauge(rng: np.random.Generator, ts: FloatArray) -> FloatArray:
    """A slowly trending gauge (e.g. disk usage, bytes) with small noise and clean-ups."""
    level = log_uniform(rng, 1e6, 1e13)
    change = level * (rng.uniform(0.05, 1.5) if rng.random() < 0.8 else -rng.uniform(0.05, 0.3))
    pace = sample_durations_s(ts) * rng.gamma(rng.uniform(0.5, 5.0), 1.0, ts.size)
    if rng.random() < 0.5:  # data is written in business hours
        pace *= traffic_load(rng, ts).relative
    values = level + change * np.cumsum(pace) / float(np.sum(pace))
    if ts.size > 1 and rng.random() < 0.3:  # clean-ups: old data deleted
        for at in np.sort(rng.integers(1, ts.size, int(rng.integers(1, 4)))):
            values[at:] -= rng.uniform(0.05, 0.4) * values[at]
    return values + rng.normal(0.0, level * log_uniform(rng, 1e-6, 1e-3), ts.size)


def flat_line(rng: np.random.Generator, ts: FloatArray) -> FloatArray:
    """A value that stays constant and steps rarely (integer or real)."""
    n_steps = int(rng.integers(0, _MAX_STEPS + 1))
    steps_at = np.sort(rng.integers(1, max(ts.size, 2), n_steps))
    if rng.random() < 0.4:  # an integer setting: replicas, partitions, connections
        setting = float(rng.integers(0, 65))
        values = np.full(ts.size, setting)
        for at in steps_at:
            setting = max(setting + float(rng.choice([-1, 1]) * rng.integers(1, 4)), 0.0)
            values[at:] = setting
        return values
    level = log_uniform(rng, 1e-3, 1e6) * (-1.0 if rng.random() < 0.1 else 1.0)
    values = np.full(ts.size, level)
    for at in steps_at:
        values[at:] += rng.choice([-1.0, 1.0]) * rng.uniform(0.05, 1.0) * abs(level)
    if rng.random() < 0.5:
        values += rng.normal(0.0, abs(level) * log_uniform(rng, 1e-6, 1e-4), ts.size)
    return values


def sensor(rng: np.random.Generator, ts: FloatArray) -> FloatArray:
    """A sensor reading (e.g. °C): smooth daily cycle, AR(1) drift, measurement noise."""
    if rng.random() < 0.6:  # a temperature in °C
        mean, swing = rng.uniform(-5.0, 60.0), rng.uniform(0.3, 8.0)
        resolution = float(rng.choice([0.1, 0.5]))
    else:
        mean = log_uniform(rng, 0.01, 1e4)
        swing = mean * rng.uniform(0.005, 0.1)
        resolution = 10.0 ** np.floor(np.log10(swing)) / 10.0
    hour = local_hours(ts, draw_utc_offset_s(rng))
    values = mean + 0.5 * swing * np.cos(2.0 * np.pi * (hour - rng.uniform(13.0, 17.0)) / 24.0)
    values += swing * rng.uniform(0.05, 0.5) * ar1(rng, ts.size, rng.uniform(0.8, 0.995))
    values += rng.normal(0.0, swing * rng.uniform(0.005, 0.05), ts.size)
    if rng.random() < 0.4:
        values = np.round(values / resolution) * resolution
    return np.asarray(values, dtype=np.float64)
