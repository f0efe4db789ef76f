"""Our forecasters on the benchmark corpora: train offline, then forecast through the Engine.

The one-step forecasts (with their spreads) and the k-step paths are produced by the
daemon's own engine (the same feature scan, model step, state handling and rollout as
``streamrnn run``), fed window messages instead of Kafka messages; so the benchmark
measures what the daemon would forecast and publish.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import numpy.typing as npt
import torch

from streamrnn.config import Settings
from streamrnn.decode import DecodedMessage
from streamrnn.engine.build import build_chain
from streamrnn.engine.engine import Engine, ModelGroup
from streamrnn.forecast.gru import ModelSpec, RecurrentForecaster
from streamrnn.forecast.train import TrainConfig, TrainReport, train_model
from streamrnn.stages.features import INPUT_SIZE, TIME_FEATURE_COUNT
from streamrnn.stages.interval import AT_95, GAUSSIAN_Z, LEVELS
from tests.benchmarks.metrics import INTERVAL_LEVELS, Paths

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
Corpus = Mapping[str, tuple[FloatArray, FloatArray]]

#: Points per window message when streaming a corpus through the engine.
WINDOW_POINTS = 256

#: The GRU variants of the benchmark table.
VARIANTS: dict[str, ModelSpec] = {
    "GRU, no time-delta features": ModelSpec(decay=False, time_delta_features=False),
    "GRU + time-delta features": ModelSpec(decay=False, time_delta_features=True),
    "GRU-D (time-delta + decay)": ModelSpec(decay=True, time_delta_features=True),
}


@dataclass(frozen=True, slots=True)
class Trained:
    """A trained variant and how its training went."""

    name: str
    model: RecurrentForecaster
    report: TrainReport


def train_variant(name: str, corpus: Corpus, config: TrainConfig) -> Trained:
    """Train the variant ``name`` of :data:`VARIANTS` on ``corpus``."""
    model, report = train_model(corpus, VARIANTS[name], config)
    return Trained(name, model, report)


def _engine(
    model: RecurrentForecaster, n_series: int, normaliser_alpha: float | None, horizon_points: int
) -> Engine:
    """The daemon's engine with one global model, learning every point (see
    :func:`engine_forecasts`); ``normaliser_alpha`` None: the settings' default."""
    settings = Settings(scoring={"learn_from_anomalies": True})
    return Engine(
        groups=[ModelGroup("global", None, model, "bench")],
        chain=build_chain(settings.scoring),
        max_series=max(n_series, 1),
        normaliser_alpha=(
            settings.series.normaliser_alpha if normaliser_alpha is None else normaliser_alpha
        ),
        horizon_points=horizon_points,
    )


def engine_forecasts(model: RecurrentForecaster, corpus: Corpus) -> dict[str, FloatArray]:
    """One-step forecasts of every point of every series, through the daemon's engine.

    Series are streamed side by side in time order, a window of :data:`WINDOW_POINTS`
    points per series per batch, so each batch is one model call over all series. Every
    point is learned (``learn_from_anomalies``): this measures forecasting, and a detection
    policy that holds anomalous points back would otherwise change the states being
    compared (it is evaluated by ``streamrnn evaluate`` instead).
    """
    return {name: one.forecast for name, one in engine_one_step(model, corpus).items()}


class OneStep(NamedTuple):
    """One series' one-step forecasts, per point: ``forecast`` and ``spread`` (value units)
    and ``half_width`` (N, 3): the engine's calibrated 50/80/95 % interval half-widths."""

    forecast: FloatArray
    spread: FloatArray
    half_width: FloatArray


def engine_one_step(
    model: RecurrentForecaster, corpus: Corpus, normaliser_alpha: float | None = None
) -> dict[str, OneStep]:
    """Per series, the one-step forecast, spread and interval half-widths of every point,
    streamed as in :func:`engine_forecasts` (whose forecasts these are).

    The spread is what the engine publishes as the forecast's Gaussian-equivalent sd: its
    calibrated 95 % half-width / 1.96 (the head's ``step scale · exp(log_var / 2)``
    widened or narrowed per series by :mod:`streamrnn.stages.interval`), so the CRPS is
    that of the calibrated scale; the coverage uses the engine's own half-widths per level.
    NaN for a series' first point. ``normaliser_alpha``: None for the settings' default
    (what :func:`engine_forecasts` uses), else e.g. an artifact's own.
    """
    assert LEVELS == INTERVAL_LEVELS, (LEVELS, INTERVAL_LEVELS)
    engine = _engine(model, len(corpus), normaliser_alpha, horizon_points=0)
    out = {
        name: OneStep(
            np.full(len(ts), np.nan), np.full(len(ts), np.nan), np.full((len(ts), 3), np.nan)
        )
        for name, (ts, _) in corpus.items()
    }
    longest = max(len(ts) for ts, _ in corpus.values())
    for start in range(0, longest, WINDOW_POINTS):
        messages = []
        names = []
        for name, (ts, values) in corpus.items():
            if start < len(ts):
                end = start + WINDOW_POINTS
                messages.append(
                    DecodedMessage(name, ts[start:end].tolist(), values[start:end].tolist(), None)
                )
                names.append(name)
        result = engine.process(messages)
        assert not result.rejections, result.rejections[:3]
        for i, name in enumerate(names):
            rows = result.message_index == i
            span = slice(start, start + int(rows.sum()))
            series = out[name]
            series.forecast[span] = result.forecast[rows]
            series.half_width[span] = result.half_width[rows]
            series.spread[span] = result.half_width[rows, AT_95] / GAUSSIAN_Z[AT_95]
    return out


