"""Forecast and raw score: the forecast in value units, and the residual standardised by the
forecast's own predicted spread (:mod:`streamrnn.stages.residual`)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from streamrnn.config import Settings
from streamrnn.decode import DecodedMessage
from streamrnn.engine.build import build_engine
from streamrnn.stages.residual import MIN_SEEN_TO_SCORE, forecast_of, raw_score

WARM = 100.0  # points seen by a series long past MIN_SEEN_TO_SCORE


def _raw(value: float, forecast: float, spread: float, seen: float = WARM) -> float:
    return raw_score(value, forecast, spread, seen)


# --- forecast_of ----------------------------------------------------------------------------


def test_forecast_is_the_last_value_plus_the_scaled_change() -> None:
    forecast, spread = forecast_of(5.0, 10.0, 2.0, 0.75, 0.0)
    assert forecast == 11.5
    assert spread == 2.0
    forecast, spread = forecast_of(1.0, -3.0, 0.5, -2.0, math.log(9.0))
    assert forecast == pytest.approx(-4.0, rel=1e-15)
    assert spread == pytest.approx(0.5 * 3.0, rel=1e-15)


def test_forecast_spread_grows_with_the_predicted_log_variance() -> None:
    spreads = [forecast_of(3.0, 1.0, 2.0, 0.0, lv)[1] for lv in np.linspace(-6.0, 6.0, 13)]
    assert (np.diff(spreads) > 0).all()
    assert all(s > 0 for s in spreads)


def test_a_series_that_has_seen_nothing_has_no_forecast() -> None:
    forecast, spread = forecast_of(0.0, 10.0, 2.0, 0.5, 0.0)
    assert math.isnan(forecast) and math.isnan(spread)


# --- raw_score ------------------------------------------------------------------------------


def test_raw_is_the_residual_in_units_of_the_spread() -> None:
    assert _raw(13.0, 10.0, 2.0) == pytest.approx(1.5)
    assert _raw(10.0, 10.0, 2.0) == 0.0


def test_raw_grows_with_the_size_of_the_residual() -> None:
    raw = [_raw(v, 10.0, 2.0) for v in 10.0 + np.linspace(0.0, 50.0, 11)]
    assert (np.diff(raw) > 0).all()


def test_raw_shrinks_when_the_forecast_said_it_was_unsure() -> None:
    raw = np.array([_raw(14.0, 10.0, s) for s in (0.1, 0.5, 1.0, 5.0, 100.0)])
    assert (np.diff(raw) < 0).all()
    assert (raw > 0).all()


def test_raw_keeps_the_sign_of_the_residual() -> None:
    assert [_raw(v, 10.0, 1.0) for v in (12.0, 8.0, 10.0)] == [2.0, -2.0, 0.0]
    assert _raw(-3.0, 3.0, 2.0) == pytest.approx(-3.0)


@pytest.mark.parametrize(
    ("forecast", "spread"),
    [
        pytest.param(math.nan, 1.0, id="no-forecast"),
        pytest.param(10.0, math.nan, id="no-spread"),
        pytest.param(10.0, 0.0, id="zero-spread"),
        pytest.param(10.0, -1.0, id="negative-spread"),
        pytest.param(math.inf, 1.0, id="infinite-forecast"),
        pytest.param(-math.inf, 1.0, id="minus-infinite-forecast"),
        pytest.param(10.0, math.inf, id="infinite-spread"),
    ],
)
def test_raw_is_nan_without_a_usable_forecast_or_spread(forecast: float, spread: float) -> None:
    assert math.isnan(_raw(11.0, forecast, spread))


@pytest.mark.parametrize("seen", [0.0, 1.0, MIN_SEEN_TO_SCORE - 0.5])
def test_raw_is_nan_before_the_series_has_seen_min_seen_to_score_points(seen: float) -> None:
    assert math.isnan(_raw(13.0, 10.0, 2.0, seen))


def test_raw_is_scored_from_min_seen_to_score_points_on() -> None:
    assert MIN_SEEN_TO_SCORE == 2
    assert _raw(13.0, 10.0, 2.0, MIN_SEEN_TO_SCORE) == pytest.approx(1.5)


def test_a_series_first_point_has_neither_forecast_nor_raw_score() -> None:
    forecast, spread = forecast_of(0.0, 0.0, 1.0, 0.0, 0.0)
    assert math.isnan(_raw(5.0, forecast, spread, 0.0))
    assert math.isnan(_raw(5.0, forecast, spread, WARM))  # no forecast, whatever is seen


def test_raw_of_a_nan_value_is_nan() -> None:
    assert math.isnan(_raw(math.nan, 10.0, 2.0))


# --- through the engine ---------------------------------------------------------------------


def test_engine_reports_no_forecast_for_a_series_first_point_only() -> None:
    engine = build_engine(Settings())
    ts = [1_700_000_000.0 + 10.0 * i for i in range(6)]
    values = [5.0, 5.5, 5.2, 5.9, 5.1, 5.4]
    result = engine.process([DecodedMessage("a", ts, values, None)])
    assert math.isnan(result.forecast[0]) and math.isnan(result.spread[0])
    assert np.isfinite(result.forecast[1:]).all()
    assert (result.spread[1:] > 0).all()
