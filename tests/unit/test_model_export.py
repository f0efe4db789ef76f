"""The compiled inference (the serving engine) against the torch model it is exported from.

``streamrnn.forecast.export`` turns a trained :class:`RecurrentForecaster` into the compiled
cell and head; the engine then forecasts every point with them. For GRU and LSTM cells of
1, 2 and 3 layers, with GRU-D decay and without (and without the time-delta features), a
few thousand irregular points of a few series (bursts, long gaps, levels from 1e-3 to 1e6)
go through (a) the engine, learning every point, and (b) the training path: the feature
scan, then ``model.step`` from the initial state. The one-step forecasts, spreads and the
final recurrent states must agree within 1e-5, and so must the k-step rollout against a
torch rollout written here (the numpy/torch reference the compiled rollout replaced).

Tolerance: 1e-5 on the model's own outputs, i.e. on the *normalised* change (forecast
minus previous value, in units of the series' step scale) and the log-variance. Both sides
compute the step scale and previous value bit for bit alike (``test_forecast_features.py``
holds the features so; asserted here too), so a forecast's difference is exactly ``scale
x`` the difference of the float32 model outputs. An error relative to the value would
depend on the series' level (1e6 here), and an absolute one on its units; in step-scale
units 1e-5 is the float32 model's rounding (another summation order in the BLAS products,
a rational tanh within 3e-7) carried through hundreds of recurrent steps, while a wrong
gate order, bias, mask or decay row is off by 1e-3 or more.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import torch

from streamrnn.config import ScoringConfig
from streamrnn.decode import DecodedMessage
from streamrnn.engine.build import build_chain
from streamrnn.engine.engine import Engine, EngineBatchResult, ModelGroup
from streamrnn.forecast.gru import ModelSpec, RecurrentForecaster
from streamrnn.stages.features import (
    INPUT_CLIP,
    TIME_FEATURE_COUNT,
    FeatureGrid,
    FeatureState,
    scan,
    time_features,
)

T0 = 1_700_000_000.0
ALPHA = 0.01
HIDDEN = 16
HORIZON = 8
#: Points per series (different lengths: the torch side runs a padded grid).
LENGTHS = (900, 700, 800, 600)
#: Typical interval (s) and level of each series.
INTERVALS = (10.0, 60.0, 1.0, 300.0)
LEVELS = (1e-3, 1.0, 1e3, 1e6)
#: Largest difference of the normalised change and of the log-variance (see the docstring).
TOLERANCE = 1e-5

SPECS = {
    f"{cell}-{layers}-layer{'s' if layers > 1 else ''}-{'decay' if decay else 'no-decay'}": (
        ModelSpec(cell=cell, hidden_size=HIDDEN, num_layers=layers, decay=decay)
    )
    for cell in ("gru", "lstm")
    for layers in (1, 2, 3)
    for decay in (True, False)
}
SPECS["gru-2-layers-decay-no-time-delta"] = ModelSpec(
    hidden_size=HIDDEN, num_layers=2, decay=True, time_delta_features=False
)
SPECS["lstm-1-layer-no-decay-no-time-delta"] = ModelSpec(
    cell="lstm", hidden_size=HIDDEN, decay=False, time_delta_features=False
)


def _model(spec: ModelSpec, seed: int = 0) -> RecurrentForecaster:
    """Seeded weights moved well away from a fresh model's (whose head forecasts almost no
    change), a non-zero prior and positive decay weights, so every part shows."""
    torch.manual_seed(seed)
    model = RecurrentForecaster(spec)
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=generator))
        model.h_prior.normal_(0.0, 0.5, generator=generator)
        for lin in model.decay or ():
            assert isinstance(lin, torch.nn.Linear)
            lin.weight.abs_()
    return model.eval()


def _series(seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """Irregular series: jittered intervals, bursts, long gaps (100 to 1e5 intervals) and a
    day's rhythm, at levels from 1e-3 to 1e6."""
    rng = np.random.default_rng(seed)
    out = []
    for n, interval, level in zip(LENGTHS, INTERVALS, LEVELS, strict=True):
        gaps = interval * rng.lognormal(0.0, 0.3, n)
        gaps[rng.random(n) < 0.05] *= 0.01  # bursts
        gaps[rng.choice(n, 4, replace=False)] *= [100.0, 1e3, 1e4, 1e5]  # long gaps
        ts = T0 + np.cumsum(gaps)
        walk = np.cumsum(rng.normal(0.0, 0.02, n))
        day = 0.1 * np.sin(2 * np.pi * ts / 86_400.0)
        values = level * (1.0 + walk + day)
        values[rng.choice(n, 3, replace=False)] += 3.0 * level  # spikes
        out.append((ts, values))
    return out


