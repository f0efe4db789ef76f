"""A stream whose behaviour changes mid-way, for the retraining tests and benchmark.

Every series first follows a slow sine wave with a little noise (what the shipped model
forecasts well), then, from ``shift_at`` on, oscillates around its level with a period of six
points (steps of about the same size as before, so the points are not anomalies, but a
pattern the shipped model has not learned: its error jumps; a model retrained on it learns
to forecast the oscillation). Intervals are irregular (10 s with jitter).
"""

from __future__ import annotations

import numpy as np

from streamrnn.arrays import FloatArray

__all__ = ["shifted_series"]

START_TS = 1_700_000_000.0


def shifted_series(
    series: int, points: int, shift_at: int, seed: int = 0
) -> dict[str, tuple[FloatArray, FloatArray]]:
    """``series`` series of ``points`` points each, the regime changing at point ``shift_at``."""
    rng = np.random.default_rng(seed)
    out = {}
    for s in range(series):
        gaps = 10.0 * rng.lognormal(0.0, 0.1, points)
        ts = START_TS + np.cumsum(gaps)
        i = np.arange(points)
        level = rng.uniform(50, 150)
        amplitude = rng.uniform(5, 20)
        noise = rng.normal(0, amplitude * 0.02, points)
        before = level + amplitude * np.sin(2 * np.pi * i / rng.uniform(40, 80))
        after = level + amplitude / 8 * np.sin(2 * np.pi * i / 6)
        out[f"shift-{s:03d}"] = (ts, np.where(i < shift_at, before, after) + noise)
    return out
