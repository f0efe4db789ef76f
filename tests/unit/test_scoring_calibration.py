"""Calibration: raw scores → scores in [0, 1] from each series' own history of raw scores.

Both calibrators (tail and likelihood) are held to the shared contract of
:class:`streamrnn.scoring.base.Calibrator`; each also has tests of its own behaviour.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

from streamrnn.engine.series_table import SeriesTable
from streamrnn.scoring import evt, likelihood, tail
from streamrnn.scoring.base import Calibrator, score_from_tail_probability
from streamrnn.scoring.evt import EVTCalibrator
from streamrnn.scoring.likelihood import LikelihoodCalibrator
from streamrnn.scoring.tail import TailCalibrator


@dataclass(frozen=True)
class Kind:
    make: Callable[[], Calibrator]
    min_learned: int
    columns: tuple[str, ...]


KINDS = {
    "tail": Kind(
        lambda: TailCalibrator(alpha=0.02),
        tail.MIN_LEARNED,
        ("tail_mean", "tail_var", "tail_count"),
    ),
    "likelihood": Kind(
        lambda: LikelihoodCalibrator(short_alpha=0.3, long_alpha=0.005),
        likelihood.MIN_LEARNED,
        ("lik_short", "lik_mean", "lik_var", "lik_count"),
    ),
    "evt": Kind(
        lambda: EVTCalibrator(quantile=0.98, rate_alpha=0.002),
        evt.MIN_LEARNED,
        ("evt_t", "evt_phi", "evt_m", "evt_v", "evt_peaks", "evt_n", "evt_mean"),
    ),
}


@dataclass
class Bound:
    kind: Kind
    cal: Calibrator
    table: SeriesTable

    def slots(self, *names: str) -> np.ndarray[Any, Any]:
        return self.table.resolve(list(names), [None] * len(names))

    def feed(self, slot: np.ndarray[Any, Any], raws: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        """Score, then learn, one raw at a time; the scores."""
        out = []
        for r in raws:
            out.append(self.cal.score(slot, np.array([r]))[0])
            self.cal.learn(slot, np.array([r]))
        return np.array(out)

    def one(self, slot: np.ndarray[Any, Any], raw: float) -> float:
        return float(self.cal.score(slot, np.array([raw]))[0])

    def state(self, slot: int) -> dict[str, float]:
        return {name: float(self.table.column(name)[slot]) for name in self.kind.columns}


def _bound(kind: Kind | str) -> Bound:
    if isinstance(kind, str):
        kind = KINDS[kind]
    table = SeriesTable(max_series=16)
    cal = kind.make()
    cal.bind(table)
    return Bound(kind, cal, table)


@pytest.fixture(params=sorted(KINDS))
def bound(request: pytest.FixtureRequest) -> Bound:
    """Each calibrator, bound to a fresh table."""
    return _bound(str(request.param))


def _normal(n: int, seed: int = 0, sd: float = 1.0) -> np.ndarray[Any, Any]:
    return np.random.default_rng(seed).normal(0.0, sd, n)


# --- score_from_tail_probability -----------------------------------------------------------


@pytest.mark.parametrize(
    ("p", "score"),
    [
        (1e-4, 0.4),
        (1e-3, 0.3),
        (1e-5, 0.5),
        (1e-10, 1.0 - 0.5 * np.exp(-1.0)),
        (1.0, 0.0),
        (0.0, 1.0),
        (1e-30, 1.0 - 0.5 * np.exp(-5.0)),
        (np.nan, 0.0),
        (2.0, 0.0),
    ],
)
def test_tail_probability_maps_to_log10_decades_linear_then_compressed(
    p: float, score: float
) -> None:
    got = score_from_tail_probability(np.array([p]))
    assert got[0] == pytest.approx(score, abs=1e-12)


def test_tail_probability_mapping_is_elementwise_and_decreasing_in_p() -> None:
    p = np.logspace(-12, 0, 25)[::-1]
    scores = score_from_tail_probability(p)
    assert (np.diff(scores) >= 0).all()
    assert ((scores >= 0) & (scores <= 1)).all()


# --- the shared contract --------------------------------------------------------------------


def test_calibrator_declares_its_columns_once(bound: Bound) -> None:
    for name in bound.kind.columns:
        assert bound.table.column(name).shape[0] >= 1
    with pytest.raises(ValueError, match="already exists"):
        bound.cal.bind(bound.table)


def test_scores_lie_in_zero_one_for_wild_raws(bound: Bound) -> None:
    raws = np.random.default_rng(4).standard_cauchy(400) * 10.0
    raws[::13] = np.nan
    raws[::29] = 1e12
    scores = bound.feed(bound.slots("a"), raws)
    assert np.isfinite(scores).all()
    assert ((scores >= 0) & (scores <= 1)).all()


def test_nan_raw_scores_zero_even_with_history(bound: Bound) -> None:
    slot = bound.slots("a")
    bound.feed(slot, _normal(100))
    assert bound.one(slot, np.nan) == 0.0


def test_points_score_zero_until_the_series_has_learned_enough(bound: Bound) -> None:
    slot = bound.slots("a")
    min_learned = bound.kind.min_learned
    assert bound.one(slot, 1e6) == 0.0  # nothing learned
    bound.feed(slot, _normal(min_learned - 1) * 0.1)
    assert bound.one(slot, 1e6) == 0.0  # one short
    bound.cal.learn(slot, np.array([0.05]))
    assert bound.one(slot, 1e6) > 0.9


def test_score_learns_nothing(bound: Bound) -> None:
    slot = bound.slots("a")
    bound.feed(slot, _normal(60))
    before = bound.state(0)
    first = bound.one(slot, 3.5)
    second = bound.one(slot, 3.5)
    assert first == second
    assert bound.state(0) == before


def test_learn_ignores_nan_raws(bound: Bound) -> None:
    slots = bound.slots("a", "b")
    for r in _normal(30):
        bound.cal.learn(slots, np.array([r, r]))
    before_a, before_b = bound.state(0), bound.state(1)
    bound.cal.learn(slots, np.array([np.nan, 2.0]))
    assert bound.state(0) == before_a
    assert bound.state(1) != before_b
    bound.cal.learn(slots[:1], np.array([np.nan]))
    assert bound.state(0) == before_a


def test_learning_changes_the_state(bound: Bound) -> None:
    slot = bound.slots("a")
    bound.feed(slot, _normal(20))
    before = bound.state(0)
    bound.cal.learn(slot, np.array([1.7]))
    assert bound.state(0) != before


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_calibration_is_monotone_in_the_size_of_the_raw_score(bound: Bound, sign: float) -> None:
    slot = bound.slots("a")
    bound.feed(slot, _normal(200, seed=1))
    raws = sign * np.linspace(1.0, 40.0, 60)
    scores = np.array([bound.one(slot, r) for r in raws])
    assert (np.diff(scores) >= 0).all()
    assert scores[-1] > scores[0]


def test_big_raw_after_many_small_ones_scores_near_one(bound: Bound) -> None:
    if bound.kind is KINDS["evt"]:
        pytest.skip("EVT needs many peaks: see test_evt_* below")
    slot = bound.slots("a")
    small = bound.feed(slot, _normal(300, seed=2))
    assert np.median(small) < 0.2
    assert bound.one(slot, 12.0) >= 0.9
    assert bound.one(slot, -12.0) >= 0.9


def test_learning_one_series_leaves_another_untouched(bound: Bound) -> None:
    slots = bound.slots("a", "b")
    fresh_b = bound.state(1)
    bound.feed(slots[:1], _normal(1000 if bound.kind is KINDS["evt"] else 100, seed=3))
    assert bound.state(1) == fresh_b
    # b has learned nothing: its points still score 0, while a's huge point scores high.
    scores = bound.cal.score(slots, np.array([50.0, 50.0]))
    assert scores[0] >= 0.9
    assert scores[1] == 0.0


def test_series_scored_together_match_each_series_scored_alone(bound: Bound) -> None:
    rng = np.random.default_rng(5)
    histories = np.stack([rng.normal(0, 1.0, 80), rng.normal(0.5, 4.0, 80)], axis=1)
    histories[::7, 1] = np.nan
    histories[40, 0] = 25.0
    slots = bound.slots("calm", "wild")
    together = []
    for row in histories:
        together.append(bound.cal.score(slots, row))
        bound.cal.learn(slots, row)
    for i, name in enumerate(("calm", "wild")):
        alone = _bound(bound.kind)
        alone_scores = alone.feed(alone.slots(name), histories[:, i])
        np.testing.assert_allclose(np.array(together)[:, i], alone_scores, rtol=0, atol=1e-12)


# --- tail calibrator -----------------------------------------------------------------------


@pytest.fixture
def tail_bound() -> Bound:
    return _bound("tail")


@pytest.fixture
def lik_bound() -> Bound:
    return _bound("likelihood")


def test_tail_score_is_two_sided_around_the_series_running_mean(tail_bound: Bound) -> None:
    slot = tail_bound.slots("a")
    tail_bound.feed(slot, _normal(200, seed=6) + 2.0)  # a biased model: residuals around 2
    mean = tail_bound.state(0)["tail_mean"]
    distances = np.linspace(0.0, 12.0, 40)
    up = np.array([tail_bound.one(slot, mean + d) for d in distances])
    down = np.array([tail_bound.one(slot, mean - d) for d in distances])
    np.testing.assert_allclose(up, down, atol=1e-12)
    assert (np.diff(up) >= 0).all()
    assert up[0] == pytest.approx(0.0, abs=1e-12)
    # The bias itself is not anomalous: a raw at the usual offset scores low.
    assert tail_bound.one(slot, 2.0) < 0.1
    assert tail_bound.one(slot, 2.0) < tail_bound.one(slot, 0.0)


def test_tail_score_matches_the_gaussian_tail_of_the_learned_statistics(
    tail_bound: Bound,
) -> None:
    from scipy.special import erfc

    slot = tail_bound.slots("a")
    tail_bound.feed(slot, _normal(100, seed=7, sd=0.5))
    s = tail_bound.state(0)
    x = 1.7
    p = erfc(abs(x - s["tail_mean"]) / np.sqrt(s["tail_var"]) / np.sqrt(2.0))
    assert tail_bound.one(slot, x) == pytest.approx(min(1.0, -np.log10(p) / 10.0), abs=1e-12)


def test_tail_learns_clipped_raws_so_one_wild_point_cannot_blow_up_the_spread(
    tail_bound: Bound,
) -> None:
    slot = tail_bound.slots("a")
    tail_bound.feed(slot, _normal(100, seed=8))
    tail_bound.cal.learn(slot, np.array([1e9]))
    s = tail_bound.state(0)
    assert abs(s["tail_mean"]) <= tail.LEARN_CLIP
    assert np.sqrt(s["tail_var"]) <= tail.LEARN_CLIP
    assert tail_bound.one(slot, 8.0) >= 0.3  # still clearly unusual afterwards


def test_tail_perfect_forecasts_stay_finite(tail_bound: Bound) -> None:
    slot = tail_bound.slots("a")
    scores = tail_bound.feed(slot, np.zeros(30))
    assert (scores == 0).all()
    score = tail_bound.one(slot, tail.MIN_SPREAD)
    assert 0.0 < score < 1.0


def test_tail_same_large_raw_scores_lower_once_it_has_been_learned(tail_bound: Bound) -> None:
    slot = tail_bound.slots("a")
    tail_bound.feed(slot, _normal(80, seed=9, sd=0.3))
    first, second = tail_bound.feed(slot, np.array([2.0, 2.0]))
    assert second < first


# --- likelihood calibrator -------------------------------------------------------------------


def test_likelihood_ignores_the_sign_of_the_raw_score(lik_bound: Bound) -> None:
    slot = lik_bound.slots("a")
    lik_bound.feed(slot, _normal(150, seed=10) + 0.7)
    for r in (0.3, 1.5, 3.0, 9.0):
        assert lik_bound.one(slot, r) == lik_bound.one(slot, -r)


def test_likelihood_larger_short_run_average_scores_higher(lik_bound: Bound) -> None:
    slots = lik_bound.slots("a", "b")
    for r in _normal(200, seed=11):
        lik_bound.cal.learn(slots, np.array([r, r]))
    assert lik_bound.state(0) == lik_bound.state(1)
    # Same long-run statistics, b's recent run of magnitudes is larger.
    lik_bound.table.column("lik_short")[1] += 0.5
    for raw in (0.0, 0.8, 1.5, 2.5):
        scores = lik_bound.cal.score(slots, np.array([raw, raw]))
        assert scores[1] > scores[0]


def test_likelihood_sustained_moderate_run_outscores_an_isolated_moderate_point() -> None:
    history = _normal(400, seed=12)
    moderate = 2.5

    isolated = _bound("likelihood")
    slot = isolated.slots("a")
    isolated.feed(slot, history)
    after_isolated = isolated.feed(slot, np.array([moderate, *np.full(9, 0.6)]))

    sustained = _bound("likelihood")
    slot = sustained.slots("a")
    sustained.feed(slot, history)
    run = sustained.feed(slot, np.full(10, moderate))

    assert run[0] == after_isolated[0]  # the same first point
    assert (np.diff(run[:5]) > 0).all()  # the score climbs while the run lasts
    assert (run[3:] >= 0.4).all()  # a sustained run reaches the warning level ...
    assert after_isolated.max() < 0.4  # ... one moderate point does not
    assert run.max() > after_isolated.max() + 0.3


def test_likelihood_short_run_is_the_magnitude_for_a_series_first_point(
    lik_bound: Bound,
) -> None:
    slot = lik_bound.slots("a")
    lik_bound.cal.learn(slot, np.array([-3.0]))
    assert lik_bound.state(0)["lik_short"] == 3.0
    lik_bound.cal.learn(slot, np.array([1e9]))
    assert lik_bound.state(0)["lik_short"] <= likelihood.LEARN_CLIP


# --- EVT-specific ---------------------------------------------------------------------------


def test_evt_scores_nothing_until_it_has_learned_enough() -> None:
    b = _bound("evt")
    slot = b.slots("a")
    b.feed(slot, _normal(evt.MIN_LEARNED - 1, seed=4))
    assert b.one(slot, 100.0) == 0.0
    b.feed(slot, _normal(200, seed=5))
    assert b.state(0)["evt_peaks"] >= evt.MIN_PEAKS
    assert b.one(slot, 100.0) > 0.5


def test_evt_knows_a_heavy_tail_from_a_light_one() -> None:
    """The same residual is less surprising in a series whose own extremes are heavy."""
    light, heavy = _bound("evt"), _bound("evt")
    rng = np.random.default_rng(5)
    light.feed(light.slots("a"), rng.normal(0, 1, 3000))
    heavy.feed(heavy.slots("a"), rng.standard_t(2.5, 3000))
    assert light.one(light.slots("a"), 8.0) > heavy.one(heavy.slots("a"), 8.0)
    assert light.one(light.slots("a"), 8.0) >= 0.6


def test_evt_threshold_tracks_the_configured_quantile() -> None:
    b = _bound("evt")
    slot = b.slots("a")
    x = np.random.default_rng(6).normal(0, 1, 5000)
    b.feed(slot, x)
    expected = np.quantile(np.abs(x), 0.98)
    assert abs(b.state(0)["evt_t"] - expected) < 0.35
    assert abs(b.state(0)["evt_phi"] - 0.02) < 0.015
