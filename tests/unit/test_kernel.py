"""The compiled batch kernel: work units, threads, model groups, batch independence, and the
scalar arithmetic it is built from (log_ndtr, the rational tanh, the time of day).

The kernel's forecasts against the torch model are held by ``test_model_export.py``, its
features against the training path's scan by ``test_forecast_features.py``.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from scipy.special import log_ndtr as scipy_log_ndtr

from streamrnn.config import Settings
from streamrnn.decode import DecodedMessage
from streamrnn.engine import stepper as stepper_module
from streamrnn.engine.build import build_engine
from streamrnn.engine.engine import Engine, EngineBatchResult
from streamrnn.engine.stepper import CHUNKS_PER_THREAD, MAX_CHUNK_ROWS, MIN_CHUNK_POINTS
from streamrnn.forecast import artifact
from streamrnn.forecast.gru import ModelSpec, RecurrentForecaster
from streamrnn.stages.activations import tanh
from streamrnn.stages.features import time_of
from streamrnn.stages.tail_probability import log_ndtr

T0 = 1_700_000_000.0
SERIES = 40
#: Per-point results of a batch, compared between engines.
FIELDS = ("forecast", "spread", "score", "armed_score", "severity", "error_scale")

#: With OPENBLAS_CORETYPE forced, a row's sgemm product depends on the rows beside it.
ROW_VARIANT_BLAS = bool(os.environ.get("OPENBLAS_CORETYPE"))
ROW_VARIANT_REASON = (
    "with OPENBLAS_CORETYPE forced (a workaround some machines set for old OpenBLAS"
    " builds), OpenBLAS's sgemm is not row-invariant: one row's product changes with the"
    " number of rows (measured: X[:m] @ W != (X @ W)[:m] for m = 1..100), so forecasts"
    " differ in the last float32 bits with the batch"
)


def _batches(
    seed: int, batches: int = 12, messages: int = 300, series: int = SERIES
) -> list[list[DecodedMessage]]:
    """Irregularly sampled series with daily rhythm, noise, rare gaps, spikes and a level
    shift, as single points and short windows mixed."""
    rng = np.random.default_rng(seed)
    last = np.full(series, T0)
    level = rng.uniform(1.0, 500.0, series)
    out = []
    for b in range(batches):
        batch = []
        for _ in range(messages):
            k = int(rng.integers(series))
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


def _per_series(engine: Engine, results: list[EngineBatchResult]) -> dict[str, dict[str, Any]]:
    """Each series' per-point results over ``results`` (time order), by series name."""
    parts: dict[str, dict[str, list[np.ndarray]]] = {}
    for result in results:
        for slot in np.unique(result.slot).tolist():
            rows = result.slot == slot
            mine = parts.setdefault(engine.table.name_of(slot), {f: [] for f in FIELDS})
            for name in FIELDS:
                mine[name].append(getattr(result, name)[rows])
    return {s: {f: np.concatenate(v) for f, v in d.items()} for s, d in parts.items()}


def _series_columns(engine: Engine, series: str, state_column: str) -> dict[str, np.ndarray]:
    """A series' row of every column but the other groups' recurrent states, by column
    name (the series' own state column as ``state``)."""
    slot = engine.table.slot_of(series)
    assert slot is not None
    out = {}
    for name in engine.table.column_names():
        if name == state_column:
            out["state"] = engine.table.column(name)[slot]
        elif not name.startswith("state.") and name != "group":
            out[name] = engine.table.column(name)[slot]
    return out


# --- work units --------------------------------------------------------------------------------


