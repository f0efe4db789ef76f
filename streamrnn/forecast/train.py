"""Offline training of one global forecaster over many series (``streamrnn train``).

Every series is first run through the same feature scan the daemon uses
(:func:`streamrnn.stages.features.scan`), so the model is trained on exactly the inputs it
will see when serving. Training is truncated back-propagation through time: each series is
consumed in time order in chunks of ``chunk_points`` points, the recurrent state carried
from chunk to chunk (detached, so gradients flow within a chunk only); many series are
stepped side by side. The loss is the negative log-likelihood of each point's change from
the previous value, in the series' step units, under a Laplace (default: robust to the
heavy tails of real metrics, and its location is the median, which minimises MAE) or a
Gaussian distribution whose standard deviation is the head's spread; the inputs are the true
values (teacher forcing), which is also what the k-step rollout's one-step model expects.
Gradients are clipped by norm; the learning rate halves when validation stops improving.

Validation is time-ordered: the last ``val_fraction`` of each series is never trained on;
its NLL, measured with the state carried over from the training part, decides early
stopping, and the best epoch's weights are kept.

Pure torch/numpy; knows nothing of Kafka.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Literal

import numpy as np
import torch

from streamrnn.arrays import FloatArray
from streamrnn.forecast.gru import ForecastStep, ModelSpec, RecurrentForecaster
from streamrnn.stages.features import INPUT_CLIP, FeatureState, scan

__all__ = [
    "HoldoutScore",
    "TrainConfig",
    "TrainProgress",
    "TrainReport",
    "evaluate_holdout",
    "train_model",
]

SQRT2 = 2.0**0.5
SeriesMap = Mapping[str, tuple[FloatArray, FloatArray]]


@dataclass(frozen=True, slots=True)
class TrainConfig:
    """How to train (the architecture is a separate :class:`ModelSpec`)."""

    #: Points per truncated-BPTT chunk.
    chunk_points: int = 64
    #: Most passes over the data; early stopping usually ends sooner.
    epochs: int = 30
    learning_rate: float = 3e-3
    #: Gradient-norm clipping threshold.
    grad_clip: float = 1.0
    #: Last fraction of every series held out for validation (time-ordered split).
    val_fraction: float = 0.2
    #: Epochs without a validation improvement before stopping.
    patience: int = 4
    #: Series stepped side by side in one tensor batch.
    series_per_batch: int = 128
    #: Weight of the newest point in the per-series normaliser (as in the daemon).
    normaliser_alpha: float = 0.01
    #: Likelihood of a point's change: ``laplace`` or ``gaussian`` (same spread semantics).
    loss: Literal["laplace", "gaussian"] = "laplace"
    seed: int = 0


@dataclass(frozen=True, slots=True)
class TrainProgress:
    """Reported after every chunk: where training is and how it goes."""

    epoch: int
    chunk: int
    chunks: int
    train_nll: float
    val_nll: float | None


@dataclass(slots=True)
class TrainReport:
    """What happened in training; stored in the artifact's metadata."""

    series: int
    points: int
    train_points: int
    val_points: int
    epochs_run: int = 0
    best_epoch: int = 0
    train_nll: list[float] = field(default_factory=list)
    val_nll: list[float] = field(default_factory=list)
    #: One-step MAE on the validation part (value units, mean over series) and the naive
    #: last-value MAE on the same points; their ratio is the validation relative MAE.
    val_mae: float = float("nan")
    val_naive_mae: float = float("nan")
    seconds: float = 0.0

    def as_dict(self) -> dict[str, object]:
        """Plain values, for artifact metadata."""
        return asdict(self)


@dataclass(frozen=True, slots=True)
class _Batch:
    """One group of series, features precomputed, as tensors (K, T, ...)."""

    inputs: torch.Tensor
    target: torch.Tensor
    y: torch.Tensor  # (K, T) change from previous value in normalised units, clipped
    train_mask: torch.Tensor  # (K, T) bool
    val_mask: torch.Tensor  # (K, T) bool
    lengths: torch.Tensor  # (K,)
    scale: FloatArray  # (K, T) for MAE in value units
    prev: FloatArray
    values: FloatArray


