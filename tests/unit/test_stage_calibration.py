"""Calibration: raw scores → scores in [0, 1) from each series' own history of raw scores.

Every calibrator stage (:mod:`streamrnn.stages.tail`, :mod:`~streamrnn.stages.likelihood`,
:mod:`~streamrnn.stages.evt`) is held to one shared contract, through the serving stage
functions (:class:`~tests.unit.stage_drivers.CalibratorDriver`); each also has tests of its
own behaviour. The score scale (:mod:`streamrnn.stages.tail_probability`) is checked against
closed forms and scipy; the dispatch by ``scoring.calibration``
(:mod:`streamrnn.stages.calibration`) against the calibrator it chooses; and EVT once
through the engine, on a multi-day series.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from scipy.special import erfc
from scipy.special import log_ndtr as scipy_log_ndtr

from streamrnn.config import Settings
from streamrnn.decode import DecodedMessage
from streamrnn.engine.build import build_engine
from streamrnn.stages import calibration, evt, likelihood, schema, tail
from streamrnn.stages.tail_probability import LINEAR_DECADES, log_ndtr, score_from_log10_tail
from tests.unit.stage_drivers import CalibratorDriver, chain_params

Array = np.ndarray[Any, Any]


@dataclass(frozen=True)
class Kind:
    name: str
    params: Any
    min_learned: int
    columns: tuple[str, ...]


KINDS = {
    "tail": Kind(
        "tail",
        tail.TailParams(alpha=0.02),
        tail.MIN_LEARNED,
        ("tail_mean", "tail_var", "tail_count"),
    ),
    "likelihood": Kind(
        "likelihood",
        likelihood.LikelihoodParams(short_alpha=0.3, long_alpha=0.005),
        likelihood.MIN_LEARNED,
        ("lik_short", "lik_mean", "lik_var", "lik_count"),
    ),
    "evt": Kind(
        "evt",
        evt.EVTParams(quantile=0.98, rate_alpha=0.002),
        evt.MIN_LEARNED,
        ("evt_t", "evt_phi", "evt_m", "evt_v", "evt_peaks", "evt_n", "evt_mean"),
    ),
}


class Bound:
    """A calibrator driver with the conveniences the tests below share."""

    def __init__(self, kind: Kind) -> None:
        self.kind = kind
        self.driver = CalibratorDriver(kind.name, kind.params)
        self.table = self.driver.table

    def slots(self, *names: str) -> Array:
        return self.driver.slots(*names)

    def feed(self, slot: Array, raws: Array) -> Array:
        """Score, then learn, one raw at a time; the scores."""
        out = []
        for r in raws:
            out.append(self.driver.score(slot, np.array([r]))[0])
            self.driver.learn(slot, np.array([r]))
        return np.array(out)

    def one(self, slot: Array, raw: float) -> float:
        return float(self.driver.score(slot, np.array([raw]))[0])

    def learn(self, slots: Array, raw: Array) -> None:
        self.driver.learn(slots, raw)

    def score(self, slots: Array, raw: Array) -> Array:
        return self.driver.score(slots, raw)

    def state(self, slot: int) -> dict[str, float]:
        return {name: float(self.table.column(name)[slot]) for name in self.kind.columns}


def _bound(kind: Kind | str) -> Bound:
    return Bound(KINDS[kind] if isinstance(kind, str) else kind)


@pytest.fixture(params=sorted(KINDS))
def bound(request: pytest.FixtureRequest) -> Bound:
    """Each calibrator, on a fresh table."""
    return _bound(str(request.param))


def _scale(decades: float) -> float:
    """The score scale's closed form (module docstring of tail_probability)."""
    if decades <= 5.0:
        return max(decades, 0.0) / 10.0
    return 1.0 - 0.5 * math.exp(-(decades - 5.0) / 5.0)


def _normal(n: int, seed: int = 0, sd: float = 1.0) -> Array:
    return np.random.default_rng(seed).normal(0.0, sd, n)


# --- the score scale: score_from_log10_tail ------------------------------------------------


