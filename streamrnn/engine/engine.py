"""The detection engine: decoded points in, forecasts, scores and alert severities out.

One call of :meth:`Engine.process` handles one polled batch:

1. resolve each message's series to a state slot (new series get one while there is room);
2. drop points that do not move their series forward in time (out of order, duplicate);
3. lay the points out as a (K series × T points) grid, in arrival order per series;
4. gather the K series' states (features, and the recurrent state per model group);
5. walk the grid column by column, each column vectorised over all K series: features →
   decay and forecast (one torch call per model group) → raw score → calibration → alert
   rule → learn the points the scoring chain allows (normaliser, score history, and one
   torch call to advance the recurrent state);
6. scatter the states back — each series' hidden state persists from call to call;
7. optionally roll each stepped series' model forward for a k-step forecast.

With single-point messages T is 1: one forecast call and one advance call per batch.
The engine is the same whether points come from Kafka or from files; it knows nothing of
Kafka. Its only torch use is the model step.

Any finite value is safe: values are clamped to ±1e30 (value units) before they reach a
series' state, and a point beyond that is scored but not learned, so one absurd value cannot
leave a series' forecasts or scores non-finite (:mod:`streamrnn.forecast.features`,
:mod:`streamrnn.scoring.chain`; both paths, the fused kernel and the column path, alike).
"""

from __future__ import annotations

import fnmatch
import time
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import chain

import numpy as np
import numpy.typing as npt
import torch

from streamrnn.arrays import FloatArray, Int8Array, IntArray
from streamrnn.decode import DecodedMessage, Rejection
from streamrnn.engine.fused import MIN_SEEN_TO_SCORE, FusedStepper, StepOutput
from streamrnn.engine.series_table import SeriesTable
from streamrnn.forecast.features import FeatureState, clamp_values, learn_point, point_features
from streamrnn.forecast.gru import RecurrentForecaster
from streamrnn.forecast.multistep import Horizon, rollout
from streamrnn.scoring.chain import ScoringChain
from streamrnn.scoring.raw import standardised_residual
from streamrnn.stage_timer import StageTimer

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

    def __len__(self) -> int:
        return len(self.ts)


