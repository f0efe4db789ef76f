"""The recurrent forecaster: stepping continuity, padding, GRU-D decay, time-delta switch.

Plus engine-level continuity of a decaying model over irregular timestamps.
"""

from __future__ import annotations

import itertools
from typing import Any, Literal

import numpy as np
import pytest
import torch

from streamrnn.config import Settings
from streamrnn.decode import DecodedMessage
from streamrnn.engine.build import build_engine
from streamrnn.engine.engine import Engine, EngineBatchResult
from streamrnn.forecast.gru import ForecastStep, ModelSpec, RecurrentForecaster
from streamrnn.stages.features import (
    INPUT_SIZE,
    TIME_DELTA_FEATURES,
    TIME_FEATURE_COUNT,
    TIME_FEATURES,
    VALUE_FEATURE_COUNT,
    FeatureState,
    scan,
    time_features,
)

T0 = 1_700_000_000.0
ATOL = 1e-5

SPECS = {
    "gru-decay": ModelSpec(cell="gru", hidden_size=16, num_layers=1, decay=True),
    "gru-no-decay": ModelSpec(cell="gru", hidden_size=16, num_layers=1, decay=False),
    "lstm-decay": ModelSpec(cell="lstm", hidden_size=16, num_layers=1, decay=True),
    "gru-2-layers": ModelSpec(cell="gru", hidden_size=16, num_layers=2, decay=True),
}
DECAY_SPECS = {name: spec for name, spec in SPECS.items() if spec.decay}

GAP_COLUMNS = [TIME_FEATURES.index(name) for name in TIME_DELTA_FEATURES]


def _model(spec: ModelSpec, seed: int = 0) -> RecurrentForecaster:
    """A model with seeded weights and a non-zero prior (so decay toward it is visible)."""
    torch.manual_seed(seed)
    model = RecurrentForecaster(spec)
    with torch.no_grad():
        model.h_prior.normal_(0.0, 0.5)
    return model.eval()


