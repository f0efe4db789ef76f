"""The batch kernel: every point of a batch through features, model and scoring, compiled.

A short composer of the per-point stages (:mod:`streamrnn.stages`), nothing of their
arithmetic: for each point, :func:`~streamrnn.stages.features.point_features` →
:func:`~streamrnn.stages.cell.decay_into` → the head
(:mod:`~streamrnn.stages.head`) → :func:`~streamrnn.stages.residual.raw_score` → the interval
(:mod:`~streamrnn.stages.interval`) → :func:`~streamrnn.stages.chain.score_point` → if
the point is learned, :func:`~streamrnn.stages.features.learn_point` and the cell's
:func:`~streamrnn.stages.cell.advance`.

The series of a batch are independent, so they are split into work units ("chunks") of
about equal points that threads run side by side (:mod:`streamrnn.engine.stepper`); within a
unit the points go column by column
(point j of every series that has one), the scalar work point by point and the model's
matrix products (head, and two per layer) as one BLAS call over the chunk's active series,
where a 64 x 192 product costs 0.27 us a series against 0.6 us as a per-point loop.
Everything reads and writes the series table's columns in place, indexed by slot. One call
serves one model group (one set of weights); the engine calls it per group.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from streamrnn.engine.workspace import Workspace
from streamrnn.stages import cell, chain, features, head, interval, residual
from streamrnn.stages.features import VALUE_LIMIT
from streamrnn.stages.jit import composer, stage

__all__ = ["Batch", "Model", "StepOutput", "step_chunk"]


class Batch(NamedTuple):
    """The points of one model group's series: row ``i`` is series ``row_slot[i]`` with
    ``row_length[i]`` points from ``row_start[i]`` of ``ts`` (epoch s, increasing per
    series) and ``values``; rows ``chunks[k]`` to ``chunks[k + 1]`` are one unit of
    parallel work."""

    row_slot: np.ndarray
    row_start: np.ndarray
    row_length: np.ndarray
    chunks: np.ndarray
    ts: np.ndarray
    values: np.ndarray


class Model(NamedTuple):
    """One model group: its cell and head weights, and its (capacity, S, H) state column."""

    cell: cell.CellWeights
    head: head.HeadWeights
    state: np.ndarray


class StepOutput(NamedTuple):
    """Per point, aligned with the batch's ``ts``: forecast and spread (value units; NaN for
    a series' first point), the half-widths of its central intervals (N, len(LEVELS) of
    :mod:`~streamrnn.stages.interval`, value units), step scale, score, armed score, alert
    severity."""

    forecast: np.ndarray
    spread: np.ndarray
    half_width: np.ndarray
    scale: np.ndarray
    score: np.ndarray
    armed_score: np.ndarray
    severity: np.ndarray


@stage
def _copy_state(source: np.ndarray, target: np.ndarray) -> None:
    """Copy one series' (S, H) state element by element: a slice assignment would first
    copy the source to a temporary in case the two overlap (an allocation per point)."""
    for row in range(source.shape[0]):
        for c in range(source.shape[1]):
            target[row, c] = source[row, c]


@composer
def step_chunk(
    batch: Batch,
    fs: features.FeatureState,
    fp: features.FeatureParams,
    model: Model,
    iv: interval.IntervalState,
    cs: chain.ChainState,
    cp: chain.ChainParams,
    out: StepOutput,
    ws: Workspace,
    chunk: int,
) -> None:
    """Forecast, score and learn every point of work unit ``chunk`` of ``batch``, with
    ``ws`` as scratch (at least the unit's rows). Units touch disjoint series, so threads may
    run different units at once (the GIL is released)."""
    top = model.cell.h_prior.shape[0] - 1
    first_row = batch.chunks[chunk]
    rows = batch.chunks[chunk + 1] - first_row
    h, hd, new_h, x, target = ws.h, ws.hd, ws.new_h, ws.x, ws.target
    longest = 0
    for i in range(rows):
        _copy_state(model.state[batch.row_slot[first_row + i]], h[i])
        longest = max(longest, batch.row_length[first_row + i])

    for j in range(longest):
        m = 0
        for i in range(rows):
            row = first_row + i
            if batch.row_length[row] > j:
                ws.active[m] = i
                ws.slot[m] = batch.row_slot[row]
                ws.point[m] = batch.row_start[row] + j
                m += 1
        # Features, decay and the head's input, per point.
        for a in range(m):
            s, p = ws.slot[a], ws.point[a]
            v = features.clamp(batch.values[p], VALUE_LIMIT)
            ws.scale[a], ws.gap[a] = features.point_features(fs, s, batch.ts[p], v, target, x[a])
            cell.mask_inputs(model.cell, x[a], target)
            cell.decay_into(model.cell, h, ws.active[a], target, hd, a)
            head.fill_input(ws.head_in, a, hd, top, target)
        head.hidden_layer(model.head, ws.head_in, m, ws.z1, ws.blas)
        # Forecast, score, decide and learn, per point.
        for a in range(m):
            s, p = ws.slot[a], ws.point[a]
            t = batch.ts[p]
            v = features.clamp(batch.values[p], VALUE_LIMIT)
            seen = fs.count[s]
            delta, log_var = head.output(model.head, ws.z1, a)
            forecast, spread = residual.forecast_of(
                seen, fs.last_value[s], ws.scale[a], delta, log_var
            )
            raw = residual.raw_score(v, forecast, spread, seen)
            beyond = abs(batch.values[p]) > VALUE_LIMIT
            # an absurd value is as if it had not arrived: the interval learns nothing
            interval.step(iv, s, spread, math.nan if beyond else raw, out.half_width[p])
            scored = chain.score_point(cs, cp, s, t, v, beyond, raw, seen)
            out.forecast[p] = forecast
            out.spread[p] = spread
            out.scale[p] = ws.scale[a]
            out.score[p] = scored.score
            out.armed_score[p] = scored.armed_score
            out.severity[p] = scored.severity
            ws.learn[a] = scored.learn
            if scored.learn:
                features.learn_point(fs, fp, s, t, v, ws.scale[a], ws.gap[a])
        # The cell consumes the points; a point not learned leaves its series' state as
        # it was (undecayed).
        cell.advance(model.cell, x, hd, m, ws.gi, ws.gh, new_h, ws.blas)
        for a in range(m):
            if ws.learn[a]:
                _copy_state(new_h[:, a], h[ws.active[a]])

    for i in range(rows):
        _copy_state(h[i], model.state[batch.row_slot[first_row + i]])