@pytest.mark.parametrize(
    ("p", "score"),
    [
        (1e-4, 0.4),
        (1e-3, 0.3),
        (1e-5, 0.5),
        (1e-10, 1.0 - 0.5 * np.exp(-1.0)),
        (1e-20, 1.0 - 0.5 * np.exp(-3.0)),
        (1.0, 0.0),
        (1e-30, 1.0 - 0.5 * np.exp(-5.0)),
        (2.0, 0.0),  # "more than certain": no decades, not negative ones
    ],
)
def test_tail_probability_maps_to_log10_decades_linear_then_compressed(
    p: float, score: float
) -> None:
    assert score_from_log10_tail(-math.log10(p)) == pytest.approx(score, abs=1e-12)


@pytest.mark.parametrize(
    ("decades", "score"),
    [
        pytest.param(math.inf, 1.0, id="p=0"),
        pytest.param(math.nan, 0.0, id="nan"),
        pytest.param(-math.inf, 0.0, id="-inf"),
        pytest.param(-3.0, 0.0, id="negative"),
        pytest.param(0.0, 0.0, id="zero"),
        pytest.param(1e300, 1.0, id="huge"),
    ],
)
def test_score_scale_edge_cases(decades: float, score: float) -> None:
    got = score_from_log10_tail(decades)
    assert math.isfinite(got)
    assert got == score


def test_score_scale_is_monotone_bounded_and_has_no_kink_at_the_linear_end() -> None:
    decades = np.concatenate([np.linspace(0.0, 60.0, 601), [100.0, 1e3, 1e5]])
    scores = np.array([score_from_log10_tail(d) for d in decades])
    assert (np.diff(scores) >= 0).all()
    assert (np.diff(scores[:601]) > 0).all()  # strictly: 1e-12 and 1e-40 stay apart
    assert ((scores >= 0) & (scores <= 1)).all()
    assert (scores[:601] < 1.0).all()
    # Continuous, with the same slope (1/10 per decade) on both sides of LINEAR_DECADES.
    eps = 1e-6
    left = score_from_log10_tail(LINEAR_DECADES - eps)
    mid = score_from_log10_tail(LINEAR_DECADES)
    right = score_from_log10_tail(LINEAR_DECADES + eps)
    assert mid == 0.5
    assert (mid - left) / eps == pytest.approx(0.1, rel=1e-5)
    assert (right - mid) / eps == pytest.approx(0.1, rel=1e-5)


# --- log_ndtr against scipy ----------------------------------------------------------------


_LOG_NDTR_X = np.concatenate(
    [
        np.linspace(-60.0, 40.0, 2001),
        [-1e6, -1e4, -1e3, -200.0, -37.5, -20.000001, -20.0, -19.999999],
        [-1e-300, 0.0, 1e-300, 5.999999, 6.0, 6.000001, 8.3, 37.0, 39.0, 1e3, 1e6],
    ]
)


def test_log_ndtr_matches_scipy_far_into_both_tails() -> None:
    ours = np.array([log_ndtr(float(x)) for x in _LOG_NDTR_X])
    theirs = scipy_log_ndtr(_LOG_NDTR_X)
    assert np.isfinite(ours).all()
    assert (ours <= 0).all()
    # Relative agreement up to x = 6, including where the value is ~ -1e12 (x = -1e6).
    body = _LOG_NDTR_X <= 6.0
    np.testing.assert_allclose(ours[body], theirs[body], rtol=1e-13, atol=0)
    # Beyond 6 the stage takes log(1 - q) as -q (q = Q(x) < 1e-9): off by at most q^2 (a
    # relative 5e-10 at x = 6, nothing once q^2 underflows), down to values ~ -1e-300
    # (where erfc itself agrees only to ~x^2 roundings: rtol 1e-12).
    far = ~body
    err = np.abs(ours[far] - theirs[far])
    assert (err <= 1e-12 * np.abs(theirs[far]) + theirs[far] ** 2 + 1e-300).all()
    assert (ours[far] < 0).sum() >= 10  # not all of them underflowed to 0
    assert log_ndtr(0.0) == pytest.approx(math.log(0.5), rel=1e-15)


