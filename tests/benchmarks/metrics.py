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

Probabilistic scores take, beside each forecast (the mean), a spread: the standard deviation
of a Gaussian predictive distribution, in value units. On the same test points:

* interval coverage: the fraction of points inside the central 50 / 80 / 95 % Gaussian
  interval ``mean ± z·spread`` (z = 0.674, 1.282, 1.960); a calibrated forecaster scores
  the nominal level;
* CRPS (Gneiting & Raftery 2007) of the Gaussian, in closed form (:func:`gaussian_crps`),
  in value units; divided by the same MASE scale it becomes unit-free (``crps_scaled``) and
  can be averaged over series. For a point forecast (spread 0) the CRPS is the absolute
  error, so scaled CRPS is directly comparable with MASE: lower is better.

Corpus aggregates weigh every series once (mean over series), like MASE.

Multi-horizon scores (:func:`evaluate_paths`) take k-step paths from forecast origins: an
origin ``o`` is the number of points observed, and step k of its path predicts point
``o + k - 1`` (the k-th next *point*, whatever its timestamp: on irregular series a
horizon is counted in points, not in seconds). MASE at every horizon is divided by the
one-step in-sample naive scale, so it grows with the horizon for every forecaster.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from scipy.special import ndtr, ndtri

__all__ = [
    "HISTORY_FRACTION",
    "HORIZONS",
    "INTERVAL_LEVELS",
    "CorpusScore",
    "HorizonScore",
    "Paths",
    "SeriesScore",
    "evaluate_corpus",
    "evaluate_paths",
    "evaluate_series",
    "gaussian_crps",
    "history_points_for",
    "interval_coverage",
    "mae",
    "mase",
    "mean_crps",
    "naive_scale",
    "path_origins",
    "path_targets",
    "relative_mae_geomean",
    "scored_mask",
]

#: Fraction of each series used as history (for fitting / choices and the MASE scale).
HISTORY_FRACTION = 0.2
#: Central interval levels whose empirical coverage is reported.
INTERVAL_LEVELS = (0.5, 0.8, 0.95)
#: Horizons (in points) of the multi-horizon table.
HORIZONS = (1, 6, 12, 24)
_INV_SQRT_PI = 1.0 / math.sqrt(math.pi)
_SQRT_2PI = math.sqrt(2.0 * math.pi)


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


