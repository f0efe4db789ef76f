"""Why a swapped-in model gets re-warmed states, and why carrying a state over is the fallback.

After a retrain on a new regime, the series' next points are forecast by the new model
starting from (a) the state it reaches by replaying the buffered history (re-warm),
(b) the state the old model left (carried over), (c) a zero state. Measured here (MAE
over the first 20 points, value units, 24 series, the shipped model retrained): re-warm
0.18, carry-over 0.57, zero state 0.74, and the old model kept serving 0.70. Carry-over
beats starting afresh and the old model, and the three converge within ~20 points; so
series with buffered history are re-warmed, and the rest carry their state over.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from streamrnn.config import RetrainConfig, load_settings
from streamrnn.engine.build import build_engine
from streamrnn.forecast import artifact
from streamrnn.forecast.gru import RecurrentForecaster
from streamrnn.forecast.rewarm import rewarm_states
from streamrnn.retrain.job import RetrainJob, run_retrain
from streamrnn.stages.features import FeatureState, scan
from tests.retrain_scenario import shifted_series

HISTORY = (700, 1200)
AHEAD = 100


def test_rewarmed_states_forecast_best_and_carried_states_beat_a_fresh_start() -> None:
    torch.set_num_threads(1)
    engine = build_engine(load_settings(None, model={"pretrained": True}))
    parent = engine.groups[-1].model
    alpha = engine.normaliser_alpha
    data = shifted_series(24, 1400, 700, seed=1)
    names = sorted(data)
    a, b = HISTORY
    history = [(data[n][0][a:b], data[n][1][a:b]) for n in names]
    current, _ = artifact.to_bytes(parent, alpha, {}, version="parent")
    result = run_retrain(
        RetrainJob(
            "global", "manual", current, dict(zip(names, history, strict=True)), RetrainConfig()
        )
    )
    assert result.promoted and result.artifact is not None
    child = artifact.from_bytes(result.artifact, "child").model

    ts = np.stack([data[n][0][a : b + AHEAD] for n in names])
    values = np.stack([data[n][1][a : b + AHEAD] for n in names])
    grid, _ = scan(FeatureState.empty(len(names)), ts, values, np.ones(ts.shape, bool), alpha)

    def mae_ahead(model: RecurrentForecaster, state: np.ndarray, first: int, last: int) -> float:
        with torch.inference_mode():
            out = model.step(
                torch.from_numpy(state.transpose(1, 0, 2).copy()),
                torch.from_numpy(grid.inputs[:, b - a :]),
                torch.from_numpy(grid.target[:, b - a :]),
            )
        forecast = grid.prev_value[:, b - a :] + grid.scale[:, b - a :] * out.delta_mean.numpy()
        return float(np.abs(values[:, b - a :] - forecast)[:, first:last].mean())

    rewarmed = rewarm_states(child, history, alpha)
    carried = rewarm_states(parent, history, alpha)
    zero = np.zeros_like(rewarmed)
    first20 = {
        "rewarmed": mae_ahead(child, rewarmed, 0, 20),
        "carried": mae_ahead(child, carried, 0, 20),
        "zero": mae_ahead(child, zero, 0, 20),
        "old model": mae_ahead(parent, carried, 0, 20),
    }
    print("MAE of the first 20 points after the swap:", first20)
    assert first20["rewarmed"] < 0.5 * first20["carried"]
    assert first20["carried"] < first20["zero"]
    assert first20["carried"] < first20["old model"]
    # Replaying only the last 64 points, features from the last 256 (what a swap does), is
    # as good as replaying all.
    short = rewarm_states(child, [(t[-256:], v[-256:]) for t, v in history], alpha, 64)
    assert mae_ahead(child, short, 0, 20) == pytest.approx(first20["rewarmed"], rel=0.05)
    # ...and after 20 points the starting state no longer matters.
    later = [mae_ahead(child, s, 20, AHEAD) for s in (rewarmed, carried, zero)]
    assert max(later) == pytest.approx(min(later), rel=0.15)


def test_last_points_replays_each_series_own_window() -> None:
    torch.set_num_threads(1)
    model = build_engine(load_settings(None, model={"pretrained": True})).groups[-1].model
    data = shifted_series(3, 120, 60, seed=5)
    # Series of different lengths, so each row's window starts elsewhere.
    series = [(ts[:n], v[:n]) for (ts, v), n in zip(data.values(), (120, 50, 7), strict=True)]
    got = rewarm_states(model, series, 0.01, last_points=10)
    for row, (ts, values) in enumerate(series):
        grid, _ = scan(
            FeatureState.empty(1), ts[None], values[None], np.ones((1, len(ts)), bool), 0.01
        )
        first = max(len(ts) - 10, 0)
        with torch.inference_mode():
            want = model.step(
                model.initial_state(1),
                torch.from_numpy(grid.inputs[:, first:]),
                torch.from_numpy(grid.target[:, first:]),
            ).state
        np.testing.assert_allclose(got[row], want[:, 0].numpy(), rtol=1e-5, atol=1e-6)
    # A window longer than every series replays them whole.
    np.testing.assert_array_equal(
        rewarm_states(model, series, 0.01, last_points=500), rewarm_states(model, series, 0.01)
    )
