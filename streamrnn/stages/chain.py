"""The scoring chain of one point: raw score → seasonal deflation → calibration → level
novelty → alert rule → learning policy (each its own stage module).

:func:`score_point` is what the serving kernel runs for every point, and what tests drive
point by point. A value beyond ``VALUE_LIMIT`` (:mod:`.features`) arrives clamped with
``beyond`` set: it is scored as if at the limit, held out of learning (:mod:`.learning`),
and never learned by level novelty or the seasonal profile (novelty's envelopes would
otherwise make every later excursion look ordinary for months).
"""

from __future__ import annotations

import math
from typing import NamedTuple

from streamrnn.stages import alert_rule, calibration, learning, novelty, schema, seasonal
from streamrnn.stages.jit import stage

__all__ = ["ChainParams", "ChainState", "PointScore", "bind", "columns", "score_point"]


class ChainParams(NamedTuple):
    """Every scoring stage's parameters."""

    seasonal: seasonal.SeasonalParams
    calibration: calibration.CalibrationParams
    novelty: novelty.NoveltyParams
    rule: alert_rule.RuleParams
    learning: learning.LearningParams


class ChainState(NamedTuple):
    """Every scoring stage's per-series state (a stage that is off: zero rows)."""

    seasonal: seasonal.SeasonalState
    calibration: calibration.CalibrationState
    novelty: novelty.NoveltyState
    rule: alert_rule.RuleState
    learning: learning.LearningState


class PointScore(NamedTuple):
    """One point's outcome: the calibrated score, the score where the rule was armed (else
    0), the severity of the alert fired (0 none, 1 warning, 2 critical), and whether the
    point is learned (by the calibrator here, and by the caller's features and model)."""

    score: float
    armed_score: float
    severity: int
    learn: bool


def columns(p: ChainParams) -> tuple[schema.Column, ...]:
    """The chain's per-series columns in state-record order: calibrator, rule, seasonal
    profile and novelty (if on), skipped-points run."""
    return (
        calibration.columns_of(p.calibration.kind)
        + alert_rule.COLUMNS
        + (seasonal.COLUMNS if p.seasonal.on else ())
        + (novelty.COLUMNS if p.novelty.on else ())
        + learning.COLUMNS
    )


def bind(p: ChainParams, table: schema.Table) -> ChainState:
    """The chain's state over ``table`` (its :func:`columns` declared there)."""
    return ChainState(
        seasonal=schema.bind_if(p.seasonal.on, seasonal.SeasonalState, table, seasonal.COLUMNS),
        calibration=calibration.bind(p.calibration, table),
        novelty=schema.bind_if(p.novelty.on, novelty.NoveltyState, table, novelty.COLUMNS),
        rule=schema.bind(alert_rule.RuleState, table, alert_rule.COLUMNS),
        learning=schema.bind(learning.LearningState, table, learning.COLUMNS),
    )


@stage
def score_point(
    st: ChainState,
    p: ChainParams,
    s: int,
    t: float,
    v: float,
    beyond: bool,
    raw: float,
    seen: float,
) -> PointScore:
    """Score the point of series ``s`` at ``t`` (epoch s) with clamped value ``v``
    (``beyond``: it arrived beyond the limit) and raw score ``raw`` (NaN: none), the series
    having learned ``seen`` points; decide its alert and whether it is learned, and teach
    the calibrator if it is."""
    if p.seasonal.on:
        original = raw
        raw = seasonal.deflate(st.seasonal, s, raw, t)
        if not beyond:
            seasonal.learn(st.seasonal, s, original, t)
    score = 0.0
    if learning.warm(p.learning, seen):
        score = calibration.score(st.calibration, p.calibration, s, raw)
    eligible, skip_cooldown, deviation = True, False, 0.0
    if p.novelty.on:
        # Every point widens the envelopes, anomalous or not: a repeat is not novel.
        eligible, skip_cooldown, deviation = novelty.judge(st.novelty, p.novelty, s, t, v)
        if not beyond:
            novelty.learn(st.novelty, p.novelty, s, t, v)
    severity, armed, hit = alert_rule.decide(st.rule, p.rule, s, t, score, eligible, skip_cooldown)
    if p.novelty.on and severity > 0 and armed:
        novelty.note_alert(st.novelty, s, deviation)
    learn = learning.decide(st.learning, p.learning, s, hit, beyond)
    if learn and math.isfinite(raw):
        calibration.learn(st.calibration, p.calibration, s, raw)
    return PointScore(score, score if armed else 0.0, severity, learn)