def _usable(mean: np.ndarray, spread: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Points of ``mask`` with a finite mean and a finite, non-negative spread."""
    keep: np.ndarray = mask & np.isfinite(mean) & np.isfinite(spread) & (spread >= 0)
    return keep


def interval_coverage(
    mean: np.ndarray,
    spread: np.ndarray,
    values: np.ndarray,
    mask: np.ndarray,
    level: float,
    half_width: np.ndarray | None = None,
) -> float:
    """Fraction of the ``mask`` points inside the central ``level`` interval.

    The interval is ``mean ± half_width`` when the forecaster gives its own half-widths
    for this level (value units), else the Gaussian ``mean ± z·spread`` with
    ``z = Φ⁻¹((1 + level) / 2)`` (spread: Gaussian sd, value units); endpoints count as
    inside. Points without a finite mean and width are left out; NaN if none is left.
    """
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if half_width is None:
        half_width = float(ndtri(0.5 * (1.0 + level))) * spread
    keep = _usable(mean, half_width, mask)
    if not keep.any():
        return math.nan
    inside = np.abs(values[keep] - mean[keep]) <= half_width[keep]
    return float(np.mean(inside))


def gaussian_crps(mean: np.ndarray, spread: np.ndarray, values: np.ndarray) -> np.ndarray:
    """CRPS of ``N(mean, spread²)`` at ``values``, element-wise, in value units.

    Closed form (Gneiting & Raftery 2007, eq. 21): with ``z = (y - μ) / σ``,
    ``CRPS = σ · (z · (2Φ(z) - 1) + 2φ(z) - 1/√π)``; for ``σ = 0`` it is ``|y - μ|``
    (the CRPS of a point forecast is its absolute error).
    """
    mean, spread, values = np.broadcast_arrays(
        np.asarray(mean, np.float64), np.asarray(spread, np.float64), np.asarray(values, np.float64)
    )
    err = values - mean
    out: np.ndarray = np.abs(err)
    pos = spread > 0
    sd = spread[pos]
    z = err[pos] / sd
    pdf = np.exp(-0.5 * z * z) / _SQRT_2PI
    out[pos] = sd * (z * (2.0 * ndtr(z) - 1.0) + 2.0 * pdf - _INV_SQRT_PI)
    return out


def mean_crps(mean: np.ndarray, spread: np.ndarray, values: np.ndarray, mask: np.ndarray) -> float:
    """Mean Gaussian CRPS over the ``mask`` points with a finite mean and spread (value
    units); NaN if there is none."""
    keep = _usable(mean, spread, mask)
    if not keep.any():
        return math.nan
    return float(np.mean(gaussian_crps(mean[keep], spread[keep], values[keep])))


def _scaled(x: float, scale: float) -> float:
    return x / scale if math.isfinite(scale) and scale > 0 else math.nan


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
    #: Empirical coverage of the central 50 / 80 / 95 % Gaussian intervals (NaN: no spread).
    coverage_50: float = math.nan
    coverage_80: float = math.nan
    coverage_95: float = math.nan
    #: Mean Gaussian CRPS, value units; and divided by the MASE scale (unit-free).
    crps: float = math.nan
    crps_scaled: float = math.nan


def evaluate_series(
    name: str,
    forecast: np.ndarray,
    values: np.ndarray,
    history_points: int,
    spread: np.ndarray | None = None,
    half_widths: np.ndarray | None = None,
) -> SeriesScore:
    """Score ``forecast`` on the test part (points at and after ``history_points``).

    ``spread`` (optional, Gaussian sd per point, value units) adds the interval coverage and
    CRPS; without it those fields are NaN. ``half_widths`` (optional, (N, len(
    INTERVAL_LEVELS)), value units): the forecaster's own intervals, used for the coverage
    instead of Gaussian ones from ``spread``.
    """
    if forecast.shape != values.shape:
        raise ValueError(f"{name}: forecast shape {forecast.shape} != values {values.shape}")
    mask = scored_mask(len(values), history_points)
    n_test = int(mask.sum())
    covered = int(_scored(forecast, mask).sum())
    scale = naive_scale(values, history_points)
    probabilistic: dict[str, float] = {}
    if spread is not None:
        if spread.shape != values.shape:
            raise ValueError(f"{name}: spread shape {spread.shape} != values {values.shape}")
        crps = mean_crps(forecast, spread, values, mask)
        probabilistic = {
            f"coverage_{round(100 * level)}": interval_coverage(
                forecast,
                spread,
                values,
                mask,
                level,
                None if half_widths is None else half_widths[:, i],
            )
            for i, level in enumerate(INTERVAL_LEVELS)
        }
        probabilistic.update(crps=crps, crps_scaled=_scaled(crps, scale))
    return SeriesScore(
        name=name,
        mae=mae(forecast, values, mask),
        mase=mase(forecast, values, mask, scale),
        n_test=n_test,
        coverage=covered / n_test if n_test else math.nan,
        **probabilistic,
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
    #: Mean over series of the interval coverages and of the scaled CRPS (NaN: no spreads).
    coverage_50: float = math.nan
    coverage_80: float = math.nan
    coverage_95: float = math.nan
    crps_scaled: float = math.nan


def _finite_mean(xs: np.ndarray) -> float:
    finite = xs[np.isfinite(xs)]
    return float(np.mean(finite)) if len(finite) else math.nan


def evaluate_corpus(
    forecasts: Mapping[str, np.ndarray],
    corpus: Mapping[str, tuple[np.ndarray, np.ndarray]],
    history_fraction: float = HISTORY_FRACTION,
    spreads: Mapping[str, np.ndarray] | None = None,
    half_widths: Mapping[str, np.ndarray] | None = None,
) -> CorpusScore:
    """Score one forecaster on every series of ``corpus`` (``forecasts`` keyed by name).

    ``spreads`` (optional, keyed like ``forecasts``; Gaussian sd per point, value units)
    adds the interval coverage and the scaled CRPS; ``half_widths`` (optional) the
    forecaster's own interval half-widths (see :func:`evaluate_series`).
    """
    missing = set(corpus) - set(forecasts)
    if missing:
        raise KeyError(f"no forecast for {sorted(missing)[:5]}")
    scores = tuple(
        evaluate_series(
            name,
            forecasts[name],
            values,
            history_points_for(len(values), history_fraction),
            None if spreads is None else spreads[name],
            None if half_widths is None else half_widths[name],
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
        coverage_50=_finite_mean(np.array([s.coverage_50 for s in scores])),
        coverage_80=_finite_mean(np.array([s.coverage_80 for s in scores])),
        coverage_95=_finite_mean(np.array([s.coverage_95 for s in scores])),
        crps_scaled=_finite_mean(np.array([s.crps_scaled for s in scores])),
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


# --------------------------------------------------------------------------- multi-horizon


@dataclass(frozen=True, slots=True)
class Paths:
    """k-step forecasts of one series from several origins.

    ``origins`` (R,): points observed at each origin, increasing. ``mean`` and ``spread``
    (R, K), value units (spread: Gaussian sd): column ``k - 1`` predicts point
    ``origins[r] + k - 1``, the k-th point after the origin. NaN = no forecast.
    """

    origins: np.ndarray
    mean: np.ndarray
    spread: np.ndarray

    def __post_init__(self) -> None:
        if self.mean.ndim != 2 or self.mean.shape != self.spread.shape:
            raise ValueError("mean and spread must be (origins, steps) arrays of one shape")
        if self.origins.shape != (self.mean.shape[0],):
            raise ValueError("one origin per row of mean")


def path_origins(
    n_points: int, history_points: int, stride: int, steps: int, warm: bool = False
) -> np.ndarray:
    """Forecast origins of a series: ``history_points, history_points + stride, ...`` while
    all ``steps`` targets exist (``origin + steps <= n_points``).

    ``warm``: also the origins before the history end on the same grid (down to 2 points
    observed), for forecasters that learn their spread from their own past errors; the
    scored origins are the same either way.
    """
    if stride < 1 or steps < 1:
        raise ValueError("stride and steps must be >= 1")
    first = history_points - stride * ((history_points - 2) // stride) if warm else history_points
    return np.arange(first, n_points - steps + 1, stride, dtype=np.int64)


def path_targets(origins: np.ndarray, steps: int) -> np.ndarray:
    """Index of the point each path step predicts: ``origins[:, None] + k - 1``, (R, steps)."""
    out: np.ndarray = origins[:, None] + np.arange(steps, dtype=np.int64)[None, :]
    return out


@dataclass(frozen=True, slots=True)
class HorizonScore:
    """A forecaster's scores at one horizon, over the series of a corpus (mean over series)."""

    horizon: int
    mean_mase: float
    median_mase: float
    coverage_50: float
    coverage_80: float
    coverage_95: float
    crps_scaled: float
    #: Series with a defined MASE / origins scored in all.
    n_mase: int
    n_origins: int


def evaluate_paths(
    paths: Mapping[str, Paths],
    corpus: Mapping[str, tuple[np.ndarray, np.ndarray]],
    horizons: tuple[int, ...] = HORIZONS,
    history_fraction: float = HISTORY_FRACTION,
) -> tuple[HorizonScore, ...]:
    """Score k-step paths at each of ``horizons`` on the origins in the test part.

    Per series and horizon: MASE (MAE over origins / one-step in-sample naive MAE of the
    history), coverage of the 50 / 80 / 95 % intervals and scaled CRPS; then means over
    series.
    Only origins at or after the history end are scored (earlier rows are a warm-up).
    """
    missing = set(corpus) - set(paths)
    if missing:
        raise KeyError(f"no paths for {sorted(missing)[:5]}")
    out = []
    for k in horizons:
        mases, cov50, cov80, cov95, crps, n_origins = [], [], [], [], [], 0
        for name, (_, values) in corpus.items():
            p = paths[name]
            if k > p.mean.shape[1]:
                raise ValueError(f"{name}: horizon {k} beyond the {p.mean.shape[1]} steps")
            history = history_points_for(len(values), history_fraction)
            rows = p.origins >= history
            target = p.origins[rows] + k - 1
            inside = target < len(values)
            target = target[inside]
            mean = p.mean[rows, k - 1][inside]
            spread = p.spread[rows, k - 1][inside]
            y = values[target]
            everything = np.ones(len(target), dtype=bool)
            scale = naive_scale(values, history)
            n_origins += len(target)
            mases.append(mase(mean, y, everything, scale))
            cov50.append(interval_coverage(mean, spread, y, everything, 0.5))
            cov80.append(interval_coverage(mean, spread, y, everything, 0.8))
            cov95.append(interval_coverage(mean, spread, y, everything, 0.95))
            crps.append(_scaled(mean_crps(mean, spread, y, everything), scale))
        finite = np.array(mases)[np.isfinite(mases)]
        out.append(
            HorizonScore(
                horizon=k,
                mean_mase=float(np.mean(finite)) if len(finite) else math.nan,
                median_mase=float(np.median(finite)) if len(finite) else math.nan,
                coverage_50=_finite_mean(np.array(cov50)),
                coverage_80=_finite_mean(np.array(cov80)),
                coverage_95=_finite_mean(np.array(cov95)),
                crps_scaled=_finite_mean(np.array(crps)),
                n_mase=len(finite),
                n_origins=n_origins,
            )
        )
    return tuple(out)
