"""Checks of the probabilistic and multi-horizon scoring: intervals, CRPS, path alignment."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import integrate
from scipy.stats import norm

from tests.benchmarks.baselines import (
    DAY_S,
    PROBABILISTIC_BASELINES,
    BaselineUnavailable,
    autoets_run,
    error_spread,
    naive_last_run,
    seasonal_naive_run,
)
from tests.benchmarks.forecast_data import synthetic_corpus
from tests.benchmarks.metrics import (
    HORIZONS,
    INTERVAL_LEVELS,
    Paths,
    evaluate_paths,
    evaluate_series,
    gaussian_crps,
    history_points_for,
    interval_coverage,
    path_origins,
    path_targets,
)

SMALL = synthetic_corpus(n_series=2, points=600, seed=5)


@pytest.mark.parametrize("level", INTERVAL_LEVELS)
def test_coverage_of_a_gaussian_sample_is_the_nominal_level(level: float) -> None:
    rng = np.random.default_rng(1)
    n = 200_000
    mean = rng.normal(0.0, 100.0, n)
    spread = rng.uniform(0.1, 10.0, n)
    values = mean + spread * rng.standard_normal(n)
    everything = np.ones(n, dtype=bool)
    assert interval_coverage(mean, spread, values, everything, level) == pytest.approx(
        level, abs=0.005
    )
    # Twice the true sd covers P(|Z| <= 2z): far above nominal for a too-wide interval.
    z = norm.ppf(0.5 * (1 + level))
    wide = interval_coverage(mean, 2 * spread, values, everything, level)
    assert wide == pytest.approx(2 * norm.cdf(2 * z) - 1, abs=0.005)


def test_coverage_leaves_out_points_without_a_spread_and_respects_the_mask() -> None:
    mean = np.zeros(4)
    spread = np.array([1.0, np.nan, 1.0, 1.0])
    values = np.array([0.1, 0.0, 5.0, 0.0])
    mask = np.array([True, True, True, False])
    # Point 1 has no spread, point 3 is masked: of points 0 and 2, one is inside.
    assert interval_coverage(mean, spread, values, mask, 0.95) == 0.5
    assert math.isnan(interval_coverage(mean, spread, values, np.zeros(4, bool), 0.95))


def test_coverage_uses_a_forecasters_own_half_widths_over_its_spread() -> None:
    mean = np.zeros(4)
    spread = np.ones(4)  # Gaussian 95 %: ±1.96, all four inside
    values = np.array([0.5, -0.9, 1.9, 0.0])
    widths = np.array([1.0, 1.0, 1.0, np.nan])  # its own: two of the three usable inside
    everything = np.ones(4, dtype=bool)
    assert interval_coverage(mean, spread, values, everything, 0.95) == 1.0
    assert interval_coverage(mean, spread, values, everything, 0.95, widths) == pytest.approx(2 / 3)


@pytest.mark.parametrize(("mu", "sigma", "y"), [(0.0, 1.0, 0.0), (2.0, 0.5, 3.1), (-1e3, 40, 90)])
def test_gaussian_crps_matches_the_integral_of_the_squared_cdf_difference(
    mu: float, sigma: float, y: float
) -> None:
    def below(x: float) -> float:
        return float(norm.cdf(x, mu, sigma)) ** 2

    def above(x: float) -> float:
        return (1.0 - float(norm.cdf(x, mu, sigma))) ** 2

    numeric = (
        integrate.quad(below, -np.inf, y, limit=200)[0]
        + integrate.quad(above, y, np.inf, limit=200)[0]
    )
    closed = gaussian_crps(np.array([mu]), np.array([sigma]), np.array([y]))[0]
    assert closed == pytest.approx(numeric, rel=1e-6)


def test_gaussian_crps_known_values() -> None:
    # Standard normal at its mean: 2 φ(0) - 1/√π = (√2 - 1)/√π.
    at_mean = gaussian_crps(np.array([0.0]), np.array([1.0]), np.array([0.0]))[0]
    assert at_mean == pytest.approx((math.sqrt(2) - 1) / math.sqrt(math.pi), rel=1e-12)
    # A point forecast: the absolute error; and CRPS scales with the sd (σ·CRPS(z)).
    point = gaussian_crps(np.array([1.0, 1.0]), np.zeros(2), np.array([4.0, -1.0]))
    np.testing.assert_allclose(point, [3.0, 2.0])
    scaled = gaussian_crps(np.array([0.0]), np.array([10.0]), np.array([0.0]))[0]
    assert scaled == pytest.approx(10 * at_mean)


def test_series_score_carries_coverage_and_scaled_crps() -> None:
    values = np.array([0.0, 1.0, 3.0, 6.0, 10.0, 15.0])
    forecast = np.array([np.nan, 0.0, 1.0, 6.0, 10.0, 15.0])
    spread = np.full(6, 1.0)
    score = evaluate_series("s", forecast, values, history_points=3, spread=spread)
    assert score.coverage_95 == 1.0  # errors 0, 0, 0 on the test part
    assert score.crps == pytest.approx(gaussian_crps(np.zeros(1), np.ones(1), np.zeros(1))[0])
    assert score.crps_scaled == pytest.approx(score.crps / 1.5)  # history diffs 1, 2
    assert math.isnan(evaluate_series("s", forecast, values, 3).crps)


def test_path_origins_start_at_the_history_end_and_keep_every_target() -> None:
    origins = path_origins(100, 20, 6, 24)
    assert origins[0] == 20 and np.all(np.diff(origins) == 6)
    assert path_targets(origins, 24).max() <= 99
    warm = path_origins(100, 20, 6, 24, warm=True)
    assert warm[0] == 2 and set(origins) <= set(warm)
    np.testing.assert_array_equal(warm[warm >= 20], origins)


def test_naive_paths_on_a_ramp_have_error_equal_to_the_horizon() -> None:
    n, history = 200, 40
    ts = np.arange(n) * 60.0
    values = np.arange(n, dtype=np.float64)  # naive scale 1
    origins = path_origins(n, history, 6, 24, warm=True)
    run = naive_last_run(ts, values, history, origins, 24)
    # Step k from origin o predicts point o + k - 1 with value values[o - 1]: error k.
    np.testing.assert_array_equal(run.paths.mean[:, 0], values[origins - 1])
    scores = evaluate_paths({"ramp": run.paths}, {"ramp": (ts, values)}, history_fraction=0.2)
    assert [s.horizon for s in scores] == list(HORIZONS)
    assert [s.mean_mase for s in scores] == pytest.approx([float(h) for h in HORIZONS])
    # Errors are constant per horizon, so the EW RMS spread is exactly that error: the value
    # sits on the interval's edge (inside).
    np.testing.assert_allclose(run.paths.spread[origins >= 40, 5], 6.0)
    assert all(s.coverage_95 == 1.0 for s in scores)


def test_seasonal_naive_paths_are_exact_on_a_periodic_series() -> None:
    ts = np.arange(0.0, 10 * DAY_S, 3600.0)  # hourly, 10 days
    values = np.sin(2 * np.pi * ts / DAY_S) + 0.5 * np.cos(4 * np.pi * ts / DAY_S)
    history = 80  # 3.3 days: a daily season
    origins = path_origins(len(ts), history, 5, 24)
    run = seasonal_naive_run(ts, values, history, origins, 24)
    np.testing.assert_allclose(run.paths.mean, values[path_targets(origins, 24)], atol=1e-12)
    # A 24-step path of a 24-point season reaches back exactly one season: index o - 1.
    np.testing.assert_array_equal(run.paths.mean[:, 23], values[origins - 1])


def test_error_spread_uses_only_errors_whose_target_was_observed() -> None:
    rng = np.random.default_rng(2)
    values = rng.normal(0.0, 1.0, 300)
    origins = np.arange(2, 290, 3, dtype=np.int64)
    mean = np.zeros((len(origins), 6))
    spread = error_spread(origins, mean, values)
    cut = 149  # the target of origin 149 at horizon 1
    changed = values.copy()
    changed[cut:] += 100.0
    again = error_spread(origins, mean, changed)
    for k in range(6):
        # The spread of (origin o, horizon k + 1) may see the error of an earlier origin o'
        # only if that error's target o' + k was observed at o: o' + k < o.
        target = origins + k
        sees_change = np.array([np.any((target >= cut) & (target < o)) for o in origins])
        np.testing.assert_array_equal(again[~sees_change, k], spread[~sees_change, k])
        assert np.all(again[sees_change, k] > spread[sees_change, k] + 1)
        assert sees_change.any() and not sees_change[origins <= cut].any()
    assert np.isnan(spread[0]).all()  # nothing observed yet


@pytest.mark.parametrize("name", sorted(PROBABILISTIC_BASELINES))
def test_probabilistic_baselines_are_causal_with_finite_spreads(name: str) -> None:
    forecaster = PROBABILISTIC_BASELINES[name]
    for ts, values in SMALL.values():
        history = history_points_for(len(values))
        origins = path_origins(len(values), history, 6, 24, warm=True)
        try:
            run = forecaster(ts, values, history, origins, 24)
        except BaselineUnavailable as exc:
            pytest.skip(str(exc))
        scored = origins >= history
        assert np.isfinite(run.spread[history:]).all() and (run.spread[history:] > 0).all()
        assert np.isfinite(run.paths.mean[scored]).all()
        assert np.isfinite(run.paths.spread[scored]).all()
        cut = int(origins[scored][len(origins[scored]) // 2])
        changed = values.copy()
        changed[cut:] += 10.0 * values.std()
        again = forecaster(ts, changed, history, origins, 24)
        before = origins <= cut
        np.testing.assert_allclose(again.paths.mean[before], run.paths.mean[before], rtol=1e-9)
        np.testing.assert_allclose(again.paths.spread[before], run.paths.spread[before], rtol=1e-9)
        np.testing.assert_allclose(again.spread[: cut + 1], run.spread[: cut + 1], rtol=1e-9)


def test_autoets_one_step_path_is_its_one_step_forecast() -> None:
    pytest.importorskip("statsmodels")  # the bench extra
    ts, values = next(iter(SMALL.values()))
    history = history_points_for(len(values))
    origins = path_origins(len(values), history, 7, 24)
    forecast, spread, path_mean, path_spread = autoets_run(ts, values, history, origins, 24)
    np.testing.assert_allclose(path_mean[:, 0], forecast[origins], rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(path_spread[:, 0], spread[origins])
    assert np.all(np.diff(path_spread[0]) >= -1e-12)  # the interval widens with the horizon


def test_engine_rollout_step_one_is_the_one_step_forecast_on_a_regular_series() -> None:
    from streamrnn.forecast.gru import ModelSpec, RecurrentForecaster
    from tests.benchmarks.gru_eval import engine_one_step, engine_paths

    torch.manual_seed(0)
    model = RecurrentForecaster(ModelSpec())
    n = 700
    ts = (1_700_000_000.0 + 60.0 * np.arange(n)).astype(np.float64)
    values = (
        5.0 + np.sin(np.arange(n) / 9.0) + 0.1 * np.random.default_rng(3).normal(size=n)
    ).astype(np.float64)
    corpus = {"regular": (ts, values)}
    one = engine_one_step(model, corpus)
    origins = {"regular": path_origins(n, history_points_for(n), 6, 24)}
    paths = engine_paths(model, corpus, origins, 24)
    o = origins["regular"]
    got = paths["regular"]
    assert isinstance(got, Paths) and np.isfinite(got.mean).all()
    # Regular sampling: the rollout's first step sees the same time features as the true
    # next point, so it equals the one-step forecast of point o (an off-by-one would not).
    np.testing.assert_allclose(got.mean[:, 0], one["regular"][0][o], rtol=1e-4)
    np.testing.assert_allclose(got.spread[:, 0], one["regular"][1][o], rtol=1e-3)
    assert np.all(got.spread[:, -1] > got.spread[:, 0])
