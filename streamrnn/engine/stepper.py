"""Run a batch through the compiled kernel (:mod:`streamrnn.engine.kernel`): binding and
parallel work units.

:class:`BatchStepper` holds each model group's exported weights (once per model swap, not
per batch), binds the stages' state records to the series table's columns, splits a batch
into parallel work units and runs them for each model group present, so groups may have
different architectures (GRU or LSTM, any size). The units run on ``threads`` threads (the
caller's and a small pool), each taking the next unit when it is done with one: the kernel
releases the GIL, and on a busy machine a thread waiting for a core does not hold back
units the other one could run.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

import numpy as np

from streamrnn.arrays import FloatArray, IntArray
from streamrnn.engine.kernel import Batch, Model, StepOutput, step_chunk
from streamrnn.engine.workspace import Workspace, workspace
from streamrnn.forecast.export import cell_weights, head_weights
from streamrnn.forecast.gru import RecurrentForecaster
from streamrnn.stages import chain, features, interval, schema
from streamrnn.state.series_table import SeriesTable


class ServedModel(Protocol):
    """What the stepper needs of a model group: its name (the state column is
    ``state.<name>``) and its model."""

    @property
    def name(self) -> str: ...

    @property
    def model(self) -> RecurrentForecaster: ...


__all__ = ["BatchStepper"]

#: Threads the kernel may run on: the machine's cores.
_MAX_THREADS: int = os.cpu_count() or 1
#: The kernel, typed loosely: numba's dispatcher signature is not what mypy infers.
_STEP_CHUNK: Any = step_chunk

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


class BatchStepper:
    """Steps batches with the kernel for one engine's table, chain and model groups."""

    def __init__(
        self,
        table: SeriesTable,
        chain_params: chain.ChainParams,
        normaliser_alpha: float,
        threads: int,
    ) -> None:
        self.table = table
        self.chain_params = chain_params
        self.feature_params = features.FeatureParams(float(normaliser_alpha))
        self.threads = max(1, min(threads, _MAX_THREADS))
        self._models: list[tuple[Any, Any, str]] = []
        #: The stages' state records over the table's columns, and the table generation
        #: they were bound at (the table reallocates its columns as it grows).
        self._bound: (
            tuple[int, features.FeatureState, interval.IntervalState, chain.ChainState] | None
        ) = None
        #: Per (model group, worker): the kernel's scratch, grown to the largest unit seen.
        self._workspaces: dict[tuple[int, int], Workspace] = {}
        self._pool = (
            ThreadPoolExecutor(self.threads - 1, thread_name_prefix="kernel")
            if self.threads > 1
            else None
        )

    def set_models(self, groups: Sequence[ServedModel]) -> None:
        """Export the groups' weights (call again after a model swap)."""
        self._models = [
            (cell_weights(g.model), head_weights(g.model), f"state.{g.name}") for g in groups
        ]
        self._workspaces.clear()

    def states(
        self,
    ) -> tuple[features.FeatureState, interval.IntervalState, chain.ChainState]:
        """The feature, interval and scoring state records over the table's live columns."""
        if self._bound is None or self._bound[0] != self.table.generation:
            self._bound = (
                self.table.generation,
                schema.bind(features.FeatureState, self.table, features.COLUMNS),
                schema.bind(interval.IntervalState, self.table, interval.COLUMNS),
                chain.bind(self.chain_params, self.table),
            )
        return self._bound[1], self._bound[2], self._bound[3]

    def model(self, g: int) -> Model:
        """Model group ``g``'s exported weights and its state column (as the table holds
        it now: bind again after the table grows)."""
        cell, head, column = self._models[g]
        return Model(cell, head, self.table.column(column))

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
        assert self._models, "set_models() first"
        n = len(ts)
        out = StepOutput(
            forecast=np.empty(n),
            spread=np.empty(n),
            half_width=np.empty((n, len(interval.LEVELS))),
            scale=np.empty(n),
            score=np.empty(n),
            armed_score=np.empty(n),
            severity=np.empty(n, dtype=np.int8),
        )
        ts = np.ascontiguousarray(ts, dtype=np.float64)
        values = np.ascontiguousarray(values, dtype=np.float64)
        feature_state, interval_state, chain_state = self.states()
        present = np.unique(groups) if len(groups) else np.zeros(1, dtype=np.int64)
        for g in present.tolist():
            rows = np.flatnonzero(groups == g) if len(present) > 1 else np.arange(len(slots))
            batch = Batch(
                row_slot=np.ascontiguousarray(slots[rows], dtype=np.int64),
                row_start=np.ascontiguousarray(starts[rows], dtype=np.int64),
                row_length=np.ascontiguousarray(lengths[rows], dtype=np.int64),
                chunks=self._chunks(lengths[rows]),
                ts=ts,
                values=values,
            )
            args = (
                batch, feature_state, self.feature_params, self.model(g), interval_state,
                chain_state, self.chain_params, out,
            )  # fmt: skip
            widest = int(np.diff(batch.chunks).max()) if len(batch.chunks) > 1 else 0
            self._run_units(g, widest, args, len(batch.chunks) - 1, n >= 2 * MIN_CHUNK_POINTS)
        return out

    def _workspace(self, g: int, worker: int, rows: int) -> Workspace:
        """Worker ``worker``'s scratch for units of group ``g`` of up to ``rows`` rows."""
        ws = self._workspaces.get((g, worker))
        if ws is None or ws.h.shape[0] < rows:
            cell, head, _ = self._models[g]
            ws = workspace(max(rows, 2 * (0 if ws is None else ws.h.shape[0])), cell, head)
            self._workspaces[(g, worker)] = ws
        return ws

    def _run_units(
        self, g: int, rows: int, args: tuple[Any, ...], units: int, parallel: bool
    ) -> None:
        """Run work units 0..units-1 of group ``g`` (at most ``rows`` rows each), on the
        pool too if ``parallel``."""
        if self._pool is None or not parallel or units == 1:
            ws = self._workspace(g, 0, rows)
            for unit in range(units):
                _STEP_CHUNK(*args, ws, unit)
            return
        taken = itertools.count()  # next() on it is atomic under the GIL

        def work(worker: int) -> None:
            ws = self._workspace(g, worker, rows)
            while (unit := next(taken)) < units:
                _STEP_CHUNK(*args, ws, unit)

        helpers = [self._pool.submit(work, w) for w in range(1, self.threads)]
        try:
            work(0)
        finally:
            # Whatever the caller's units raised, no helper may still be writing the
            # table when the batch's error reaches the daemon (which retries the batch).
            for helper in helpers:
                helper.exception()
        for helper in helpers:
            helper.result()

    def warm_up(self) -> None:
        """Compile the kernel (an empty batch) now rather than on the first batch."""
        empty_i, empty_f = np.zeros(0, dtype=np.int64), np.zeros(0)
        self.run(empty_i, empty_i, empty_i, empty_i, empty_f, empty_f)