def _engine(model: RecurrentForecaster) -> Engine:
    """An engine serving ``model`` that learns every point, as the training path does."""
    return Engine(
        groups=[ModelGroup("global", None, model, "test")],
        chain=build_chain(ScoringConfig(learn_from_anomalies=True, max_skipped_points=0)),
        max_series=len(LENGTHS),
        normaliser_alpha=ALPHA,
        horizon_points=HORIZON,
    )


def _feed(
    engine: Engine, series: list[tuple[np.ndarray, np.ndarray]], seed: int
) -> tuple[dict[str, dict[str, np.ndarray]], EngineBatchResult]:
    """Every series in windows of 1-40 points a batch (all but the last point), then one
    batch with every series' last point; returns each series' forecasts, spreads and step
    scales in time order, and the last batch's result (its k-step forecasts)."""
    rng = np.random.default_rng(seed)
    names = [f"s{row}" for row in range(len(series))]
    done = [0] * len(series)
    parts: dict[str, dict[str, list[np.ndarray]]] = {
        name: {"forecast": [], "spread": [], "error_scale": []} for name in names
    }

    def run(batch: list[DecodedMessage]) -> EngineBatchResult:
        result = engine.process(batch)
        assert not result.rejections
        for name in {m.series for m in batch}:
            rows = result.slot == engine.table.slot_of(name)
            for field, values in parts[name].items():
                values.append(getattr(result, field)[rows])
        return result

    while any(d < len(ts) - 1 for d, (ts, _) in zip(done, series, strict=True)):
        batch = []
        for row, (ts, values) in enumerate(series):
            end = min(done[row] + int(rng.integers(1, 41)), len(ts) - 1)
            if end > done[row]:
                window = slice(done[row], end)
                batch.append(
                    DecodedMessage(names[row], ts[window].tolist(), values[window].tolist(), None)
                )
                done[row] = end
        run(batch)
    last = run(
        [
            DecodedMessage(n, [ts[-1]], [v[-1]], None)
            for n, (ts, v) in zip(names, series, strict=True)
        ]
    )
    per_series = {n: {f: np.concatenate(v) for f, v in d.items()} for n, d in parts.items()}
    return per_series, last


def _grid(series: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, ...]:
    """The series as a padded (K, T) grid: ts, values, active, lengths."""
    k, t_max = len(series), max(len(ts) for ts, _ in series)
    ts_grid, value_grid = np.zeros((k, t_max)), np.zeros((k, t_max))
    active = np.zeros((k, t_max), dtype=bool)
    for row, (ts, values) in enumerate(series):
        ts_grid[row, : len(ts)], value_grid[row, : len(ts)] = ts, values
        active[row, : len(ts)] = True
    return ts_grid, value_grid, active, active.sum(axis=1)


def _torch_forecasts(
    model: RecurrentForecaster, series: list[tuple[np.ndarray, np.ndarray]]
) -> tuple[FeatureGrid, FeatureState, Any]:
    """The training path: scan, then the torch model from its initial state."""
    ts, values, active, lengths = _grid(series)
    grid, after = scan(FeatureState.empty(len(series)), ts, values, active, ALPHA)
    with torch.inference_mode():
        out = model.step(
            model.initial_state(len(series)),
            torch.from_numpy(grid.inputs),
            torch.from_numpy(grid.target),
            torch.from_numpy(lengths),
        )
    return grid, after, out


# --- the torch rollout (the numpy/torch reference of the compiled one) --------------------------


def _level(fs: FeatureState) -> np.ndarray:
    """The level spread (``streamrnn.stages.ewstats.scale_of``) of every series."""
    spread = np.sqrt(np.maximum(fs.value_var, 0.0))
    level: np.ndarray = np.maximum(spread, 1e-6 + 1e-4 * np.abs(fs.value_mean))
    return level


def _step_scale(fs: FeatureState) -> np.ndarray:
    """The step scale (``streamrnn.stages.features.step_scale``) of every series."""
    level = _level(fs)
    floored = np.maximum(np.sqrt(np.maximum(fs.step_var, 0.0)), 0.01 * level)
    scale: np.ndarray = np.where(fs.count >= 2, floored, level)
    return scale


def _time_features(ts: np.ndarray, gap: np.ndarray) -> np.ndarray:
    """(K, TIME_FEATURE_COUNT) float32 time features of points at ``ts``, ``gap`` s after
    the previous one, which is also the typical interval."""
    out = np.zeros((len(ts), TIME_FEATURE_COUNT), dtype=np.float32)
    for row in range(len(ts)):
        time_features(float(ts[row]), float(gap[row]), float(gap[row]), out[row])
    return out