def _features(k: int, n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Scan features (inputs, target) of k irregular series with some long gaps."""
    rng = np.random.default_rng(seed)
    gaps = 10.0 * rng.lognormal(0.0, 0.2, (k, n))
    gaps[rng.random((k, n)) < 0.1] *= 50.0
    ts = T0 + np.cumsum(gaps, axis=1)
    values = rng.normal(0.0, 1.0, (k, n)).cumsum(axis=1) + 10.0
    grid, _ = scan(FeatureState.empty(k), ts, values, np.ones((k, n), dtype=bool), 0.01)
    return torch.from_numpy(grid.inputs), torch.from_numpy(grid.target)


def _random_state(model: RecurrentForecaster, k: int, seed: int = 1) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    shape = (model.spec.state_rows, k, model.spec.hidden_size)
    return 0.5 * torch.randn(shape, generator=generator)


def _run_in_chunks(
    model: RecurrentForecaster,
    state: torch.Tensor,
    inputs: torch.Tensor,
    target: torch.Tensor,
    bounds: list[int],
) -> ForecastStep:
    deltas, log_vars = [], []
    for lo, hi in itertools.pairwise(bounds):
        out = model.step(state, inputs[:, lo:hi], target[:, lo:hi])
        deltas.append(out.delta_mean)
        log_vars.append(out.log_var)
        state = out.state
    return ForecastStep(torch.cat(deltas, dim=1), torch.cat(log_vars, dim=1), state)


def _assert_steps_close(a: ForecastStep, b: ForecastStep) -> None:
    torch.testing.assert_close(a.delta_mean, b.delta_mean, atol=ATOL, rtol=0)
    torch.testing.assert_close(a.log_var, b.log_var, atol=ATOL, rtol=0)
    torch.testing.assert_close(a.state, b.state, atol=ATOL, rtol=0)


# --- shapes ----------------------------------------------------------------------------------


@pytest.mark.parametrize("spec", SPECS.values(), ids=SPECS.keys())
def test_step_output_shapes_and_initial_state(spec: ModelSpec) -> None:
    model = _model(spec)
    state = model.initial_state(3)
    assert state.shape == (spec.state_rows, 3, spec.hidden_size)
    assert not state.any()
    inputs, target = _features(3, 9)
    assert inputs.shape == (3, 9, INPUT_SIZE) and target.shape == (3, 9, TIME_FEATURE_COUNT)
    with torch.no_grad():
        out = model.step(state, inputs, target)
    assert out.delta_mean.shape == (3, 9) and out.log_var.shape == (3, 9)
    assert out.state.shape == state.shape
    assert torch.isfinite(out.delta_mean).all() and torch.isfinite(out.log_var).all()


def test_lstm_state_has_h_and_c_rows_per_layer() -> None:
    assert ModelSpec(cell="lstm", num_layers=2).state_rows == 4
    assert ModelSpec(cell="gru", num_layers=3).state_rows == 3


# --- continuity ------------------------------------------------------------------------------


@pytest.mark.parametrize("spec", SPECS.values(), ids=SPECS.keys())
def test_one_call_equals_point_by_point_calls_with_state_carried(spec: ModelSpec) -> None:
    model = _model(spec)
    inputs, target = _features(3, 40)
    state = _random_state(model, 3)
    with torch.no_grad():
        whole = model.step(state, inputs, target)
        pointwise = _run_in_chunks(model, state, inputs, target, list(range(41)))
    _assert_steps_close(pointwise, whole)


@pytest.mark.parametrize("spec", SPECS.values(), ids=SPECS.keys())
def test_one_call_equals_uneven_chunks_with_state_carried(spec: ModelSpec) -> None:
    model = _model(spec)
    inputs, target = _features(4, 40, seed=2)
    state = model.initial_state(4)
    with torch.no_grad():
        whole = model.step(state, inputs, target)
        chunked = _run_in_chunks(model, state, inputs, target, [0, 1, 8, 9, 25, 40])
    _assert_steps_close(chunked, whole)


@pytest.mark.parametrize("spec", SPECS.values(), ids=SPECS.keys())
def test_padded_batch_with_lengths_equals_unpadded_calls_per_series(spec: ModelSpec) -> None:
    model = _model(spec)
    lengths = [5, 2, 7, 1]
    inputs, target = _features(len(lengths), max(lengths), seed=3)
    # Garbage in the padding must not matter.
    for row, n in enumerate(lengths):
        inputs[row, n:] = 1e3
        target[row, n:] = -1e3
    state = _random_state(model, len(lengths))
    with torch.no_grad():
        padded = model.step(state, inputs, target, torch.tensor(lengths))
        for row, n in enumerate(lengths):
            solo = model.step(
                state[:, row : row + 1], inputs[row : row + 1, :n], target[row : row + 1, :n]
            )
            torch.testing.assert_close(
                padded.delta_mean[row, :n], solo.delta_mean[0], atol=ATOL, rtol=0
            )
            torch.testing.assert_close(padded.log_var[row, :n], solo.log_var[0], atol=ATOL, rtol=0)
            torch.testing.assert_close(padded.state[:, row], solo.state[:, 0], atol=ATOL, rtol=0)


@pytest.mark.parametrize("spec", SPECS.values(), ids=SPECS.keys())
def test_zero_length_series_keeps_its_state_exactly(spec: ModelSpec) -> None:
    # Truncated BPTT steps series that have ended with length 0.
    model = _model(spec)
    inputs, target = _features(2, 6, seed=4)
    state = _random_state(model, 2)
    with torch.no_grad():
        out = model.step(state, inputs, target, torch.tensor([6, 0]))
    assert torch.equal(out.state[:, 1], state[:, 1])
    assert not torch.allclose(out.state[:, 0], state[:, 0])


@pytest.mark.parametrize("spec", SPECS.values(), ids=SPECS.keys())
def test_series_stepped_together_do_not_influence_each_other(spec: ModelSpec) -> None:
    model = _model(spec)
    inputs, target = _features(3, 12, seed=5)
    state = _random_state(model, 3)
    with torch.no_grad():
        together = model.step(state, inputs, target)
        alone = model.step(state[:, 1:2], inputs[1:2], target[1:2])
    torch.testing.assert_close(together.delta_mean[1], alone.delta_mean[0], atol=ATOL, rtol=0)
    torch.testing.assert_close(together.state[:, 1], alone.state[:, 0], atol=ATOL, rtol=0)


def test_forecast_of_a_point_uses_only_the_state_before_it() -> None:
    # Changing a point's own value (its input) must not change the forecast of that point.
    model = _model(SPECS["gru-decay"])
    inputs, target = _features(1, 10, seed=6)
    changed = inputs.clone()
    changed[0, 7, 0] += 5.0
    with torch.no_grad():
        a = model.step(model.initial_state(1), inputs, target)
        b = model.step(model.initial_state(1), changed, target)
    torch.testing.assert_close(a.delta_mean[0, :8], b.delta_mean[0, :8], atol=0, rtol=0)
    assert not torch.allclose(a.delta_mean[0, 8:], b.delta_mean[0, 8:])


# --- GRU-D decay -----------------------------------------------------------------------------


def _trained_looking_decay(model: RecurrentForecaster) -> None:
    assert model.decay is not None
    with torch.no_grad():
        for lin in model.decay:
            assert isinstance(lin, torch.nn.Linear)
            lin.weight.fill_(1.0)
            lin.bias.zero_()


def _gap_target(gaps: list[float], typical: float = 10.0) -> torch.Tensor:
    """Time features (K, F) of a point after each of ``gaps`` seconds, typical interval fixed."""
    tf = np.zeros((len(gaps), TIME_FEATURE_COUNT), dtype=np.float32)
    for row, gap in enumerate(gaps):
        time_features(T0 + gap, gap, typical, tf[row])
    return torch.from_numpy(tf)


@pytest.mark.parametrize("spec", DECAY_SPECS.values(), ids=DECAY_SPECS.keys())
def test_longer_gap_decays_the_state_closer_to_the_prior(spec: ModelSpec) -> None:
    model = _model(spec)
    _trained_looking_decay(model)
    gaps = [10.0, 20.0, 100.0, 1_000.0, 100_000.0]
    k = len(gaps)
    # The same state for every gap.
    state = _random_state(model, 1).expand(-1, k, -1).contiguous()
    with torch.no_grad():
        decayed = model.decay_state(state, _gap_target(gaps))
    layers = spec.num_layers
    prior = model.h_prior[:, None, :]
    distance = (decayed[:layers] - prior).norm(dim=-1)  # (layers, K)
    before = (state[:layers] - prior).norm(dim=-1)
    assert (distance <= before + 1e-6).all()
    assert (distance[:, 1:] < distance[:, :-1]).all(), distance
    assert (distance[:, -1] < 1e-3 * before[:, -1]).all()  # a very long gap: ~ the prior
    # An LSTM's cell rows do not decay.
    torch.testing.assert_close(decayed[layers:], state[layers:], atol=0, rtol=0)


@pytest.mark.parametrize("spec", DECAY_SPECS.values(), ids=DECAY_SPECS.keys())
def test_decay_state_does_not_modify_its_input(spec: ModelSpec) -> None:
    model = _model(spec)
    _trained_looking_decay(model)
    state = _random_state(model, 2)
    copy = state.clone()
    with torch.no_grad():
        model.decay_state(state, _gap_target([10.0, 1e4]))
    assert torch.equal(state, copy)


def test_without_decay_decay_state_leaves_the_state_unchanged() -> None:
    model = _model(SPECS["gru-no-decay"])
    assert model.decay is None
    state = _random_state(model, 3)
    decayed = model.decay_state(state, _gap_target([10.0, 1e3, 1e7]))
    assert torch.equal(decayed, state)


def test_gap_changes_the_forecast_through_decay_even_with_the_same_features_elsewhere() -> None:
    model = _model(SPECS["gru-decay"])
    _trained_looking_decay(model)
    state = _random_state(model, 1).expand(-1, 2, -1).contiguous()
    target = _gap_target([10.0, 1e5])
    with torch.no_grad():
        decayed = model.decay_state(state, target)
        # Same head input features for both: only the decayed state differs.
        same_target = target[:1].expand(2, -1)
        delta, _ = model.predict(decayed[0], same_target)
    assert not torch.allclose(delta[0], delta[1])


# --- time-delta features switch ---------------------------------------------------------------


def _perturb_gap_features(
    inputs: torch.Tensor, target: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    inputs, target = inputs.clone(), target.clone()
    for column in GAP_COLUMNS:
        target[..., column] = target[..., column] * -3.0 + 2.0
        col = VALUE_FEATURE_COUNT + column
        inputs[..., col] = inputs[..., col] * -3.0 + 2.0
    return inputs, target


@pytest.mark.parametrize("decay", [True, False])
@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_without_time_delta_features_forecasts_ignore_the_gap_features(
    cell: Literal["gru", "lstm"], decay: bool
) -> None:
    spec = ModelSpec(cell=cell, hidden_size=16, decay=decay, time_delta_features=False)
    model = _model(spec)
    if decay:
        _trained_looking_decay(model)
    inputs, target = _features(3, 20, seed=7)
    other_inputs, other_target = _perturb_gap_features(inputs, target)
    with torch.no_grad():
        a = model.step(model.initial_state(3), inputs, target)
        b = model.step(model.initial_state(3), other_inputs, other_target)
    _assert_steps_close(a, b)


@pytest.mark.parametrize("decay", [True, False])
def test_with_time_delta_features_forecasts_depend_on_the_gap_features(decay: bool) -> None:
    model = _model(ModelSpec(hidden_size=16, decay=decay, time_delta_features=True))
    inputs, target = _features(3, 20, seed=7)
    other_inputs, other_target = _perturb_gap_features(inputs, target)
    with torch.no_grad():
        a = model.step(model.initial_state(3), inputs, target)
        b = model.step(model.initial_state(3), other_inputs, other_target)
    assert (a.delta_mean - b.delta_mean).abs().max() > 1e-4
    assert (a.state - b.state).abs().max() > 1e-4


def test_without_time_delta_features_the_time_of_day_still_matters() -> None:
    model = _model(ModelSpec(hidden_size=16, time_delta_features=False))
    inputs, target = _features(2, 10, seed=8)
    shifted_inputs, shifted_target = inputs.clone(), target.clone()
    tod = TIME_FEATURES.index("tod_sin")
    shifted_target[..., tod] = -shifted_target[..., tod]
    col = VALUE_FEATURE_COUNT + tod
    shifted_inputs[..., col] = -shifted_inputs[..., col]
    with torch.no_grad():
        a = model.step(model.initial_state(2), inputs, target)
        b = model.step(model.initial_state(2), shifted_inputs, shifted_target)
    assert (a.delta_mean - b.delta_mean).abs().max() > 1e-5


# --- untrained behaviour ----------------------------------------------------------------------


@pytest.mark.parametrize("spec", SPECS.values(), ids=SPECS.keys())
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_untrained_model_forecasts_small_changes_persistence_like(
    spec: ModelSpec, seed: int
) -> None:
    torch.manual_seed(seed)
    model = RecurrentForecaster(spec).eval()
    inputs, target = _features(4, 60, seed=seed)
    with torch.no_grad():
        out = model.step(model.initial_state(4), inputs, target)
    # In normalised units: a forecast change well under one spread of the series.
    assert out.delta_mean.abs().max() < 0.5
    assert torch.isfinite(out.log_var).all()


# --- engine-level continuity with a decaying model ---------------------------------------------


def _engine_with_decay(**model: Any) -> Engine:
    engine = build_engine(Settings(model={"hidden_size": 16, "decay": True, **model}))
    forecaster = engine.groups[-1].model
    _trained_looking_decay(forecaster)
    with torch.no_grad():
        forecaster.h_prior.normal_(0.0, 0.5, generator=torch.Generator().manual_seed(0))
    # The engine serves the weights exported when a model is set: set the edited one.
    engine.swap_model(len(engine.groups) - 1, forecaster, engine.model_version)
    return engine


def _irregular(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    gaps = 10.0 * rng.lognormal(0.0, 0.3, n)
    gaps[[10, 25, 26, 40]] *= [30.0, 200.0, 5.0, 1000.0]
    ts = T0 + np.cumsum(gaps)
    values = 50.0 + 5.0 * np.sin(np.arange(n) / 5.0) + rng.normal(0.0, 0.5, n)
    values[33] += 40.0
    return ts, values


def _message(series: str, ts: np.ndarray, values: np.ndarray) -> DecodedMessage:
    return DecodedMessage(series, ts.tolist(), values.tolist(), None)


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_engine_window_message_equals_one_point_per_batch_with_a_decay_model(
    cell: Literal["gru", "lstm"],
) -> None:
    n = 60
    ts, values = _irregular(n, seed=9)
    whole = _engine_with_decay(cell=cell)
    one = whole.process([_message("a", ts, values)])

    stepped = _engine_with_decay(cell=cell)
    parts: list[EngineBatchResult] = [
        stepped.process([_message("a", ts[i : i + 1], values[i : i + 1])]) for i in range(n)
    ]
    for name in ("forecast", "spread", "score"):
        np.testing.assert_allclose(
            np.concatenate([getattr(p, name) for p in parts]),
            getattr(one, name),
            atol=ATOL,
            rtol=1e-6,
            err_msg=name,
        )
    stepped_state, whole_state = stepped.hidden_state("a"), whole.hidden_state("a")
    assert stepped_state is not None and whole_state is not None
    np.testing.assert_allclose(stepped_state, whole_state, atol=ATOL)


def test_engine_decay_makes_forecasts_depend_on_the_gap_before_the_point() -> None:
    ts, values = _irregular(50, seed=10)
    forecasts = []
    for gap in (10.0, 1e5):
        engine = _engine_with_decay()
        engine.process([_message("a", ts, values)])
        result = engine.process([_message("a", np.array([ts[-1] + gap]), values[-1:])])
        forecasts.append(result.forecast[0])
    assert np.isfinite(forecasts).all()
    assert forecasts[0] != pytest.approx(forecasts[1], abs=1e-7)
