"""Run a batch through the fused kernel (:mod:`streamrnn.engine.kernel`): packing and support.

:class:`FusedStepper` turns the serving models into the flat float32 weight arrays the
kernel reads (once per model swap, not per batch), and the scoring chain into its scalar
settings and table columns. It serves GRU models of one architecture across all groups
with any calibrator, seasonal deflation and level novelty on or off; anything else (an
LSTM, groups of different architectures) makes :meth:`FusedStepper.build` return None and
the engine keeps its column-by-column reference path.

The model weights are read from torch once here; the kernel itself knows nothing of torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import numba
import numpy as np
import torch

from streamrnn.arrays import FloatArray, Int8Array, IntArray
from streamrnn.engine.kernel import CAL_EVT, CAL_LIKELIHOOD, CAL_TAIL, step_batch
from streamrnn.engine.series_table import SeriesTable
from streamrnn.forecast import features as feat
from streamrnn.forecast.gru import LOG_VAR_RANGE, RecurrentForecaster
from streamrnn.scoring import seasonal
from streamrnn.scoring.chain import ScoringChain
from streamrnn.scoring.evt import EVTCalibrator
from streamrnn.scoring.likelihood import LikelihoodCalibrator
from streamrnn.scoring.tail import TailCalibrator

if TYPE_CHECKING:
    from streamrnn.engine.engine import ModelGroup

__all__ = ["MIN_SEEN_TO_SCORE", "FusedStepper", "StepOutput"]

#: Points a series must have seen before its residuals are scored (and learned by the scorer).
MIN_SEEN_TO_SCORE = 2

#: Threads numba may start (NUMBA_NUM_THREADS, default: the machine's cores).
_MAX_THREADS: int = getattr(numba.config, "NUMBA_NUM_THREADS", 1)
#: The kernel, typed loosely: numba's dispatcher signature is not what mypy infers.
_STEP_BATCH: Any = step_batch

#: Parallel work units per thread (a few, so a slow unit does not hold the others up).
CHUNKS_PER_THREAD = 4
#: Points below which a work unit is not worth a thread hand-off. A batch smaller than two
#: of them runs on the calling thread alone: under light load batches are small, and a
#: parallel region waits for its slowest thread, which on a busy machine may be waiting
#: for a core (latency), while a small batch gains little from a second one.
MIN_CHUNK_POINTS = 1024
#: Rows (series) above which a work unit is split, whatever its points. A unit's per-column
#: buffers grow with its rows (the gate products alone are 2 x rows x 3 x hidden floats);
#: beyond a few hundred rows they no longer fit in a core's L2 cache and a point costs about
#: twice as much: a batch of one point for each of 1,000 series took 2.5-4.0 ms in one unit
#: and 1.5-1.9 ms in units of at most 256 rows (hidden 64, engine alone).
MAX_CHUNK_ROWS = 256

_CALIBRATOR_COLUMNS: dict[type, tuple[int, tuple[str, ...]]] = {
    LikelihoodCalibrator: (CAL_LIKELIHOOD, ("lik_short", "lik_mean", "lik_var", "lik_count")),
    TailCalibrator: (CAL_TAIL, ("tail_mean", "tail_var", "tail_count")),
    EVTCalibrator: (
        CAL_EVT,
        ("evt_t", "evt_phi", "evt_m", "evt_v", "evt_peaks", "evt_n", "evt_mean"),
    ),
}
_SEASON_COLUMNS = (
    ("season_mag", np.float32, 2),
    ("season_count", np.uint8, 2),
    ("season_first_day", np.uint16, 2),
    ("season_overall", np.float64, 1),
    ("season_overall_count", np.float64, 1),
)
_NOVELTY_COLUMNS = (
    ("nov_centre", np.float64),
    ("nov_mad", np.float32),
    ("nov_up", np.float32),
    ("nov_down", np.float32),
    ("nov_ts", np.float64),
    ("nov_count", np.float32),
    ("nov_alert_dev", np.float32),
)
_RULE_COLUMNS = ("rule_hits", "rule_episode", "rule_cooldown", "rule_last_alert_ts")


@dataclass(frozen=True, slots=True)
class StepOutput:
    """Per-point results of a batch, aligned with the points passed in (from the kernel or
    the engine's column path)."""

    forecast: FloatArray
    spread: FloatArray
    scale: FloatArray
    score: FloatArray
    armed_score: FloatArray
    severity: Int8Array


@dataclass(frozen=True, slots=True)
class _Weights:
    """Every group's model as the kernel's stacked float32 arrays (group first)."""

    w_ih0_t: np.ndarray[Any, Any]
    w_ihn_t: np.ndarray[Any, Any]
    w_hh_t: np.ndarray[Any, Any]
    b_ih: np.ndarray[Any, Any]
    b_hh: np.ndarray[Any, Any]
    decay_w_t: np.ndarray[Any, Any]
    decay_b: np.ndarray[Any, Any]
    h_prior: np.ndarray[Any, Any]
    head_w1_t: np.ndarray[Any, Any]
    head_b1: np.ndarray[Any, Any]
    head_w2: np.ndarray[Any, Any]
    head_b2: np.ndarray[Any, Any]
    input_mask: np.ndarray[Any, Any]
    target_mask: np.ndarray[Any, Any]
    use_decay: bool


class FusedStepper:
    """Steps batches with the fused kernel for one engine's table, chain and model groups."""

    def __init__(
        self, table: SeriesTable, chain: ScoringChain, normaliser_alpha: float, threads: int
    ) -> None:
        self.table = table
        self.chain = chain
        self.normaliser_alpha = normaliser_alpha
        self.threads = max(1, min(threads, _MAX_THREADS))
        self._weights: _Weights | None = None
        self._state_columns: tuple[str, ...] = ()
        calibration, names = _CALIBRATOR_COLUMNS[type(chain.calibrator)]
        self._calibration = calibration
        self._calibrator_columns = names
        rule = chain.rule
        novelty = chain.novelty
        self._params = np.array(
            [
                feat.GAP_FACTOR,
                feat.INPUT_CLIP,
                feat.GAP_ALPHA,
                feat.STEP_ALPHA,
                feat.STEP_FLOOR,
                MIN_SEEN_TO_SCORE,
                chain.warmup_points,
                1.0 if chain.learn_from_anomalies else 0.0,
                chain.max_skipped_points,
                *_calibrator_params(chain),
                rule.warning_threshold,
                rule.critical_threshold,
                rule.clear_threshold,
                rule.min_hits,
                rule.window_points,
                rule.cooldown_points,
                rule.cooldown_s,
                novelty.min_novelty if novelty is not None else 0.0,
                novelty.half_life_s if novelty is not None else 1.0,
                novelty.cooldown_factor if novelty is not None else 0.0,
                seasonal.BINS,
                feat.VALUE_LIMIT,
            ],
            dtype=np.float64,
        )

    def _chunks(self, lengths: IntArray) -> IntArray:
        """Row boundaries of the parallel work units: ``CHUNKS_PER_THREAD`` per thread, of
        about equal points each (rows are whole series), never below ``MIN_CHUNK_POINTS``
        and at least one per ``MAX_CHUNK_ROWS`` rows (about that many each)."""
        total = int(lengths.sum())
        count = min(self.threads * CHUNKS_PER_THREAD, max(1, total // MIN_CHUNK_POINTS))
        count = max(count, -(-len(lengths) // MAX_CHUNK_ROWS))
        if count <= 1:
            return np.array([0, len(lengths)], dtype=np.int64)
        ends = np.cumsum(lengths)
        cuts = np.searchsorted(ends, np.arange(1, count) * (total / count), side="left") + 1
        return np.unique(np.concatenate([[0], np.minimum(cuts, len(lengths)), [len(lengths)]]))

    @staticmethod
    def supports(groups: Sequence[ModelGroup], chain: ScoringChain) -> bool:
        """Whether the kernel can serve these groups and chain (else: the reference path)."""
        if type(chain.calibrator) not in _CALIBRATOR_COLUMNS:
            return False
        specs = {g.model.spec for g in groups}
        return len(specs) == 1 and next(iter(specs)).cell == "gru"

    def set_models(self, groups: Sequence[ModelGroup]) -> None:
        """Pack the groups' weights (call again after a model swap)."""
        self._weights = _pack([g.model for g in groups])
        self._state_columns = tuple(f"state.{g.name}" for g in groups)

    def run(
        self,
        slots: IntArray,
        groups: IntArray,
        starts: IntArray,
        lengths: IntArray,
        ts: FloatArray,
        values: FloatArray,
    ) -> StepOutput:
        """Forecast, score and learn ``lengths[i]`` points of series ``slots[i]`` (group
        ``groups[i]``) starting at ``starts[i]`` of ``ts``/``values`` (time order per series);
        every state column is updated in place."""
        weights = self._weights
        assert weights is not None, "set_models() first"
        n = len(ts)
        out = StepOutput(
            forecast=np.empty(n),
            spread=np.empty(n),
            scale=np.empty(n),
            score=np.empty(n),
            armed_score=np.empty(n),
            severity=np.empty(n, dtype=np.int8),
        )
        col = self.table.column
        chain = self.chain
        season = [
            col(name) if chain.seasonal is not None else np.zeros((0,) * ndim, dtype=dtype)
            for name, dtype, ndim in _SEASON_COLUMNS
        ]
        novelty = [
            col(name) if chain.novelty is not None else np.zeros(0, dtype=dtype)
            for name, dtype in _NOVELTY_COLUMNS
        ]
        numba.set_num_threads(self.threads if len(ts) >= 2 * MIN_CHUNK_POINTS else 1)
        # Work units go to whichever thread is free, one at a time, instead of half of them
        # to each thread up front: on a busy machine a thread waiting for a core no longer
        # holds back units the other one could run. Engine alone, 64-point windows, with a
        # one-core CPU hog: 0.91-0.99 -> 1.00-1.11 M points/s; without it, no change.
        numba.set_parallel_chunksize(1)
        ts = np.ascontiguousarray(ts, dtype=np.float64)
        values = np.ascontiguousarray(values, dtype=np.float64)
        present = np.unique(groups) if len(groups) else np.zeros(1, dtype=np.int64)
        for g in present.tolist():
            rows = np.flatnonzero(groups == g) if len(present) > 1 else np.arange(len(slots))
            self._run_group(
                g, slots[rows], starts[rows], lengths[rows], ts, values, weights, season,
                novelty, out,
            )  # fmt: skip
        return out

    def warm_up(self) -> None:
        """Compile the kernel (an empty batch) now rather than on the first batch."""
        empty_i, empty_f = np.zeros(0, dtype=np.int64), np.zeros(0)
        self.run(empty_i, empty_i, empty_i, empty_i, empty_f, empty_f)

    def _run_group(
        self,
        g: int,
        slots: IntArray,
        starts: IntArray,
        lengths: IntArray,
        ts: FloatArray,
        values: FloatArray,
        weights: _Weights,
        season: list[np.ndarray[Any, Any]],
        novelty: list[np.ndarray[Any, Any]],
        out: StepOutput,
    ) -> None:
        """One kernel call for the rows of model group ``g`` (one set of weights)."""
        col = self.table.column
        chain = self.chain
        _STEP_BATCH(
            np.ascontiguousarray(slots, dtype=np.int64),
            np.ascontiguousarray(starts, dtype=np.int64),
            np.ascontiguousarray(lengths, dtype=np.int64),
            self._chunks(lengths),
            ts,
            values,
            *(col(name) for name in feat.FeatureState.column_names()),
            self.normaliser_alpha,
            g,
            col(self._state_columns[g]),
            weights.w_ih0_t,
            weights.w_ihn_t,
            weights.w_hh_t,
            weights.b_ih,
            weights.b_hh,
            weights.decay_w_t,
            weights.decay_b,
            weights.h_prior,
            weights.head_w1_t,
            weights.head_b1,
            weights.head_w2,
            weights.head_b2,
            weights.input_mask,
            weights.target_mask,
            weights.use_decay,
            float(LOG_VAR_RANGE[0]),
            float(LOG_VAR_RANGE[1]),
            self._params,
            self._calibration,
            _padded(tuple(col(name) for name in self._calibrator_columns)),
            chain.seasonal is not None,
            *season,
            chain.novelty is not None,
            *novelty,
            *(col(name) for name in _RULE_COLUMNS),
            col("skipped_run"),
            out.forecast,
            out.spread,
            out.scale,
            out.score,
            out.armed_score,
            out.severity,
        )


def _padded(columns: tuple[np.ndarray[Any, Any], ...]) -> tuple[np.ndarray[Any, Any], ...]:
    """Calibrator columns padded to the largest calibrator's count (the kernel types every
    calibrator's branch, so the tuple always has that many float64 arrays)."""
    width = max(len(names) for _, names in _CALIBRATOR_COLUMNS.values())
    return columns + tuple(np.zeros(0) for _ in range(width - len(columns)))


def _calibrator_params(chain: ScoringChain) -> tuple[float, float]:
    calibrator = chain.calibrator
    if isinstance(calibrator, LikelihoodCalibrator):
        return calibrator.short_alpha, calibrator.long_alpha
    if isinstance(calibrator, TailCalibrator):
        return calibrator.alpha, 0.0
    if isinstance(calibrator, EVTCalibrator):
        return calibrator.quantile, calibrator.rate_alpha
    raise TypeError(f"no fused kernel for {type(calibrator).__name__}")


def _f32(tensor: torch.Tensor) -> np.ndarray[Any, Any]:
    return np.ascontiguousarray(tensor.detach().cpu().numpy(), dtype=np.float32)


def _pack(models: Sequence[RecurrentForecaster]) -> _Weights:
    """Stack the models' weights in the kernel's layout (inputs-major, so rows vectorise)."""
    spec = models[0].spec
    layers, hidden = spec.num_layers, spec.hidden_size

    def stacked(get: Any) -> np.ndarray[Any, Any]:
        return np.ascontiguousarray(np.stack([get(m) for m in models]), dtype=np.float32)

    def cells_t(m: RecurrentForecaster, name: str, first: int) -> np.ndarray[Any, Any]:
        parts = [_f32(getattr(m.cells[i], name)).T for i in range(first, layers)]
        if not parts:
            return np.zeros((1, hidden, 3 * hidden), dtype=np.float32)
        return np.stack(parts)

    def decay(m: RecurrentForecaster, bias: bool) -> np.ndarray[Any, Any]:
        if m.decay is None:
            shape = (layers, hidden) if bias else (layers, 2, hidden)
            return np.zeros(shape, dtype=np.float32)
        linears = [cast(torch.nn.Linear, lin) for lin in m.decay]
        if bias:
            return np.stack([_f32(lin.bias) for lin in linears])
        return np.stack([_f32(lin.weight).T for lin in linears])

    first_linear, last_linear = models[0].head[0], models[0].head[2]
    assert isinstance(first_linear, torch.nn.Linear) and isinstance(last_linear, torch.nn.Linear)
    return _Weights(
        w_ih0_t=stacked(lambda m: _f32(m.cells[0].weight_ih).T),
        w_ihn_t=stacked(lambda m: cells_t(m, "weight_ih", 1)),
        w_hh_t=stacked(lambda m: cells_t(m, "weight_hh", 0)),
        b_ih=stacked(lambda m: np.stack([_f32(c.bias_ih) for c in m.cells])),
        b_hh=stacked(lambda m: np.stack([_f32(c.bias_hh) for c in m.cells])),
        decay_w_t=stacked(lambda m: decay(m, bias=False)),
        decay_b=stacked(lambda m: decay(m, bias=True)),
        h_prior=stacked(lambda m: _f32(m.h_prior)),
        head_w1_t=stacked(lambda m: _f32(m.head[0].weight).T),
        head_b1=stacked(lambda m: _f32(m.head[0].bias)),
        head_w2=stacked(lambda m: _f32(m.head[2].weight)),
        head_b2=stacked(lambda m: _f32(m.head[2].bias)),
        input_mask=_f32(models[0].input_mask),
        target_mask=_f32(models[0].target_mask),
        use_decay=spec.decay,
    )
