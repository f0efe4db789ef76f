"""The detection engine: decoded points in, forecasts, scores and alert severities out.

One call of :meth:`Engine.process` handles one polled batch:

1. resolve each message's series to a state slot (new series get one while there is room);
2. drop points that do not move their series forward in time (out of order, duplicate);
3. group the points by series, in arrival order per series;
4. step every point through the compiled kernel (:mod:`streamrnn.engine.kernel`, a
   composer of the per-point stages of :mod:`streamrnn.stages`): features → decay and
   forecast → raw score → calibration → alert rule → learn the points the learning policy
   allows (normaliser, score history, recurrent state), in place in the series table —
   each series' hidden state persists from call to call;
5. optionally roll each stepped series' model forward for a k-step forecast
   (:mod:`streamrnn.engine.rollout`).

The engine is the same whether points come from Kafka or from files; it knows nothing of
Kafka. Torch is only the models' training form: their weights are exported to the compiled
stages when a model is set (:mod:`streamrnn.forecast.export`).

Any finite value is safe: values are clamped to ±1e30 (value units) before they reach a
series' state, and a point beyond that is scored but not learned, so one absurd value cannot
leave a series' forecasts or scores non-finite (:mod:`streamrnn.stages.features`,
:mod:`streamrnn.stages.learning`).
"""

from __future__ import annotations

import fnmatch
import time
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import chain as chained

import numpy as np
import numpy.typing as npt

from streamrnn.arrays import FloatArray, Int8Array, IntArray
from streamrnn.decode import DecodedMessage, Rejection
from streamrnn.engine.rollout import Horizon, rollout
from streamrnn.engine.stepper import BatchStepper
from streamrnn.forecast.gru import RecurrentForecaster
from streamrnn.stage_timer import StageTimer
from streamrnn.stages import blas, chain, features, interval, schema
from streamrnn.stages.alert_rule import RuleParams
from streamrnn.state.series_table import SeriesTable

__all__ = ["Engine", "EngineBatchResult", "ModelGroup"]


@dataclass(frozen=True, slots=True)
class ModelGroup:
    """A model serving the series whose names match ``pattern`` (None: every other series)."""

    name: str
    pattern: str | None
    model: RecurrentForecaster
    version: str
    #: Versions this model descends from by retraining (oldest first).
    lineage: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class EngineBatchResult:
    """Per-point results of one batch, one entry per accepted point.

    Points of one series appear in time order; ``message_index`` says which input message
    each came from. ``forecast`` and ``spread`` are NaN for a series' first point.
    """

    message_index: IntArray
    slot: IntArray
    ts: FloatArray
    value: FloatArray
    forecast: FloatArray
    spread: FloatArray
    #: (N, len(LEVELS)) half-widths of the central forecast intervals of
    #: :data:`streamrnn.stages.interval.LEVELS` (value units), learned per series.
    half_width: FloatArray
    score: FloatArray
    severity: Int8Array
    #: The score where the alert rule was armed (could fire), else 0.
    armed_score: FloatArray
    #: The series' step scale before each point (value units; MASE's denominator).
    error_scale: FloatArray
    group: IntArray
    rejections: list[tuple[int, Rejection]]
    #: Per input message, the slot of its series (-1: not admitted, series limit).
    message_slot: IntArray
    #: k-step forecasts after the batch, one row per slot in ``horizon_slots`` (if enabled).
    horizon: Horizon | None = None
    horizon_slots: IntArray | None = None
    #: Half-widths (value units) of the 95 % intervals of ``horizon``: its spreads times
    #: each series' learned 95 % width in spreads (:mod:`streamrnn.stages.interval`).
    horizon_half_width: FloatArray | None = None

    def __len__(self) -> int:
        return len(self.ts)


