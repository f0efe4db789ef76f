"""Seasonal deflation: a surprise that comes every day at the same time stops alerting."""

from __future__ import annotations

import numpy as np

from streamrnn.config import Settings
from streamrnn.engine.series_table import SeriesTable
from streamrnn.scoring.chain import build_chain
from streamrnn.scoring.seasonal import SeasonalDeflation

DAY = 86_400.0
STEP = 300.0


def _bound() -> tuple[SeasonalDeflation, SeriesTable, np.ndarray]:
    table = SeriesTable(max_series=4)
    deflation = SeasonalDeflation()
    deflation.bind(table)
    return deflation, table, table.resolve(["a"], [None])


def _feed_days(deflation: SeasonalDeflation, slot: np.ndarray, days: int) -> None:
    """Residuals of magnitude ~1, except a magnitude-30 residual at 09:00 every day."""
    rng = np.random.default_rng(0)
    for i in range(int(days * DAY / STEP)):
        ts = i * STEP
        raw = 30.0 if ts % DAY == 9 * 3600 else rng.normal()
        deflation.learn(slot, np.array([raw]), np.array([ts]))


def test_a_daily_recurring_surprise_is_deflated_and_other_times_are_not() -> None:
    deflation, _, slot = _bound()
    _feed_days(deflation, slot, 3)
    nine = 3 * DAY + 9 * 3600
    noon = 3 * DAY + 12 * 3600
    # The 09:00 bin (six points, one of them the daily jump) is several times rougher than
    # the series overall: the jump is shrunk by that factor.
    assert deflation.deflate(slot, np.array([30.0]), np.array([nine]))[0] < 10.0
    assert deflation.deflate(slot, np.array([30.0]), np.array([noon]))[0] == 30.0


def test_a_time_of_day_never_seen_leaves_the_raw_score_unchanged() -> None:
    deflation, _, slot = _bound()
    for i in range(20):  # 20 points in the first 100 minutes only
        deflation.learn(slot, np.array([1.0]), np.array([i * STEP]))
    assert deflation.deflate(slot, np.array([7.0]), np.array([12 * 3600.0]))[0] == 7.0


def test_deflation_never_inflates() -> None:
    deflation, _, slot = _bound()
    _feed_days(deflation, slot, 2)
    ts = np.arange(0, DAY, STEP) + 2 * DAY
    raw = np.full(len(ts), 4.0)
    out = np.array(
        [deflation.deflate(slot, raw[i : i + 1], ts[i : i + 1])[0] for i in range(len(ts))]
    )
    assert (np.abs(out) <= 4.0 + 1e-12).all()


def test_the_chain_uses_deflation_when_configured() -> None:
    assert build_chain(Settings().scoring).seasonal is not None
    assert build_chain(Settings(scoring={"seasonal_deflation": False}).scoring).seasonal is None
