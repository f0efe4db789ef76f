"""Scoring: per-series residual calibration (ResidualTailScorer) and the alert rule."""

from __future__ import annotations

import math

import numpy as np
import pytest

from streamrnn.engine.series_table import SeriesTable
from streamrnn.scoring.alert_rule import SEVERITY_NAMES, ThresholdRule
from streamrnn.scoring.residual_tail import MIN_SPREAD, ResidualTailScorer


@pytest.fixture
def table() -> SeriesTable:
    return SeriesTable(max_series=16)


@pytest.fixture
def scorer(table: SeriesTable) -> ResidualTailScorer:
    scorer = ResidualTailScorer(alpha=0.02)
    scorer.bind(table)
    return scorer


def _slots(table: SeriesTable, *names: str) -> np.ndarray:
    return table.resolve(list(names), [None] * len(names))


def _feed(scorer: ResidualTailScorer, slot: np.ndarray, residuals: np.ndarray) -> np.ndarray:
    return np.array([scorer.score_and_learn(slot, np.array([r]))[0] for r in residuals])


def _stats(table: SeriesTable, slot: int) -> tuple[float, float, float]:
    return tuple(float(table.column(c)[slot]) for c in ("resid_mean", "resid_var", "resid_count"))


def test_scorer_declares_its_columns_once(table: SeriesTable, scorer: ResidualTailScorer) -> None:
    for name in ("resid_mean", "resid_var", "resid_count"):
        assert table.column(name).shape[0] >= 1
    with pytest.raises(ValueError, match="already exists"):
        scorer.bind(table)


def test_nan_residual_scores_zero_and_is_not_learned(
    table: SeriesTable, scorer: ResidualTailScorer
) -> None:
    slot = _slots(table, "a")
    assert scorer.score_and_learn(slot, np.array([np.nan]))[0] == 0.0
    assert _stats(table, 0) == (0.0, 0.0, 0.0)
    _feed(scorer, slot, np.array([0.3, -0.1, 0.2, 0.0]))
    before = _stats(table, 0)
    assert scorer.score_and_learn(slot, np.array([np.nan]))[0] == 0.0
    assert _stats(table, 0) == before


def test_the_first_two_residuals_of_a_series_score_zero(
    table: SeriesTable, scorer: ResidualTailScorer
) -> None:
    slot = _slots(table, "a")
    scores = _feed(scorer, slot, np.array([5.0, -7.0, 0.1]))
    assert scores[0] == 0.0 and scores[1] == 0.0
    assert scores[2] > 0.0


def test_score_uses_only_the_history_before_the_point(
    table: SeriesTable, scorer: ResidualTailScorer
) -> None:
    slot = _slots(table, "a")
    _feed(scorer, slot, np.random.default_rng(0).normal(0.0, 0.5, 40))
    mean, var, count = _stats(table, 0)
    x = 2.0
    expected = math.erf(abs(x - mean) / max(math.sqrt(var), MIN_SPREAD) / math.sqrt(2.0))
    assert scorer.score_and_learn(slot, np.array([x]))[0] == pytest.approx(expected, abs=1e-12)
    # ... and then the point is learned.
    assert _stats(table, 0)[2] == count + 1
    assert _stats(table, 0)[0] > mean


def test_the_same_large_residual_scores_lower_once_it_has_been_learned(
    table: SeriesTable, scorer: ResidualTailScorer
) -> None:
    slot = _slots(table, "a")
    _feed(scorer, slot, np.random.default_rng(1).normal(0.0, 0.1, 50))
    first, second = _feed(scorer, slot, np.array([1.0, 1.0]))
    assert second < first


def test_large_residual_after_small_ones_scores_near_one(
    table: SeriesTable, scorer: ResidualTailScorer
) -> None:
    slot = _slots(table, "a")
    small = _feed(scorer, slot, np.random.default_rng(2).normal(0.0, 0.1, 60))
    assert (small[10:] < 0.9999).all()
    assert scorer.score_and_learn(slot, np.array([5.0]))[0] > 0.9999


def test_perfect_forecasts_keep_scores_finite(
    table: SeriesTable, scorer: ResidualTailScorer
) -> None:
    slot = _slots(table, "a")
    scores = _feed(scorer, slot, np.zeros(20))
    assert np.isfinite(scores).all() and (scores == 0).all()
    assert 0.0 < scorer.score_and_learn(slot, np.array([MIN_SPREAD]))[0] < 1.0


def test_series_are_scored_independently_in_one_vectorised_call(
    table: SeriesTable, scorer: ResidualTailScorer
) -> None:
    slots = _slots(table, "calm", "wild")
    rng = np.random.default_rng(3)
    for _ in range(40):
        scorer.score_and_learn(slots, np.array([rng.normal(0, 0.1), rng.normal(0, 5.0)]))
    scores = scorer.score_and_learn(slots, np.array([3.0, 3.0]))
    assert scores[0] > 0.9999  # 30 spreads out for the calm series
    assert scores[1] < 0.9  # under one spread for the wild one
    # Same as scoring the calm series alone with the same history.
    alone_table = SeriesTable(4)
    alone = ResidualTailScorer(alpha=0.02)
    alone.bind(alone_table)
    slot = _slots(alone_table, "calm")
    rng = np.random.default_rng(3)
    for _ in range(40):
        alone.score_and_learn(slot, np.array([rng.normal(0, 0.1)]))
        rng.normal(0, 5.0)
    assert alone.score_and_learn(slot, np.array([3.0]))[0] == pytest.approx(scores[0])


def test_scores_lie_in_zero_one(table: SeriesTable, scorer: ResidualTailScorer) -> None:
    slot = _slots(table, "a")
    rng = np.random.default_rng(4)
    residuals = rng.standard_cauchy(500) * 10.0
    residuals[::17] = np.nan
    scores = _feed(scorer, slot, residuals)
    assert np.isfinite(scores).all()
    assert ((scores >= 0) & (scores <= 1)).all()


# --- ThresholdRule -------------------------------------------------------------------------


RULE = ThresholdRule(warmup_points=30, warning_threshold=0.999, critical_threshold=0.99999)


def test_warm_up_points_report_score_zero_and_never_alert() -> None:
    scores = np.array([1.0, 0.99999, 0.5, 1.0])
    seen_before = np.array([0.0, 10.0, 29.0, 29.0])
    reported, severity = RULE.apply(scores, seen_before)
    assert (reported == 0).all()
    assert (severity == 0).all()


def test_thresholds_give_warning_and_critical() -> None:
    scores = np.array([0.0, 0.5, 0.9989, 0.999, 0.9995, 0.99999, 1.0])
    seen_before = np.full(len(scores), 30.0)
    reported, severity = RULE.apply(scores, seen_before)
    np.testing.assert_array_equal(reported, scores)
    assert severity.dtype == np.int8
    assert severity.tolist() == [0, 0, 0, 1, 1, 2, 2]
    assert {int(s): SEVERITY_NAMES[int(s)] for s in severity if s} == {
        1: "warning",
        2: "critical",
    }


def test_rule_works_on_a_series_by_points_grid() -> None:
    scores = np.array([[0.9999, 1.0], [0.1, 0.9995]])
    seen_before = np.array([[29.0, 30.0], [100.0, 101.0]])
    reported, severity = RULE.apply(scores, seen_before)
    assert reported.tolist() == [[0.0, 1.0], [0.1, 0.9995]]
    assert severity.tolist() == [[0, 2], [0, 1]]


def test_threshold_of_names_the_crossed_threshold() -> None:
    assert RULE.threshold_of(1) == 0.999
    assert RULE.threshold_of(2) == 0.99999
