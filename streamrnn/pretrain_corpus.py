"""A seeded synthetic corpus of realistic operational metrics, to pre-train the shipped model.

The model that ships with streamrnn (``streamrnn/models/default.pt``) is trained on this
corpus only — never on the NAB files it is evaluated on. Each series mixes what production
metrics look like:

* sampling every 1, 5, 10 or 60 minutes, with jitter and a few long gaps (2x to 50x);
* a daily cycle (one to three harmonics, or a square-ish on/off shape) with weekday/weekend
  modulation, of random strength (some series have none);
* a level, a slow trend and sometimes a random-walk drift;
* noise that is Gaussian, heavy-tailed (Student t), or count-like (Poisson around a rate,
  as for request or mention counts), sometimes multiplicative;
* occasional regime changes (a level step, or the noise scale changing) and rare spikes,
  so the model is robust to them;
* a few flat-lining or sparsely changing series.

Pure numpy; knows nothing of Kafka or torch.
"""

from __future__ import annotations

import numpy as np

from streamrnn.arrays import FloatArray
from streamrnn.stages.features import DAY_S

__all__ = ["pretrain_corpus"]


_START_TS = 1_600_000_000.0
_INTERVALS_S = (60.0, 300.0, 600.0, 3600.0)


def pretrain_corpus(
    n_series: int, points: int, seed: int
) -> dict[str, tuple[FloatArray, FloatArray]]:
    """``n_series`` series of ``points`` points each: name -> (ts epoch s, values)."""
    rng = np.random.default_rng(seed)
    return {f"pretrain-{i:04d}": _series(rng, points) for i in range(n_series)}


def _series(rng: np.random.Generator, n: int) -> tuple[FloatArray, FloatArray]:
    base = float(rng.choice(_INTERVALS_S, p=[0.25, 0.4, 0.15, 0.2]))
    gaps = base * rng.uniform(0.98, 1.02, n)
    long_gap = rng.random(n) < rng.uniform(0.0, 0.01)
    gaps[long_gap] = base * rng.uniform(2.0, 50.0, int(long_gap.sum()))
    ts = _START_TS + rng.uniform(0, 7 * DAY_S) + np.cumsum(gaps)
    t = ts - ts[0]

    kind = rng.choice(["smooth", "counts", "flat", "steps"], p=[0.55, 0.3, 0.05, 0.1])
    day_phase = 2 * np.pi * np.mod(ts, DAY_S) / DAY_S
    shape = np.zeros(n)
    if rng.random() < 0.8:
        for harmonic in range(1, int(rng.integers(1, 4)) + 1):
            phase = harmonic * day_phase + rng.uniform(0, 2 * np.pi)
            shape += rng.normal(0, 1.0 / harmonic) * np.sin(phase)
        if rng.random() < 0.2:  # square-ish on/off day
            shape = np.tanh(rng.uniform(2, 8) * shape)
        weekday = np.floor(np.mod(ts / DAY_S + 3, 7))  # 0 = Monday
        if rng.random() < 0.4:
            shape *= np.where(weekday >= 5, rng.uniform(0.2, 0.9), 1.0)
    shape /= max(float(np.std(shape)), 1e-9) if shape.any() else 1.0

    if kind == "counts":
        rate = np.exp(rng.uniform(0, 5) + rng.uniform(0.1, 1.0) * shape)
        if rng.random() < 0.3:
            rate *= np.exp(np.cumsum(rng.normal(0, 0.01, n)))
        values = rng.poisson(rate).astype(np.float64)
    elif kind == "flat":
        values = np.full(n, rng.uniform(-5, 100))
        values += np.where(rng.random(n) < 0.01, rng.normal(0, 1, n), 0.0)
    elif kind == "steps":
        levels = rng.uniform(0, 100, int(rng.integers(2, 6)))
        dwell_s = base * rng.uniform(30, 400)
        values = levels[np.floor(np.mod(t / dwell_s, len(levels))).astype(int)]
        values = values + rng.normal(0, rng.uniform(0, 0.5), n)
    else:
        scale = 10.0 ** rng.uniform(-1, 4)
        amplitude = scale * rng.uniform(0, 3)
        noise_sd = scale * rng.uniform(0.05, 0.8)
        noise = (
            rng.standard_t(rng.uniform(2.5, 6), n) if rng.random() < 0.4 else rng.normal(0, 1, n)
        )
        phi = rng.uniform(0, 0.9)
        ar = np.empty(n)
        ar[0] = noise[0]
        for i in range(1, n):
            ar[i] = phi * ar[i - 1] + noise[i] * np.sqrt(1 - phi**2)
        values = scale * rng.uniform(0, 20) + amplitude * shape + noise_sd * ar
        values += scale * rng.normal(0, 1) * t / t[-1]
        if rng.random() < 0.3:
            values += np.cumsum(rng.normal(0, noise_sd * 0.1, n))
        if rng.random() < 0.3:
            values *= 1 + 0.3 * shape * rng.uniform(0, 1)

    # Regime changes and rare spikes.
    for _ in range(int(rng.integers(0, 3))):
        at = int(rng.integers(n // 5, n))
        spread = max(float(np.std(np.diff(values))), 1e-6)
        if rng.random() < 0.5:
            values[at:] += rng.choice([-1, 1]) * rng.uniform(3, 10) * spread
        else:
            mean = float(np.mean(values[at:]))
            values[at:] = mean + (values[at:] - mean) * rng.uniform(0.3, 3)
    spikes = rng.random(n) < rng.uniform(0, 0.002)
    spread = max(float(np.std(np.diff(values))), 1e-6)
    values[spikes] += rng.choice([-1, 1], int(spikes.sum())) * rng.uniform(5, 20) * spread
    return ts, values
