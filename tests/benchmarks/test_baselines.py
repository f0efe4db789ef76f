"""Fast checks of the benchmark's data, baselines and metrics (a few seconds in all)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tests.benchmarks.baselines import (
    BASELINES,
    DAY_S,
    Baseline,
    BaselineUnavailable,
    naive_last,
    season_length_seconds,
    seasonal_naive,
)
from tests.benchmarks.forecast_data import NAB_DEV_ROOT, nab_dev_corpus, synthetic_corpus
from tests.benchmarks.metrics import (
    evaluate_corpus,
    evaluate_series,
    history_points_for,
    relative_mae_geomean,
)

SMALL = synthetic_corpus(n_series=3, points=600, seed=3)


def test_synthetic_corpus_is_deterministic_and_well_formed() -> None:
    again = synthetic_corpus(n_series=3, points=600, seed=3)
    other = synthetic_corpus(n_series=3, points=600, seed=4)
    assert list(SMALL) == list(again)
    for name, (ts, values) in SMALL.items():
        assert ts.dtype == values.dtype == np.float64
        assert len(ts) == len(values) == 600
        assert np.all(np.diff(ts) > 0)
        gaps = np.diff(ts) / np.median(np.diff(ts))
        assert gaps.max() <= 21.0
        np.testing.assert_array_equal(values, again[name][1])
    assert not np.array_equal(SMALL[next(iter(SMALL))][1], other[next(iter(other))][1])


@pytest.mark.parametrize("name", sorted(BASELINES))
def test_baseline_is_causal_and_covers_the_test_part(name: str) -> None:
    forecaster: Baseline = BASELINES[name]
    rng = np.random.default_rng(0)
    for ts, values in SMALL.values():
        history = history_points_for(len(values))
        try:
            forecast = forecaster(ts, values, history)
        except BaselineUnavailable as exc:
            pytest.skip(str(exc))
        assert forecast.shape == values.shape
        assert np.isfinite(forecast[history:]).all()
        cut = int(rng.integers(history, len(values)))
        changed = values.copy()
        changed[cut:] += rng.normal(0.0, 10.0 * values.std(), len(values) - cut)
        again = forecaster(ts, changed, history)
        # Forecasts up to and including the first changed point use only earlier values.
        np.testing.assert_allclose(again[: cut + 1], forecast[: cut + 1], rtol=1e-9, atol=1e-9)


def test_seasonal_naive_uses_the_latest_point_a_day_back() -> None:
    ts = np.arange(0.0, 5 * DAY_S, 3600.0)  # hourly, 5 days: history of 60 points spans 2.5 d
    values = np.sin(2 * np.pi * ts / DAY_S) + ts / DAY_S
    assert season_length_seconds(ts, values, 80) == DAY_S  # 80 h of history: >= 3 days
    forecast = seasonal_naive(ts, values, 80)
    np.testing.assert_array_equal(forecast[80:], values[80 - 24 : -24])
    # With a shorter history the autocorrelation fallback also finds 24 h.
    assert season_length_seconds(ts, values, 60) == pytest.approx(DAY_S)


def test_metrics_scale_and_edge_cases() -> None:
    values = np.array([0.0, 1.0, 3.0, 6.0, 10.0, 15.0])
    forecast = naive_last(np.arange(6.0), values, 3)
    score = evaluate_series("s", forecast, values, history_points=3)
    assert score.mae == pytest.approx((3 + 4 + 5) / 3)
    assert score.mase == pytest.approx(4.0 / 1.5)  # history diffs 1, 2
    assert score.coverage == 1.0
    flat = evaluate_series("flat", forecast, np.array([2.0, 2, 2, 6, 10, 15]), history_points=3)
    assert math.isnan(flat.mase)
    corpus = {"a": (np.arange(6.0), values)}
    total = evaluate_corpus({"a": forecast}, corpus, history_fraction=0.5)
    assert total.n_series == total.n_mase == 1
    assert relative_mae_geomean(total, total) == pytest.approx(1.0)


@pytest.mark.skipif(not NAB_DEV_ROOT.is_dir(), reason="shared/data/nab-dev not present")
def test_nab_dev_corpus_loads() -> None:
    corpus = nab_dev_corpus()
    assert len(corpus) == 27
    assert "realAdExchange/exchange-2_cpc_results" in corpus
    for ts, values in corpus.values():
        assert np.all(np.diff(ts) > 0) and np.isfinite(values).all()
