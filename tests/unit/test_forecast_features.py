"""The per-point features (:mod:`streamrnn.stages.features`) and the scan that runs them over
a grid: special points, gaps, typical interval, padding, state carry-over; and that the
training path (the scan, which ``streamrnn train`` and the retrain job use) and the serving
engine compute the same features, to the bit.

Plus, at engine level, the dropping of points that do not move their series forward.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest

from streamrnn.config import Settings
from streamrnn.decode import DecodedMessage
from streamrnn.engine.build import build_engine
from streamrnn.engine.engine import EngineBatchResult
from streamrnn.stages.ewstats import scale_of
from streamrnn.stages.features import (
    GAP_FACTOR,
    INPUT_CLIP,
    INPUT_SIZE,
    TIME_FEATURE_COUNT,
    TIME_FEATURES,
    VALUE_FEATURE_COUNT,
    VALUE_LIMIT,
    FeatureGrid,
    FeatureParams,
    FeatureState,
    clamp,
    learn_point,
    point_features,
    scan,
    time_features,
)

T0 = 1_700_000_000.0
STEP = 10.0
ALPHA = 0.01

RATIO = TIME_FEATURES.index("log_gap_ratio")
LOG_GAP = TIME_FEATURES.index("log_gap")
FLAG = TIME_FEATURES.index("gap_flag")
TOD = [TIME_FEATURES.index("tod_sin"), TIME_FEATURES.index("tod_cos")]
DOW = [TIME_FEATURES.index("dow_sin"), TIME_FEATURES.index("dow_cos")]


def _scan_one(
    ts: Sequence[float] | np.ndarray,
    values: Sequence[float] | np.ndarray,
    state: FeatureState | None = None,
) -> tuple[FeatureGrid, FeatureState]:
    """Scan one series (a 1 × T grid, all cells active)."""
    ts_arr = np.asarray(ts, dtype=np.float64)[None, :]
    val_arr = np.asarray(values, dtype=np.float64)[None, :]
    active = np.ones_like(ts_arr, dtype=bool)
    return scan(state or FeatureState.empty(1), ts_arr, val_arr, active, ALPHA)


def _regular(n: int, start: float = T0, step: float = STEP) -> np.ndarray:
    return start + step * np.arange(n)


def _smooth(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return 5.0 + np.sin(np.arange(n) / 4.0) + 0.05 * rng.standard_normal(n)


def _typical(state: FeatureState) -> np.ndarray:
    return np.exp(state.log_gap_mean)


def _assert_states_equal(a: FeatureState, b: FeatureState) -> None:
    for name in FeatureState._fields:
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)


def _time_features(ts: np.ndarray, gap: np.ndarray, typical: np.ndarray) -> np.ndarray:
    """(N, TIME_FEATURE_COUNT) time features of points at ``ts`` (float64, to test the
    arithmetic rather than the float32 the model gets)."""
    out = np.zeros((len(ts), TIME_FEATURE_COUNT))
    for i in range(len(ts)):
        time_features(float(ts[i]), float(gap[i]), float(typical[i]), out[i])
    return out


# --- special points ------------------------------------------------------------------------


def test_first_point_has_nominal_gap_zero_value_input_and_nothing_seen_before() -> None:
    grid, state = _scan_one([T0], [123.0])
    assert grid.inputs.shape == (1, 1, INPUT_SIZE)
    assert grid.inputs[0, 0, 0] == 0.0  # value input 0: no normaliser yet
    target = grid.target[0, 0]
    assert target[RATIO] == 0.0
    assert target[LOG_GAP] == pytest.approx(np.log1p(1.0) / 10.0, abs=1e-7)  # gap = 1 s nominal
    assert target[FLAG] == 0.0
    assert grid.seen_before[0, 0] == 0
    # The first point is remembered, but does not teach the typical interval.
    assert state.count[0] == 1
    assert state.last_ts[0] == T0 and state.last_value[0] == 123.0
    assert state.gap_count[0] == 0 and state.log_gap_mean[0] == 0.0


def test_first_point_features_do_not_depend_on_its_value_or_on_a_previous_value() -> None:
    low, _ = _scan_one([T0], [-5.0])
    high, _ = _scan_one([T0], [1e9])
    np.testing.assert_array_equal(low.inputs, high.inputs)
    np.testing.assert_array_equal(low.target, high.target)


def test_second_point_sets_the_typical_interval_to_the_first_gap() -> None:
    grid, state = _scan_one([T0, T0 + 37.0], [1.0, 2.0])
    assert grid.target[0, 1, RATIO] == pytest.approx(0.0, abs=1e-7)  # typical = the gap itself
    assert grid.target[0, 1, FLAG] == 0.0
    assert grid.target[0, 1, LOG_GAP] == pytest.approx(np.log1p(37.0) / 10.0, rel=1e-6)
    assert grid.seen_before[0, 1] == 1
    assert grid.prev_value[0, 1] == 1.0
    assert state.gap_count[0] == 1
    assert _typical(state)[0] == pytest.approx(37.0)


def test_regular_points_have_zero_log_gap_ratio_and_no_gap_flag() -> None:
    grid, state = _scan_one(_regular(60), _smooth(60))
    np.testing.assert_allclose(grid.target[0, 1:, RATIO], 0.0, atol=1e-6)
    assert (grid.target[0, :, FLAG] == 0).all()
    np.testing.assert_allclose(grid.target[0, 1:, LOG_GAP], np.log1p(STEP) / 10.0, rtol=1e-6)
    assert _typical(state)[0] == pytest.approx(STEP)


def test_jittered_regular_points_stay_near_zero_ratio_without_gap_flag() -> None:
    rng = np.random.default_rng(1)
    ts = T0 + np.cumsum(STEP * rng.uniform(0.9, 1.1, 200))
    grid, state = _scan_one(ts, _smooth(200))
    assert np.abs(grid.target[0, 1:, RATIO]).max() < 0.25
    assert (grid.target[0, :, FLAG] == 0).all()
    assert _typical(state)[0] == pytest.approx(STEP, rel=0.05)


def test_gap_of_1000_typical_intervals_sets_gap_flag_and_a_large_log_gap_ratio() -> None:
    ts = np.append(_regular(30), T0 + 29 * STEP + 1000 * STEP)
    grid, _ = _scan_one(ts, _smooth(31))
    last = grid.target[0, -1]
    assert last[FLAG] == 1.0
    assert last[RATIO] == pytest.approx(np.log(1000.0), rel=1e-5)
    assert last[LOG_GAP] == pytest.approx(np.log1p(1000 * STEP) / 10.0, rel=1e-6)
    assert (grid.target[0, :-1, FLAG] == 0).all()


@pytest.mark.parametrize("factor", [1e5, 1e9])
def test_huge_gap_clips_log_gap_ratio_to_10(factor: float) -> None:
    ts = np.append(_regular(30), T0 + 29 * STEP + factor * STEP)
    grid, _ = _scan_one(ts, _smooth(31))
    assert grid.target[0, -1, RATIO] == pytest.approx(10.0)
    assert grid.target[0, -1, FLAG] == 1.0
    assert np.isfinite(grid.inputs).all()


def test_burst_after_regular_points_clips_log_gap_ratio_to_minus_10() -> None:
    ts = np.append(_regular(30), T0 + 29 * STEP + 1e-6)
    grid, _ = _scan_one(ts, _smooth(31))
    assert grid.target[0, -1, RATIO] == pytest.approx(-10.0)
    assert grid.target[0, -1, FLAG] == 0.0


def test_gap_flag_threshold_is_gap_factor_typical_intervals() -> None:
    just_under = np.append(_regular(30), T0 + 29 * STEP + 0.99 * GAP_FACTOR * STEP)
    just_over = np.append(_regular(30), T0 + 29 * STEP + 1.01 * GAP_FACTOR * STEP)
    assert _scan_one(just_under, _smooth(31))[0].target[0, -1, FLAG] == 0.0
    assert _scan_one(just_over, _smooth(31))[0].target[0, -1, FLAG] == 1.0


def test_typical_interval_adapts_to_a_new_sampling_rate() -> None:
    fast = _regular(100)
    slow = fast[-1] + 60.0 * np.arange(1, 201)
    ts = np.concatenate([fast, slow])
    grid, state = _scan_one(ts, _smooth(len(ts)))
    ratio, flag = grid.target[0, 100:, RATIO], grid.target[0, 100:, FLAG]
    assert ratio[0] == pytest.approx(np.log(6.0), rel=1e-5)  # first 60 s gap vs 10 s typical
    assert flag[0] == 1.0
    # The ratio falls steadily as the typical interval follows the new rate...
    assert (np.diff(ratio) <= 1e-7).all()
    # ...until the new rate is regular again: no more flags, ratio ~ 0, typical ~ 60 s.
    assert (flag[-150:] == 0).all()
    assert abs(ratio[-1]) < 0.01
    assert _typical(state)[0] == pytest.approx(60.0, rel=0.01)


# --- time of day, day of week ---------------------------------------------------------------


def test_time_of_day_features_repeat_every_day_and_day_of_week_every_week() -> None:
    rng = np.random.default_rng(2)
    ts = T0 + rng.uniform(0, 30 * 86_400.0, 50).round()
    gap = np.full(50, STEP)
    base = _time_features(ts, gap, gap)
    next_day = _time_features(ts + 86_400.0, gap, gap)
    next_week = _time_features(ts + 7 * 86_400.0, gap, gap)
    np.testing.assert_allclose(next_day[:, TOD], base[:, TOD], atol=1e-9)
    assert not np.allclose(next_day[:, DOW], base[:, DOW], atol=1e-3)
    np.testing.assert_allclose(next_week, base, atol=1e-9)
    half_day = _time_features(ts + 43_200.0, gap, gap)
    np.testing.assert_allclose(half_day[:, TOD], -base[:, TOD], atol=1e-9)


def test_time_of_day_phase_is_utc_midnight_based() -> None:
    midnight = 1_700_006_400.0  # 2023-11-15T00:00:00Z
    ts = midnight + np.array([0.0, 6 * 3600.0, 12 * 3600.0])
    tf = _time_features(ts, np.ones(3), np.ones(3))
    np.testing.assert_allclose(tf[:, TOD[0]], [0.0, 1.0, 0.0], atol=1e-9)
    np.testing.assert_allclose(tf[:, TOD[1]], [1.0, 0.0, -1.0], atol=1e-9)
    for features in tf:
        assert features[TOD[0]] ** 2 + features[TOD[1]] ** 2 == pytest.approx(1.0)
        assert features[DOW[0]] ** 2 + features[DOW[1]] ** 2 == pytest.approx(1.0)


def test_scan_feeds_time_features_to_both_inputs_and_target() -> None:
    grid, _ = _scan_one(_regular(10), _smooth(10))
    np.testing.assert_array_equal(grid.inputs[..., VALUE_FEATURE_COUNT:], grid.target)


# --- grids: padding and carry-over -----------------------------------------------------------


def test_padding_cells_at_the_end_of_a_row_leave_its_state_unchanged() -> None:
    ts = np.stack([_regular(6), np.concatenate([_regular(2, T0 + 3.0), [0.0, -5.0, 9e9, 1.0]])])
    values = np.stack([_smooth(6), np.array([1.0, 2.0, 1e9, -1e9, np.nan, 7.0])])
    active = np.ones((2, 6), dtype=bool)
    active[1, 2:] = False
    grid, state = scan(FeatureState.empty(2), ts, values, active, ALPHA)

    short_grid, short_state = _scan_one(ts[1, :2], values[1, :2])
    for name in FeatureState._fields:
        assert getattr(state, name)[1] == getattr(short_state, name)[0], name
    np.testing.assert_array_equal(grid.inputs[1, :2], short_grid.inputs[0])
    # The full row is unaffected by its neighbour's padding.
    full_grid, full_state = _scan_one(ts[0], values[0])
    np.testing.assert_array_equal(grid.inputs[0], full_grid.inputs[0])
    for name in FeatureState._fields:
        assert getattr(state, name)[0] == getattr(full_state, name)[0], name


def test_inactive_cell_in_the_middle_of_a_row_is_skipped() -> None:
    ts = np.array([[T0, T0 + 10.0, T0 + 20.0, T0 + 30.0]])
    values = np.array([[1.0, 500.0, 2.0, 3.0]])
    active = np.array([[True, False, True, True]])
    grid, state = scan(FeatureState.empty(1), ts, values, active, ALPHA)
    compact_grid, compact_state = _scan_one(ts[0, [0, 2, 3]], values[0, [0, 2, 3]])
    _assert_states_equal(state, compact_state)
    np.testing.assert_array_equal(grid.inputs[0, [0, 2, 3]], compact_grid.inputs[0])


def test_all_inactive_grid_leaves_a_live_state_unchanged() -> None:
    _, live = _scan_one(_regular(8), _smooth(8))
    ts = np.full((1, 3), T0 + 1e6)
    _, after = scan(live, ts, np.ones((1, 3)), np.zeros((1, 3), dtype=bool), ALPHA)
    _assert_states_equal(after, live)


def test_scanning_in_consecutive_grids_equals_one_grid_exactly() -> None:
    rng = np.random.default_rng(3)
    k, n = 3, 80
    ts = T0 + np.cumsum(rng.uniform(1.0, 30.0, (k, n)), axis=1)
    ts[1, 40] += 5000.0  # a long gap somewhere
    ts[1, 41:] += 5000.0
    values = rng.normal(0, 1, (k, n)).cumsum(axis=1) * [[1.0], [1e6], [1e-3]]
    active = np.ones((k, n), dtype=bool)
    whole, whole_state = scan(FeatureState.empty(k), ts, values, active, ALPHA)

    state = FeatureState.empty(k)
    parts = []
    for lo, hi in [(0, 1), (1, 8), (8, 37), (37, n)]:
        part, state = scan(state, ts[:, lo:hi], values[:, lo:hi], active[:, lo:hi], ALPHA)
        parts.append(part)
    for name in ("inputs", "target", "scale", "prev_value", "seen_before"):
        np.testing.assert_array_equal(
            np.concatenate([getattr(p, name) for p in parts], axis=1),
            getattr(whole, name),
            err_msg=name,
        )
    _assert_states_equal(state, whole_state)


def test_scan_does_not_modify_the_state_it_is_given() -> None:
    _, live = _scan_one(_regular(5), _smooth(5))
    copies = {name: getattr(live, name).copy() for name in FeatureState._fields}
    _scan_one(_regular(5, T0 + 1000.0), _smooth(5, seed=9), state=live)
    for name, before in copies.items():
        np.testing.assert_array_equal(getattr(live, name), before, err_msg=name)


# --- normaliser ------------------------------------------------------------------------------


@pytest.mark.parametrize("level", [0.0, 5.0, -2e4, 1e12])
def test_scale_floor_keeps_a_constant_series_finite(level: float) -> None:
    grid, state = _scan_one(_regular(100), np.full(100, level))
    assert np.isfinite(grid.inputs).all() and np.isfinite(grid.target).all()
    assert (grid.scale > 0).all() and np.isfinite(grid.scale).all()
    np.testing.assert_array_equal(grid.inputs[0, :, 0], 0.0)  # z = 0 for a constant series
    assert state.value_var[0] == 0.0


def test_step_after_a_constant_series_is_clipped_not_infinite() -> None:
    values = np.append(np.full(50, 3.0), 1e9)
    grid, _ = _scan_one(_regular(51), values)
    assert grid.inputs[0, -1, 0] == INPUT_CLIP
    grid, _ = _scan_one(_regular(51), -values)
    assert grid.inputs[0, -1, 0] == -INPUT_CLIP


def test_value_input_is_the_value_normalised_by_the_state_before_it() -> None:
    values = _smooth(40) * 100.0
    grid, _ = _scan_one(_regular(40), values)
    # Third point on: normaliser has a spread; z is (value - mean) / scale of the state before.
    _, before = _scan_one(_regular(30), values[:30])
    level = scale_of(float(before.value_mean[0]), float(before.value_var[0]))
    expected = (values[30] - before.value_mean[0]) / level
    assert grid.inputs[0, 30, 0] == pytest.approx(expected, rel=1e-5)
    # The step input is the change in units of the step scale (the forecast unit).
    step = (values[30] - values[29]) / grid.scale[0, 30]
    assert grid.inputs[0, 30, 1] == pytest.approx(np.clip(step, -INPUT_CLIP, INPUT_CLIP), rel=1e-5)
    assert grid.prev_value[0, 30] == values[29]
    assert grid.seen_before[0, 30] == 30


# --- the per-point functions, and training against serving -----------------------------------


def _irregular(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """An irregular series: jittered intervals, bursts, long gaps, a constant run, a spike,
    values beyond the limit and a tiny one."""
    rng = np.random.default_rng(seed)
    gaps = STEP * rng.lognormal(0.0, 0.4, n)
    gaps[rng.random(n) < 0.05] *= 1e-3  # bursts
    gaps[[40, 41, 150, 300]] *= [50.0, 3.0, 1e4, 1e6]  # long gaps
    ts = T0 + np.cumsum(gaps)
    values = 200.0 + np.cumsum(rng.normal(0.0, 1.0, n)) + 20.0 * np.sin(ts / 3_600.0)
    values[60:90] = 250.0  # a constant run
    values[120] += 1e4
    values[[200, 201, 260]] = 1e300, -1.7e308, 2 * VALUE_LIMIT  # clamped to the limit
    values[330] = 1e-300
    return ts, values


def test_point_features_and_learn_point_from_python_equal_the_scan() -> None:
    """The stage functions on FeatureState rows, called point by point: what the scan and
    the serving kernel both run."""
    series = [_irregular(350, seed=1), (_regular(150), _smooth(150, seed=2) * 1e6)]
    k, t_max = len(series), max(len(ts) for ts, _ in series)
    ts_grid, value_grid = np.zeros((k, t_max)), np.zeros((k, t_max))
    active = np.zeros((k, t_max), dtype=bool)
    for row, (ts, values) in enumerate(series):
        ts_grid[row, : len(ts)], value_grid[row, : len(ts)], active[row, : len(ts)] = ts, values, 1
    grid, after = scan(FeatureState.empty(k), ts_grid, value_grid, active, ALPHA)

    state, params = FeatureState.empty(k), FeatureParams(ALPHA)
    target = np.empty(TIME_FEATURE_COUNT, dtype=np.float32)
    x = np.empty(INPUT_SIZE, dtype=np.float32)
    for row, (ts, values) in enumerate(series):
        for j, (t, raw) in enumerate(zip(ts.tolist(), values.tolist(), strict=True)):
            v = clamp(raw, VALUE_LIMIT)
            assert grid.prev_value[row, j] == state.last_value[row]
            assert grid.seen_before[row, j] == state.count[row]
            scale, gap = point_features(state, row, t, v, target, x)
            assert scale == grid.scale[row, j], (row, j)
            np.testing.assert_array_equal(target, grid.target[row, j])
            np.testing.assert_array_equal(x, grid.inputs[row, j])
            learn_point(state, params, row, t, v, scale, gap)
    _assert_states_equal(state, after)


def test_training_scan_and_serving_engine_compute_the_same_features() -> None:
    """An irregular series (and two others beside it) fed through the training path's scan
    and through the serving engine, in windows over many batches, with scoring that learns
    every point: the engine's feature columns equal the scan's state after the series, and
    its error scale (the step scale before each point) the scan's per-point scale, bit for
    bit."""
    engine = build_engine(Settings(scoring={"learn_from_anomalies": True, "max_skipped_points": 0}))
    rng = np.random.default_rng(5)
    series = {
        "irregular": _irregular(400, seed=3),
        "regular": (_regular(250, T0 + 7.0), _smooth(250, seed=4)),
        "fast": (T0 + np.cumsum(rng.uniform(0.001, 0.01, 300)), rng.normal(0.0, 1e-9, 300)),
    }
    done = dict.fromkeys(series, 0)
    scales: dict[str, list[np.ndarray]] = {name: [] for name in series}
    while any(done[name] < len(ts) for name, (ts, _) in series.items()):
        batch = []
        for name, (ts, values) in series.items():
            end = min(done[name] + int(rng.integers(1, 30)), len(ts))
            if end > done[name]:
                batch.append(_window(name, ts[done[name] : end], values[done[name] : end]))
                done[name] = end
        result = engine.process(batch)
        assert not result.rejections
        for name in {m.series for m in batch}:
            scales[name].append(result.error_scale[result.slot == engine.table.slot_of(name)])

    for name, (ts, values) in series.items():
        grid, after = _scan_one(ts, values)
        assert engine.normaliser_alpha == ALPHA
        slot = engine.table.slot_of(name)
        assert slot is not None
        np.testing.assert_array_equal(np.concatenate(scales[name]), grid.scale[0], err_msg=name)
        for column in FeatureState._fields:
            assert engine.table.column(column)[slot] == getattr(after, column)[0], (name, column)


# --- engine: points that do not move their series forward ------------------------------------


def _window(
    series: str, ts: Sequence[float] | np.ndarray, values: Sequence[float] | np.ndarray
) -> DecodedMessage:
    return DecodedMessage(series, [float(t) for t in ts], [float(v) for v in values], None)


def _reasons(result: EngineBatchResult) -> list[tuple[int, str, str | None]]:
    return sorted((i, r.reason, r.series) for i, r in result.rejections)


def test_engine_drops_out_of_order_points_inside_one_window_of_a_new_series() -> None:
    engine = build_engine(Settings())
    result = engine.process([_window("new", [30.0, 20.0, 40.0, 10.0, 40.0], [1, 2, 3, 4, 5])])
    assert _reasons(result) == [
        (0, "duplicate_timestamp", "new"),
        (0, "out_of_order", "new"),
        (0, "out_of_order", "new"),
    ]
    assert result.ts.tolist() == [30.0, 40.0]
    assert result.value.tolist() == [1.0, 3.0]
    slot = engine.table.slot_of("new")
    assert slot is not None
    assert engine.table.column("count")[slot] == 2
    assert engine.table.column("last_ts")[slot] == 40.0


def test_engine_drops_a_duplicate_of_the_last_point_of_the_previous_batch() -> None:
    clean, noisy = build_engine(Settings()), build_engine(Settings())
    ts, values = _regular(5), _smooth(5)
    for engine in (clean, noisy):
        engine.process([_window("a", ts, values)])
    expected = clean.process([_window("a", [T0 + 5 * STEP], [5.5])])
    got = noisy.process([_window("a", [ts[-1], ts[-2], T0 + 5 * STEP], [99.0, -99.0, 5.5])])
    assert _reasons(got) == [(0, "duplicate_timestamp", "a"), (0, "out_of_order", "a")]
    assert got.ts.tolist() == [T0 + 5 * STEP]
    np.testing.assert_allclose(got.forecast, expected.forecast, atol=1e-6, rtol=0)
    np.testing.assert_array_equal(noisy.hidden_state("a"), clean.hidden_state("a"))


def test_engine_rejection_detail_names_the_timestamp_and_the_latest() -> None:
    engine = build_engine(Settings())
    engine.process([_window("a", [100.0], [1.0])])
    result = engine.process([_window("a", [90.0], [1.0])])
    ((index, rejection),) = result.rejections
    assert index == 0 and rejection.reason == "out_of_order"
    assert "90.0" in rejection.detail and "100.0" in rejection.detail
    assert len(result) == 0
