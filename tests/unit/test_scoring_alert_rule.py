"""The alert rule (:func:`streamrnn.stages.alert_rule.decide`, the serving stage): hits,
hysteresis, escalation, m-of-n, cooldown, armed flag, per series."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest

from streamrnn.stages import alert_rule, schema
from streamrnn.stages.alert_rule import RULE_NAME, SEVERITY_NAMES, RuleParams, RuleState
from streamrnn.state.series_table import SeriesTable
from tests.unit.stage_drivers import RuleDriver

WARNING, CRITICAL, CLEAR = 0.4, 0.6, 0.2


def _params(
    min_hits: int = 1, window_points: int = 1, cooldown_points: int = 0, cooldown_s: float = 0.0
) -> RuleParams:
    return RuleParams(
        warning_threshold=WARNING,
        critical_threshold=CRITICAL,
        clear_threshold=CLEAR,
        min_hits=min_hits,
        window_points=window_points,
        cooldown_points=cooldown_points,
        cooldown_s=cooldown_s,
    )


def _rule(
    min_hits: int = 1, window_points: int = 1, cooldown_points: int = 0, cooldown_s: float = 0.0
) -> RuleDriver:
    return RuleDriver(_params(min_hits, window_points, cooldown_points, cooldown_s))


def _run(
    rule: RuleDriver,
    scores: Sequence[float] | np.ndarray[Any, Any],
    ts: Sequence[float] | None = None,
) -> tuple[list[int], list[bool], list[bool]]:
    """Step one series through ``scores`` (at ``ts``, default 0): severities, armed, hits."""
    slot = rule.slots("a")
    severity, armed, hit = [], [], []
    for i, s in enumerate(scores):
        step = rule.step(slot, np.array([s]), 0.0 if ts is None else ts[i])
        severity.append(int(step.severity[0]))
        armed.append(bool(step.armed[0]))
        hit.append(bool(step.hit[0]))
    return severity, armed, hit


def _fired(severity: Sequence[int]) -> list[int]:
    return [i for i, s in enumerate(severity) if s]


# --- hits and severity -----------------------------------------------------------------------


def test_hit_is_a_score_at_or_above_the_warning_threshold() -> None:
    _, _, hit = _run(_rule(cooldown_points=100), [0.0, 0.399, 0.4, 0.5, 1.0])
    assert hit == [False, False, True, True, True]


@pytest.mark.parametrize(
    ("peak", "severity"),
    [(0.4, 1), (0.45, 1), (0.5999, 1), (0.6, 2), (0.95, 2)],
)
def test_single_crossing_fires_once_with_its_severity(peak: float, severity: int) -> None:
    got, _, _ = _run(_rule(), [0.0, 0.1, peak, 0.05, 0.0, 0.0])
    assert got == [0, 0, severity, 0, 0, 0]


def test_severity_names_rule_name_and_the_threshold_of_each_severity() -> None:
    params = _params()
    assert SEVERITY_NAMES == {1: "warning", 2: "critical"}
    assert RULE_NAME == "residual"
    assert params.threshold_of(1) == WARNING
    assert params.threshold_of(2) == CRITICAL


def test_scores_below_warning_never_fire() -> None:
    scores = np.random.default_rng(0).uniform(0.0, WARNING - 1e-9, 300)
    severity, armed, hit = _run(_rule(), scores)
    assert not any(severity) and not any(hit) and all(armed)


# --- hysteresis and escalation ---------------------------------------------------------------


def test_score_hovering_around_the_warning_threshold_fires_once() -> None:
    scores = [0.0] + [0.41, 0.39] * 20
    severity, _, _ = _run(_rule(cooldown_points=0), scores)
    assert _fired(severity) == [1]


def test_new_episode_needs_the_score_below_the_clear_threshold_first() -> None:
    # 0.3 is below warning but not below clear: the episode stays open.
    scores = [0.5, 0.3, 0.3, 0.3, 0.5, 0.3, 0.5, CLEAR, 0.5, CLEAR - 0.01, 0.5]
    severity, _, _ = _run(_rule(cooldown_points=0), scores)
    assert _fired(severity) == [0, 10]


def test_hovering_score_fires_again_only_after_clearing_and_after_the_cooldown() -> None:
    cooldown = 6
    scores = [0.41, 0.39] * 5 + [0.1] + [0.41, 0.39] * 5
    # fired at 0; episode open until index 10 (0.1 < clear); cooldown ends after index 6.
    severity, _, _ = _run(_rule(cooldown_points=cooldown), scores)
    assert _fired(severity) == [0, 11]
    # A clear inside the cooldown does not allow an early episode.
    scores = [0.41, 0.1, 0.41, 0.1, 0.41, 0.1, 0.41, 0.1, 0.41]
    severity, _, _ = _run(_rule(cooldown_points=cooldown), scores)
    assert _fired(severity) == [0, 8]


def test_escalation_from_warning_to_critical_fires_once_each() -> None:
    scores = [0.45, 0.5, 0.65, 0.7, 0.45, 0.3, 0.65, 0.9, 0.5]
    severity, _, _ = _run(_rule(cooldown_points=0), scores)
    assert severity == [1, 0, 2, 0, 0, 0, 0, 0, 0]


def test_escalation_ignores_the_cooldown_and_critical_start_does_not_escalate() -> None:
    severity, _, _ = _run(_rule(cooldown_points=50), [0.45, 0.65, 0.3, 0.7])
    assert severity == [1, 2, 0, 0]
    severity, _, _ = _run(_rule(cooldown_points=0), [0.65, 0.45, 0.9, 0.45])
    assert severity == [2, 0, 0, 0]


def test_escalation_needs_an_open_episode() -> None:
    # The warning episode closes (0.1 < clear); a critical score in the cooldown is not an
    # escalation of the closed episode.
    severity, _, _ = _run(_rule(cooldown_points=5), [0.45, 0.1, 0.9, 0.9])
    assert severity == [1, 0, 0, 0]


def test_an_escalation_is_not_armed_and_does_not_restart_the_cooldown() -> None:
    rule = _rule(cooldown_points=3)
    severity, armed, _ = _run(rule, [0.45, 0.65, 0.1, 0.1, 0.5])
    # Fired at 0 (cooldown 3), escalated at 1 (not armed: the episode was open); the cooldown
    # counted down from 0, not from the escalation, so index 4 may open a new episode.
    assert severity == [1, 2, 0, 0, 1]
    assert armed == [True, False, False, False, True]


# --- m-of-n ----------------------------------------------------------------------------------


def test_two_hits_of_five_do_not_fire_when_three_are_needed() -> None:
    severity, _, hit = _run(_rule(3, 5), [0.5, 0.0, 0.9, 0.0, 0.0, 0.0, 0.0, 0.0])
    assert sum(hit) == 2
    assert not any(severity)


@pytest.mark.parametrize(
    "scores",
    [
        pytest.param([0.5, 0.5, 0.5], id="consecutive"),
        pytest.param([0.5, 0.0, 0.5, 0.0, 0.5], id="spread-over-five"),
        pytest.param([0.5, 0.1, 0.1, 0.5, 0.5], id="first-and-last-two"),
    ],
)
def test_three_hits_within_five_points_fire_on_the_third(scores: list[float]) -> None:
    severity, _, _ = _run(_rule(3, 5), scores)
    assert _fired(severity) == [len(scores) - 1]


def test_three_hits_spread_over_more_than_five_points_do_not_fire() -> None:
    scores = [0.5, 0.0, 0.0, 0.5, 0.0, 0.0] * 6  # one hit every three points
    severity, _, hit = _run(_rule(3, 5), scores)
    assert sum(hit) == 12
    assert not any(severity)
    severity, _, _ = _run(_rule(3, 5), [0.5, 0.0, 0.0, 0.0, 0.5, 0.0, 0.5])
    assert not any(severity)  # hits at 0, 4, 6: never three within five


def test_m_of_n_severity_is_that_of_the_firing_point() -> None:
    severity, _, _ = _run(_rule(2, 3), [0.9, 0.0, 0.45])
    assert severity == [0, 0, 1]
    severity, _, _ = _run(_rule(2, 3), [0.45, 0.3, 0.7])
    assert severity == [0, 0, 2]


@pytest.mark.parametrize(
    ("min_hits", "window_points", "scores", "expected"),
    [
        pytest.param(3, 5, [0.5, 0.5, 0.5, 0.0, 0.0, 0.0], [2], id="3-of-5"),
        pytest.param(1, 3, [0.5, 0.0, 0.0, 0.0], [0], id="1-of-3"),
    ],
)
def test_an_alert_never_fires_on_a_point_below_the_clear_threshold(
    min_hits: int, window_points: int, scores: list[float], expected: list[int]
) -> None:
    severity, _, _ = _run(_rule(min_hits, window_points, cooldown_points=0), scores)
    assert _fired(severity) == expected


# --- cooldown and armed ----------------------------------------------------------------------


@pytest.mark.parametrize("cooldown", [0, 1, 2, 5, 9])
def test_no_new_episode_for_cooldown_points_after_an_alert(cooldown: int) -> None:
    # The episode closes at once (score 0), then every later point is a hit.
    scores = [0.5, 0.0] + [0.5] * 12
    severity, _, _ = _run(_rule(cooldown_points=cooldown), scores)
    assert _fired(severity)[:2] == [0, max(2, cooldown + 1)]


def test_armed_is_false_during_an_episode_and_during_the_cooldown() -> None:
    scores = [0.1, 0.5, 0.3, 0.3, 0.1, 0.1, 0.1, 0.1]
    severity, armed, _ = _run(_rule(cooldown_points=3), scores)
    assert severity == [0, 1, 0, 0, 0, 0, 0, 0]
    # fired at 1; episode open at 2-3; closes at 4, still in cooldown; armed again at 5.
    assert armed == [True, True, False, False, False, True, True, True]


def test_armed_stays_false_while_an_episode_outlasts_its_cooldown() -> None:
    scores = [0.5, 0.3, 0.45, 0.25, 0.3, 0.1, 0.0]
    severity, armed, _ = _run(_rule(cooldown_points=1), scores)
    assert severity == [1, 0, 0, 0, 0, 0, 0]
    assert armed == [True, False, False, False, False, True, True]


def test_armed_is_reported_for_the_firing_point_itself() -> None:
    _, armed, _ = _run(_rule(cooldown_points=2), [0.9])
    assert armed == [True]


def test_cooldown_in_seconds_holds_new_episodes_back_whatever_the_sampling_rate() -> None:
    for interval_s in (60.0, 3600.0):
        rule = _rule(cooldown_s=86_400.0)
        ts = [i * interval_s for i in range(200)]
        scores = [0.5 if i % 10 == 0 else 0.0 for i in range(200)]  # a fresh episode every 10
        severity, _, _ = _run(rule, scores, ts)
        fired = [ts[i] for i in _fired(severity)]
        gaps = np.diff(fired)
        assert len(fired) >= 1
        assert (gaps >= 86_400.0).all()
        # Minutely: 200 minutes hold one alert. Hourly: hits every 10 h, so every third one
        # (30 h apart, the first at or past 24 h) fires: at 0, 30, 60, ... 180 hours.
        assert len(fired) == (7 if interval_s == 3600.0 else 1)


def test_both_cooldowns_must_have_passed() -> None:
    # 2 points of cooldown and 100 s: hits every 10 s fire only once both have run out.
    rule = _rule(cooldown_points=2, cooldown_s=100.0)
    ts = [10.0 * i for i in range(25)]
    severity, _, _ = _run(rule, [0.5, 0.0] * 12 + [0.5], ts)
    assert _fired(severity) == [0, 10, 20]  # 100 s apart: the seconds are the longer one
    rule = _rule(cooldown_points=30, cooldown_s=100.0)
    severity, _, _ = _run(rule, [0.5, 0.0] * 20, [10.0 * i for i in range(40)])
    assert _fired(severity) == [0, 32]  # 30 points: the points are the longer one


def test_an_ineligible_point_neither_fires_nor_arms_but_is_still_a_hit() -> None:
    rule = _rule()
    slot = rule.slots("a")
    step = rule.step(slot, np.array([0.9]), eligible=False)
    assert int(step.severity[0]) == 0 and not bool(step.armed[0]) and bool(step.hit[0])
    step = rule.step(slot, np.array([0.9]), eligible=True)
    assert int(step.severity[0]) == 2 and bool(step.armed[0])


def test_an_exempted_point_opens_an_episode_in_the_cooldown_but_not_in_an_open_one() -> None:
    rule = _rule(cooldown_points=50)
    slot = rule.slots("a")
    assert int(rule.step(slot, np.array([0.5])).severity[0]) == 1
    # The episode is still open: an exemption from the cooldown does not reopen it.
    held = rule.step(slot, np.array([0.5]), skip_cooldown=True)
    assert int(held.severity[0]) == 0 and not bool(held.armed[0])
    rule.step(slot, np.array([0.0]))  # closes it
    assert int(rule.step(slot, np.array([0.5])).severity[0]) == 0  # cooldown
    rule.step(slot, np.array([0.0]))
    exempt = rule.step(slot, np.array([0.5]), skip_cooldown=True)
    assert int(exempt.severity[0]) == 1 and bool(exempt.armed[0])
    # The exempted alert restarted the cooldown.
    assert float(rule.column("rule_cooldown")[slot[0]]) == 50.0


# --- per-series state ------------------------------------------------------------------------


def test_series_stepped_together_match_each_series_stepped_alone() -> None:
    rng = np.random.default_rng(1)
    n_series, n_points = 5, 300
    scores = np.clip(rng.gamma(0.6, 0.25, (n_series, n_points)), 0.0, 1.0)
    present = rng.random((n_series, n_points)) < 0.8  # series absent from some steps
    config: dict[str, Any] = {"min_hits": 2, "window_points": 4, "cooldown_points": 7}

    together = _rule(**config)
    slots = together.slots(*(f"s{i}" for i in range(n_series)))
    got = {name: np.zeros((n_series, n_points), dtype=int) for name in ("sev", "armed", "hit")}
    for j in range(n_points):
        rows = np.flatnonzero(present[:, j])
        step = together.step(slots[rows], scores[rows, j])
        got["sev"][rows, j], got["armed"][rows, j] = step.severity, step.armed
        got["hit"][rows, j] = step.hit

    fired_somewhere = 0
    for i in range(n_series):
        mask = present[i]
        severity, armed, hit = _run(_rule(**config), scores[i, mask])
        assert got["sev"][i, mask].tolist() == severity
        assert got["armed"][i, mask].tolist() == [int(a) for a in armed]
        assert got["hit"][i, mask].tolist() == [int(h) for h in hit]
        fired_somewhere += sum(1 for s in severity if s)
    assert fired_somewhere > 5  # the comparison exercised firing, not just silence


def test_one_series_episode_does_not_block_another() -> None:
    rule = _rule(cooldown_points=10)
    slots = rule.slots("a", "b")
    first = rule.step(slots, np.array([0.9, 0.0]))
    second = rule.step(slots, np.array([0.9, 0.5]))
    assert first.severity.tolist() == [2, 0]
    assert second.severity.tolist() == [0, 1]
    assert second.armed.tolist() == [False, True]


def test_decide_advances_the_state_of_its_series_only() -> None:
    params = _params(min_hits=2, window_points=3, cooldown_points=4, cooldown_s=60.0)
    st = schema.allocate(RuleState, alert_rule.COLUMNS, 2)
    assert st.episode.dtype == np.int8 and st.hits.dtype == np.int64
    assert st.last_alert_ts.tolist() == [-math.inf, -math.inf]
    assert alert_rule.decide(st, params, 1, 100.0, 0.5, True, False) == (0, True, True)
    assert alert_rule.decide(st, params, 1, 110.0, 0.1, True, False) == (0, True, False)
    # Hit bits, newest lowest, within the window of three points.
    assert st.hits.tolist() == [0, 0b10]
    assert alert_rule.decide(st, params, 1, 120.0, 0.65, True, False) == (2, True, True)
    assert st.hits.tolist() == [0, 0b101]
    assert st.episode.tolist() == [0, 2]
    assert st.cooldown.tolist() == [0.0, 4.0]
    assert st.last_alert_ts.tolist() == [-math.inf, 120.0]
    # Not armed in its episode; the cooldown counts down a point at a time, the window slides.
    assert alert_rule.decide(st, params, 1, 130.0, 0.5, True, False) == (0, False, True)
    assert st.hits.tolist() == [0, 0b011]
    assert st.cooldown.tolist() == [0.0, 3.0]
    assert st.last_alert_ts.tolist() == [-math.inf, 120.0]
    assert (st.hits[0], st.episode[0], st.cooldown[0]) == (0, 0, 0.0)


# --- construction ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("min_hits", "window_points"),
    [(3, 2), (2, 1), (0, 1), (1, 0), (1, 63), (63, 63)],
)
def test_rule_rejects_impossible_m_of_n(min_hits: int, window_points: int) -> None:
    with pytest.raises(ValueError, match="min_hits"):
        alert_rule.check(_params(min_hits=min_hits, window_points=window_points))
    with pytest.raises(ValueError, match="min_hits"):
        RuleDriver(_params(min_hits=min_hits, window_points=window_points))


@pytest.mark.parametrize(("min_hits", "window_points"), [(1, 1), (3, 5), (62, 62), (1, 62)])
def test_rule_accepts_possible_m_of_n(min_hits: int, window_points: int) -> None:
    alert_rule.check(_params(min_hits=min_hits, window_points=window_points))


def test_rule_accepts_the_widest_window() -> None:
    severity, _, _ = _run(_rule(62, 62), [0.5] * 62)
    assert _fired(severity) == [61]
    # 61 hits of the last 62 do not fire: the bit of the oldest point has left the window.
    severity, _, _ = _run(_rule(62, 62), [0.5] + [0.0] + [0.5] * 61)
    assert not any(severity)


def test_rule_declares_its_columns_once() -> None:
    table = SeriesTable(4)
    schema.declare(table, alert_rule.COLUMNS)
    assert [c.name for c in alert_rule.COLUMNS] == [
        "rule_hits",
        "rule_episode",
        "rule_cooldown",
        "rule_last_alert_ts",
    ]
    assert table.column("rule_last_alert_ts")[0] == -math.inf
    with pytest.raises(ValueError, match="already exists"):
        schema.declare(table, alert_rule.COLUMNS)
