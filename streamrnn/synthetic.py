"""Seeded synthetic metric streams with irregular intervals and labelled anomalies.

Each series is ``level + trend·t + amplitude·sin(2π t / period) + noise``, sampled at a
base interval with jitter and occasional long gaps (2x to 20x the base interval). After a
quiet lead-in, spikes (one point far off) and level shifts (a lasting step) are injected
and labelled, one per equal segment of the series after the lead-in (so they are spaced
out). Used by ``streamrnn demo``, the tests and the benchmarks.

Pure numpy/pandas; knows nothing of Kafka or torch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

__all__ = ["SyntheticSpec", "synthetic_stream"]


@dataclass(frozen=True, slots=True)
class SyntheticSpec:
    """Shape of a synthetic stream."""

    series: int = 40
    points: int = 600
    seed: int = 7
    start_ts: float = 1_700_000_000.0
    #: Points at the start of each series with no injected anomaly.
    lead_in_points: int = 200
    #: Anomalies injected per series (spikes and level shifts, alternating).
    anomalies_per_series: int = 2
    #: Magnitude of an injected anomaly, in noise standard deviations.
    anomaly_sigmas: float = 12.0


def synthetic_stream(spec: SyntheticSpec) -> pd.DataFrame:
    """All points of all series, sorted by timestamp.

    Columns: ``series`` (str), ``ts`` (epoch s), ``value``, ``anomaly`` ("" or the injected
    kind, "spike" or "level_shift", on the first anomalous point only).
    """
    rng = np.random.default_rng(spec.seed)
    frames = []
    for s in range(spec.series):
        interval_s = float(rng.choice([10.0, 30.0, 60.0]))
        gaps = interval_s * rng.lognormal(0.0, 0.1, spec.points)
        long_gap = rng.random(spec.points) < 0.03
        gaps[long_gap] *= rng.uniform(2.0, 20.0, long_gap.sum())
        ts = spec.start_ts + rng.uniform(0, interval_s) + np.cumsum(gaps)
        t = ts - spec.start_ts
        level = rng.uniform(-50, 500)
        noise_sd = rng.uniform(0.5, 5.0)
        amplitude = noise_sd * rng.uniform(0.0, 8.0)
        period = interval_s * rng.uniform(50, 300)
        trend = noise_sd * rng.normal(0, 0.5) / (interval_s * spec.points)
        values = (
            level
            + trend * t
            + amplitude * np.sin(2 * np.pi * t / period + rng.uniform(0, 2 * np.pi))
            + rng.normal(0, noise_sd, spec.points)
        )
        anomaly = np.full(spec.points, "", dtype=object)
        room = spec.points - spec.lead_in_points - 20
        if spec.anomalies_per_series > 0 and room > 0:
            # One anomaly per equal segment of the room, in the segment's middle half, so
            # anomalies of a series are at least half a segment apart.
            segment = room / spec.anomalies_per_series
            picks = [
                int(segment * (n + rng.uniform(0.25, 0.75)))
                for n in range(spec.anomalies_per_series)
            ]
            for n, offset in enumerate(picks):
                i = spec.lead_in_points + int(offset)
                sign = rng.choice([-1.0, 1.0])
                step = sign * spec.anomaly_sigmas * noise_sd
                if n % 2 == 0:
                    values[i] += step
                    anomaly[i] = "spike"
                else:
                    values[i:] += step
                    anomaly[i] = "level_shift"
        frames.append(
            pd.DataFrame(
                {"series": f"demo-{s:03d}.metric", "ts": ts, "value": values, "anomaly": anomaly}
            )
        )
    return pd.concat(frames).sort_values("ts", kind="stable").reset_index(drop=True)
