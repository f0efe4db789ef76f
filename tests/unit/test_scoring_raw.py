"""Raw score: the residual standardised by the forecast's own predicted spread."""

from __future__ import annotations

import numpy as np
import pytest

from streamrnn.scoring.raw import standardised_residual


def _raw(value: float, forecast: float, spread: float) -> float:
    return float(
        standardised_residual(np.array([value]), np.array([forecast]), np.array([spread]))[0]
    )


def test_raw_is_the_residual_in_units_of_the_spread() -> None:
    assert _raw(13.0, 10.0, 2.0) == pytest.approx(1.5)
    assert _raw(10.0, 10.0, 2.0) == 0.0


def test_raw_grows_with_the_size_of_the_residual() -> None:
    values = 10.0 + np.linspace(0.0, 50.0, 11)
    raw = standardised_residual(values, np.full(11, 10.0), np.full(11, 2.0))
    assert (np.diff(raw) > 0).all()


def test_raw_shrinks_when_the_forecast_said_it_was_unsure() -> None:
    spreads = np.array([0.1, 0.5, 1.0, 5.0, 100.0])
    raw = standardised_residual(np.full(5, 14.0), np.full(5, 10.0), spreads)
    assert (np.diff(raw) < 0).all()
    assert (raw > 0).all()


def test_raw_keeps_the_sign_of_the_residual() -> None:
    raw = standardised_residual(np.array([12.0, 8.0, 10.0]), np.full(3, 10.0), np.full(3, 1.0))
    assert raw.tolist() == [2.0, -2.0, 0.0]
    assert _raw(-3.0, 3.0, 2.0) == pytest.approx(-3.0)


@pytest.mark.parametrize(
    ("forecast", "spread"),
    [
        pytest.param(np.nan, 1.0, id="no-forecast"),
        pytest.param(10.0, np.nan, id="no-spread"),
        pytest.param(10.0, 0.0, id="zero-spread"),
        pytest.param(10.0, -1.0, id="negative-spread"),
        pytest.param(np.inf, 1.0, id="infinite-forecast"),
        pytest.param(10.0, np.inf, id="infinite-spread"),
    ],
)
def test_raw_is_nan_without_a_usable_forecast_or_spread(forecast: float, spread: float) -> None:
    assert np.isnan(_raw(11.0, forecast, spread))


def test_raw_is_elementwise_and_missing_entries_do_not_spill_over() -> None:
    value = np.array([11.0, 11.0, 11.0, 11.0])
    forecast = np.array([10.0, np.nan, 10.0, 10.0])
    spread = np.array([0.5, 1.0, 0.0, 4.0])
    with np.errstate(all="raise"):  # no division by zero, not even in masked-out entries
        raw = standardised_residual(value, forecast, spread)
    assert raw[0] == pytest.approx(2.0)
    assert np.isnan(raw[1]) and np.isnan(raw[2])
    assert raw[3] == pytest.approx(0.25)
    assert raw.dtype == np.float64
