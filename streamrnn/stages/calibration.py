"""The calibrator a series' raw scores go through: one of :mod:`.likelihood`, :mod:`.tail`
and :mod:`.evt`, chosen by ``scoring.calibration``.

A calibrator keeps per-series statistics of the series' own raw scores and turns each raw
score into a score in [0, 1) on the scale of :mod:`.tail_probability`, learning online. The
chosen calibrator's state lives in the series table; the others get zero-row placeholders,
so the compiled chain is one function for every choice. Adding a calibrator is its module
plus one line in each of :class:`CalibrationParams`, :class:`CalibrationState`, :data:`KINDS`,
:func:`score` and :func:`learn`.
"""

from __future__ import annotations

from typing import NamedTuple

from streamrnn.stages import evt, likelihood, schema, tail
from streamrnn.stages.jit import stage

__all__ = ["KINDS", "CalibrationParams", "CalibrationState", "columns_of", "learn", "score"]

LIKELIHOOD, TAIL, EVT = 0, 1, 2
#: Calibrator code by configured name, with the columns it keeps per series.
KINDS = {
    "likelihood": (LIKELIHOOD, likelihood.COLUMNS),
    "tail": (TAIL, tail.COLUMNS),
    "evt": (EVT, evt.COLUMNS),
}


class CalibrationParams(NamedTuple):
    """``kind``: which calibrator (a code of :data:`KINDS`); every calibrator's parameters."""

    kind: int
    likelihood: likelihood.LikelihoodParams
    tail: tail.TailParams
    evt: evt.EVTParams


class CalibrationState(NamedTuple):
    """Every calibrator's state; only the chosen one's has rows."""

    likelihood: likelihood.LikelihoodState
    tail: tail.TailState
    evt: evt.EVTState


def columns_of(kind: int) -> tuple[schema.Column, ...]:
    """The per-series columns of calibrator ``kind``."""
    return next(cols for code, cols in KINDS.values() if code == kind)


def bind(p: CalibrationParams, table: schema.Table) -> CalibrationState:
    """The state of the chosen calibrator over ``table``, placeholders for the others."""
    return CalibrationState(
        likelihood=schema.bind_if(
            p.kind == LIKELIHOOD, likelihood.LikelihoodState, table, likelihood.COLUMNS
        ),
        tail=schema.bind_if(p.kind == TAIL, tail.TailState, table, tail.COLUMNS),
        evt=schema.bind_if(p.kind == EVT, evt.EVTState, table, evt.COLUMNS),
    )


@stage
def score(st: CalibrationState, p: CalibrationParams, s: int, raw: float) -> float:
    """The chosen calibrator's score of ``raw`` (NaN: 0); learns nothing."""
    if p.kind == LIKELIHOOD:
        return likelihood.score(st.likelihood, p.likelihood, s, raw)
    if p.kind == TAIL:
        return tail.score(st.tail, p.tail, s, raw)
    return evt.score(st.evt, p.evt, s, raw)


@stage
def learn(st: CalibrationState, p: CalibrationParams, s: int, raw: float) -> None:
    """Teach the chosen calibrator ``raw`` (NaN is ignored)."""
    if p.kind == LIKELIHOOD:
        likelihood.learn(st.likelihood, p.likelihood, s, raw)
    elif p.kind == TAIL:
        tail.learn(st.tail, p.tail, s, raw)
    else:
        evt.learn(st.evt, p.evt, s, raw)
