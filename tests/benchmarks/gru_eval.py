"""Our forecasters on the benchmark corpora: train offline, then forecast through the Engine.

The one-step forecasts are produced by the daemon's own engine (the same feature scan,
model step and state handling as ``streamrnn run``), fed window messages instead of Kafka
messages; so the benchmark measures what the daemon would forecast.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass

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

FloatArray = npt.NDArray[np.float64]
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


def engine_forecasts(model: RecurrentForecaster, corpus: Corpus) -> dict[str, FloatArray]:
    """One-step forecasts of every point of every series, through the daemon's engine.

    Series are streamed side by side in time order, a window of :data:`WINDOW_POINTS`
    points per series per batch, so each batch is one model call over all series. Every
    point is learned (``learn_from_anomalies``): this measures forecasting, and a detection
    policy that holds anomalous points back would otherwise change the states being
    compared (it is evaluated by ``streamrnn evaluate`` instead).
    """
    settings = Settings(scoring={"learn_from_anomalies": True})
    engine = Engine(
        groups=[ModelGroup("global", None, model, "bench")],
        chain=build_chain(settings.scoring),
        max_series=max(len(corpus), 1),
        normaliser_alpha=settings.series.normaliser_alpha,
    )
    out = {name: np.full(len(ts), np.nan) for name, (ts, _) in corpus.items()}
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
            out[name][start : start + int(rows.sum())] = result.forecast[rows]
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