def test_log_ndtr_is_monotone_across_its_branches() -> None:
    x = np.sort(_LOG_NDTR_X[np.abs(_LOG_NDTR_X) < 100])
    ours = np.array([log_ndtr(float(v)) for v in x])
    assert (np.diff(ours) >= 0).all()


def test_log_ndtr_of_nan_is_nan() -> None:
    assert math.isnan(log_ndtr(math.nan))
    assert math.isnan(scipy_log_ndtr(math.nan))


# --- dispatch by scoring.calibration -------------------------------------------------------


def test_each_calibrator_declares_its_columns_once(bound: Bound) -> None:
    module = bound.driver.module
    assert tuple(c.name for c in module.COLUMNS) == bound.kind.columns
    code = calibration.KINDS[bound.kind.name][0]
    assert calibration.columns_of(code) == module.COLUMNS
    for name in bound.kind.columns:
        assert bound.table.column(name).shape[0] >= 1
    with pytest.raises(ValueError, match="already exists"):
        schema.declare(bound.table, module.COLUMNS)


@pytest.mark.parametrize("name", sorted(KINDS))
def test_configuration_chooses_the_calibrator_and_its_parameters(name: str) -> None:
    p = chain_params(
        calibration=name,
        tail_alpha=0.03,
        likelihood_short_alpha=0.25,
        likelihood_long_alpha=0.004,
        evt_quantile=0.97,
        evt_rate_alpha=0.003,
    ).calibration
    assert p.kind == calibration.KINDS[name][0]
    assert p.tail == tail.TailParams(0.03)
    assert p.likelihood == likelihood.LikelihoodParams(0.25, 0.004)
    assert p.evt == evt.EVTParams(0.97, 0.003)


@pytest.mark.parametrize("name", sorted(KINDS))
def test_calibration_dispatch_scores_and_learns_as_the_chosen_calibrator(name: str) -> None:
    params = chain_params(calibration=name).calibration
    kind = KINDS[name]
    sub = getattr(params, name)
    via_dispatch = CalibratorDriver(name, sub)  # its table holds the chosen columns only
    state = calibration.bind(params, via_dispatch.table)
    for other in set(KINDS) - {name}:
        assert all(len(col) == 0 for col in getattr(state, other))  # placeholders
    direct = CalibratorDriver(name, sub)
    slot = int(direct.slots("a")[0])
    assert int(via_dispatch.slots("a")[0]) == slot
    raws = np.random.default_rng(3).standard_t(3.0, 300)
    raws[::17] = np.nan
    dispatched, alone = [], []
    for r in raws:
        dispatched.append(calibration.score(state, params, slot, float(r)))
        calibration.learn(state, params, slot, float(r))
        alone.append(direct.score(np.array([slot]), np.array([r]))[0])
        direct.learn(np.array([slot]), np.array([r]))
    np.testing.assert_array_equal(dispatched, alone)
    assert max(dispatched) > 0.3  # the calibrator did score (not a 0 == 0 comparison)
    for col in kind.columns:
        np.testing.assert_array_equal(via_dispatch.column(col), direct.column(col))


# --- the shared contract --------------------------------------------------------------------


def test_scores_lie_in_zero_one_for_wild_raws(bound: Bound) -> None:
    raws = np.random.default_rng(4).standard_cauchy(400) * 10.0
    raws[::13] = np.nan
    raws[::29] = 1e12
    raws[5] = np.inf
    raws[6] = -np.inf
    scores = bound.feed(bound.slots("a"), raws)
    assert np.isfinite(scores).all()
    assert ((scores >= 0) & (scores <= 1)).all()
    assert scores.max() > 0.5  # it did score something
    assert np.isfinite(list(bound.state(0).values())).all()  # ±inf was not learned


def test_nan_raw_scores_zero_even_with_history(bound: Bound) -> None:
    slot = bound.slots("a")
    bound.feed(slot, _normal(100))
    assert bound.one(slot, np.nan) == 0.0
    assert bound.one(slot, 50.0) > 0.0


