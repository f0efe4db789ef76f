"""Level novelty: only values outside the recently visited range may open an alert; a repeat
of a recent burst is not novel; the chain and the alert rule apply the veto."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from streamrnn.config import Settings
from streamrnn.engine.series_table import SeriesTable
from streamrnn.scoring.alert_rule import AlertRule
from streamrnn.scoring.chain import ScoringChain, build_chain
from streamrnn.scoring.likelihood import LikelihoodCalibrator
from streamrnn.scoring.novelty import LevelNovelty

DAY = 86_400.0
STEP = 300.0


def _bound(min_novelty: float = 0.5, half_life_s: float = 7 * DAY) -> tuple[LevelNovelty, Any]:
    table = SeriesTable(max_series=4)
    novelty = LevelNovelty(min_novelty, half_life_s)
    novelty.bind(table)
    return novelty, table.resolve(["a"], [None])


def _feed(novelty: LevelNovelty, slot: Any, values: Any, start: float = 0.0) -> float:
    """Learn ``values`` one every STEP seconds from ``start``; returns the next timestamp."""
    ts = start
    for v in values:
        novelty.learn(slot, np.array([float(v)]), np.array([ts]))
        ts += STEP
    return ts


def _noise(n: int = 500, seed: int = 0) -> Any:
    return 100.0 + np.random.default_rng(seed).normal(0.0, 5.0, n)


def _novelty(novelty: LevelNovelty, slot: Any, value: float, ts: float) -> float:
    return float(novelty.novelty(slot, np.array([value]), np.array([ts]))[0])


def test_values_inside_the_visited_range_are_not_novel_and_far_outside_are() -> None:
    novelty, slot = _bound()
    ts = _feed(novelty, slot, _noise())
    peak = float(_noise().max()) - 100.0  # the largest upward deviation seen, about 15
    assert _novelty(novelty, slot, 101.0, ts) < 0.5
    assert _novelty(novelty, slot, 100.0 + 3 * peak, ts) > 2.0
    # Both sides have their own envelope.
    assert _novelty(novelty, slot, 100.0 - 3 * peak, ts) > 2.0
    eligible = novelty.eligible(slot, np.array([101.0]), np.array([ts]))
    assert not bool(eligible[0])
    assert bool(novelty.eligible(slot, np.array([100.0 + 3 * peak]), np.array([ts]))[0])


def test_a_repeat_of_a_recent_burst_is_not_novel_until_the_envelope_has_decayed() -> None:
    novelty, slot = _bound(half_life_s=DAY)
    ts = _feed(novelty, slot, _noise())
    assert _novelty(novelty, slot, 400.0, ts) > 5.0
    ts = _feed(novelty, slot, [400.0], ts)
    ts = _feed(novelty, slot, _noise(12, seed=1), ts)  # an hour later
    assert _novelty(novelty, slot, 400.0, ts) < 1.1
    # Ten half-lives later the burst is forgotten (the centre barely moved).
    later = ts + 10 * DAY
    assert _novelty(novelty, slot, 400.0, later) > 5.0


def test_the_centre_is_robust_to_a_spike() -> None:
    novelty, slot = _bound()
    ts = _feed(novelty, slot, _noise())
    centre_before = float(novelty._table.column("nov_centre")[slot][0])  # type: ignore[union-attr]
    _feed(novelty, slot, [1e6], ts)
    centre_after = float(novelty._table.column("nov_centre")[slot][0])  # type: ignore[union-attr]
    assert abs(centre_after - centre_before) < 1.0


def test_young_series_and_first_deviations_are_eligible_and_nan_is_ignored() -> None:
    novelty, slot = _bound()
    assert bool(novelty.eligible(slot, np.array([5.0]), np.array([0.0]))[0])
    ts = _feed(novelty, slot, [7.0] * 50)
    # A constant series has empty envelopes: any deviation is infinitely novel, none is not.
    assert _novelty(novelty, slot, 8.0, ts) == np.inf
    assert _novelty(novelty, slot, 7.0, ts) == 0.0
    before = {c: float(novelty._table.column(c)[slot][0]) for c in ("nov_centre", "nov_count")}  # type: ignore[union-attr]
    novelty.learn(slot, np.array([np.nan]), np.array([ts]))
    after = {c: float(novelty._table.column(c)[slot][0]) for c in ("nov_centre", "nov_count")}  # type: ignore[union-attr]
    assert before == after
    assert _novelty(novelty, slot, np.nan, ts) == 0.0


def test_invalid_parameters_are_rejected() -> None:
    with pytest.raises(ValueError):
        LevelNovelty(-0.1, DAY)
    with pytest.raises(ValueError):
        LevelNovelty(0.5, 0.0)


def test_an_ineligible_point_neither_fires_nor_arms_the_rule_but_is_still_a_hit() -> None:
    rule = AlertRule(0.4, 0.6, 0.2)
    table = SeriesTable(max_series=2)
    rule.bind(table)
    slot = table.resolve(["a"], [None])
    step = rule.step(slot, np.array([0.9]), None, np.array([False]))
    assert int(step.severity[0]) == 0 and not bool(step.armed[0]) and bool(step.hit[0])
    step = rule.step(slot, np.array([0.9]), None, np.array([True]))
    assert int(step.severity[0]) == 2 and bool(step.armed[0])


def _chain(min_novelty: float) -> tuple[ScoringChain, Any]:
    chain = ScoringChain(
        LikelihoodCalibrator(0.2, 0.005),
        AlertRule(0.6, 0.7, 0.2),
        warmup_points=30,
        learn_from_anomalies=False,
        max_skipped_points=20,
        novelty=LevelNovelty(min_novelty, 7 * DAY) if min_novelty > 0 else None,
    )
    table = SeriesTable(max_series=2)
    chain.bind(table)
    return chain, table.resolve(["a"], [None])


def test_the_chain_vetoes_a_surprise_at_an_ordinary_value_and_keeps_the_learning_policy() -> None:
    rng = np.random.default_rng(0)
    values = 100.0 + rng.normal(0.0, 5.0, 400)
    raws = np.clip(rng.normal(0.0, 1.0, 400), -2.5, 2.5)
    fired = {}
    for min_novelty in (0.0, 0.5):
        chain, slot = _chain(min_novelty)
        for i in range(400):
            chain.step(
                slot, raws[i : i + 1], np.array([float(i)]), np.array([i * STEP]), values[i : i + 1]
            )
        # A huge forecast surprise at a value the series visits all the time.
        ts = np.array([400 * STEP])
        step = chain.step(slot, np.array([50.0]), np.array([400.0]), ts, np.array([100.0]))
        assert step.score[0] > 0.6
        assert not bool(step.learn[0])  # a hit either way: not learned
        fired[min_novelty] = int(step.severity[0])
        # An ordinary point closes any episode; then the same surprise at a value far outside
        # the visited range alerts.
        chain.step(slot, np.array([0.0]), np.array([401.0]), ts + STEP, np.array([100.0]))
        step = chain.step(
            slot, np.array([50.0]), np.array([402.0]), ts + 2 * STEP, np.array([300.0])
        )
        assert int(step.severity[0]) > 0
    assert fired[0.0] > 0
    assert fired[0.5] == 0


def test_build_chain_adds_novelty_only_when_min_novelty_is_positive() -> None:
    assert build_chain(Settings().scoring).novelty is not None
    off = Settings(scoring={"min_novelty": 0.0, "novelty_cooldown_factor": 0.0}).scoring  # type: ignore[arg-type]
    assert build_chain(off).novelty is None
    chain = build_chain(Settings(scoring={"novelty_half_life_s": 3600.0}).scoring)  # type: ignore[arg-type]
    assert chain.novelty is not None and chain.novelty.half_life_s == 3600.0


# --- a much larger excursion during the cooldown --------------------------------------------


def test_the_rule_lets_exempted_points_open_an_episode_during_the_cooldown() -> None:
    rule = AlertRule(0.4, 0.6, 0.2, cooldown_s=DAY)
    table = SeriesTable(max_series=2)
    rule.bind(table)
    slot = table.resolve(["a"], [None])
    assert int(rule.step(slot, np.array([0.5]), np.array([0.0])).severity[0]) == 1
    rule.step(slot, np.array([0.0]), np.array([STEP]))  # closes the episode
    blocked = rule.step(slot, np.array([0.5]), np.array([2 * STEP]), None, np.array([False]))
    assert int(blocked.severity[0]) == 0 and not bool(blocked.armed[0])
    rule.step(slot, np.array([0.0]), np.array([3 * STEP]))
    exempt = rule.step(slot, np.array([0.5]), np.array([4 * STEP]), None, np.array([True]))
    assert int(exempt.severity[0]) == 1 and bool(exempt.armed[0])


def test_outgrowing_the_last_alert_needs_the_factor_and_a_remembered_alert() -> None:
    novelty = LevelNovelty(0.5, 7 * DAY, cooldown_factor=3.0)
    table = SeriesTable(max_series=2)
    novelty.bind(table)
    slot = table.resolve(["a"], [None])
    # No alert remembered yet: nothing is exempted.
    assert not bool(novelty.outgrows_last_alert(slot, np.array([1e9]))[0])
    novelty.note_alerts(slot, np.array([10.0]), np.array([True]))
    assert not bool(novelty.outgrows_last_alert(slot, np.array([29.0]))[0])
    assert bool(novelty.outgrows_last_alert(slot, np.array([30.0]))[0])
    # Points that did not open an episode do not replace the remembered deviation.
    novelty.note_alerts(slot, np.array([1.0]), np.array([False]))
    assert not bool(novelty.outgrows_last_alert(slot, np.array([29.0]))[0])
    off = LevelNovelty(0.5, 7 * DAY)
    off.bind(SeriesTable(max_series=2))
    assert off.cooldown_factor == 0.0


def test_during_the_cooldown_only_a_much_larger_excursion_alerts_again() -> None:
    rng = np.random.default_rng(0)
    chain = ScoringChain(
        LikelihoodCalibrator(0.2, 0.005),
        AlertRule(0.6, 0.7, 0.2, cooldown_s=DAY),
        warmup_points=30,
        learn_from_anomalies=False,
        max_skipped_points=20,
        novelty=LevelNovelty(0.5, 7 * DAY, cooldown_factor=3.0),
    )
    table = SeriesTable(max_series=2)
    chain.bind(table)
    slot = table.resolve(["a"], [None])
    i = 0

    def step(raw: float, value: float) -> int:
        nonlocal i
        out = chain.step(
            slot, np.array([raw]), np.array([float(i)]), np.array([i * STEP]), np.array([value])
        )
        i += 1
        return int(out.severity[0])

    for _ in range(400):
        step(float(np.clip(rng.normal(), -2.5, 2.5)), 100.0 + float(rng.normal(0.0, 5.0)))
    assert step(50.0, 150.0) > 0  # deviation about 50: alerts and starts the cooldown
    step(0.0, 100.0)
    assert step(50.0, 190.0) == 0  # under three times as far out: a repeat, in the cooldown
    step(0.0, 100.0)
    assert step(50.0, 300.0) > 0  # about four times as far out: a new event


def test_build_chain_passes_the_cooldown_factor() -> None:
    chain = build_chain(Settings().scoring)
    assert chain.novelty is not None and chain.novelty.cooldown_factor == 3.0
    only_factor = Settings(scoring={"min_novelty": 0.0}).scoring  # type: ignore[arg-type]
    novelty = build_chain(only_factor).novelty
    assert novelty is not None and novelty.min_novelty == 0.0
    none = Settings(scoring={"min_novelty": 0.0, "novelty_cooldown_factor": 0.0}).scoring  # type: ignore[arg-type]
    assert build_chain(none).novelty is None