def test_work_units_hold_at_most_max_chunk_rows_series() -> None:
    """Single points of many series are split by rows (cache-sized buffers), few series
    with many points by points, and a small batch stays one unit."""
    stepper = build_engine(Settings())._stepper
    one_each = stepper._chunks(np.ones(1000, dtype=np.int64))
    assert np.diff(one_each).max() <= MAX_CHUNK_ROWS
    assert one_each[0] == 0 and one_each[-1] == 1000
    windows = stepper._chunks(np.full(100, 64, dtype=np.int64))
    assert len(windows) - 1 == min(stepper.threads * CHUNKS_PER_THREAD, 6400 // MIN_CHUNK_POINTS)
    assert stepper._chunks(np.ones(200, dtype=np.int64)).tolist() == [0, 200]


def test_work_units_cover_every_row_once_with_about_equal_points() -> None:
    stepper = build_engine(Settings(model={"kernel_threads": 2}))._stepper
    lengths = np.random.default_rng(1).integers(1, 200, 300)
    bounds = stepper._chunks(lengths)
    assert bounds[0] == 0 and bounds[-1] == len(lengths)
    assert (np.diff(bounds) > 0).all()
    points = np.add.reduceat(lengths, bounds[:-1])
    assert len(points) == min(
        stepper.threads * CHUNKS_PER_THREAD, lengths.sum() // MIN_CHUNK_POINTS
    )
    # Rows are whole series: a unit is off the even share by less than its longest series.
    assert np.abs(points - lengths.sum() / len(points)).max() < lengths.max()


# --- threads ---------------------------------------------------------------------------------


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="one core: the kernel runs one thread")
@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_two_threads_give_the_same_results_and_state_as_one(
    cell: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Batches of at least 2 x MIN_CHUNK_POINTS points run their work units on two
    threads; the results must not depend on it (with row-invariant BLAS, bit for bit: the
    units differ with the thread count, and a product's rows do not see each other)."""
    model: dict[str, Any] = {"cell": cell, "hidden_size": 16, "num_layers": 2}
    one = build_engine(Settings(model={**model, "kernel_threads": 1}))
    two = build_engine(Settings(model={**model, "kernel_threads": 2}))
    assert one._stepper.threads == 1 and two._stepper.threads == 2

    threads_used: set[str] = set()
    step_chunk: Callable[..., None] = stepper_module._STEP_CHUNK

    def recording(*args: Any) -> None:
        threads_used.add(threading.current_thread().name)
        step_chunk(*args)

    monkeypatch.setattr(stepper_module, "_STEP_CHUNK", recording)
    results_one, results_two = [], []
    for batch in _batches(seed=2, batches=4, messages=3500, series=400):
        # Parallel, and more units on two threads than on one (CHUNKS_PER_THREAD each).
        points = sum(len(m.ts) for m in batch)
        assert points >= 2 * MIN_CHUNK_POINTS
        assert points // MIN_CHUNK_POINTS > CHUNKS_PER_THREAD
        results_one.append(one.process(batch))
        results_two.append(two.process(batch))
    assert any(name.startswith("kernel") for name in threads_used), threads_used

    def compare(a: np.ndarray, b: np.ndarray, err_msg: str) -> None:
        if ROW_VARIANT_BLAS:  # the last bits may differ (see ROW_VARIANT_REASON)
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6, err_msg=err_msg)
        else:
            np.testing.assert_array_equal(a, b, err_msg=err_msg)

    for a, b in zip(results_one, results_two, strict=True):
        np.testing.assert_array_equal(a.slot, b.slot)
        np.testing.assert_array_equal(a.message_index, b.message_index)
        for name in FIELDS:
            compare(getattr(a, name), getattr(b, name), err_msg=name)
    assert one.table.names() == two.table.names()
    n = len(one.table)
    for name in one.table.column_names():
        compare(one.table.column(name)[:n], two.table.column(name)[:n], err_msg=name)


# --- model groups of different architectures -------------------------------------------------


def _save(path: Path, spec: ModelSpec, seed: int, alpha: float) -> None:
    """An artifact of a model with seeded, perturbed weights (so it is no near-persistence
    model like a fresh one)."""
    torch.manual_seed(seed)
    model = RecurrentForecaster(spec)
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.2 * torch.randn(p.shape, generator=generator))
    artifact.save(path, model, alpha, {}, version=f"{spec.cell}-{seed}")


