"""The detection engine: per-series state, batching equivalences, rejections, warm-up, alerts."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest
import torch

from streamrnn.config import Settings
from streamrnn.decode import DecodedMessage
from streamrnn.engine.build import build_engine
from streamrnn.engine.engine import Engine, EngineBatchResult

T0 = 1_700_000_000.0
STEP = 10.0
ATOL = 1e-5


def _engine(**sections: Any) -> Engine:
    return build_engine(Settings(**sections))


def _point(series: str, ts: float, value: float) -> DecodedMessage:
    return DecodedMessage(series, [float(ts)], [float(value)], None)


def _window(series: str, ts: Sequence[float], values: Sequence[float]) -> DecodedMessage:
    return DecodedMessage(series, [float(t) for t in ts], [float(v) for v in values], None)


def _smooth(n: int, seed: int = 0, level: float = 5.0, noise: float = 0.05) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return level + np.sin(np.arange(n) / 4.0) + noise * rng.standard_normal(n)


def _times(n: int, start: float = T0) -> np.ndarray:
    return start + STEP * np.arange(n)


def _of_series(result: EngineBatchResult, messages: Sequence[DecodedMessage], series: str) -> Any:
    """Rows of ``result`` that belong to ``series`` (in time order)."""
    mask = np.array([messages[i].series == series for i in result.message_index], dtype=bool)
    return {
        name: getattr(result, name)[mask]
        for name in ("ts", "value", "forecast", "spread", "score", "severity")
    }


def _concat(results: Sequence[EngineBatchResult], name: str) -> np.ndarray:
    return np.concatenate([getattr(r, name) for r in results])


# --- hidden state --------------------------------------------------------------------------


def test_hidden_state_is_none_for_a_series_never_seen() -> None:
    assert _engine().hidden_state("nobody") is None


def test_hidden_state_survives_between_batches_and_moves_with_each_batch() -> None:
    engine = _engine()
    engine.process([_window("a", _times(5), _smooth(5))])
    first = engine.hidden_state("a")
    assert first is not None and first.shape == (1, 64)
    assert np.abs(first).max() > 0
    # Still there, unchanged, when nothing happened in between.
    np.testing.assert_array_equal(engine.hidden_state("a"), first)
    engine.process([_point("a", T0 + 5 * STEP, 5.5)])
    second = engine.hidden_state("a")
    assert second is not None
    assert not np.allclose(first, second)


def test_hidden_state_is_kept_per_series() -> None:
    engine = _engine()
    engine.process([_window("a", _times(10), _smooth(10, seed=1)), _point("b", T0, 100.0)])
    state_a, state_b = engine.hidden_state("a"), engine.hidden_state("b")
    assert state_a is not None and state_b is not None
    assert not np.allclose(state_a, state_b)


def test_series_absent_from_a_batch_keeps_its_state_untouched() -> None:
    engine = _engine()
    engine.process([_window("a", _times(6), _smooth(6)), _window("b", _times(6), _smooth(6, 2))])
    before = engine.hidden_state("b")
    engine.process([_point("a", T0 + 6 * STEP, 4.0), _point("c", T0, 1.0)])
    np.testing.assert_array_equal(engine.hidden_state("b"), before)


def test_returned_hidden_state_is_a_copy() -> None:
    engine = _engine()
    engine.process([_point("a", T0, 1.0)])
    state = engine.hidden_state("a")
    assert state is not None
    state[:] = 123.0
    assert not np.allclose(engine.hidden_state("a"), 123.0)


def test_series_with_different_histories_forecast_the_same_next_point_differently() -> None:
    engine = _engine()
    # Same last value (5.0) and same timestamps, different paths to it.
    up = np.linspace(1.0, 5.0, 12)
    wavy = 5.0 + np.sin(np.arange(12) * 1.3)
    wavy[-1] = 5.0
    engine.process([_window("up", _times(12), up), _window("wavy", _times(12), wavy)])
    nxt = T0 + 12 * STEP
    batch = [_point("up", nxt, 5.0), _point("wavy", nxt, 5.0)]
    result = engine.process(batch)
    forecast_up = _of_series(result, batch, "up")["forecast"]
    forecast_wavy = _of_series(result, batch, "wavy")["forecast"]
    assert np.isfinite(forecast_up).all() and np.isfinite(forecast_wavy).all()
    assert not np.allclose(forecast_up, forecast_wavy, atol=ATOL)


def test_engines_built_with_the_same_seed_agree_and_keep_the_global_rng() -> None:
    torch.manual_seed(1234)
    expected_rng = torch.random.get_rng_state()
    first, second = _engine(), _engine()
    assert torch.equal(torch.random.get_rng_state(), expected_rng)
    batch = [_window("a", _times(20), _smooth(20))]
    forecast = first.process(batch).forecast
    np.testing.assert_array_equal(second.process(batch).forecast, forecast)
    reseeded = _engine(model={"seed": 1})
    assert not np.allclose(reseeded.process(batch).forecast[1:], forecast[1:], atol=ATOL)
    assert reseeded.model_version != first.model_version


# --- batching equivalences -----------------------------------------------------------------


@pytest.mark.parametrize("layers", [1, 3])
@pytest.mark.parametrize("chunk", [1, 7, 25])
def test_points_in_chunks_of_batches_match_one_window_of_all_points(
    chunk: int, layers: int
) -> None:
    n = 50
    ts, values = _times(n), _smooth(n, seed=3)
    values[40] += 8.0  # a spike, so some points alert
    settings: dict[str, Any] = {
        # Tail calibration: a single spike alerts at once (the default likelihood averages).
        "scoring": {"warmup_points": 10, "calibration": "tail"},
        "model": {"num_layers": layers, "hidden_size": 64 if layers == 1 else 16},
    }

    whole = _engine(**settings)
    one = whole.process([_window("a", ts, values)])

    stepped = _engine(**settings)
    parts = [
        stepped.process([_window("a", ts[i : i + chunk], values[i : i + chunk])])
        for i in range(0, n, chunk)
    ]

    for name in ("forecast", "spread", "score"):
        np.testing.assert_allclose(_concat(parts, name), getattr(one, name), atol=ATOL, rtol=0)
    np.testing.assert_array_equal(_concat(parts, "severity"), one.severity)
    assert one.severity.max() > 0
    np.testing.assert_allclose(stepped.hidden_state("a"), whole.hidden_state("a"), atol=ATOL)


def test_single_point_messages_of_one_batch_match_one_window_message() -> None:
    n = 20
    ts, values = _times(n), _smooth(n, seed=4)
    as_window = _engine().process([_window("a", ts, values)])
    messages = [_point("a", t, v) for t, v in zip(ts, values, strict=True)]
    as_points = _engine().process(messages)
    np.testing.assert_array_equal(as_points.message_index, np.arange(n))
    np.testing.assert_allclose(as_points.forecast, as_window.forecast, atol=ATOL, rtol=0)
    np.testing.assert_allclose(as_points.score, as_window.score, atol=ATOL, rtol=0)


def test_several_series_in_one_batch_match_each_series_processed_alone() -> None:
    # Different lengths (padded/packed step), scales and sampling intervals.
    histories = {
        "cpu": (_times(30), _smooth(30, seed=5)),
        "bytes": (_times(7, T0 + 3.0), 1e6 * _smooth(7, seed=6)),
        "tiny": (T0 + 60.0 * np.arange(15), 1e-3 * _smooth(15, seed=7)),
        "single": (np.array([T0]), np.array([42.0])),
    }
    together = _engine()
    alone = {name: _engine() for name in histories}

    # Two rounds so the stored hidden states are exercised too.
    for round_ in range(2):
        batch: list[DecodedMessage] = []
        for name, (ts, values) in histories.items():
            shift = round_ * 10_000.0
            half = max(1, len(ts) // 2)
            # Interleave: a window, then single points, of each series.
            batch.append(_window(name, ts[:half] + shift, values[:half]))
            batch.extend(
                _point(name, t + shift, v) for t, v in zip(ts[half:], values[half:], strict=True)
            )
        # Shuffle the messages across series, keeping each series' own order.
        rng = np.random.default_rng(round_)
        queues = {name: [m for m in batch if m.series == name] for name in histories}
        shuffled = [queues[batch[i].series].pop(0) for i in rng.permutation(len(batch)).tolist()]

        result = together.process(shuffled)
        assert not result.rejections
        for name in histories:
            solo_batch = [m for m in shuffled if m.series == name]
            solo = alone[name].process(solo_batch)
            mixed = _of_series(result, shuffled, name)
            np.testing.assert_array_equal(mixed["ts"], solo.ts)
            for field in ("forecast", "spread", "score"):
                np.testing.assert_allclose(
                    mixed[field], getattr(solo, field), atol=ATOL, rtol=1e-6, err_msg=name
                )
            np.testing.assert_allclose(
                together.hidden_state(name), alone[name].hidden_state(name), atol=ATOL
            )


def test_latest_labels_are_kept_per_series() -> None:
    engine = _engine()
    engine.process(
        [
            DecodedMessage("a", [T0], [1.0], {"host": "web-1"}),
            DecodedMessage("b", [T0], [1.0], {"host": "db-1"}),
        ]
    )
    engine.process([DecodedMessage("a", [T0 + STEP], [1.0], {"host": "web-2"})])
    engine.process([_point("b", T0 + STEP, 1.0)])  # no labels: keep the known ones
    slot_a, slot_b = engine.table.slot_of("a"), engine.table.slot_of("b")
    assert slot_a is not None and slot_b is not None
    assert engine.table.labels_of(slot_a) == {"host": "web-2"}
    assert engine.table.labels_of(slot_b) == {"host": "db-1"}


# --- rejections ----------------------------------------------------------------------------


def test_out_of_order_and_duplicate_points_are_rejected_and_the_rest_processed() -> None:
    engine = _engine()
    engine.process([_window("a", [100.0, 110.0], [1.0, 2.0])])
    batch = [
        _point("a", 50.0, 9.0),  # 0: before the series' latest (110)
        _point("a", 110.0, 9.0),  # 1: same as the series' latest
        _point("b", 5.0, 1.0),  # 2: a new series
        _window("a", [120.0, 115.0, 120.0, 130.0], [3.0, 9.0, 9.0, 4.0]),  # 3
        _point("b", 5.0, 7.0),  # 4: duplicate inside the batch
        _point("b", 6.0, 2.0),  # 5
    ]
    result = engine.process(batch)
    reasons = sorted((i, r.reason, r.series) for i, r in result.rejections)
    assert reasons == [
        (0, "out_of_order", "a"),
        (1, "duplicate_timestamp", "a"),
        (3, "duplicate_timestamp", "a"),
        (3, "out_of_order", "a"),
        (4, "duplicate_timestamp", "b"),
    ]
    assert all("timestamp" in r.detail for _, r in result.rejections)
    accepted = sorted(zip(result.message_index.tolist(), result.ts.tolist(), strict=True))
    assert accepted == [(2, 5.0), (3, 120.0), (3, 130.0), (5, 6.0)]
    np.testing.assert_array_equal(_of_series(result, batch, "a")["value"], [3.0, 4.0])


def test_rejected_points_leave_no_trace_in_the_series_state() -> None:
    clean, noisy = _engine(), _engine()
    for engine in (clean, noisy):
        engine.process([_window("a", _times(5), _smooth(5))])
    good = [_point("a", T0 + 5 * STEP, 5.2), _point("a", T0 + 6 * STEP, 5.1)]
    bad = [_point("a", T0, 99.0), _point("a", T0 + 4 * STEP, -99.0)]
    expected = clean.process(good)
    got = noisy.process([bad[0], good[0], bad[1], good[1]])
    assert len(got.rejections) == 2
    np.testing.assert_allclose(got.forecast, expected.forecast, atol=ATOL, rtol=0)
    np.testing.assert_allclose(noisy.hidden_state("a"), clean.hidden_state("a"), atol=ATOL)


def test_series_limit_rejects_new_series_while_known_series_continue() -> None:
    engine = _engine(series={"max_series": 2})
    engine.process([_point("a", T0, 1.0), _point("b", T0, 2.0)])
    batch = [_point("a", T0 + 1, 1.1), _point("c", T0, 3.0), _point("b", T0 + 1, 2.1)]
    result = engine.process(batch)
    assert [(i, r.reason, r.series) for i, r in result.rejections] == [(1, "series_limit", "c")]
    assert "2" in result.rejections[0][1].detail
    assert sorted(result.message_index.tolist()) == [0, 2]
    assert engine.hidden_state("c") is None
    assert engine.hidden_state("a") is not None


def test_series_limit_applies_within_the_first_batch() -> None:
    engine = _engine(series={"max_series": 1})
    batch = [_point("a", T0, 1.0), _point("b", T0, 1.0), _point("a", T0 + 1, 2.0)]
    result = engine.process(batch)
    assert [(i, r.reason) for i, r in result.rejections] == [(1, "series_limit")]
    assert result.message_index.tolist() == [0, 2]


def test_empty_batch_gives_an_empty_result() -> None:
    result = _engine().process([])
    assert len(result) == 0
    assert result.rejections == []


def test_states_survive_when_the_series_table_grows() -> None:
    engine = _engine(model={"hidden_size": 8})
    first = [_point(f"s{i}", T0, float(i)) for i in range(1000)]
    engine.process(first)
    before = engine.hidden_state("s7")
    more = [_point(f"s{i}", T0, float(i)) for i in range(1000, 1100)]
    result = engine.process(more)
    assert not result.rejections
    np.testing.assert_array_equal(engine.hidden_state("s7"), before)
    follow_up = engine.process([_point("s7", T0 + STEP, 7.5), _point("s1050", T0 + STEP, 1.0)])
    assert np.isfinite(follow_up.forecast).all()


# --- forecasts, warm-up and alerts ---------------------------------------------------------


def test_first_point_of_a_series_has_no_forecast_and_scores_zero() -> None:
    batch = [_window("a", _times(3), [1.0, 2.0, 3.0]), _point("b", T0, 5.0)]
    result = _engine().process(batch)
    a = _of_series(result, batch, "a")
    assert np.isnan(a["forecast"][0]) and np.isnan(a["spread"][0])
    assert a["score"][0] == 0
    assert np.isfinite(a["forecast"][1:]).all() and (a["spread"][1:] > 0).all()
    b = _of_series(result, batch, "b")
    assert np.isnan(b["forecast"]).all() and np.isnan(b["spread"]).all()
    assert (b["score"] == 0).all() and (b["severity"] == 0).all()


def test_no_alerts_during_warm_up_even_for_wild_points() -> None:
    warmup = 30
    values = _smooth(warmup + 5)
    values[[5, 12, 20, 29]] = [1e4, -1e4, 5e5, -3e3]
    result = _engine(scoring={"warmup_points": warmup}).process(
        [_window("a", _times(len(values)), values)]
    )
    assert (result.score[:warmup] == 0).all()
    assert (result.severity[:warmup] == 0).all()


def test_warm_up_counts_points_across_batches() -> None:
    engine = _engine(scoring={"warmup_points": 10, "calibration": "tail"})
    values = _smooth(9)
    engine.process([_window("a", _times(9), values)])
    # The 10th point has seen 9 before it: still warm-up.
    assert engine.process([_point("a", T0 + 9 * STEP, 1e6)]).severity[0] == 0
    # The 11th point has seen 10 before it: judged.
    result = engine.process([_point("a", T0 + 10 * STEP, -1e6)])
    assert result.score[0] > 0


def test_large_spike_after_a_smooth_warm_up_is_critical() -> None:
    engine = _engine()  # default warm-up (30 points) and thresholds
    n = 60
    warm = engine.process([_window("a", _times(n), _smooth(n))])
    assert (warm.severity == 0).all()
    spike = engine.process([_point("a", T0 + n * STEP, 50.0)])
    assert spike.score[0] > 0.999
    assert spike.severity[0] > 0
    assert spike.severity[0] == 2  # far beyond the critical threshold


@pytest.mark.parametrize(
    ("level", "noise"),
    [
        pytest.param(1e-3, 1e-5, id="tiny"),
        pytest.param(1e6, 1e3, id="huge"),
        pytest.param(5.0, 0.0, id="flat"),
        pytest.param(0.0, 0.0, id="flat-zero"),
        pytest.param(-2e4, 0.0, id="flat-negative"),
    ],
)
def test_forecasts_are_finite_for_any_scale_and_for_flat_series(level: float, noise: float) -> None:
    n = 50
    values = level + noise * np.random.default_rng(0).standard_normal(n)
    engine = _engine()
    result = engine.process([_window("a", _times(n), values)])
    more = engine.process([_point("a", T0 + n * STEP, values[-1])])
    for r in (result, more):
        forecast, spread = r.forecast[r.ts > T0], r.spread[r.ts > T0]
        assert np.isfinite(forecast).all() and np.isfinite(spread).all()
        assert (spread > 0).all()
        assert np.isfinite(r.score).all() and ((r.score >= 0) & (r.score <= 1)).all()
    # An untrained model forecasts close to the last value (persistence skip connection).
    tolerance = max(abs(level), 1.0) * 0.5 if noise else max(abs(level), 1.0) * 1e-2
    assert abs(more.forecast[0] - values[-1]) <= tolerance


def test_mixed_scale_series_in_one_batch_stay_finite() -> None:
    n = 40
    batch = [
        _window("tiny", _times(n), 1e-3 * _smooth(n, seed=1)),
        _window("huge", _times(n), 1e6 * _smooth(n, seed=2)),
        _window("flat", _times(n), np.full(n, 3.0)),
    ]
    result = _engine().process(batch)
    later = result.ts > T0
    assert np.isfinite(result.forecast[later]).all()
    assert np.isfinite(result.spread[later]).all()
    assert np.isfinite(result.score).all()