def test_points_score_zero_until_the_series_has_learned_enough(bound: Bound) -> None:
    slot = bound.slots("a")
    min_learned = bound.kind.min_learned
    assert bound.one(slot, 1e6) == 0.0  # nothing learned
    bound.feed(slot, _normal(min_learned - 1) * 0.1)
    assert bound.one(slot, 1e6) == 0.0  # one short
    bound.learn(slot, np.array([0.05]))
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
        bound.learn(slots, np.array([r, r]))
    before_a, before_b = bound.state(0), bound.state(1)
    bound.learn(slots, np.array([np.nan, 2.0]))
    assert bound.state(0) == before_a
    assert bound.state(1) != before_b
    bound.learn(slots[:1], np.array([np.nan]))
    assert bound.state(0) == before_a


def test_learning_changes_the_state(bound: Bound) -> None:
    slot = bound.slots("a")
    bound.feed(slot, _normal(20))
    before = bound.state(0)
    bound.learn(slot, np.array([1.7]))
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
    scores = bound.score(slots, np.array([50.0, 50.0]))
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
        together.append(bound.score(slots, row))
        bound.learn(slots, row)
    for i, name in enumerate(("calm", "wild")):
        alone = _bound(bound.kind)
        alone.slots("someone else")  # so the series sits in another slot than above
        alone_scores = alone.feed(alone.slots(name), histories[:, i])
        np.testing.assert_array_equal(np.array(together)[:, i], alone_scores)


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
    slot = tail_bound.slots("a")
    tail_bound.feed(slot, _normal(100, seed=7, sd=0.5))
    s = tail_bound.state(0)
    for x in (0.4, 1.7, -2.2, 3.0):
        p = erfc(abs(x - s["tail_mean"]) / np.sqrt(s["tail_var"]) / np.sqrt(2.0))
        assert tail_bound.one(slot, x) == pytest.approx(_scale(-np.log10(p)), abs=1e-12)


def test_tail_score_far_beyond_float_underflow_is_the_compressed_gaussian_tail(
    tail_bound: Bound,
) -> None:
    """z = 60: p ~ 1e-784, not representable; the score comes from the log tail."""
    slot = tail_bound.slots("a")
    tail_bound.feed(slot, _normal(100, seed=7))
    s = tail_bound.state(0)
    z = 60.0
    x = s["tail_mean"] + z * np.sqrt(s["tail_var"])
    decades = -(scipy_log_ndtr(-z) + np.log(2.0)) / np.log(10.0)
    assert decades > 700
    assert tail_bound.one(slot, x) == pytest.approx(_scale(decades), abs=1e-12)


def test_tail_learns_clipped_raws_so_one_wild_point_cannot_blow_up_the_spread(
    tail_bound: Bound,
) -> None:
    slot = tail_bound.slots("a")
    tail_bound.feed(slot, _normal(100, seed=8))
    tail_bound.learn(slot, np.array([1e9]))
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


def test_likelihood_score_is_the_one_sided_gaussian_tail_of_the_short_run(
    lik_bound: Bound,
) -> None:
    slot = lik_bound.slots("a")
    lik_bound.feed(slot, _normal(150, seed=10))
    s = lik_bound.state(0)
    short_alpha = KINDS["likelihood"].params.short_alpha
    for raw in (-4.0, 2.5, 6.0):
        short = s["lik_short"] + short_alpha * (abs(raw) - s["lik_short"])
        z = (short - s["lik_mean"]) / np.sqrt(s["lik_var"])
        decades = -scipy_log_ndtr(-z) / np.log(10.0)
        assert lik_bound.one(slot, raw) == pytest.approx(_scale(decades), abs=1e-12)