def test_groups_of_different_architectures_each_match_an_engine_serving_only_their_model(
    tmp_path: Path,
) -> None:
    """An LSTM group, a deep GRU group without decay (both from artifacts) and the global
    GRU in one engine: every series' results, k-step forecasts and state are those of an
    engine that serves only its group's model."""
    alpha = Settings().series.normaliser_alpha
    lstm, deep = tmp_path / "lstm.pt", tmp_path / "deep.pt"
    _save(lstm, ModelSpec(cell="lstm", hidden_size=8, num_layers=2), 3, alpha)
    _save(deep, ModelSpec(cell="gru", hidden_size=12, num_layers=3, decay=False), 5, alpha)
    common: dict[str, Any] = {"hidden_size": 16, "horizon_points": 3}
    grouped = build_engine(
        Settings(
            model={
                **common,
                "groups": [
                    {"name": "lstm", "pattern": "svc0.*", "artifact": str(lstm)},
                    {"name": "deep", "pattern": "svc1.*", "artifact": str(deep)},
                ],
            }
        )
    )
    assert [g.model.spec.cell for g in grouped.groups] == ["lstm", "gru", "gru"]
    solos = {
        "svc0.": (build_engine(Settings(model={**common, "artifact": str(lstm)})), "state.lstm"),
        "svc1.": (build_engine(Settings(model={**common, "artifact": str(deep)})), "state.deep"),
        "svc2.": (build_engine(Settings(model=common)), "state.global"),
    }
    results: dict[str, list[EngineBatchResult]] = {prefix: [] for prefix in solos}
    grouped_results = []
    for batch in _batches(seed=4, batches=6, messages=200):
        result = grouped.process(batch)
        grouped_results.append(result)
        assert np.isfinite(result.forecast[result.spread > 0]).all()
        for prefix, (solo, _) in solos.items():
            mine = [m for m in batch if m.series.startswith(prefix)]
            solo_result = solo.process(mine)
            results[prefix].append(solo_result)
            # k-step forecasts of the group's series, as the solo engine's.
            assert result.horizon is not None and result.horizon_slots is not None
            assert solo_result.horizon is not None and solo_result.horizon_slots is not None
            names = [grouped.table.name_of(s) for s in result.horizon_slots.tolist()]
            rows = [i for i, name in enumerate(names) if name.startswith(prefix)]
            solo_names = [solo.table.name_of(s) for s in solo_result.horizon_slots.tolist()]
            assert [names[i] for i in rows] == solo_names
            for field in ("ts", "mean", "spread"):
                np.testing.assert_array_equal(
                    getattr(result.horizon, field)[rows],
                    getattr(solo_result.horizon, field),
                    err_msg=field,
                )

    got = _per_series(grouped, grouped_results)
    assert len(got) == SERIES
    for prefix, (solo, state_column) in solos.items():
        expected = _per_series(solo, results[prefix])
        assert sorted(expected) == sorted(s for s in got if s.startswith(prefix))
        for series, want in expected.items():
            for name in FIELDS:
                np.testing.assert_array_equal(got[series][name], want[name], err_msg=name)
            columns = _series_columns(grouped, series, state_column)
            solo_columns = _series_columns(solo, series, "state.global")
            assert columns.keys() == solo_columns.keys()
            for name, column in columns.items():
                np.testing.assert_array_equal(column, solo_columns[name], err_msg=name)
    severities = sum(int((r.severity > 0).sum()) for r in grouped_results)
    assert severities > 0, "the data must raise alerts, or the scoring is not exercised"


# --- batch independence ------------------------------------------------------------------------


@pytest.mark.skipif(ROW_VARIANT_BLAS, reason=ROW_VARIANT_REASON)
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


# --- scalar arithmetic -------------------------------------------------------------------------


def test_log_ndtr_matches_scipy_far_into_both_tails() -> None:
    for x in np.concatenate([np.linspace(-60, 40, 20_001), [-1e3, -25.0, -20.0, 6.0, 1e3]]):
        expected = float(scipy_log_ndtr(x))
        assert log_ndtr(float(x)) == pytest.approx(expected, rel=1e-9, abs=1e-300), x


def test_rational_tanh_is_within_3e_7_of_tanh() -> None:
    x = np.linspace(-20.0, 20.0, 400_001, dtype=np.float32)[::37]
    approx = np.array([tanh(v) for v in x], dtype=np.float64)
    np.testing.assert_allclose(approx, np.tanh(x.astype(np.float64)), rtol=0, atol=3e-7)
    assert (np.abs(approx) <= 1.0).all()
    np.testing.assert_array_equal(np.sign(approx), np.sign(x))


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
        assert time_of(t, day) == t % day, t
        assert time_of(t, week) == t % week, t