def _torch_rollout(
    model: RecurrentForecaster, state: torch.Tensor, fs: FeatureState, horizon: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ts, mean, spread), each (K, horizon): the model rolled forward on its own forecasts
    at the series' typical interval, normaliser and step scale held fixed."""
    k = state.shape[1]
    typical = np.where(fs.gap_count > 0, np.exp(fs.log_gap_mean), np.nan)
    level, scale = _level(fs), _step_scale(fs)
    ts = fs.last_ts[:, None] + typical[:, None] * np.arange(1, horizon + 1)[None, :]
    mean, var = np.empty((k, horizon)), np.empty((k, horizon))
    value, acc_var = fs.last_value.copy(), np.zeros(k)
    gap = np.nan_to_num(typical, nan=1.0)
    with torch.inference_mode():
        for j in range(horizon):
            tf = _time_features(ts[:, j], gap)
            tf_t = torch.from_numpy(tf)
            decayed = model.decay_state(state, tf_t)
            delta, log_var = model.predict(decayed[model.spec.num_layers - 1], tf_t)
            change = scale * delta.double().numpy()
            value = value + change
            acc_var = acc_var + scale**2 * np.exp(log_var.double().numpy())
            mean[:, j], var[:, j] = value, acc_var
            level_z = np.clip((value - fs.value_mean) / level, -INPUT_CLIP, INPUT_CLIP)
            step_z = np.clip(change / scale, -INPUT_CLIP, INPUT_CLIP)
            inputs = np.concatenate([level_z[:, None], step_z[:, None], tf], axis=1)
            state = model.advance(decayed, torch.from_numpy(inputs.astype(np.float32)))
    young = fs.gap_count < 1
    mean[young], var[young] = np.nan, np.nan
    return ts, mean, np.sqrt(var)


# --- parity ------------------------------------------------------------------------------------


@pytest.mark.parametrize("spec", SPECS.values(), ids=SPECS.keys())
def test_engine_forecasts_states_and_rollout_equal_the_torch_model(spec: ModelSpec) -> None:
    model = _model(spec)
    series = _series()
    engine = _engine(model)
    served, last = _feed(engine, series, seed=1)
    grid, after, out = _torch_forecasts(model, series)
    delta = out.delta_mean.double().numpy()
    log_var = out.log_var.double().numpy()

    worst = {"change": 0.0, "log_var": 0.0, "state": 0.0}
    for row, (ts, _) in enumerate(series):
        mine = served[f"s{row}"]
        n = len(ts)
        assert len(mine["forecast"]) == n
        # The features both sides forecast from are the same (to the bit).
        np.testing.assert_array_equal(mine["error_scale"], grid.scale[row, :n])
        # A series' first point has no forecast; from the second on, every one is finite.
        assert np.isnan(mine["forecast"][0]) and np.isnan(mine["spread"][0])
        scale, prev = grid.scale[row, 1:n], grid.prev_value[row, 1:n]
        change = (mine["forecast"][1:] - prev) / scale
        served_log_var = 2.0 * np.log(mine["spread"][1:] / scale)
        assert np.isfinite(change).all() and np.isfinite(served_log_var).all()
        worst["change"] = max(worst["change"], float(np.abs(change - delta[row, 1:n]).max()))
        worst["log_var"] = max(
            worst["log_var"], float(np.abs(served_log_var - log_var[row, 1:n]).max())
        )
        state = engine.hidden_state(f"s{row}")
        assert state is not None
        worst["state"] = max(worst["state"], float(np.abs(state - out.state[:, row].numpy()).max()))
    assert max(worst.values()) <= TOLERANCE, worst
    # Not a model that forecasts nothing: the changes it forecasts are of order one.
    assert np.abs(delta[:, 1:]).mean() > 0.05

    # k-step forecasts after the last batch, against the torch rollout from the same state.
    assert last.horizon is not None and last.horizon_slots is not None
    rows = [int(engine.table.name_of(s)[1:]) for s in last.horizon_slots.tolist()]
    want_ts, want_mean, want_spread = _torch_rollout(model, out.state, after, HORIZON)
    scale = _step_scale(after)[rows, None]
    np.testing.assert_allclose(last.horizon.ts, want_ts[rows], rtol=1e-12, atol=0)
    rollout_change = np.abs(last.horizon.mean - want_mean[rows]) / scale
    spread_error = np.abs(last.horizon.spread / want_spread[rows] - 1.0)
    print(  # with -s: the measured differences
        f"{spec}: change {worst['change']:.2e}, log_var {worst['log_var']:.2e},"
        f" state {worst['state']:.2e}; rollout change {rollout_change.max():.2e},"
        f" spread (relative) {spread_error.max():.2e}"
    )
    assert rollout_change.max() <= TOLERANCE, rollout_change.max()
    assert spread_error.max() <= TOLERANCE, spread_error.max()
    assert math.isfinite(float(last.horizon.mean.sum()))