def test_likelihood_larger_short_run_average_scores_higher(lik_bound: Bound) -> None:
    slots = lik_bound.slots("a", "b")
    for r in _normal(200, seed=11):
        lik_bound.learn(slots, np.array([r, r]))
    assert lik_bound.state(0) == lik_bound.state(1)
    # Same long-run statistics, b's recent run of magnitudes is larger.
    lik_bound.table.column("lik_short")[1] += 0.5
    for raw in (0.0, 0.8, 1.5, 2.5):
        scores = lik_bound.score(slots, np.array([raw, raw]))
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
    lik_bound.learn(slot, np.array([-3.0]))
    assert lik_bound.state(0)["lik_short"] == 3.0
    lik_bound.learn(slot, np.array([1e9]))
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


def test_evt_needs_peaks_as_well_as_points() -> None:
    """Enough points but (almost) no peaks: a constant series has nothing above its
    threshold, so it does not score yet."""
    b = _bound("evt")
    slot = b.slots("a")
    b.feed(slot, np.full(3 * evt.MIN_LEARNED, 1.0))
    assert b.state(0)["evt_n"] >= evt.MIN_LEARNED
    assert b.state(0)["evt_peaks"] < evt.MIN_PEAKS
    assert b.one(slot, 100.0) == 0.0


def test_evt_peak_rate_is_the_exact_fraction_of_peaks_while_the_series_is_young() -> None:
    """The peak rate weighs the newest point by max(rate_alpha, 1/n): until n = 1/rate_alpha
    it is the plain fraction of points that were peaks."""
    b = _bound("evt")
    slot = b.slots("a")
    young = int(1.0 / KINDS["evt"].params.rate_alpha)
    for chunk in np.array_split(np.random.default_rng(8).standard_t(4.0, young), 5):
        b.feed(slot, chunk)
        s = b.state(0)
        assert s["evt_peaks"] > 0
        assert s["evt_phi"] == pytest.approx(s["evt_peaks"] / s["evt_n"], rel=1e-9)


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


# --- EVT through the engine -----------------------------------------------------------------

DAY = 86_400.0
STEP = 300.0
T0 = 19_700 * DAY  # a midnight (UTC)


def test_evt_through_the_engine_scores_a_multi_day_series_and_ranks_a_spike_highest() -> None:
    """Four days at 5-minute sampling: EVT reaches its scoring branch once it has learned
    MIN_LEARNED magnitudes and MIN_PEAKS peaks, and a large spike on the last day scores
    at the top, far above routine points, and is the one alert."""
    engine = build_engine(Settings(scoring={"calibration": "evt"}))
    n = int(4 * DAY / STEP)
    ts = T0 + STEP * np.arange(n)
    rng = np.random.default_rng(21)
    values = 100.0 + 10.0 * np.sin(2 * np.pi * ts / DAY) + rng.normal(0.0, 1.0, n)
    spike = n - 100  # day 4, 15:40
    values[spike] += 60.0
    results = [
        engine.process([DecodedMessage("svc.latency", ts[i : i + 48].tolist(),
                                       values[i : i + 48].tolist(), None)])
        for i in range(0, n, 48)
    ]  # fmt: skip
    scores = np.concatenate([r.score for r in results])
    severity = np.concatenate([r.severity for r in results])
    assert len(scores) == n
    slot = engine.table.slot_of("svc.latency")
    assert slot is not None
    assert engine.table.column("evt_n")[slot] >= evt.MIN_LEARNED
    assert engine.table.column("evt_peaks")[slot] >= evt.MIN_PEAKS
    with pytest.raises(KeyError):  # the chosen calibrator's columns only
        engine.table.column("lik_count")
    # Not ready (warm-up, then too few magnitudes and peaks): exactly 0; then the scoring
    # branch, which gives every point some improbability.
    assert (scores[: evt.MIN_LEARNED + 2] == 0).all()
    assert (scores[200:] > 0).all()
    assert np.isfinite(scores).all() and ((scores >= 0) & (scores <= 1)).all()
    routine = np.delete(scores, [spike, spike + 1])
    assert scores[spike] >= 0.95
    assert scores[spike] >= routine.max()
    assert scores[spike] > np.quantile(routine, 0.99) + 0.5
    assert np.median(routine[200:]) < 0.1
    assert np.flatnonzero(severity).tolist() == [spike]
