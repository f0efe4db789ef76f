"""One-step forecast metrics: MAE, MASE, and their aggregation over a corpus.

Split: the first ``history_points`` of a series (``history_points_for``: 20 %) are history,
the rest is the test part that is scored. Forecasts are taken as given (one per point, NaN
for none); a metric uses the test points whose forecast is finite and reports the fraction
of them as ``coverage``, so a forecaster that abstains is visible rather than silently
favoured. Every baseline covers 100 %.

MASE (Hyndman & Koehler 2006) divides the test MAE by the in-sample MAE of the naive
(previous value) forecast over the *history* part of the same series,
``mean_{t=1..h-1} |y_t - y_{t-1}|``: unit-free, so it can be averaged over series of any
scale; < 1 beats the naive forecast's in-sample error (the test part may be harder or easier
than the history, so naive_last itself is not exactly 1). On a history that is constant the
scale is 0 and MASE is undefined (NaN): such series are left out of the MASE mean and counted.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

__all__ = [
    "HISTORY_FRACTION",
    "CorpusScore",
    "SeriesScore",
    "evaluate_corpus",
    "evaluate_series",
    "history_points_for",
    "mae",
    "mase",
    "naive_scale",
    "relative_mae_geomean",
    "scored_mask",
]

#: Fraction of each series used as history (for fitting / choices and the MASE scale).
HISTORY_FRACTION = 0.2


def history_points_for(n_points: int, fraction: float = HISTORY_FRACTION) -> int:
    """Points of history for a series of ``n_points``: ``round(fraction * n)``, at least 2."""
    return max(2, min(n_points, round(fraction * n_points)))


def scored_mask(n_points: int, history_points: int) -> np.ndarray:
    """Boolean mask of the scored points: ``index >= history_points``."""
    mask = np.zeros(n_points, dtype=bool)
    mask[history_points:] = True
    return mask


def _scored(forecast: np.ndarray, mask: np.ndarray) -> np.ndarray:
    scored: np.ndarray = mask & np.isfinite(forecast)
    return scored


def mae(forecast: np.ndarray, values: np.ndarray, mask: np.ndarray) -> float:
    """Mean absolute error over ``mask`` where the forecast is finite, in value units.

    NaN if there is no such point.
    """
    keep = _scored(forecast, mask)
    if not keep.any():
        return math.nan
    return float(np.mean(np.abs(forecast[keep] - values[keep])))


def naive_scale(values: np.ndarray, history_points: int) -> float:
    """In-sample MAE of the previous-value forecast on the history: mean ``|y_t - y_{t-1}|``."""
    hist = values[:history_points]
    if len(hist) < 2:
        return math.nan
    return float(np.mean(np.abs(np.diff(hist))))


def mase(forecast: np.ndarray, values: np.ndarray, mask: np.ndarray, scale: float) -> float:
    """Mean absolute scaled error: :func:`mae` / ``scale`` (see :func:`naive_scale`).

    NaN when ``scale`` is 0 or not finite (a constant history).
    """
    if not (math.isfinite(scale) and scale > 0):
        return math.nan
    return mae(forecast, values, mask) / scale


@dataclass(frozen=True, slots=True)
class SeriesScore:
    """Scores of one forecaster on one series' test part."""

    name: str
    #: Mean absolute error, in the series' value units.
    mae: float
    #: MAE / in-sample naive MAE of the history; NaN if that scale is 0.
    mase: float
    #: Test points.
    n_test: int
    #: Fraction of test points with a finite forecast.
    coverage: float


def evaluate_series(
    name: str, forecast: np.ndarray, values: np.ndarray, history_points: int
) -> SeriesScore:
    """Score ``forecast`` on the test part (points at and after ``history_points``)."""
    if forecast.shape != values.shape:
        raise ValueError(f"{name}: forecast shape {forecast.shape} != values {values.shape}")
    mask = scored_mask(len(values), history_points)
    n_test = int(mask.sum())
    covered = int(_scored(forecast, mask).sum())
    return SeriesScore(
        name=name,
        mae=mae(forecast, values, mask),
        mase=mase(forecast, values, mask, naive_scale(values, history_points)),
        n_test=n_test,
        coverage=covered / n_test if n_test else math.nan,
    )


@dataclass(frozen=True, slots=True)
class CorpusScore:
    """A forecaster's scores aggregated over the series of a corpus (each series weighs 1)."""

    series: tuple[SeriesScore, ...]
    #: Mean over series of the per-series MAE. Scale-dependent: dominated by the
    #: largest-valued series; compare forecasters on the same corpus only.
    mean_mae: float
    #: Mean over series of MASE (series with an undefined MASE left out).
    mean_mase: float
    #: Median over series of MASE (robust to a few series where everything fails).
    median_mase: float
    #: Series in the MASE mean / in the corpus.
    n_mase: int
    n_series: int
    #: Smallest per-series coverage.
    min_coverage: float


def evaluate_corpus(
    forecasts: Mapping[str, np.ndarray],
    corpus: Mapping[str, tuple[np.ndarray, np.ndarray]],
    history_fraction: float = HISTORY_FRACTION,
) -> CorpusScore:
    """Score one forecaster on every series of ``corpus`` (``forecasts`` keyed by name)."""
    missing = set(corpus) - set(forecasts)
    if missing:
        raise KeyError(f"no forecast for {sorted(missing)[:5]}")
    scores = tuple(
        evaluate_series(
            name, forecasts[name], values, history_points_for(len(values), history_fraction)
        )
        for name, (_, values) in corpus.items()
    )
    maes = np.array([s.mae for s in scores])
    mases = np.array([s.mase for s in scores])
    mases = mases[np.isfinite(mases)]
    return CorpusScore(
        series=scores,
        mean_mae=float(np.nanmean(maes)) if np.isfinite(maes).any() else math.nan,
        mean_mase=float(np.mean(mases)) if len(mases) else math.nan,
        median_mase=float(np.median(mases)) if len(mases) else math.nan,
        n_mase=len(mases),
        n_series=len(scores),
        min_coverage=min((s.coverage for s in scores), default=math.nan),
    )


def relative_mae_geomean(score: CorpusScore, reference: CorpusScore) -> float:
    """Geometric mean over series of ``MAE / MAE_reference`` (e.g. reference = naive_last).

    Scale-free like MASE but relative to the reference on the *same test points*; < 1 means
    better than the reference on the typical series. Series where either MAE is 0 or NaN are
    left out (a ratio with 0 has no logarithm).
    """
    ref = {s.name: s.mae for s in reference.series}
    logs = [
        math.log(s.mae / ref[s.name])
        for s in score.series
        if s.name in ref and s.mae > 0 and ref[s.name] > 0
    ]
    return math.exp(sum(logs) / len(logs)) if logs else math.nan