def train_model(
    data: SeriesMap,
    spec: ModelSpec,
    config: TrainConfig,
    progress: Callable[[TrainProgress], None] | None = None,
    initial: RecurrentForecaster | None = None,
) -> tuple[RecurrentForecaster, TrainReport]:
    """Train a forecaster on ``data`` (series name -> (ts epoch s, values)).

    ``initial`` warm-starts from existing weights (same spec); otherwise the weights are
    drawn from ``config.seed``.
    """
    started = time.perf_counter()
    torch.manual_seed(config.seed)
    model = copy.deepcopy(initial) if initial is not None else RecurrentForecaster(spec)
    batches = _prepare(data, config)
    report = TrainReport(
        series=len(data),
        points=sum(len(ts) for ts, _ in data.values()),
        train_points=int(sum(b.train_mask.sum() for b in batches)),
        val_points=int(sum(b.val_mask.sum() for b in batches)),
    )
    optimiser = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimiser, factor=0.5, patience=1)
    nll_of = _laplace_nll if config.loss == "laplace" else _gaussian_nll
    chunks = sum(-(-b.inputs.shape[1] // config.chunk_points) for b in batches)
    best_val, best_state, stale = float("inf"), copy.deepcopy(model.state_dict()), 0
    for epoch in range(1, config.epochs + 1):
        model.train()
        train_sum = train_n = val_sum = val_n = 0.0
        done = 0
        for batch in batches:
            state = model.initial_state(batch.inputs.shape[0])
            for start in range(0, batch.inputs.shape[1], config.chunk_points):
                end = start + config.chunk_points
                train_mask = batch.train_mask[:, start:end]
                lengths = (batch.lengths - start).clamp(0, config.chunk_points)
                with torch.set_grad_enabled(bool(train_mask.any())):
                    out = model.step(
                        state, batch.inputs[:, start:end], batch.target[:, start:end], lengths
                    )
                    nll = nll_of(out.delta_mean, out.log_var, batch.y[:, start:end])
                    if train_mask.any():
                        loss = nll[train_mask].mean()
                        optimiser.zero_grad()
                        loss.backward()  # type: ignore[no-untyped-call]
                        torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
                        optimiser.step()
                        train_sum += float(nll.detach()[train_mask].sum())
                        train_n += float(train_mask.sum())
                val_mask = batch.val_mask[:, start:end]
                val_sum += float(nll.detach()[val_mask].sum())
                val_n += float(val_mask.sum())
                state = out.state.detach()
                done += 1
                if progress is not None:
                    progress(TrainProgress(epoch, done, chunks, train_sum / max(train_n, 1), None))
        train_nll = train_sum / max(train_n, 1)
        val_nll = val_sum / val_n if val_n else train_nll
        report.train_nll.append(train_nll)
        report.val_nll.append(val_nll)
        report.epochs_run = epoch
        if progress is not None:
            progress(TrainProgress(epoch, done, chunks, train_nll, val_nll))
        scheduler.step(val_nll)
        if val_nll < best_val - 1e-4:
            best_val, best_state, stale = val_nll, copy.deepcopy(model.state_dict()), 0
            report.best_epoch = epoch
        else:
            stale += 1
            if stale >= config.patience:
                break
    model.load_state_dict(best_state)
    model.eval()
    report.val_mae, report.val_naive_mae = _validation_mae(batches, _forecast_all(model, batches))
    report.seconds = time.perf_counter() - started
    return model, report


@dataclass(frozen=True, slots=True)
class HoldoutScore:
    """A model's one-step forecast quality on the last part of every series.

    ``nll``: mean negative log-likelihood per point (nats, normalised units, without the
    constant), the training loss; ``mase``: model MAE / naive last-value MAE on the same
    points (per series, then averaged; < 1 beats persistence).
    """

    nll: float
    mase: float
    points: int


def evaluate_holdout(
    model: RecurrentForecaster,
    data: SeriesMap,
    holdout_fraction: float,
    normaliser_alpha: float,
    loss: Literal["laplace", "gaussian"] = "laplace",
) -> HoldoutScore:
    """Score ``model`` on the last ``holdout_fraction`` of each series in ``data``.

    The state is carried from each series' start (so the held-out part is forecast the
    way the daemon would after re-warming on the earlier part); only held-out points count.
    Two models scored on the same data are directly comparable.
    """
    config = TrainConfig(val_fraction=holdout_fraction, normaliser_alpha=normaliser_alpha)
    batches = _prepare(data, config)
    outputs = _forecast_all(model, batches)
    nll_of = _laplace_nll if loss == "laplace" else _gaussian_nll
    total = 0.0
    count = 0
    for batch, out in zip(batches, outputs, strict=True):
        nll = nll_of(out.delta_mean, out.log_var, batch.y)
        total += float(nll[batch.val_mask].sum())
        count += int(batch.val_mask.sum())
    mae, naive = _validation_mae(batches, outputs)
    return HoldoutScore(
        nll=total / count if count else float("nan"),
        mase=mae / naive if naive > 0 else float("nan"),
        points=count,
    )


def _gaussian_nll(mean: torch.Tensor, log_var: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-point Gaussian negative log-likelihood (without the constant)."""
    return 0.5 * (log_var + (y - mean) ** 2 * torch.exp(-log_var))


def _laplace_nll(mean: torch.Tensor, log_var: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-point Laplace negative log-likelihood (without the constant), variance exp(log_var).

    A Laplace distribution with standard deviation sigma has scale b = sigma / sqrt(2).
    """
    return 0.5 * log_var + SQRT2 * torch.abs(y - mean) * torch.exp(-0.5 * log_var)


def _prepare(data: SeriesMap, config: TrainConfig) -> list[_Batch]:
    """Scan every series' features; group series of similar length into batches."""
    names = sorted(data, key=lambda n: len(data[n][0]))
    batches = []
    for first in range(0, len(names), config.series_per_batch):
        group = names[first : first + config.series_per_batch]
        lengths = np.array([len(data[n][0]) for n in group])
        k, t_max = len(group), int(lengths.max())
        ts = np.zeros((k, t_max))
        values = np.zeros((k, t_max))
        active = np.zeros((k, t_max), dtype=bool)
        for row, name in enumerate(group):
            n = lengths[row]
            ts[row, :n], values[row, :n] = data[name]
            active[row, :n] = True
        grid, _ = scan(FeatureState.empty(k), ts, values, active, config.normaliser_alpha)
        y = np.clip((values - grid.prev_value) / grid.scale, -INPUT_CLIP, INPUT_CLIP)
        usable = active & (grid.seen_before >= 2)
        val_start = np.floor(lengths * (1.0 - config.val_fraction)).astype(np.int64)
        position = np.arange(t_max)[None, :]
        is_val = position >= val_start[:, None]
        batches.append(
            _Batch(
                inputs=torch.from_numpy(grid.inputs),
                target=torch.from_numpy(grid.target),
                y=torch.from_numpy(y.astype(np.float32)),
                train_mask=torch.from_numpy(usable & ~is_val),
                val_mask=torch.from_numpy(usable & is_val),
                lengths=torch.from_numpy(lengths),
                scale=grid.scale,
                prev=grid.prev_value,
                values=values,
            )
        )
    return batches


def _forecast_all(model: RecurrentForecaster, batches: list[_Batch]) -> list[ForecastStep]:
    """Every point's forecast, each series stepped from its start (no gradients)."""
    with torch.inference_mode():
        return [
            model.step(
                model.initial_state(batch.inputs.shape[0]),
                batch.inputs,
                batch.target,
                batch.lengths,
            )
            for batch in batches
        ]


def _validation_mae(batches: list[_Batch], outputs: list[ForecastStep]) -> tuple[float, float]:
    """(model MAE, naive MAE) on the validation points, averaged per series."""
    model_mae: list[float] = []
    naive_mae: list[float] = []
    for batch, out in zip(batches, outputs, strict=True):
        forecast = batch.prev + batch.scale * out.delta_mean.double().numpy()
        mask = batch.val_mask.numpy()
        for row in range(mask.shape[0]):
            m = mask[row]
            if m.any():
                model_mae.append(float(np.abs(batch.values[row, m] - forecast[row, m]).mean()))
                naive_mae.append(float(np.abs(batch.values[row, m] - batch.prev[row, m]).mean()))
    if not model_mae:
        return float("nan"), float("nan")
    return float(np.mean(model_mae)), float(np.mean(naive_mae))