class Engine:
    """Holds every series' state and steps it; see the module docstring."""

    def __init__(
        self,
        groups: Sequence[ModelGroup],
        chain: ScoringChain,
        max_series: int,
        normaliser_alpha: float,
        horizon_points: int = 0,
        fused: bool = True,
        threads: int = 1,
    ) -> None:
        """``fused``: step batches with the compiled kernel where it serves the models and
        chain (:mod:`streamrnn.engine.fused`), else the column path; ``threads``: cores the
        kernel may use (series are stepped in parallel)."""
        if not groups or groups[-1].pattern is not None:
            raise ValueError("the last model group must be the catch-all (pattern None)")
        self.groups = list(groups)
        for group in self.groups:
            group.model.eval()
        self.chain = chain
        self.rule = chain.rule
        self.normaliser_alpha = normaliser_alpha
        self.horizon_points = horizon_points
        self.table = SeriesTable(max_series)
        for name in FeatureState.column_names():
            self.table.add_column(name)
        self.table.add_column("group", dtype=np.int64, fill=len(self.groups) - 1)
        # Latest accepted timestamp (learned or not): the ordering check's reference.
        self.table.add_column("latest_ts", fill=-np.inf)
        for group in self.groups:
            spec = group.model.spec
            self.table.add_column(
                f"state.{group.name}", shape=(spec.state_rows, spec.hidden_size), dtype=np.float32
            )
        chain.bind(self.table)
        self._use_fused = fused
        self._fused_threads = threads
        self._fused: FusedStepper | None = None
        self._refresh_fused()

    def _refresh_fused(self) -> None:
        """(Re)pack the models for the fused kernel, or fall back to the column path."""
        if not self._use_fused or not FusedStepper.supports(self.groups, self.chain):
            self._fused = None
            return
        if self._fused is None:
            self._fused = FusedStepper(
                self.table, self.chain, self.normaliser_alpha, self._fused_threads
            )
        self._fused.set_models(self.groups)

    def warm_up(self) -> None:
        """Compile the fused kernel now (an empty batch) rather than on the first batch: the
        first compilation takes ~15 s, later starts load it from numba's cache."""
        if self._fused is not None:
            self._fused.warm_up()

    @property
    def fused(self) -> bool:
        """Whether batches are stepped by the fused kernel (else the column path)."""
        return self._fused is not None

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
        self._refresh_fused()

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
        ts = np.fromiter(chain.from_iterable(m.ts for m in messages), np.float64, total)
        values = np.fromiter(chain.from_iterable(m.values for m in messages), np.float64, total)
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
        """Step the points (grouped by slot, time order within each) with the fused kernel
        or the column path, then the optional k-step forecasts."""
        started = time.perf_counter()
        slots, starts, lengths = np.unique(point_slot, return_index=True, return_counts=True)
        tbl = self.table
        tbl.column("latest_ts")[slots] = ts[starts + lengths - 1]
        series_group = tbl.column("group")[slots]
        if self._fused is not None:
            timer.add("engine.gather", time.perf_counter() - started)
            started = time.perf_counter()
            out = self._fused.run(slots, series_group, starts, lengths, ts, values)
            timer.add("engine.fused", time.perf_counter() - started)
        else:
            timer.add("engine.gather", time.perf_counter() - started)
            out = self._step_columns(slots, series_group, starts, lengths, ts, values, timer)
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
            score=out.score,
            severity=out.severity,
            armed_score=out.armed_score,
            error_scale=out.scale,
            group=np.repeat(series_group, lengths),
            rejections=rejections,
            message_slot=message_slot,
            horizon=horizon,
            horizon_slots=slots if horizon is not None else None,
        )

    def _horizon(self, slots: IntArray, series_group: IntArray) -> Horizon:
        """k-step forecasts after the batch for ``slots`` (their states as stored now)."""
        tbl = self.table
        names = FeatureState.column_names()
        horizon = Horizon(*(np.full((len(slots), self.horizon_points), np.nan) for _ in range(3)))
        with torch.inference_mode():
            for g in np.unique(series_group):
                rows = np.flatnonzero(series_group == g)
                group = self.groups[int(g)]
                column = tbl.column(f"state.{group.name}")
                state = torch.from_numpy(column[slots[rows]].transpose(1, 0, 2).copy())
                features = FeatureState(*(tbl.column(n)[slots[rows]] for n in names))
                ahead = rollout(group.model, state, features, self.horizon_points)
                horizon.ts[rows], horizon.mean[rows] = ahead.ts, ahead.mean
                horizon.spread[rows] = ahead.spread
        return horizon

    def _step_columns(
        self,
        unique_slots: IntArray,
        unique_group: IntArray,
        group_start: IntArray,
        unique_lengths: IntArray,
        ts: FloatArray,
        values: FloatArray,
        timer: StageTimer,
    ) -> StepOutput:
        """The reference path: the batch as a (K series x T points) grid, walked column by
        column, each column vectorised over the series still active in it (numpy, and torch
        for the model). Per-point results in the order of ``ts``."""
        clock = time.perf_counter
        started = clock()
        k = len(unique_slots)
        # Rows ordered by points in the batch, most first: the series still active in column
        # j are then rows [0, k_j), so each column works on a prefix and a batch costs its
        # points, not (series x the busiest series' points).
        by_length = np.argsort(-unique_lengths, kind="stable")
        rank = np.empty(k, dtype=np.int64)
        rank[by_length] = np.arange(k)
        slots, lengths = unique_slots[by_length], unique_lengths[by_length]
        t_max = int(lengths[0])
        row = rank[np.repeat(np.arange(k), unique_lengths)]
        col = np.arange(len(ts)) - np.repeat(group_start, unique_lengths)
        active_rows = np.searchsorted(-lengths, -np.arange(t_max), side="left")  # lengths > j
        grid_ts = np.zeros((k, t_max))
        grid_val = np.zeros((k, t_max))
        grid_ts[row, col], grid_val[row, col] = ts, values
        # Features, forecasts and residuals see values clamped to ±VALUE_LIMIT; the chain
        # gets them as they arrived (it holds those beyond the limit out of learning).
        grid_clamped = clamp_values(grid_val)
        tbl = self.table

        # Gather.
        names = FeatureState.column_names()
        features = FeatureState(*(tbl.column(name)[slots] for name in names))
        series_group = unique_group[by_length]
        members = {int(g): np.flatnonzero(series_group == g) for g in np.unique(series_group)}
        states = {
            g: torch.from_numpy(
                tbl.column(f"state.{self.groups[g].name}")[slots[rows]].transpose(1, 0, 2).copy()
            )
            for g, rows in members.items()
        }

        out_forecast = np.full((k, t_max), np.nan)
        out_spread = np.full((k, t_max), np.nan)
        out_scale = np.full((k, t_max), np.nan)
        out_score = np.zeros((k, t_max))
        out_armed = np.zeros((k, t_max))
        out_severity = np.zeros((k, t_max), dtype=np.int8)
        delta = np.zeros(k)
        log_var = np.zeros(k)
        spent = {"features": 0.0, "model": 0.0, "scoring": 0.0}
        timer.add("engine.gather", clock() - started)
        with torch.inference_mode():
            for j in range(t_max):
                t0 = clock()
                kj = int(active_rows[j])
                # Per group: how many of its rows (ascending) are in the active prefix.
                live = {g: (rows, int(np.searchsorted(rows, kj))) for g, rows in members.items()}
                now = FeatureState(*(getattr(features, name)[:kj] for name in names))
                col_ts, col_val = grid_ts[:kj, j], grid_clamped[:kj, j]
                f = point_features(now, col_ts, col_val)
                t1 = clock()
                target = torch.from_numpy(f.target)
                decayed = {}
                for g, (rows, n) in live.items():
                    if n == 0:
                        continue
                    model = self.groups[g].model
                    here = rows[:n]
                    decayed[g] = model.decay_state(states[g][:, :n], target[here])
                    mean, lv = model.predict(decayed[g][model.spec.num_layers - 1], target[here])
                    delta[here], log_var[here] = mean.numpy(), lv.numpy()
                t2 = clock()
                has_forecast = f.seen_before > 0
                forecast = np.where(has_forecast, f.prev_value + f.scale * delta[:kj], np.nan)
                spread = np.where(has_forecast, f.scale * np.exp(0.5 * log_var[:kj]), np.nan)
                raw = standardised_residual(col_val, forecast, spread)
                raw = np.where(f.seen_before >= MIN_SEEN_TO_SCORE, raw, np.nan)
                arrived = grid_val[:kj, j]
                step = self.chain.step(slots[:kj], raw, f.seen_before, col_ts, arrived)
                out_forecast[:kj, j], out_spread[:kj, j] = forecast, spread
                out_scale[:kj, j] = f.scale
                out_score[:kj, j], out_armed[:kj, j] = step.score, step.armed_score
                out_severity[:kj, j] = step.severity
                learn = step.learn
                t3 = clock()
                learned = learn_point(now, col_ts, col_val, f, learn, self.normaliser_alpha)
                for name in names:
                    getattr(features, name)[:kj] = getattr(learned, name)
                t4 = clock()
                inputs = torch.from_numpy(f.inputs)
                for g, (rows, n) in live.items():
                    if n == 0:
                        continue
                    here = rows[:n]
                    advanced = self.groups[g].model.advance(decayed[g], inputs[here])
                    keep = learn[here]
                    if keep.all():
                        states[g][:, :n] = advanced
                    else:
                        states[g][:, :n] = torch.where(
                            torch.from_numpy(keep).view(1, -1, 1), advanced, states[g][:, :n]
                        )
                t5 = clock()
                spent["features"] += (t1 - t0) + (t4 - t3)
                spent["model"] += (t2 - t1) + (t5 - t4)
                spent["scoring"] += t3 - t2

        for name, seconds in spent.items():
            timer.add(f"engine.{name}", seconds)
        started = clock()
        # Scatter.
        for name in names:
            tbl.column(name)[slots] = getattr(features, name)
        for g, rows in members.items():
            column = tbl.column(f"state.{self.groups[g].name}")
            column[slots[rows]] = states[g].numpy().transpose(1, 0, 2)
        timer.add("engine.scatter", clock() - started)
        return StepOutput(
            forecast=out_forecast[row, col],
            spread=out_spread[row, col],
            scale=out_scale[row, col],
            score=out_score[row, col],
            armed_score=out_armed[row, col],
            severity=out_severity[row, col],
        )


def _empty_result(
    rejections: list[tuple[int, Rejection]], message_slot: IntArray
) -> EngineBatchResult:
    f = np.zeros(0)
    i = np.zeros(0, dtype=np.int64)
    severity = np.zeros(0, dtype=np.int8)
    return EngineBatchResult(i, i, f, f, f, f, f, severity, f, f, i, rejections, message_slot)
