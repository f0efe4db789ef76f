"""The fused kernel against the engine's column-by-column reference path.

Both paths must produce the same forecasts, scores, alerts and per-series state for every
configuration the kernel serves: each calibrator, seasonal deflation and level novelty on and
off, learning from anomalies or not, GRU-D decay, stacked layers, several model groups, and
k-step forecasts. The model runs in float32 with another summation order and a rational
tanh, so numbers agree to about 1e-5, not bit for bit.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import pytest
from scipy.special import log_ndtr as scipy_log_ndtr

from streamrnn.config import Settings
from streamrnn.decode import DecodedMessage
from streamrnn.engine.build import build_engine
from streamrnn.engine.engine import Engine, EngineBatchResult
from streamrnn.engine.fused import CHUNKS_PER_THREAD, MAX_CHUNK_ROWS, MIN_CHUNK_POINTS
from streamrnn.engine.kernel import _tanh, _time_of, log_ndtr

T0 = 1_700_000_000.0
SERIES = 40


def _batches(seed: int, batches: int = 12, messages: int = 300) -> list[list[DecodedMessage]]:
    """Irregularly sampled series with daily rhythm, noise, rare gaps, spikes and a level
    shift, as single points and short windows mixed."""
    rng = np.random.default_rng(seed)
    last = np.full(SERIES, T0)
    level = rng.uniform(1.0, 500.0, SERIES)
    out = []
    for b in range(batches):
        batch = []
        for _ in range(messages):
            k = int(rng.integers(SERIES))
            ts, values = [], []
            for _ in range(int(rng.choice([1, 1, 1, 2, 5]))):
                gap = rng.uniform(20.0, 90.0) * (40.0 if rng.random() < 0.01 else 1.0)
                last[k] += gap
                value = level[k] * (1.0 + 0.1 * np.sin(2 * np.pi * last[k] / 86_400.0))
                value += rng.normal(0.0, 0.02 * level[k])
                if rng.random() < 0.01:
                    value += rng.choice([-1.0, 1.0]) * 2.0 * level[k]
                if b >= batches // 2 and k % 7 == 0:
                    value += 0.5 * level[k]
                ts.append(float(last[k]))
                values.append(float(value))
            batch.append(DecodedMessage(f"svc{k % 3}.series{k}", ts, values, None))
        out.append(batch)
    return out


def _twins(**sections: Any) -> tuple[Engine, Engine]:
    model = {"pretrained": False, **sections.pop("model", {})}
    fused = build_engine(Settings(model={**model, "fused_kernel": True}, **sections))
    reference = build_engine(Settings(model={**model, "fused_kernel": False}, **sections))
    assert fused.fused and not reference.fused
    return fused, reference


def _assert_same(a: EngineBatchResult, b: EngineBatchResult) -> None:
    np.testing.assert_array_equal(a.message_index, b.message_index)
    np.testing.assert_array_equal(a.slot, b.slot)
    np.testing.assert_array_equal(a.group, b.group)
    np.testing.assert_allclose(a.forecast, b.forecast, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(a.spread, b.spread, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(a.error_scale, b.error_scale, rtol=1e-9)
    np.testing.assert_allclose(a.score, b.score, atol=1e-5)
    np.testing.assert_allclose(a.armed_score, b.armed_score, atol=1e-5)
    np.testing.assert_array_equal(a.severity, b.severity)


def _assert_same_state(a: Engine, b: Engine) -> None:
    assert a.table.names() == b.table.names()
    n = len(a.table)
    for name in a.table.column_names():
        x, y = a.table.column(name)[:n], b.table.column(name)[:n]
        if x.dtype.kind == "f":
            np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-5, err_msg=name)
        else:
            np.testing.assert_array_equal(x, y, err_msg=name)


CASES: dict[str, dict[str, Any]] = {
    "defaults": {},
    "tail": {"scoring": {"calibration": "tail"}},
    "evt": {"scoring": {"calibration": "evt", "warmup_points": 5}},
    "no seasonal, no novelty": {
        "scoring": {"seasonal_deflation": False, "min_novelty": 0, "novelty_cooldown_factor": 0}
    },
    "learn from anomalies, m of n, cooldown points": {
        "scoring": {
            "learn_from_anomalies": True,
            "alert": {"min_hits": 2, "window_points": 3, "cooldown_points": 5, "cooldown_s": 0},
        }
    },
    "decay, two layers": {"model": {"decay": True, "num_layers": 2, "hidden_size": 16}},
    "no time-delta features, no decay": {
        "model": {"decay": False, "time_delta_features": False, "hidden_size": 24}
    },
    "groups and k-step forecasts": {
        "model": {
            "groups": [
                {"name": "svc0", "pattern": "svc0.*"},
                {"name": "svc1", "pattern": "svc1.*"},
            ],
            "horizon_points": 3,
        }
    },
}


@pytest.mark.parametrize("case", list(CASES))
def test_fused_kernel_matches_the_column_path(case: str) -> None:
    fused, reference = _twins(**CASES[case])
    severities = 0
    for batch in _batches(seed=len(case)):
        a, b = fused.process(batch), reference.process(batch)
        _assert_same(a, b)
        if b.horizon is not None:
            assert a.horizon is not None and a.horizon_slots is not None
            assert b.horizon_slots is not None
            order_a, order_b = np.argsort(a.horizon_slots), np.argsort(b.horizon_slots)
            for field in ("ts", "mean", "spread"):
                np.testing.assert_allclose(
                    getattr(a.horizon, field)[order_a],
                    getattr(b.horizon, field)[order_b],
                    rtol=1e-4,
                    atol=1e-6,
                )
        severities += int((b.severity > 0).sum())
    _assert_same_state(fused, reference)
    assert severities > 0, "the data must raise alerts, or the rule is not exercised"


def test_shipped_model_runs_fused_by_default() -> None:
    assert build_engine(Settings()).fused


def test_lstm_falls_back_to_the_column_path() -> None:
    engine = build_engine(Settings(model={"pretrained": False, "cell": "lstm"}))
    assert not engine.fused
    result = engine.process(_batches(seed=3, batches=1, messages=50)[0])
    assert np.isfinite(result.forecast).any()


def test_log_ndtr_matches_scipy_far_into_both_tails() -> None:
    for x in np.concatenate([np.linspace(-60, 40, 20_001), [-1e3, -25.0, -20.0, 6.0, 1e3]]):
        expected = float(scipy_log_ndtr(x))
        assert log_ndtr(float(x)) == pytest.approx(expected, rel=1e-9, abs=1e-300), x


def test_rational_tanh_is_within_float32_noise() -> None:
    x = np.linspace(-20.0, 20.0, 400_001, dtype=np.float32)
    approx = np.array([_tanh(v) for v in x[::97]], dtype=np.float64)
    np.testing.assert_allclose(approx, np.tanh(x[::97].astype(np.float64)), atol=4e-7)


@pytest.mark.skipif(
    bool(os.environ.get("OPENBLAS_CORETYPE")),
    reason="with OPENBLAS_CORETYPE forced (a workaround some machines set for old OpenBLAS"
    " builds), OpenBLAS's sgemm is not row-invariant: one row's product changes with the"
    " number of rows (measured: X[:m] @ W != (X @ W)[:m] for m = 1..100), so forecasts"
    " differ in the last float32 bits with the batch",
)
@pytest.mark.parametrize("most_others", [40, 700])
def test_a_series_forecasts_do_not_depend_on_the_other_series_of_its_batches(
    most_others: int,
) -> None:
    """A restart replays the same points in other batches: a series' results must be
    bit-identical whether it is stepped alone (one-row matrix products) or with others
    (700: batches split into work units of at most ``MAX_CHUNK_ROWS`` rows)."""
    alone = build_engine(Settings())
    crowded = build_engine(Settings())
    rng = np.random.default_rng(11)
    ts = T0 + np.cumsum(rng.uniform(20.0, 60.0, 200))
    values = 100.0 + np.cumsum(rng.normal(0.0, 1.0, 200))
    mine_alone, mine_crowded = [], []
    for i in range(0, 200, 4):
        window = DecodedMessage("mine", ts[i : i + 4].tolist(), values[i : i + 4].tolist(), None)
        mine_alone.append(alone.process([window]).forecast)
        others = [
            DecodedMessage(f"other{k}", [float(ts[i]) + k], [float(k + rng.normal())], None)
            for k in range(int(rng.integers(1, most_others)))
        ]
        result = crowded.process([*others, window])
        mine_crowded.append(result.forecast[result.message_index == len(others)])
    np.testing.assert_array_equal(np.concatenate(mine_alone), np.concatenate(mine_crowded))


def test_work_units_hold_at_most_max_chunk_rows_series() -> None:
    """Single points of many series are split by rows (cache-sized buffers), few series
    with many points by points, and a small batch stays one unit."""
    stepper = build_engine(Settings())._fused
    assert stepper is not None
    one_each = stepper._chunks(np.ones(1000, dtype=np.int64))
    assert np.diff(one_each).max() <= MAX_CHUNK_ROWS
    assert one_each[0] == 0 and one_each[-1] == 1000
    windows = stepper._chunks(np.full(100, 64, dtype=np.int64))
    assert len(windows) - 1 == min(stepper.threads * CHUNKS_PER_THREAD, 6400 // MIN_CHUNK_POINTS)
    assert stepper._chunks(np.ones(200, dtype=np.int64)).tolist() == [0, 200]


def test_time_of_day_and_week_equals_the_float_remainder() -> None:
    rng = np.random.default_rng(5)
    day, week = 86_400.0, 604_800.0
    ts = np.concatenate(
        [
            rng.uniform(0.0, 2.5e9, 20_000),
            np.round(rng.uniform(1.6e9, 1.8e9, 20_000), 3),  # millisecond stamps
            np.arange(19_000, 19_100) * day,  # midnights
            np.arange(19_000, 19_100) * day - 0.001,
            np.arange(2_700, 2_800) * week + 0.001,
        ]
    )
    for t in ts.tolist():
        assert _time_of(t, day) == t % day, t
        assert _time_of(t, week) == t % week, t
