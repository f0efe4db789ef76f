"""Level novelty (:mod:`streamrnn.stages.novelty`, the serving stage): only values outside the
recently visited range may open an alert; a repeat of a recent burst is not novel; the
chain and the alert rule apply the veto."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import pytest

from streamrnn.config import ScoringConfig, Settings
from streamrnn.decode import DecodedMessage
from streamrnn.engine.build import build_chain, build_engine
from streamrnn.stages import chain, novelty, schema
from streamrnn.stages.novelty import MIN_LEARNED, NoveltyParams
from tests.unit.stage_drivers import ChainDriver, NoveltyDriver, RuleDriver, chain_params

DAY = 86_400.0
STEP = 300.0
NOVELTY_COLUMNS = tuple(c.name for c in novelty.COLUMNS)


def _params(
    min_novelty: float = 0.5, half_life_s: float = 7 * DAY, cooldown_factor: float = 0.0
) -> NoveltyParams:
    return NoveltyParams(
        on=True, min_novelty=min_novelty, half_life_s=half_life_s, cooldown_factor=cooldown_factor
    )


def _bound(
    min_novelty: float = 0.5, half_life_s: float = 7 * DAY, cooldown_factor: float = 0.0
) -> tuple[NoveltyDriver, Any]:
    driver = NoveltyDriver(_params(min_novelty, half_life_s, cooldown_factor), rows=4)
    return driver, driver.slots("a")


def _feed(driver: NoveltyDriver, slot: Any, values: Any, start: float = 0.0) -> float:
    """Learn ``values`` one every STEP seconds from ``start``; returns the next timestamp."""
    ts = start
    for v in values:
        driver.step(slot, np.array([float(v)]), np.array([ts]))
        ts += STEP
    return ts


def _noise(n: int = 500, seed: int = 0) -> Any:
    return 100.0 + np.random.default_rng(seed).normal(0.0, 5.0, n)


def _novelty(driver: NoveltyDriver, slot: Any, value: float, ts: float) -> float:
    return float(driver.novelty(slot, np.array([value]), np.array([ts]))[0])


def _judge(driver: NoveltyDriver, slot: Any, value: float, ts: float = 0.0) -> Any:
    """Judge one value without learning it."""
    return driver.step(slot, np.array([value]), np.array([ts]), learn=False)


def _eligible(driver: NoveltyDriver, slot: Any, value: float, ts: float) -> bool:
    return bool(_judge(driver, slot, value, ts).eligible[0])


def _state(driver: NoveltyDriver, slot: Any) -> dict[str, float]:
    return {c: float(driver.column(c)[slot][0]) for c in NOVELTY_COLUMNS}


def test_values_inside_the_visited_range_are_not_novel_and_far_outside_are() -> None:
    driver, slot = _bound()
    ts = _feed(driver, slot, _noise())
    peak = float(_noise().max()) - 100.0  # the largest upward deviation seen, about 15
    assert _novelty(driver, slot, 101.0, ts) < 0.5
    assert _novelty(driver, slot, 100.0 + 3 * peak, ts) > 2.0
    # Both sides have their own envelope.
    assert _novelty(driver, slot, 100.0 - 3 * peak, ts) > 2.0
    assert not _eligible(driver, slot, 101.0, ts)
    assert _eligible(driver, slot, 100.0 + 3 * peak, ts)
    # Judging learns nothing.
    before = _state(driver, slot)
    _judge(driver, slot, 100.0 + 3 * peak, ts)
    assert _state(driver, slot) == before


def test_eligibility_is_novelty_at_or_above_min_novelty() -> None:
    driver, slot = _bound(min_novelty=0.5)
    ts = _feed(driver, slot, _noise())
    centre = float(driver.column("nov_centre")[slot][0])
    up = float(driver.column("nov_up")[slot][0])
    # Judged at the time of the last learned value: the envelope has not decayed.
    last = ts - STEP
    assert _novelty(driver, slot, centre + up, last) == pytest.approx(1.0)
    assert _novelty(driver, slot, centre + 0.25 * up, last) == pytest.approx(0.25)
    assert _eligible(driver, slot, centre + 0.51 * up, last)
    assert not _eligible(driver, slot, centre + 0.49 * up, last)


def test_a_repeat_of_a_recent_burst_is_not_novel_until_the_envelope_has_decayed() -> None:
    driver, slot = _bound(half_life_s=DAY)
    ts = _feed(driver, slot, _noise())
    assert _novelty(driver, slot, 400.0, ts) > 5.0
    ts = _feed(driver, slot, [400.0], ts)
    ts = _feed(driver, slot, _noise(12, seed=1), ts)  # an hour later
    assert _novelty(driver, slot, 400.0, ts) < 1.1
    # Ten half-lives later the burst is forgotten (the centre barely moved).
    later = ts + 10 * DAY
    assert _novelty(driver, slot, 400.0, later) > 5.0
    # One half-life: the envelope has halved (the decay is exact, 2 ** -age/half-life).
    last = ts - STEP
    at, one_later = _novelty(driver, slot, 250.0, last), _novelty(driver, slot, 250.0, last + DAY)
    assert one_later == pytest.approx(2 * at, rel=1e-6)


def test_the_centre_is_robust_to_a_spike() -> None:
    driver, slot = _bound()
    ts = _feed(driver, slot, _noise())
    centre_before = float(driver.column("nov_centre")[slot][0])
    _feed(driver, slot, [1e6], ts)
    centre_after = float(driver.column("nov_centre")[slot][0])
    assert abs(centre_after - centre_before) < 1.0
    # ... but the spike widened the envelope above it.
    assert float(driver.column("nov_up")[slot][0]) > 0.9e6


def test_young_series_and_first_deviations_are_eligible_and_nan_is_ignored() -> None:
    driver, slot = _bound()
    assert _eligible(driver, slot, 5.0, 0.0)
    ts = _feed(driver, slot, [7.0] * 50)
    # A constant series has empty envelopes: any deviation is infinitely novel, none is not.
    assert _novelty(driver, slot, 8.0, ts) == np.inf
    assert _novelty(driver, slot, 7.0, ts) == 0.0
    assert _eligible(driver, slot, 8.0, ts)
    before = _state(driver, slot)
    driver.step(slot, np.array([np.nan]), np.array([ts]))  # learned: ignored
    assert _state(driver, slot) == before
    assert _novelty(driver, slot, np.nan, ts) == 0.0
    # A NaN value deviates by nothing (deviation 0, never outgrows an alert).
    assert float(_judge(driver, slot, np.nan, ts).deviation[0]) == 0.0


def test_a_series_younger_than_min_learned_is_always_eligible() -> None:
    driver, slot = _bound(min_novelty=0.5)
    values = ([90.0, 110.0] * MIN_LEARNED)[: MIN_LEARNED - 1]
    ts = _feed(driver, slot, values)  # MIN_LEARNED - 1 values around 100
    assert float(driver.column("nov_count")[slot][0]) == MIN_LEARNED - 1
    assert _novelty(driver, slot, 101.0, ts) < 0.5
    assert _eligible(driver, slot, 101.0, ts)  # young: not judged yet
    ts = _feed(driver, slot, [100.0], ts)
    assert float(driver.column("nov_count")[slot][0]) == MIN_LEARNED
    assert not _eligible(driver, slot, 101.0, ts)


def test_invalid_parameters_are_rejected() -> None:
    for bad in (_params(-0.1, DAY), _params(0.5, 0.0), _params(0.5, DAY, cooldown_factor=-1.0)):
        with pytest.raises(ValueError, match="min_novelty"):
            novelty.check(bad)
        with pytest.raises(ValueError):
            NoveltyDriver(bad)
    novelty.check(_params(0.0, DAY, 0.0))


def test_an_ineligible_point_neither_fires_nor_arms_the_rule_but_is_still_a_hit() -> None:
    rule = RuleDriver(chain_params(alert={"cooldown_s": 0.0}).rule, rows=2)
    slot = rule.slots("a")
    step = rule.step(slot, np.array([0.9]), eligible=False)
    assert int(step.severity[0]) == 0 and not bool(step.armed[0]) and bool(step.hit[0])
    step = rule.step(slot, np.array([0.9]), eligible=True)
    assert int(step.severity[0]) == 2 and bool(step.armed[0])


def _chain(min_novelty: float, cooldown_s: float = 0.0, cooldown_factor: float = 0.0) -> Any:
    params = chain_params(
        calibration="likelihood",
        likelihood_short_alpha=0.2,
        likelihood_long_alpha=0.005,
        alert={
            "warning_threshold": 0.6,
            "critical_threshold": 0.7,
            "clear_threshold": 0.2,
            "cooldown_s": cooldown_s,
        },
        warmup_points=30,
        learn_from_anomalies=False,
        max_skipped_points=20,
        seasonal_deflation=False,
        min_novelty=min_novelty,
        novelty_half_life_s=7 * DAY,
        novelty_cooldown_factor=cooldown_factor,
    )
    driver = ChainDriver(params, rows=2)
    return driver, driver.slots("a")


def test_the_chain_vetoes_a_surprise_at_an_ordinary_value_and_keeps_the_learning_policy() -> None:
    rng = np.random.default_rng(0)
    values = 100.0 + rng.normal(0.0, 5.0, 400)
    raws = np.clip(rng.normal(0.0, 1.0, 400), -2.5, 2.5)
    fired, scores = {}, {}
    for min_novelty in (0.0, 0.5):
        driver, slot = _chain(min_novelty)
        assert driver.params.novelty.on == (min_novelty > 0)
        for i in range(400):
            driver.step(slot, raws[i : i + 1], float(i), i * STEP, values[i])
        # A huge forecast surprise at a value the series visits all the time.
        ts = 400 * STEP
        step = driver.step(slot, np.array([50.0]), 400.0, ts, 100.0)
        assert step.score[0] > 0.6
        assert not bool(step.learn[0])  # a hit either way: not learned
        fired[min_novelty] = int(step.severity[0])
        scores[min_novelty] = float(step.score[0])
        # Vetoed: the rule was not armed, so no armed score either.
        assert (step.armed_score[0] > 0) == (fired[min_novelty] > 0)
        # An ordinary point closes any episode; then the same surprise at a value far outside
        # the visited range alerts.
        driver.step(slot, np.array([0.0]), 401.0, ts + STEP, 100.0)
        step = driver.step(slot, np.array([50.0]), 402.0, ts + 2 * STEP, 300.0)
        assert int(step.severity[0]) > 0
    assert fired[0.0] > 0
    assert fired[0.5] == 0
    assert scores[0.0] == scores[0.5]  # novelty changes alerts, not scores


def test_the_chain_learns_every_value_into_novelty_anomalous_or_not() -> None:
    driver, slot = _chain(0.5)
    rng = np.random.default_rng(3)
    for i in range(100):
        raw = np.array([float(np.clip(rng.normal(), -2.5, 2.5))])
        driver.step(slot, raw, float(i), i * STEP, 100.0 + float(rng.normal()))
    count = float(driver.column("nov_count")[slot][0])
    step = driver.step(slot, np.array([50.0]), 100.0, 100 * STEP, 150.0)
    assert not bool(step.learn[0])  # a hit, not learned by the calibrator ...
    assert float(driver.column("nov_count")[slot][0]) == count + 1  # ... but by novelty
    assert float(driver.column("nov_up")[slot][0]) > 45.0
    # A value beyond the representable range is never learned by novelty.
    driver.step(slot, np.array([50.0]), 101.0, 101 * STEP, 1e300)
    assert float(driver.column("nov_count")[slot][0]) == count + 1
    assert float(driver.column("nov_up")[slot][0]) < 100.0


def test_build_chain_adds_novelty_only_when_min_novelty_is_positive() -> None:
    default = build_chain(ScoringConfig())
    assert default.novelty.on and default.novelty.min_novelty == 0.5
    assert default.novelty.half_life_s == 7 * DAY
    assert set(NOVELTY_COLUMNS) <= {c.name for c in chain.columns(default)}
    off = build_chain(ScoringConfig(min_novelty=0.0, novelty_cooldown_factor=0.0))
    assert not off.novelty.on
    assert not set(NOVELTY_COLUMNS) & {c.name for c in chain.columns(off)}
    params = build_chain(ScoringConfig(novelty_half_life_s=3600.0))
    assert params.novelty.on and params.novelty.half_life_s == 3600.0


# --- a much larger excursion during the cooldown --------------------------------------------


def test_the_rule_lets_exempted_points_open_an_episode_during_the_cooldown() -> None:
    alert = {"warning_threshold": 0.4, "critical_threshold": 0.6, "cooldown_s": DAY}
    rule = RuleDriver(chain_params(alert=alert).rule, rows=2)
    slot = rule.slots("a")
    assert int(rule.step(slot, np.array([0.5]), 0.0).severity[0]) == 1
    rule.step(slot, np.array([0.0]), STEP)  # closes the episode
    blocked = rule.step(slot, np.array([0.5]), 2 * STEP, skip_cooldown=False)
    assert int(blocked.severity[0]) == 0 and not bool(blocked.armed[0])
    rule.step(slot, np.array([0.0]), 3 * STEP)
    exempt = rule.step(slot, np.array([0.5]), 4 * STEP, skip_cooldown=True)
    assert int(exempt.severity[0]) == 1 and bool(exempt.armed[0])


def test_outgrowing_the_last_alert_needs_the_factor_and_a_remembered_alert() -> None:
    # A fresh series: centre 0, so a value's deviation is its magnitude.
    driver, slot = _bound(cooldown_factor=3.0)

    def outgrows(value: float) -> bool:
        return bool(_judge(driver, slot, value).skip_cooldown[0])

    assert float(_judge(driver, slot, -29.0).deviation[0]) == 29.0
    # No alert remembered yet: nothing is exempted.
    assert not outgrows(1e9)
    driver.note_alerts(slot, np.array([10.0]), np.array([True]))
    assert float(driver.column("nov_alert_dev")[slot][0]) == 10.0
    assert not outgrows(29.0)
    assert outgrows(30.0) and outgrows(-30.0)
    # Points that did not open an episode do not replace the remembered deviation.
    driver.note_alerts(slot, np.array([1.0]), np.array([False]))
    assert not outgrows(29.0)
    # Factor 0: nothing is ever exempted, whatever was remembered.
    off, off_slot = _bound(cooldown_factor=0.0)
    off.note_alerts(off_slot, np.array([10.0]), np.array([True]))
    assert not bool(_judge(off, off_slot, 1e9).skip_cooldown[0])


def test_during_the_cooldown_only_a_much_larger_excursion_alerts_again() -> None:
    rng = np.random.default_rng(0)
    driver, slot = _chain(0.5, cooldown_s=DAY, cooldown_factor=3.0)
    i = 0

    def step(raw: float, value: float) -> int:
        nonlocal i
        out = driver.step(slot, np.array([raw]), float(i), i * STEP, value)
        i += 1
        return int(out.severity[0])

    for _ in range(400):
        step(float(np.clip(rng.normal(), -2.5, 2.5)), 100.0 + float(rng.normal(0.0, 5.0)))
    assert step(50.0, 150.0) > 0  # deviation about 50: alerts and starts the cooldown
    alert_dev = float(driver.column("nov_alert_dev")[slot][0])
    assert 40.0 < alert_dev < 60.0  # the chain remembered the alert's deviation
    step(0.0, 100.0)
    assert step(50.0, 190.0) == 0  # under three times as far out: a repeat, in the cooldown
    step(0.0, 100.0)
    assert step(50.0, 300.0) > 0  # about four times as far out: a new event
    assert float(driver.column("nov_alert_dev")[slot][0]) > 3 * alert_dev


def test_build_chain_passes_the_cooldown_factor() -> None:
    params = build_chain(ScoringConfig())
    assert params.novelty.on and params.novelty.cooldown_factor == 3.0
    only_factor = build_chain(ScoringConfig(min_novelty=0.0))
    assert only_factor.novelty.on and only_factor.novelty.min_novelty == 0.0
    none = build_chain(ScoringConfig(min_novelty=0.0, novelty_cooldown_factor=0.0))
    assert not none.novelty.on


# --- through the engine, over days -----------------------------------------------------------

T0 = 19_675 * DAY  # a midnight (UTC): the series' daily cycle lines up with the clock
LEVEL, AMPLITUDE, NOISE = 50.0, 20.0, 0.5
EXCURSION = 30.0  # above the series' level at that time of day


def _daily_series(days: int, seed: int = 0) -> tuple[Any, Any]:
    """Five-minute points of a daily cycle (peak at 06:00, trough at 18:00) with noise."""
    n = int(days * DAY / STEP)
    rng = np.random.default_rng(seed)
    ts = T0 + STEP * np.arange(n)
    values = LEVEL + AMPLITUDE * np.sin(2 * np.pi * (ts - T0) / DAY) + rng.normal(0, NOISE, n)
    return ts, values


def _run_engine(ts: Any, values: Any, cuts: list[int], **scoring: Any) -> tuple[Any, list[float]]:
    """Feed the series through an engine in pieces split at ``cuts``; the results joined,
    and the level novelty each cut point got (from the engine's own state just before it)."""
    engine = build_engine(Settings(scoring=scoring))
    results, novelty_at = [], []
    bounds = [0, *cuts, len(ts)]
    for lo, hi in itertools.pairwise(bounds):
        if lo in cuts and engine.chain.novelty.on:
            slot = engine.table.slot_of("a")
            assert slot is not None
            state = schema.bind(novelty.NoveltyState, engine.table, novelty.COLUMNS)
            novelty_at.append(
                novelty.novelty_of(state, engine.chain.novelty, slot, ts[lo], values[lo])
            )
        message = DecodedMessage("a", ts[lo:hi].tolist(), values[lo:hi].tolist(), None)
        results.append(engine.process([message]))
    joined: dict[str, Any] = {
        name: np.concatenate([getattr(r, name) for r in results])
        for name in ("ts", "score", "severity", "armed_score")
    }
    slot = engine.table.slot_of("a")
    joined["alert_dev"] = float(engine.table.column("nov_alert_dev")[slot]) if novelty_at else 0.0
    return joined, novelty_at


def test_over_days_novelty_blocks_a_repeated_excursion_and_lets_a_much_larger_one_alert() -> None:
    ts, values = _daily_series(7)
    # The same excursion, EXCURSION above the daily cycle, at a daily peak and, two and a
    # half days later (well past the one-day cooldown), at a trough: the second one's value
    # is well inside the range the series visited at the first. Then one four times larger.
    first, repeat, larger = (int(d * DAY / STEP) for d in (2.25, 4.75, 6.5))
    values[[first, repeat, larger]] += [EXCURSION, EXCURSION, 4 * EXCURSION]
    cuts = [first, repeat, larger]
    scoring = Settings().scoring
    assert scoring.min_novelty == 0.5 and scoring.novelty_cooldown_factor == 3.0
    assert ts[repeat] - ts[first] > 2 * scoring.alert.cooldown_s

    got, novelty_at = _run_engine(ts, values, cuts)
    np.testing.assert_array_equal(got["ts"], ts)
    warning = scoring.alert.warning_threshold
    # Each excursion is a hit; only the first and the much larger one alert.
    assert (got["score"][cuts] >= warning).all()
    assert np.flatnonzero(got["severity"]).tolist() == [first, larger]
    # The repeat was vetoed by novelty: its value is less than half as far from the series'
    # centre as the (decayed) envelope of the first excursion; the rule was not armed.
    assert novelty_at[0] > 1.0
    assert novelty_at[1] < 0.4
    assert novelty_at[2] > 1.5
    assert got["armed_score"][repeat] == 0.0
    assert got["armed_score"][larger] == got["score"][larger]
    assert got["alert_dev"] > 3 * EXCURSION  # the larger excursion's deviation, remembered

    # Without level novelty the repeat alerts too, and nothing else changes: novelty decides
    # alerts only, not scores or what is learned.
    control, _ = _run_engine(ts, values, cuts, min_novelty=0.0, novelty_cooldown_factor=0.0)
    assert np.flatnonzero(control["severity"]).tolist() == [first, repeat, larger]
    np.testing.assert_array_equal(control["score"], got["score"])
