"""Test drivers of the per-point stages: vectorised over slots for convenience, each a loop
that calls the serving stage functions (:mod:`streamrnn.stages`) point by point, on a
:class:`~streamrnn.state.series_table.SeriesTable` that declares the stage's columns from
its schema (so tests can read the columns by name). Nothing here re-implements a stage.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

from streamrnn.config import ScoringConfig
from streamrnn.engine.build import build_chain
from streamrnn.stages import (
    alert_rule,
    calibration,
    chain,
    evt,
    likelihood,
    novelty,
    schema,
    seasonal,
    tail,
)
from streamrnn.stages.features import VALUE_LIMIT
from streamrnn.state.series_table import SeriesTable

Array = np.ndarray[Any, Any]


def chain_params(**scoring: Any) -> chain.ChainParams:
    """The chain's parameters for ``ScoringConfig(**scoring)``."""
    return build_chain(ScoringConfig(**scoring))


class _Driver:
    """A table with some stage columns, and slots by series name."""

    def __init__(self, columns: Sequence[schema.Column], rows: int) -> None:
        self.table = SeriesTable(max_series=rows)
        schema.declare(self.table, columns)

    def slots(self, *names: str) -> Array:
        return self.table.resolve(list(names), [None] * len(names))

    def column(self, name: str) -> Array:
        return self.table.column(name)


class ChainStep(NamedTuple):
    """Per slot: score, severity, armed score, learned."""

    score: Array
    severity: Array
    armed_score: Array
    learn: Array


class ChainDriver(_Driver):
    """The scoring chain (:func:`streamrnn.stages.chain.score_point`) over a table."""

    def __init__(self, params: chain.ChainParams, rows: int = 16) -> None:
        super().__init__(chain.columns(params), rows)
        self.params = params

    def step(
        self,
        slots: Array,
        raw: Array,
        seen_before: Array,
        ts: Array | float = 0.0,
        value: Array | float = 0.0,
    ) -> ChainStep:
        """One point per (distinct) slot: raw scores, points seen, times (epoch s) and values
        as they arrived (values beyond the limit are clamped and flagged, as the kernel
        does)."""
        n = len(slots)
        raw_a, seen_a = np.broadcast_to(raw, n), np.broadcast_to(seen_before, n)
        ts_a, value_a = np.broadcast_to(ts, n), np.broadcast_to(value, n)
        state = chain.bind(self.params, self.table)
        out = ChainStep(np.zeros(n), np.zeros(n, np.int8), np.zeros(n), np.zeros(n, bool))
        for i, s in enumerate(np.asarray(slots).tolist()):
            v = float(value_a[i])
            clamped = min(max(v, -VALUE_LIMIT), VALUE_LIMIT) if not math.isnan(v) else v
            r = chain.score_point(
                state, self.params, s, float(ts_a[i]), clamped, abs(v) > VALUE_LIMIT,
                float(raw_a[i]), float(seen_a[i]),
            )  # fmt: skip
            out.score[i], out.severity[i] = r.score, r.severity
            out.armed_score[i], out.learn[i] = r.armed_score, r.learn
        return out


_CALIBRATORS = {
    "likelihood": (likelihood.LikelihoodState, likelihood.COLUMNS, likelihood),
    "tail": (tail.TailState, tail.COLUMNS, tail),
    "evt": (evt.EVTState, evt.COLUMNS, evt),
}


class CalibratorDriver(_Driver):
    """One calibrator (``likelihood``, ``tail`` or ``evt``) with its parameters record."""

    def __init__(self, kind: str, params: Any, rows: int = 16) -> None:
        self.state_type, columns, self.module = _CALIBRATORS[kind]
        super().__init__(columns, rows)
        self.columns = columns
        self.params = params

    def _state(self) -> Any:
        return schema.bind(self.state_type, self.table, self.columns)

    def score(self, slots: Array, raw: Array) -> Array:
        """Scores (learns nothing), one per slot."""
        st = self._state()
        raw_a = np.broadcast_to(raw, len(slots))
        return np.array(
            [
                self.module.score(st, self.params, int(s), float(r))
                for s, r in zip(slots, raw_a, strict=True)
            ]
        )

    def learn(self, slots: Array, raw: Array) -> None:
        """Teach one raw score per slot (NaN ignored)."""
        st = self._state()
        for s, r in zip(slots, np.broadcast_to(raw, len(slots)), strict=True):
            self.module.learn(st, self.params, int(s), float(r))


class RuleStep(NamedTuple):
    severity: Array
    armed: Array
    hit: Array


