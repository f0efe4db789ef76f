"""The scoring chain (:func:`streamrnn.stages.chain.score_point`, the serving stage):
warm-up, do-not-learn-from-anomalies, armed score, build_chain; and the chain as the engine
uses it (spikes, level shifts, warm-up series, level novelty over days)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest

from streamrnn.config import AlertConfig, ScoringConfig, Settings
from streamrnn.decode import DecodedMessage
from streamrnn.engine.build import build_chain, build_engine
from streamrnn.engine.engine import Engine
from streamrnn.stages import calibration, chain, tail
from streamrnn.stages.chain import ChainParams
from streamrnn.stages.evt import EVTParams
from streamrnn.stages.likelihood import LikelihoodParams
from streamrnn.stages.tail import TailParams
from tests.unit.stage_drivers import ChainDriver, ChainStep, RuleDriver, chain_params

WARNING, CRITICAL, CLEAR = 0.4, 0.6, 0.2
WARM = 1000.0  # seen_before of a series long past its warm-up
TAIL_COLUMNS = tuple(c.name for c in tail.COLUMNS)


def _params(
    warmup_points: int = 30,
    learn_from_anomalies: bool = False,
    max_skipped_points: int = 5,
    cooldown_points: int = 0,
) -> ChainParams:
    """A tail calibrator (alpha 0.02), the rule at WARNING/CRITICAL/CLEAR, no cooldown in
    seconds, no seasonal deflation and no level novelty."""
    return chain_params(
        calibration="tail",
        tail_alpha=0.02,
        warmup_points=warmup_points,
        learn_from_anomalies=learn_from_anomalies,
        max_skipped_points=max_skipped_points,
        alert={
            "warning_threshold": WARNING,
            "critical_threshold": CRITICAL,
            "clear_threshold": CLEAR,
            "cooldown_points": cooldown_points,
            "cooldown_s": 0.0,
        },
        seasonal_deflation=False,
        min_novelty=0.0,
        novelty_cooldown_factor=0.0,
    )


class Harness:
    """The chain on a fresh table (see :func:`_params`)."""

    def __init__(self, **params: Any) -> None:
        self.params = _params(**params)
        self.driver = ChainDriver(self.params)

    def slots(self, *names: str) -> np.ndarray[Any, Any]:
        return self.driver.slots(*names)

    def step(self, slot: np.ndarray[Any, Any], raw: float, seen_before: float = WARM) -> ChainStep:
        return self.driver.step(slot, np.array([raw]), np.array([seen_before]))

    def step_many(self, slots: np.ndarray[Any, Any], raw: Any, seen_before: Any) -> ChainStep:
        return self.driver.step(slots, np.asarray(raw, float), np.asarray(seen_before, float))

    def run(self, slot: np.ndarray[Any, Any], raws: Sequence[float]) -> list[ChainStep]:
        return [self.step(slot, r) for r in raws]

    def calibration(self, slot: int) -> tuple[float, ...]:
        return tuple(float(self.driver.column(c)[slot]) for c in TAIL_COLUMNS)


def _history(n: int = 200, seed: int = 0) -> np.ndarray[Any, Any]:
    """Ordinary raw scores (never hits once the calibrator knows them)."""
    return np.clip(np.random.default_rng(seed).normal(0.0, 1.0, n), -2.5, 2.5)


def _learned_history(h: Harness, slot: np.ndarray[Any, Any]) -> None:
    """A warm-up and then ordinary points: everything learned, nothing alerting."""
    steps = [h.step(slot, r, seen_before=float(i)) for i, r in enumerate(_history())]
    assert all(bool(s.learn[0]) for s in steps)
    assert not any(int(s.severity[0]) for s in steps)


# --- warm-up ---------------------------------------------------------------------------------


def test_warm_up_points_score_zero_and_never_alert_even_for_huge_raws() -> None:
    h = Harness(warmup_points=30)
    slot = h.slots("a")
    raws = _history(30)
    raws[[3, 11, 20, 29]] = [1e6, -1e5, 50.0, 1e9]
    steps = [h.step(slot, r, seen_before=i) for i, r in enumerate(raws)]
    assert all(s.score[0] == 0.0 and s.severity[0] == 0 for s in steps)
    assert all(s.armed_score[0] == 0.0 for s in steps)
    # The calibration learns the warm-up points (nothing is a hit yet).
    assert all(bool(s.learn[0]) for s in steps)
    assert h.calibration(0)[2] == 30
    # The first point past the warm-up is judged.
    first = h.step(slot, 1e3, seen_before=30)
    assert first.score[0] >= 0.9 and first.severity[0] == 2


def test_warm_up_is_per_point_in_a_vectorised_step() -> None:
    h = Harness(warmup_points=30)
    slots = h.slots("young", "old")
    for r in _history(50):
        h.step_many(slots, [r, r], [0.0, WARM])
    step = h.step_many(slots, [40.0, 40.0], [29.0, 30.0])
    assert step.score[0] == 0.0 and step.severity[0] == 0
    assert step.score[1] >= 0.9 and step.severity[1] == 2


# --- learning policy -------------------------------------------------------------------------


def test_hit_is_not_learned_when_learning_from_anomalies_is_off() -> None:
    h = Harness(learn_from_anomalies=False)
    slot = h.slots("a")
    _learned_history(h, slot)
    before = h.calibration(0)
    hit = h.step(slot, 30.0)
    assert hit.score[0] >= WARNING and hit.severity[0] > 0
    assert not hit.learn[0]
    assert h.calibration(0) == before
    # The next ordinary point is learned again.
    normal = h.step(slot, 0.3)
    assert normal.learn[0]
    assert h.calibration(0)[2] == before[2] + 1


def test_hit_is_learned_when_learning_from_anomalies_is_on() -> None:
    h = Harness(learn_from_anomalies=True)
    slot = h.slots("a")
    _learned_history(h, slot)
    mean, var, count = h.calibration(0)
    hit = h.step(slot, 30.0)
    assert hit.score[0] >= WARNING and hit.severity[0] > 0
    assert hit.learn[0]
    new_mean, new_var, new_count = h.calibration(0)
    assert new_count == count + 1
    assert new_mean > mean and new_var > var


def test_an_unlearned_hit_does_not_lower_the_score_of_the_next_one() -> None:
    off, on = Harness(learn_from_anomalies=False), Harness(learn_from_anomalies=True)
    scores = {}
    for name, h in (("off", off), ("on", on)):
        slot = h.slots("a")
        _learned_history(h, slot)
        scores[name] = [float(s.score[0]) for s in h.run(slot, [6.0, 6.0, 6.0])]
    assert scores["off"][0] == scores["on"][0]
    assert scores["off"][0] == scores["off"][1] == scores["off"][2]
    assert scores["on"][2] < scores["on"][1] < scores["on"][0]


@pytest.mark.parametrize("max_skipped", [1, 3, 5])
def test_after_max_skipped_points_consecutive_hits_the_next_hit_is_learned(
    max_skipped: int,
) -> None:
    h = Harness(max_skipped_points=max_skipped)
    slot = h.slots("a")
    _learned_history(h, slot)
    before = h.calibration(0)
    steps = h.run(slot, [40.0] * (max_skipped + 1))
    assert [bool(s.learn[0]) for s in steps] == [False] * max_skipped + [True]
    assert all(s.score[0] >= WARNING for s in steps)
    assert h.calibration(0)[2] == before[2] + 1


def test_a_lasting_change_keeps_being_learned_after_max_skipped_points() -> None:
    max_skipped = 3
    h = Harness(max_skipped_points=max_skipped)
    slot = h.slots("a")
    _learned_history(h, slot)
    steps = h.run(slot, [40.0] * (max_skipped + 4))
    assert all(s.score[0] >= WARNING for s in steps)  # still hits: the run is not over
    assert [bool(s.learn[0]) for s in steps] == [False] * max_skipped + [True] * 4


def test_a_lasting_change_in_raw_scores_becomes_normal() -> None:
    h = Harness(max_skipped_points=5)
    slot = h.slots("a")
    _learned_history(h, slot)
    shifted = np.random.default_rng(1).normal(8.0, 1.0, 150)
    scores = np.array([h.step(slot, r).score[0] for r in shifted])
    assert (scores[:5] >= WARNING).all()
    assert (scores[-50:] < WARNING).mean() > 0.9


def test_an_ordinary_point_resets_the_run_of_skipped_hits() -> None:
    h = Harness(max_skipped_points=5)
    slot = h.slots("a")
    _learned_history(h, slot)
    steps = h.run(slot, [40.0] * 4 + [0.0] + [40.0] * 4)
    assert [bool(s.learn[0]) for s in steps] == [False] * 4 + [True] + [False] * 4


def test_max_skipped_points_zero_learns_every_hit() -> None:
    h = Harness(max_skipped_points=0)
    slot = h.slots("a")
    _learned_history(h, slot)
    steps = h.run(slot, [40.0, 40.0, 40.0])
    assert all(bool(s.learn[0]) for s in steps)


def test_nan_raw_scores_zero_and_leaves_the_calibration_alone() -> None:
    h = Harness()
    slot = h.slots("a")
    _learned_history(h, slot)
    before = h.calibration(0)
    step = h.step(slot, np.nan)
    assert step.score[0] == 0.0 and step.severity[0] == 0 and step.learn[0]
    assert h.calibration(0) == before


def test_skipped_runs_are_counted_per_series() -> None:
    h = Harness(max_skipped_points=2)
    slots = h.slots("a", "b")
    for i, r in enumerate(_history()):
        h.step_many(slots, [r, r], [i, i])
    learn = [
        h.step_many(slots, pair, [WARM, WARM]).learn.tolist()
        for pair in ([40.0, 0.1], [40.0, 40.0], [40.0, 40.0], [0.1, 40.0])
    ]
    # a: hit, hit, hit (3rd learned), ordinary; b: ordinary, hit, hit, hit (3rd learned).
    assert learn == [[False, True], [False, False], [True, False], [True, True]]
    assert h.driver.column("skipped_run")[slots].tolist() == [0.0, 2.0]


def test_a_value_beyond_the_limit_is_held_out_of_learning_even_when_learning_anomalies() -> None:
    h = Harness(learn_from_anomalies=True, max_skipped_points=2)
    slot = h.slots("a")
    _learned_history(h, slot)
    before = h.calibration(0)
    steps = [
        h.driver.step(slot, np.array([0.1]), np.array([WARM]), value=v)
        for v in (1e300, -1e31, 1e35)
    ]
    # Held out (not a hit: the raw score is ordinary), up to max_skipped_points in a row.
    assert [bool(s.learn[0]) for s in steps] == [False, False, True]
    assert h.calibration(0)[2] == before[2] + 1
    assert bool(
        h.driver.step(slot, np.array([0.1]), np.array([WARM]), value=1e30).learn[0]
    )  # at the limit


# --- armed score -----------------------------------------------------------------------------


def test_armed_score_is_the_score_when_the_rule_was_armed_else_zero() -> None:
    h = Harness(cooldown_points=4, max_skipped_points=3)
    slot = h.slots("a")
    twin = RuleDriver(h.params.rule, rows=4)
    twin_slot = twin.slots("a")
    rng = np.random.default_rng(2)
    raws = rng.standard_t(2.0, 400)
    disarmed_with_score = 0
    for i, r in enumerate(raws):
        step = h.step(slot, r, seen_before=float(i))
        twin_step = twin.step(twin_slot, step.score)
        armed = twin_step.armed[0]
        assert twin_step.severity[0] == step.severity[0]
        expected = step.score[0] if armed else 0.0
        assert step.armed_score[0] == expected
        disarmed_with_score += int(not armed and step.score[0] > 0)
    assert disarmed_with_score > 0


def test_armed_score_is_zero_while_an_episode_is_open() -> None:
    h = Harness(cooldown_points=0)
    slot = h.slots("a")
    _learned_history(h, slot)
    steps = h.run(slot, [40.0, 40.0, 40.0])
    assert steps[0].armed_score[0] == steps[0].score[0] >= WARNING
    assert [s.armed_score[0] for s in steps[1:]] == [0.0, 0.0]
    assert all(s.score[0] >= WARNING for s in steps[1:])


# --- build_chain ----------------------------------------------------------------------------


def test_build_chain_defaults() -> None:
    params = build_chain(ScoringConfig())
    assert isinstance(params, ChainParams)
    cal = params.calibration
    assert cal.kind == calibration.LIKELIHOOD == calibration.KINDS["likelihood"][0]
    assert cal.likelihood == LikelihoodParams(short_alpha=0.2, long_alpha=0.005)
    # Every calibrator's parameters are carried (the compiled chain is one function).
    assert cal.tail == TailParams(0.02)
    assert cal.evt == EVTParams(quantile=0.98, rate_alpha=0.002)
    rule = params.rule
    assert (rule.warning_threshold, rule.critical_threshold, rule.clear_threshold) == (
        0.6,
        0.7,
        0.2,
    )
    assert (rule.min_hits, rule.window_points, rule.cooldown_points) == (1, 1, 0)
    assert rule.cooldown_s == 86_400.0
    assert tuple(params.learning) == (30, False, 20)
    assert params.learning.warmup_points == 30
    assert params.learning.learn_from_anomalies is False
    assert params.learning.max_skipped_points == 20
    assert params.seasonal.on
    assert tuple(params.novelty) == (True, 0.5, 604_800.0, 3.0)


def test_build_chain_uses_the_configured_tail_calibrator_and_rule() -> None:
    config = ScoringConfig(
        calibration="tail",
        tail_alpha=0.1,
        warmup_points=7,
        learn_from_anomalies=True,
        max_skipped_points=3,
        alert=AlertConfig(
            warning_threshold=0.3,
            critical_threshold=0.8,
            clear_threshold=0.1,
            min_hits=2,
            window_points=6,
            cooldown_points=11,
        ),
    )
    params = build_chain(config)
    assert params.calibration.kind == calibration.TAIL
    assert params.calibration.tail.alpha == 0.1
    rule = params.rule
    assert (rule.warning_threshold, rule.critical_threshold, rule.clear_threshold) == (
        0.3,
        0.8,
        0.1,
    )
    assert (rule.min_hits, rule.window_points, rule.cooldown_points) == (2, 6, 11)
    learning = params.learning
    assert (learning.warmup_points, learning.learn_from_anomalies) == (7, True)
    assert learning.max_skipped_points == 3
    # The tail calibrator's columns are declared, the others' are not.
    names = {c.name for c in chain.columns(params)}
    assert set(TAIL_COLUMNS) <= names and "lik_mean" not in names and "evt_t" not in names


def test_build_chain_uses_the_configured_likelihood_calibrator() -> None:
    config = ScoringConfig(
        calibration="likelihood", likelihood_short_alpha=0.25, likelihood_long_alpha=0.01
    )
    params = build_chain(config)
    assert params.calibration.kind == calibration.LIKELIHOOD
    assert params.calibration.likelihood.short_alpha == 0.25
    assert params.calibration.likelihood.long_alpha == 0.01
    # The built chain declares its columns and steps.
    driver = ChainDriver(params, rows=4)
    for name in ("lik_short", "lik_mean", "lik_var", "lik_count", "rule_hits", "skipped_run"):
        assert driver.column(name).shape[0] >= 1
    slot = driver.slots("a")
    step = driver.step(slot, np.array([1.0]), np.array([WARM]))
    assert step.score[0] == 0.0 and step.learn[0]
    assert float(driver.column("lik_count")[slot[0]]) == 1.0


def test_build_chain_uses_the_configured_evt_calibrator() -> None:
    params = build_chain(ScoringConfig(calibration="evt", evt_quantile=0.9, evt_rate_alpha=0.01))
    assert params.calibration.kind == calibration.EVT
    assert params.calibration.evt == EVTParams(0.9, 0.01)
    assert "evt_t" in {c.name for c in chain.columns(params)}


def test_build_chain_rejects_a_window_the_rule_cannot_hold() -> None:
    # The configuration's validation says so too; build_chain checks what it is given.
    alert = AlertConfig().model_copy(update={"window_points": 63})
    config = ScoringConfig().model_copy(update={"alert": alert})
    with pytest.raises(ValueError, match="min_hits"):
        build_chain(config)


# --- the chain in the engine -----------------------------------------------------------------

T0 = 1_700_000_000.0
STEP = 10.0


def _engine(**scoring: Any) -> Engine:
    return build_engine(Settings(scoring=scoring))


def _window(
    series: str, start: int, values: Sequence[float] | np.ndarray[Any, Any]
) -> DecodedMessage:
    ts = T0 + STEP * (start + np.arange(len(values)))
    return DecodedMessage(series, ts.tolist(), [float(v) for v in values], None)


def _smooth(n: int, seed: int = 0) -> np.ndarray[Any, Any]:
    rng = np.random.default_rng(seed)
    return 5.0 + np.sin(np.arange(n) / 4.0) + 0.05 * rng.standard_normal(n)


def _column(engine: Engine, name: str, series: str) -> float:
    slot = engine.table.slot_of(series)
    assert slot is not None
    return float(engine.table.column(name)[slot])


N_WARM = 60
SPIKE = 50.0


def _spiked(engine: Engine) -> tuple[np.ndarray[Any, Any], list[Any]]:
    """Smooth warm-up, then a spike as one point, then the smooth series goes on."""
    values = _smooth(N_WARM + 20)
    values[N_WARM] = SPIKE
    results = [
        engine.process([_window("a", 0, values[:N_WARM])]),
        engine.process([_window("a", N_WARM, values[N_WARM : N_WARM + 1])]),
    ]
    return values, results


def test_engine_single_spike_alerts_once_and_is_not_learned() -> None:
    engine = _engine()
    values, (warm, spike) = _spiked(engine)
    assert (warm.severity == 0).all()
    assert spike.severity.tolist() == [2]
    # The spike left no trace: the persistence base is still the pre-spike value.
    assert _column(engine, "last_value", "a") == values[N_WARM - 1]
    assert _column(engine, "count", "a") == N_WARM
    after = engine.process([_window("a", N_WARM + 1, values[N_WARM + 1 :])])
    assert (after.severity == 0).all()
    assert after.score[0] < WARNING
    assert abs(after.forecast[0] - values[N_WARM - 1]) < 1.0
    assert (after.score < WARNING).all()


def test_engine_learning_from_anomalies_learns_the_spike() -> None:
    engine = _engine(learn_from_anomalies=True)
    values, (_, spike) = _spiked(engine)
    assert spike.severity.tolist() == [2]
    assert _column(engine, "last_value", "a") == SPIKE
    assert _column(engine, "count", "a") == N_WARM + 1
    after = engine.process([_window("a", N_WARM + 1, values[N_WARM + 1 : N_WARM + 2])])
    # The model now starts from the spike: the return to normal looks like a jump down,
    # but the open episode and the cooldown keep it from alerting again.
    assert abs(after.forecast[0] - SPIKE) < abs(after.forecast[0] - values[N_WARM - 1])
    assert after.score[0] >= WARNING
    assert after.severity[0] == 0 and after.armed_score[0] == 0.0


@pytest.mark.parametrize("max_skipped", [5, 20])
def test_engine_level_shift_alerts_once_then_becomes_normal(max_skipped: int) -> None:
    n, shift_at = 200, N_WARM
    values = _smooth(n, seed=1)
    values[shift_at:] += 10.0
    engine = _engine(max_skipped_points=max_skipped)
    result = engine.process([_window("a", 0, values)])
    assert np.flatnonzero(result.severity).tolist() == [shift_at]
    # Unlearned, the new level keeps scoring as anomalous for max_skipped points ...
    assert (result.score[shift_at : shift_at + max_skipped] >= WARNING).all()
    assert _column(engine, "count", "a") == n - max_skipped
    # ... then it is learned, and within some tens of points it is the new normal.
    assert (result.score[shift_at + max_skipped + 10 :] < WARNING).all()
    assert _column(engine, "value_mean", "a") > values[:shift_at].mean() + 5.0


def test_engine_series_in_warm_up_never_alert() -> None:
    engine = _engine()  # warm-up 30 points
    engine.process([_window("old", 0, _smooth(N_WARM))])
    young = _smooth(25, seed=3)
    young[[5, 12, 24]] = [1e4, -1e3, 5e5]
    batch = [_window("old", N_WARM, [SPIKE]), _window("young", 0, young)]
    result = engine.process(batch)
    is_young = np.array([batch[i].series == "young" for i in result.message_index])
    assert result.severity[~is_young].tolist() == [2]
    assert (result.severity[is_young] == 0).all()
    assert (result.score[is_young] == 0).all()
    # Warm-up points are learned, wild ones included.
    assert _column(engine, "count", "young") == len(young)