class Engine:
    """Holds every series' state and steps it; see the module docstring."""

    def __init__(
        self,
        groups: Sequence[ModelGroup],
        chain: chain.ChainParams,
        max_series: int,
        normaliser_alpha: float,
        horizon_points: int = 0,
        threads: int = 1,
    ) -> None:
        """``chain``: the scoring stages' parameters (:func:`streamrnn.engine.build.build_chain`);
        ``threads``: cores the kernel may use (series are stepped in parallel)."""
        if not groups or groups[-1].pattern is not None:
            raise ValueError("the last model group must be the catch-all (pattern None)")
        self.groups = list(groups)
        for group in self.groups:
            group.model.eval()
        self.chain = chain
        self.rule: RuleParams = chain.rule
        self.normaliser_alpha = normaliser_alpha
        self.horizon_points = horizon_points
        self.table = SeriesTable(max_series)
        schema.declare(self.table, self.columns())
        self._stepper = BatchStepper(self.table, chain, normaliser_alpha, threads)
        self._stepper.set_models(self.groups)

    def columns(self) -> tuple[schema.Column, ...]:
        """Every per-series column, in state-record order (the layout the state codec
        fingerprints): features, model group, latest timestamp (the ordering check's
        reference, learned or not), each group's recurrent state, the scoring chain's."""
        states = tuple(
            schema.Column(
                f"state.{g.name}", np.float32, (g.model.spec.state_rows, g.model.spec.hidden_size)
            )
            for g in self.groups
        )
        return (
            *features.COLUMNS,
            *interval.COLUMNS,
            schema.Column("group", np.int64, (), len(self.groups) - 1),
            schema.Column("latest_ts", np.float64, (), -np.inf),
            *states,
            *chain.columns(self.chain),
        )

    def warm_up(self) -> None:
        """Compile the kernel (and the k-step rollout, if on) now, on empty batches, rather
        than on the first batch: the first compilation takes about 15 s, later
        starts load it from numba's cache."""
        self._stepper.warm_up()
        if self.horizon_points:
            empty = np.zeros(0, dtype=np.int64)
            self._horizon(empty, empty)

    @property
    def model_version(self) -> str:
        """The global model's version."""
        return self.groups[-1].version

    def group_of(self, series: str) -> ModelGroup:
        """The model group that serves ``series``."""
        return self.groups[self.group_index_of(series)]

    def group_index_of(self, series: str) -> int:
        """The index (in :attr:`groups`) of the model group that serves ``series``."""
        for index, group in enumerate(self.groups):
            if group.pattern is None or fnmatch.fnmatchcase(series, group.pattern):
                return index
        raise AssertionError("unreachable: the last group matches everything")

    def swap_model(
        self, index: int, model: RecurrentForecaster, version: str, lineage: Sequence[str] = ()
    ) -> None:
        """Serve group ``index`` with ``model`` from the next batch on (same state shape).

        The series' recurrent states are kept as they are; re-warm them with
        :meth:`set_states` where history is available.
        """
        old = self.groups[index]
        if (model.spec.state_rows, model.spec.hidden_size) != (
            old.model.spec.state_rows,
            old.model.spec.hidden_size,
        ):
            raise ValueError(
                f"model {version} has another state shape than {old.version}; restart to change"
                " the architecture"
            )
        model.eval()
        self.groups[index] = ModelGroup(old.name, old.pattern, model, version, tuple(lineage))
        self._stepper.set_models(self.groups)

    def set_states(self, index: int, slots: IntArray, states: npt.NDArray[np.float32]) -> None:
        """Overwrite the recurrent state (K, S, H) of the live series in ``slots`` (group
        ``index``)."""
        self.table.column(f"state.{self.groups[index].name}")[slots] = states

    def hidden_state(self, series: str) -> npt.NDArray[np.float32] | None:
        """A copy of a live series' recurrent state, (S, H), or None if it is not live."""
        slot = self.table.slot_of(series)
        if slot is None:
            return None
        group = self.groups[int(self.table.column("group")[slot])]
        return np.array(self.table.column(f"state.{group.name}")[slot], copy=True)

    def process(
        self, messages: Sequence[DecodedMessage], timer: StageTimer | None = None
    ) -> EngineBatchResult:
        """Forecast, score and learn every point of ``messages`` (one polled batch);
        ``timer`` (optional) receives the seconds spent per stage (``engine.*``)."""
        timer = timer if timer is not None else StageTimer()
        started = time.perf_counter()
        rejections: list[tuple[int, Rejection]] = []
        live_before = len(self.table)
        msg_slots = self.table.resolve([m.series for m in messages], [m.labels for m in messages])
        # Series seen for the first time are routed to their model group once, here.
        group_col = self.table.column("group")
        for slot in range(live_before, len(self.table)):
            group_col[slot] = self.group_index_of(self.table.name_of(slot))
        for i in np.flatnonzero(msg_slots < 0):
            rejections.append(
                (
                    int(i),
                    Rejection(
                        "series_limit",
                        f"series limit reached ({self.table.max_series} live series)",
                        messages[int(i)].series,
                    ),
                )
            )
        counts = np.fromiter((len(m.ts) for m in messages), dtype=np.int64, count=len(messages))
        point_msg = np.repeat(np.arange(len(messages), dtype=np.int64), counts)
        point_slot = np.repeat(msg_slots, counts)
        total = int(counts.sum())
        # chain.from_iterable walks the per-message lists in C (a generator costs ~60 ns a point)
        ts = np.fromiter(chained.from_iterable(m.ts for m in messages), np.float64, total)
        values = np.fromiter(chained.from_iterable(m.values for m in messages), np.float64, total)
        # Group by series, arrival order kept within each series.
        order = np.argsort(point_slot, kind="stable")
        order = order[point_slot[order] >= 0]
        keep = self._moving_forward(
            point_slot[order], ts[order], point_msg[order], messages, rejections
        )
        order = order[keep]
        timer.add("engine.prepare", time.perf_counter() - started)
        if len(order) == 0:
            return _empty_result(rejections, msg_slots)
        return self._step(
            point_msg[order],
            point_slot[order],
            ts[order],
            values[order],
            rejections,
            msg_slots,
            timer,
        )

    def _moving_forward(
        self,
        slots: IntArray,
        ts: FloatArray,
        msgs: IntArray,
        messages: Sequence[DecodedMessage],
        rejections: list[tuple[int, Rejection]],
    ) -> npt.NDArray[np.bool_]:
        """Mask of points later than everything their series has seen (grouped input)."""
        latest_ts = self.table.column("latest_ts")
        first_of_group = np.ones(len(slots), dtype=bool)
        first_of_group[1:] = slots[1:] != slots[:-1]
        prev = np.empty_like(ts)
        prev[1:] = ts[:-1]
        prev[first_of_group] = latest_ts[slots[first_of_group]]
        keep: npt.NDArray[np.bool_] = ts > prev
        if keep.all():
            return keep
        # Rare path: walk only the series that have a problem, with a running maximum.
        for slot in np.unique(slots[~keep]):
            idx = np.flatnonzero(slots == slot)
            latest = latest_ts[slot]
            for i in idx:
                if ts[i] > latest:
                    keep[i] = True
                    latest = ts[i]
                    continue
                keep[i] = False
                reason = "duplicate_timestamp" if ts[i] == latest else "out_of_order"
                rejections.append(
                    (
                        int(msgs[i]),
                        Rejection(
                            reason,
                            f"timestamp {float(ts[i])!r} is not after the series' latest"
                            f" {float(latest)!r}",
                            messages[int(msgs[i])].series,
                        ),
                    )
                )
        return keep

    def _step(
        self,
        point_msg: IntArray,
        point_slot: IntArray,
        ts: FloatArray,
        values: FloatArray,
        rejections: list[tuple[int, Rejection]],
        message_slot: IntArray,
        timer: StageTimer,
    ) -> EngineBatchResult:
        """Step the points (grouped by slot, time order within each) with the kernel, then
        the optional k-step forecasts."""
        started = time.perf_counter()
        slots, starts, lengths = np.unique(point_slot, return_index=True, return_counts=True)
        tbl = self.table
        tbl.column("latest_ts")[slots] = ts[starts + lengths - 1]
        series_group = tbl.column("group")[slots]
        timer.add("engine.gather", time.perf_counter() - started)
        started = time.perf_counter()
        out = self._stepper.run(slots, series_group, starts, lengths, ts, values)
        timer.add("engine.kernel", time.perf_counter() - started)
        horizon = None
        if self.horizon_points:
            started = time.perf_counter()
            horizon = self._horizon(slots, series_group)
            timer.add("engine.horizon", time.perf_counter() - started)
        return EngineBatchResult(
            message_index=point_msg,
            slot=point_slot,
            ts=ts,
            value=values,
            forecast=out.forecast,
            spread=out.spread,
            half_width=out.half_width,
            score=out.score,
            severity=out.severity,
            armed_score=out.armed_score,
            error_scale=out.scale,
            group=np.repeat(series_group, lengths),
            rejections=rejections,
            message_slot=message_slot,
            horizon=horizon,
            horizon_slots=slots if horizon is not None else None,
            horizon_half_width=None if horizon is None else self._horizon_widths(slots, horizon),
        )

    def _horizon_widths(self, slots: IntArray, horizon: Horizon) -> FloatArray:
        """95 % half-widths of ``horizon`` (value units): the rollout's spreads widened by
        each series' learned 95 % interval width (in spreads) of its one-step forecasts."""
        _, iv, _ = self._stepper.states()
        per_spread = interval.widths_per_spread(iv.log_ratio[slots])[:, interval.AT_95]
        widths: FloatArray = horizon.spread * per_spread[:, None]
        return widths

    def _horizon(self, slots: IntArray, series_group: IntArray) -> Horizon:
        """k-step forecasts after the batch for ``slots`` (their states as stored now)."""
        k = len(slots)
        horizon = Horizon(*(np.full((k, self.horizon_points), np.nan) for _ in range(3)))
        fs, _, _ = self._stepper.states()
        for g in np.unique(series_group).tolist():
            rows = np.flatnonzero(series_group == g)
            model = self._stepper.model(g)
            part = Horizon(*(np.empty((len(rows), self.horizon_points)) for _ in range(3)))
            rollout(
                np.ascontiguousarray(slots[rows], dtype=np.int64), fs, model, blas.scratch(), part
            )
            for whole, piece in zip(horizon, part, strict=True):
                whole[rows] = piece
        return horizon


def _empty_result(
    rejections: list[tuple[int, Rejection]], message_slot: IntArray
) -> EngineBatchResult:
    f = np.zeros(0)
    i = np.zeros(0, dtype=np.int64)
    severity = np.zeros(0, dtype=np.int8)
    widths = np.zeros((0, len(interval.LEVELS)))
    return EngineBatchResult(
        i, i, f, f, f, f, widths, f, severity, f, f, i, rejections, message_slot
    )
