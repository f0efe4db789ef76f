"""Series corpora for the one-step forecast benchmark.

Two corpora, both ``dict[name, (ts, values)]`` with ``ts`` in epoch seconds (float64, strictly
increasing) and ``values`` float64, in time order:

* :func:`synthetic_corpus`: seeded irregular series (seasonal + trend + AR(1) noise, gaps of
  1x to 20x the base interval, regime changes, scales from 1e-2 to 1e4).
* :func:`nab_dev_corpus`: the 27 NAB development files in ``shared/data/nab-dev``.

Why not :func:`streamrnn.synthetic.synthetic_stream`: it injects labelled spikes and level
shifts for the *detection* benchmarks (a forecast benchmark would then mostly measure how a
model reacts to injected outliers), has no amplitude or noise regime changes, and its levels
span only about one order of magnitude. The gap model here is the same idea (jittered base
interval plus a few percent of long gaps uniformly 2x to 20x).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from streamrnn.corpus.noise import regime_changes

__all__ = ["NAB_DEV_ROOT", "Corpus", "nab_dev_corpus", "synthetic_corpus"]

#: A corpus: series name -> (ts epoch seconds, values), both float64 and in time order.
Corpus = dict[str, tuple[np.ndarray, np.ndarray]]

NAB_DEV_ROOT = Path("/work/shared/data/nab-dev")

_START_TS = 1_700_000_000.0
#: Base sampling intervals in seconds (a series draws one).
_BASE_INTERVALS_S = (10.0, 60.0, 300.0)
#: Seasonal periods in base intervals ("daily-like" cycles in points). Kept <= 144 so that the
#: 20 % history of a 3000-point series holds several periods, and partly <= 24 so that the
#: seasonal AutoETS models (fitted only for m <= 24) are exercised.
_PERIODS_POINTS = (12, 24, 48, 96, 144)


def synthetic_corpus(n_series: int, points: int, seed: int) -> Corpus:
    """Seeded synthetic irregular series, deterministic for a given ``(n_series, points, seed)``.

    Each series (name ``syn-NNN-bB`` with B its base interval in s) is, in units of its own
    ``scale`` (drawn log-uniformly in [1e-2, 1e4], so series differ by up to six orders of
    magnitude)::

        level + trend·τ + amplitude·(sin(φ) + 0.3·sin(2φ + ψ)) + AR(1) noise

    with τ = t / duration ∈ [0, 1] and φ = 2π t / (P · base) a phase driven by *time*, not by
    the point index, so a gap skips part of the cycle as it would in a real metric. P is drawn
    from 12 to 144 base intervals. Some series have a negligible seasonal amplitude.

    Intervals are ``base · U(1, 1.1)`` except a per-series 0.5 % to 4 % of long gaps,
    ``base · U(2, 20)``. One or two regime changes per series, placed between 30 % and 90 %
    of the points (so mostly in the test part after a 20 % history), each one of: a level
    shift of 2 to 6 noise sds (either sign), the seasonal amplitude times 0.3 to 3, or the
    noise sd times 0.3 to 3. Changes act from their point onwards and compound.
    """
    if n_series < 1 or points < 10:
        raise ValueError("need n_series >= 1 and points >= 10")
    rng = np.random.default_rng(seed)
    corpus: Corpus = {}
    for s in range(n_series):
        base = float(rng.choice(_BASE_INTERVALS_S))
        gaps = base * rng.uniform(1.0, 1.1, points)
        long_gap = rng.random(points) < rng.uniform(0.005, 0.04)
        gaps[long_gap] = base * rng.uniform(2.0, 20.0, int(long_gap.sum()))
        ts = _START_TS + rng.uniform(0.0, base) + np.cumsum(gaps)
        t = ts - ts[0]
        tau = t / t[-1]

        scale = 10.0 ** rng.uniform(-2.0, 4.0)
        level = scale * rng.uniform(-2.0, 10.0)
        trend = scale * rng.normal(0.0, 1.0)
        amplitude = scale * (rng.uniform(0.0, 0.05) if rng.random() < 0.2 else rng.uniform(0.5, 3))
        noise_sd = scale * rng.uniform(0.05, 0.5)
        phi_ar = rng.uniform(0.0, 0.8)
        period_s = float(rng.choice(_PERIODS_POINTS)) * base
        phase = 2.0 * np.pi * t / period_s + rng.uniform(0.0, 2.0 * np.pi)
        harmonic_shift = rng.uniform(0.0, 2.0 * np.pi)

        # Per-point multipliers / offsets of the regimes (piecewise constant, compounding).
        level_offset, amp_mult, noise_mult = regime_changes(rng, points, noise_sd)

        innovations = rng.normal(0.0, 1.0, points)
        ar = np.empty(points)
        ar[0] = innovations[0]
        innovation_sd = np.sqrt(1.0 - phi_ar**2)  # unit stationary variance
        for i in range(1, points):
            ar[i] = phi_ar * ar[i - 1] + innovation_sd * innovations[i]

        values = (
            level
            + level_offset
            + trend * tau
            + amplitude * amp_mult * (np.sin(phase) + 0.3 * np.sin(2.0 * phase + harmonic_shift))
            + noise_sd * noise_mult * ar
        )
        corpus[f"syn-{s:03d}-b{int(base)}"] = (ts.astype(np.float64), values.astype(np.float64))
    return corpus


def nab_dev_corpus(root: Path = NAB_DEV_ROOT) -> Corpus:
    """Every ``data/<category>/<file>.csv`` under ``root``, named ``"<category>/<file>"``.

    Timestamps (``%Y-%m-%d %H:%M:%S``, no zone) are read as UTC and converted to epoch
    seconds. Rows with a missing value are dropped. A repeated timestamp (one occurs in each
    of ``realAdExchange/exchange-2_*``) keeps its last row, as a metric store overwriting the
    point would, so that ``ts`` is strictly increasing.
    """
    data_dir = root / "data"
    files = sorted(data_dir.glob("*/*.csv"))
    if not files:
        raise FileNotFoundError(f"no data/<category>/<file>.csv under {root}")
    corpus: Corpus = {}
    for path in files:
        frame = pd.read_csv(path, usecols=["timestamp", "value"])
        frame = frame.dropna(subset=["value"])
        stamps = pd.to_datetime(frame["timestamp"], utc=True)
        ts = (stamps - pd.Timestamp(0, tz="UTC")).dt.total_seconds().to_numpy(np.float64)
        values = frame["value"].to_numpy(np.float64)
        order = np.argsort(ts, kind="stable")
        ts, values = ts[order], values[order]
        keep = np.append(np.diff(ts) > 0, True)  # last row of each run of equal stamps
        corpus[f"{path.parent.name}/{path.stem}"] = (ts[keep], values[keep])
    return corpus
