"""Forecast intervals (:mod:`streamrnn.stages.interval`): whatever the distribution of a
series' standardised errors, its intervals come to cover each level's share of its points;
and the engine publishes them."""

from __future__ import annotations

import numpy as np
import pytest

from streamrnn.config import Settings
from streamrnn.decode import DecodedMessage
from streamrnn.engine.build import build_engine
from streamrnn.stages import interval, schema
from streamrnn.stages.interval import GAUSSIAN_Z, LEVELS, IntervalState


def _coverage(z: np.ndarray, warm: int = 2000) -> np.ndarray:
    """Share of the points after ``warm`` inside each level's interval, learned online."""
    st = schema.allocate(IntervalState, interval.COLUMNS, 1)
    widths = np.empty(len(LEVELS))
    inside = np.zeros(len(LEVELS))
    for i, zi in enumerate(z):
        interval.half_widths(st, 0, 1.0, widths)
        if i >= warm:
            inside += np.abs(zi) <= widths
        interval.learn(st, 0, zi)
    covered: np.ndarray = inside / (len(z) - warm)
    return covered


@pytest.mark.parametrize(
    "draw",
    [
        lambda rng, n: rng.normal(0, 1, n),
        lambda rng, n: rng.laplace(0, 1, n),  # heavier tails than the Gaussian start
        lambda rng, n: 0.3 * rng.standard_t(3, n),  # an over-cautious model, heavy tails
        lambda rng, n: 4 * rng.normal(0, 1, n),  # an over-confident model
    ],
    ids=["gaussian", "laplace", "narrow-t3", "wide"],
)
def test_each_level_comes_to_cover_its_share(draw: object) -> None:
    z = draw(np.random.default_rng(0), 30_000)  # type: ignore[operator]
    covered = _coverage(z)
    np.testing.assert_allclose(covered, LEVELS, atol=0.015)


def test_a_new_error_scale_is_followed_within_a_few_hundred_points() -> None:
    rng = np.random.default_rng(1)
    z = np.r_[rng.normal(0, 1, 5000), rng.normal(0, 3, 3000)]
    covered = _coverage(z, warm=5500)
    np.testing.assert_allclose(covered, LEVELS, atol=0.03)


def test_nan_teaches_nothing_and_the_start_is_gaussian() -> None:
    st = schema.allocate(IntervalState, interval.COLUMNS, 1)
    interval.learn(st, 0, float("nan"))
    widths = np.empty(len(LEVELS))
    interval.half_widths(st, 0, 2.0, widths)
    np.testing.assert_allclose(widths, 2.0 * np.array(GAUSSIAN_Z), rtol=1e-6)


def test_the_engine_publishes_calibrated_half_widths() -> None:
    """A noisy series through the engine: its 95 % intervals cover about 95 % of its
    points once learned, and are NaN on its first point."""
    engine = build_engine(Settings(model={"pretrained": False}))
    rng = np.random.default_rng(2)
    n = 6000
    ts = 1_700_000_000.0 + 60.0 * np.arange(n)
    values = 10 + rng.standard_t(4, n)
    result = engine.process([DecodedMessage("s", ts.tolist(), values.tolist(), None)])
    assert np.isnan(result.half_width[0]).all()
    at95 = LEVELS.index(0.95)
    later = slice(2000, None)
    inside = np.abs(result.value - result.forecast)[later] <= result.half_width[later, at95]
    assert abs(inside.mean() - 0.95) < 0.02
    assert (np.diff(result.half_width[later], axis=1) > 0).all()  # wider at higher levels
