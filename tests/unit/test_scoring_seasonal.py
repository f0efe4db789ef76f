"""Seasonal deflation: a surprise that comes every day at the same time stops alerting.

Through the serving stage functions (:mod:`streamrnn.stages.seasonal`, driven by
:class:`~tests.unit.stage_drivers.SeasonalDriver`) and once through the engine.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from streamrnn.config import Settings
from streamrnn.decode import DecodedMessage
from streamrnn.engine.build import build_engine
from streamrnn.stages import chain, seasonal
from tests.unit.stage_drivers import SeasonalDriver, chain_params

Array = np.ndarray[Any, Any]

DAY = 86_400.0
STEP = 300.0
HOUR = 3600.0
T0 = 19_700 * DAY  # a midnight (UTC), 2023-12-08
NINE_BIN = 18  # 09:00-09:30


def _bound() -> tuple[SeasonalDriver, Array]:
    driver = SeasonalDriver(rows=4)
    return driver, driver.slots("a")


def _feed_days(driver: SeasonalDriver, slot: Array, days: int) -> None:
    """Residuals of magnitude ~1, except a magnitude-30 residual at 09:00 every day."""
    rng = np.random.default_rng(0)
    for i in range(int(days * DAY / STEP)):
        ts = i * STEP
        raw = 30.0 if ts % DAY == 9 * HOUR else rng.normal()
        driver.learn(slot, np.array([raw]), np.array([ts]))


def _one(driver: SeasonalDriver, slot: Array, raw: float, ts: float) -> float:
    return float(driver.deflate(slot, np.array([raw]), np.array([ts]))[0])


def _learn(driver: SeasonalDriver, slot: Array, raw: float, ts: float) -> None:
    driver.learn(slot, np.array([raw]), np.array([ts]))


def test_a_daily_recurring_surprise_is_deflated_and_other_times_are_not() -> None:
    driver, slot = _bound()
    _feed_days(driver, slot, 3)
    nine = 3 * DAY + 9 * HOUR
    noon = 3 * DAY + 12 * HOUR
    # The 09:00 bin (six points, one of them the daily jump) is several times rougher than
    # the series overall: the jump is shrunk by that factor.
    assert _one(driver, slot, 30.0, nine) < 10.0
    assert _one(driver, slot, 30.0, noon) == 30.0


def test_a_time_of_day_never_seen_leaves_the_raw_score_unchanged() -> None:
    driver, slot = _bound()
    for i in range(20):  # 20 points in the first 100 minutes only
        _learn(driver, slot, 1.0, i * STEP)
    assert _one(driver, slot, 7.0, 12 * HOUR) == 7.0
    assert driver.column("season_first_day")[0, 24] == seasonal.NEVER


def test_deflation_never_inflates() -> None:
    driver, slot = _bound()
    _feed_days(driver, slot, 2)
    ts = np.arange(0, DAY, STEP) + 2 * DAY
    out = np.array([_one(driver, slot, 4.0, t) for t in ts])
    assert (np.abs(out) <= 4.0 + 1e-12).all()
    assert out.min() < 4.0  # the 09:00 bin did deflate


def test_deflation_divides_by_the_bins_roughness_relative_to_the_series() -> None:
    """Closed form: ten magnitude-1 residuals and one magnitude-3 one at 09:00 on day 0; on
    day 1 at 09:00 a raw score is divided by 3 / (13 / 11), keeping its sign."""
    driver, slot = _bound()
    for i in range(10):
        _learn(driver, slot, (-1.0) ** i, T0 + i * STEP)
    _learn(driver, slot, 3.0, T0 + 9 * HOUR)
    factor = 3.0 / (13.0 / 11.0)
    assert _one(driver, slot, 6.0, T0 + DAY + 9 * HOUR) == pytest.approx(6.0 / factor, rel=1e-12)
    assert _one(driver, slot, -6.0, T0 + DAY + 9 * HOUR + 1700) == pytest.approx(
        -6.0 / factor, rel=1e-12
    )
    # Bins no rougher than the series (00:00: magnitude 1 < 13/11) are left alone.
    assert _one(driver, slot, 6.0, T0 + DAY) == 6.0
    # The next bin (09:30) has never been seen.
    assert _one(driver, slot, 6.0, T0 + DAY + 9.5 * HOUR) == 6.0


def test_no_bin_deflates_before_the_series_has_learned_min_learned_magnitudes() -> None:
    driver, slot = _bound()
    for i in range(seasonal.MIN_LEARNED - 2):
        _learn(driver, slot, 1.0, T0 + i * STEP)
    _learn(driver, slot, 30.0, T0 + 9 * HOUR)  # MIN_LEARNED - 1 learned
    nine_tomorrow = T0 + DAY + 9 * HOUR
    assert _one(driver, slot, 30.0, nine_tomorrow) == 30.0
    _learn(driver, slot, 1.0, T0 + 12 * HOUR)  # MIN_LEARNED learned
    assert _one(driver, slot, 30.0, nine_tomorrow) < 10.0


def test_on_a_multi_day_series_a_bin_deflates_from_the_day_after_it_was_first_seen() -> None:
    """Four days at 5-minute sampling, with a rough half hour at 09:00 every day, scored as
    the chain does it (deflate, then learn): nothing deflates on day 0, although the rough
    bin is already known to be rough after its first points; from day 1 the rough half
    hour is shrunk several-fold and the rest of the day (nearly) not at all."""
    driver, slot = _bound()
    rng = np.random.default_rng(1)
    n = int(4 * DAY / STEP)
    ts = T0 + STEP * np.arange(n)
    rough = ((ts - T0) % DAY >= 9 * HOUR) & ((ts - T0) % DAY < 9.5 * HOUR)
    raw = rng.normal(0.0, 1.0, n) + np.where(rough, rng.choice([-30.0, 30.0], n), 0.0)
    ratio = np.empty(n)
    for i in range(n):
        ratio[i] = _one(driver, slot, raw[i], ts[i]) / raw[i]
        _learn(driver, slot, raw[i], ts[i])
    day = np.floor((ts - T0) / DAY)
    assert rough.sum() == 4 * 6
    assert (ratio[day == 0] == 1.0).all()  # every bin was first seen today
    later = day >= 1
    assert (ratio[rough & later] < 0.2).all()
    assert np.median(ratio[~rough & later]) == 1.0
    assert (ratio[~rough & later] > 0.5).all()
    first_day = driver.column("season_first_day")[0]
    assert (first_day == 19_700).all()
    assert driver.column("season_mag")[0, NINE_BIN] > 10 * driver.column("season_overall")[0]


def test_a_bin_first_seen_today_does_not_deflate_even_for_an_old_series() -> None:
    """A series seen only in the mornings for two days starts reporting at 15:00 on day 2
    with rough residuals: the 15:00 bin is first seen today, so it does not deflate today
    (not even after several rough points), and does tomorrow."""
    driver, slot = _bound()
    for d in range(2):
        for i in range(36):  # 06:00-09:00
            _learn(driver, slot, 1.0, T0 + d * DAY + 6 * HOUR + i * STEP)
    fifteen = T0 + 2 * DAY + 15 * HOUR
    out = []
    for i in range(6):
        out.append(_one(driver, slot, 40.0, fifteen + i * STEP))
        _learn(driver, slot, 40.0, fifteen + i * STEP)
    assert out == [40.0] * 6
    assert driver.column("season_first_day")[0, 30] == 19_702
    assert driver.column("season_count")[0, 30] == 6
    assert _one(driver, slot, 40.0, fifteen + DAY) < 20.0


def test_learning_ignores_nan_clips_magnitudes_and_saturates_counts() -> None:
    driver, slot = _bound()
    before = {c.name: driver.column(c.name)[0].copy() for c in seasonal.COLUMNS}
    _learn(driver, slot, np.nan, T0)
    for c in seasonal.COLUMNS:
        np.testing.assert_array_equal(driver.column(c.name)[0], before[c.name])
    _learn(driver, slot, -1e9, T0)
    assert driver.column("season_mag")[0, 0] == seasonal.LEARN_CLIP
    assert driver.column("season_overall")[0] == seasonal.LEARN_CLIP
    for i in range(300):  # more than a uint8 holds, all in the 00:00 bin
        _learn(driver, slot, 1.0, T0 + DAY + (i % 6) * STEP)
    assert driver.column("season_count")[0, 0] == seasonal.COUNT_CAP
    assert driver.column("season_count").dtype == np.uint8
    assert driver.column("season_overall_count")[0] == 301
    assert driver.column("season_first_day")[0, 0] == 19_700  # the earliest day it was seen


def test_first_days_are_clipped_into_uint16() -> None:
    driver, slot = _bound()
    _learn(driver, slot, 1.0, -3 * DAY + 60.0)  # before 1970
    far_future = 70_000 * DAY + 12 * HOUR  # beyond uint16 days (year 2161)
    _learn(driver, slot, 1.0, far_future)
    first_day = driver.column("season_first_day")[0]
    assert first_day[0] == 0
    assert first_day[24] == seasonal.NEVER - 1  # seen, not "never"


def test_the_chain_uses_deflation_when_configured() -> None:
    on, off = chain_params(), chain_params(seasonal_deflation=False)
    assert on.seasonal.on and not off.seasonal.on
    assert chain_params(**Settings().scoring.model_dump()).seasonal.on
    names_on = {c.name for c in chain.columns(on)}
    names_off = {c.name for c in chain.columns(off)}
    assert {c.name for c in seasonal.COLUMNS} <= names_on
    assert not {c.name for c in seasonal.COLUMNS} & names_off


# --- through the engine ---------------------------------------------------------------------


def _rough_hour_series() -> tuple[Array, Array, Array]:
    """Four days at 5-minute sampling: a daily sine with small noise, and a rough hour at
    09:00 (noise 15 times larger) every day."""
    n = int(4 * DAY / STEP)
    ts = T0 + STEP * np.arange(n)
    rng = np.random.default_rng(3)
    rough = ((ts - T0) % DAY >= 9 * HOUR) & ((ts - T0) % DAY < 10 * HOUR)
    values = 100.0 + 10.0 * np.sin(2 * np.pi * ts / DAY) + rng.normal(0.0, 1.0, n)
    values += np.where(rough, rng.normal(0.0, 15.0, n), 0.0)
    return ts, values, rough


def _run(ts: Array, values: Array, deflate: bool) -> tuple[Any, Array, Array]:
    engine = build_engine(Settings(scoring={"seasonal_deflation": deflate}))
    results = [
        engine.process([DecodedMessage("shop.orders", ts[i : i + 48].tolist(),
                                       values[i : i + 48].tolist(), None)])
        for i in range(0, len(ts), 48)
    ]  # fmt: skip
    scores = np.concatenate([r.score for r in results])
    severity = np.concatenate([r.severity for r in results])
    return engine, scores, severity


def test_engine_learns_the_daily_profile_and_deflates_the_recurring_rough_hour() -> None:
    ts, values, rough = _rough_hour_series()
    on, scores_on, severity_on = _run(ts, values, deflate=True)
    off, scores_off, severity_off = _run(ts, values, deflate=False)
    day = np.floor((ts - T0) / DAY)

    slot = on.table.slot_of("shop.orders")
    assert slot is not None
    mag = on.table.column("season_mag")[slot]
    overall = on.table.column("season_overall")[slot]
    # The rough hour's two bins are the roughest (the first much the roughest: by 09:30
    # the step scale has grown with the noise, so raw scores are smaller).
    assert set(np.argsort(mag)[-2:].tolist()) == {NINE_BIN, NINE_BIN + 1}
    assert mag[NINE_BIN] > 10 * overall and mag[NINE_BIN + 1] > 2 * overall
    assert np.median(np.delete(mag, [NINE_BIN, NINE_BIN + 1])) < overall
    assert (on.table.column("season_first_day")[slot] == 19_700).all()
    counts = on.table.column("season_count")[slot]
    # Six points a bin a day; the series' first two points have no raw score to learn.
    assert counts[0] == 4 * 6 - 2 and (counts[1:] == 4 * 6).all()
    assert on.table.column("season_overall_count")[slot] == len(ts) - 2
    with pytest.raises(KeyError):
        off.table.column("season_mag")

    # Day 0: every bin is first seen today, so nothing deflates: the same scores.
    np.testing.assert_array_equal(scores_on[day == 0], scores_off[day == 0])
    assert scores_on[rough & (day == 0)].mean() > 0.5
    # From day 1 the rough hour scores far lower with deflation, every day.
    for d in (1, 2, 3):
        hour = rough & (day == d)
        assert scores_on[hour].mean() < 0.5 * scores_off[hour].mean()
        assert scores_on[hour].max() < scores_off[hour].max()
    # ... and alerts only on the day it was new, while without deflation it alerts daily.
    assert (severity_on[day == 0] > 0).any()
    assert not (severity_on[day >= 1] > 0).any()
    for d in (1, 2, 3):
        assert (severity_off[day == d] > 0).any()