def engine_paths(
    model: RecurrentForecaster,
    corpus: Corpus,
    origins: Mapping[str, IntArray],
    steps: int,
    normaliser_alpha: float | None = None,
) -> dict[str, Paths]:
    """k-step forecasts from the given origins, through the engine's rollout
    (``Engine(..., horizon_points=steps)``, :mod:`streamrnn.engine.rollout`).

    Each series is streamed in windows that end exactly at its origins (an origin o: the
    engine has learned ``values[:o]``), :data:`WINDOW_POINTS` points per window before the
    first origin; after each batch the engine's ``horizon`` is the path from each stepped
    series' state. The rollout steps at the series' typical interval, so on irregular series
    step k is compared with the k-th next *point*, whatever its timestamp (the rollout's own
    ``ts`` are not used). Points after a series' last origin are not streamed. Spreads: the
    rollout's (the root of the summed one-step variances, value units) widened by the
    series' learned 95 % interval ratio, as the engine publishes them: its 95 % half-width
    / 1.96.
    """
    engine = _engine(model, len(corpus), normaliser_alpha, horizon_points=steps)
    bounds: dict[str, list[int]] = {}
    for name, o in origins.items():
        first = int(o[0]) if len(o) else 0
        warm = list(range(WINDOW_POINTS, first, WINDOW_POINTS))
        bounds[name] = [*warm, *(int(x) for x in o)]
    out = {
        name: Paths(
            np.asarray(o, dtype=np.int64),
            np.full((len(o), steps), np.nan),
            np.full((len(o), steps), np.nan),
        )
        for name, o in origins.items()
    }
    row_of = {name: {int(x): r for r, x in enumerate(o)} for name, o in origins.items()}
    position = dict.fromkeys(bounds, 0)
    for call in range(max((len(b) for b in bounds.values()), default=0)):
        messages, names = [], []
        for name, b in bounds.items():
            if call < len(b):
                ts, values = corpus[name]
                start, end = position[name], b[call]
                if end > start:
                    messages.append(
                        DecodedMessage(
                            name, ts[start:end].tolist(), values[start:end].tolist(), None
                        )
                    )
                    names.append(name)
                position[name] = end
        if not messages:
            continue
        result = engine.process(messages)
        assert not result.rejections, result.rejections[:3]
        assert result.horizon is not None and result.horizon_slots is not None
        row_of_slot = {int(slot): r for r, slot in enumerate(result.horizon_slots)}
        for i, name in enumerate(names):
            r = row_of[name].get(position[name])
            if r is None:
                continue
            h = row_of_slot[int(result.message_slot[i])]
            out[name].mean[r] = result.horizon.mean[h]
            assert result.horizon_half_width is not None
            out[name].spread[r] = result.horizon_half_width[h] / GAUSSIAN_Z[AT_95]
    return out


def step_throughput(spec: ModelSpec, series_per_call: int, seconds: float = 1.0) -> float:
    """Points per second of one batched model step (T = 1) over ``series_per_call`` series."""
    model = RecurrentForecaster(spec).eval()
    k = series_per_call
    state = model.initial_state(k)
    inputs = torch.randn(k, 1, INPUT_SIZE)
    target = torch.randn(k, 1, TIME_FEATURE_COUNT)
    with torch.inference_mode():
        for _ in range(3):
            model.step(state, inputs, target)
        calls = 0
        started = time.perf_counter()
        while time.perf_counter() - started < seconds:
            state = model.step(state, inputs, target).state
            calls += 1
        elapsed = time.perf_counter() - started
    return calls * k / elapsed


def bare_gru_cell_throughput(hidden: int, series_per_call: int, seconds: float = 1.0) -> float:
    """Points per second of a bare ``torch.nn.GRUCell`` step: the reference for the target."""
    cell = torch.nn.GRUCell(INPUT_SIZE, hidden)
    k = series_per_call
    h = torch.zeros(k, hidden)
    x = torch.randn(k, INPUT_SIZE)
    with torch.inference_mode():
        for _ in range(3):
            cell(x, h)
        calls = 0
        started = time.perf_counter()
        while time.perf_counter() - started < seconds:
            h = cell(x, h)
            calls += 1
        elapsed = time.perf_counter() - started
    return calls * k / elapsed