class RuleDriver(_Driver):
    """The alert rule (:func:`streamrnn.stages.alert_rule.decide`)."""

    def __init__(self, params: alert_rule.RuleParams, rows: int = 16) -> None:
        alert_rule.check(params)
        super().__init__(alert_rule.COLUMNS, rows)
        self.params = params

    def step(
        self,
        slots: Array,
        score: Array,
        ts: Array | float = 0.0,
        eligible: Array | bool = True,
        skip_cooldown: Array | bool = False,
    ) -> RuleStep:
        n = len(slots)
        st = schema.bind(alert_rule.RuleState, self.table, alert_rule.COLUMNS)
        args = [np.broadcast_to(a, n) for a in (score, ts, eligible, skip_cooldown)]
        out = RuleStep(np.zeros(n, np.int8), np.zeros(n, bool), np.zeros(n, bool))
        for i, s in enumerate(np.asarray(slots).tolist()):
            sev, armed, hit = alert_rule.decide(
                st, self.params, s, float(args[1][i]), float(args[0][i]), bool(args[2][i]),
                bool(args[3][i]),
            )  # fmt: skip
            out.severity[i], out.armed[i], out.hit[i] = sev, armed, hit
        return out


class NoveltyStep(NamedTuple):
    eligible: Array
    skip_cooldown: Array
    deviation: Array


class NoveltyDriver(_Driver):
    """Level novelty (:mod:`streamrnn.stages.novelty`)."""

    def __init__(self, params: novelty.NoveltyParams, rows: int = 16) -> None:
        novelty.check(params)
        super().__init__(novelty.COLUMNS, rows)
        self.params = params

    def _state(self) -> novelty.NoveltyState:
        return schema.bind(novelty.NoveltyState, self.table, novelty.COLUMNS)

    def step(
        self, slots: Array, value: Array, ts: Array, learn: Array | bool = True
    ) -> NoveltyStep:
        """Judge, then learn (where ``learn``), one value per slot."""
        n = len(slots)
        st = self._state()
        value_a, ts_a, learn_a = (np.broadcast_to(a, n) for a in (value, ts, learn))
        out = NoveltyStep(np.zeros(n, bool), np.zeros(n, bool), np.zeros(n))
        for i, s in enumerate(np.asarray(slots).tolist()):
            t, v = float(ts_a[i]), float(value_a[i])
            out.eligible[i], out.skip_cooldown[i], out.deviation[i] = novelty.judge(
                st, self.params, s, t, v
            )
            if learn_a[i]:
                novelty.learn(st, self.params, s, t, v)
        return out

    def novelty(self, slots: Array, value: Array, ts: Array) -> Array:
        st = self._state()
        n = len(slots)
        value_a, ts_a = np.broadcast_to(value, n), np.broadcast_to(ts, n)
        return np.array(
            [novelty.novelty_of(st, self.params, int(s), float(t), float(v))
             for s, t, v in zip(slots, ts_a, value_a, strict=True)]
        )  # fmt: skip

    def note_alerts(self, slots: Array, deviation: Array, opened: Array) -> None:
        st = self._state()
        for s, d, o in zip(slots, deviation, opened, strict=True):
            if o:
                novelty.note_alert(st, int(s), float(d))


class SeasonalDriver(_Driver):
    """The seasonal profile (:mod:`streamrnn.stages.seasonal`)."""

    def __init__(self, rows: int = 16) -> None:
        super().__init__(seasonal.COLUMNS, rows)

    def _state(self) -> seasonal.SeasonalState:
        return schema.bind(seasonal.SeasonalState, self.table, seasonal.COLUMNS)

    def deflate(self, slots: Array, raw: Array, ts: Array) -> Array:
        st = self._state()
        n = len(slots)
        raw_a, ts_a = np.broadcast_to(raw, n), np.broadcast_to(ts, n)
        return np.array(
            [
                seasonal.deflate(st, int(s), float(r), float(t))
                for s, r, t in zip(slots, raw_a, ts_a, strict=True)
            ]
        )

    def learn(self, slots: Array, raw: Array, ts: Array) -> None:
        st = self._state()
        n = len(slots)
        for s, r, t in zip(slots, np.broadcast_to(raw, n), np.broadcast_to(ts, n), strict=True):
            seasonal.learn(st, int(s), float(r), float(t))


__all__ = [
    "CalibratorDriver",
    "ChainDriver",
    "ChainStep",
    "NoveltyDriver",
    "RuleDriver",
    "SeasonalDriver",
    "calibration",
    "chain_params",
]
