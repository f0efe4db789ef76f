"""Level novelty: is the value itself outside the range the series has recently visited?

The residual score says how surprising a point is *to the forecaster*. A bursty series
(counts of events, request rates) surprises its forecaster every day: a burst at a quiet
hour is a large residual, and so is each of the routine spikes of a spiky series. What an
operator calls an anomaly is usually also *large for the series*: a value further from its
typical level than the series has gone lately.

Per series this keeps a robust running centre of the values (an exponentially weighted mean
whose updates are clipped to three mean absolute deviations, so a spike barely moves it),
their mean absolute deviation (clipped the same way), and two *envelopes*: the largest
deviation above and below the centre seen so far, each decaying toward the centre with a
half-life of ``half_life_s`` seconds. A point's **novelty** is its deviation divided by the
envelope on its side: 1 means as far out as the recent peak, 0.5 half as far. Every point,
anomalous or not, updates the envelopes, so an excursion that stays well inside the range
the series visited lately (less than ``min_novelty`` of its decayed peak on that side, e.g.
a routine spike of a spiky series, or a spike at a daily trough that does not leave the
daily range) cannot open an alert, while one that reaches as far as the recent peak can.

The scoring chain lets an alert fire only at points whose novelty is at least
``min_novelty``; scores, hits and the learning policy are unchanged. It also remembers the
deviation of each series' last alert: with ``cooldown_factor`` > 0 a point at least that
many times as far from the centre may open a new alert during the cooldown (a much larger
excursion than the one alerted is a new event, not a repeat). A series' first deviation on
a side (empty envelope) is infinitely novel.

The deviations, envelopes and the last alert's deviation are float32 (value units, at most
3.4e38): the chain hands this values clamped to ±1e30, so they stay below 2e30, and it does
not let this learn a value beyond that limit at all (:mod:`.chain`), or one absurd value
would widen the envelopes so far that no later excursion would be novel for months (the
half-life is a week by default).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from streamrnn.stages import schema
from streamrnn.stages.features import clip
from streamrnn.stages.jit import stage

__all__ = ["COLUMNS", "NoveltyParams", "NoveltyState", "judge", "learn", "note_alert"]

#: Weight of the newest value in the running centre and deviation (floor; exact at first).
CENTRE_ALPHA = 0.01
#: Updates of the centre are clipped to this many mean absolute deviations.
CENTRE_CLIP = 3.0
#: Values a series must have learned before novelty can block an alert.
MIN_LEARNED = 10


class NoveltyParams(NamedTuple):
    """``on``: novelty is judged (``min_novelty`` > 0 or ``cooldown_factor`` > 0);
    ``min_novelty``: least novelty that may open an alert; ``half_life_s``: of the
    envelopes (s); ``cooldown_factor``: see the module docstring (0: off)."""

    on: bool
    min_novelty: float
    half_life_s: float
    cooldown_factor: float


class NoveltyState(NamedTuple):
    """Per series: centre (float64: values may be large), mean absolute deviation,
    envelopes above and below, time of the last learned value, values learned, and the
    deviation at the last alert."""

    centre: np.ndarray
    mad: np.ndarray
    up: np.ndarray
    down: np.ndarray
    ts: np.ndarray
    count: np.ndarray  # type: ignore[assignment]  # the column, not tuple.count
    alert_dev: np.ndarray


COLUMNS = (
    schema.Column("nov_centre"),
    schema.Column("nov_mad", np.float32),
    schema.Column("nov_up", np.float32),
    schema.Column("nov_down", np.float32),
    schema.Column("nov_ts", np.float64, (), -math.inf),
    schema.Column("nov_count", np.float32),
    schema.Column("nov_alert_dev", np.float32),
)


def check(p: NoveltyParams) -> None:
    """Raise ValueError for parameters outside their domain."""
    if p.min_novelty < 0 or p.half_life_s <= 0 or p.cooldown_factor < 0:
        raise ValueError("need min_novelty >= 0, half_life_s > 0 and cooldown_factor >= 0")


@stage
def _envelopes(st: NoveltyState, p: NoveltyParams, s: int, t: float) -> tuple[float, float]:
    """The envelopes above and below the centre, decayed to ``t``."""
    fade = 2.0 ** (-max(t - st.ts[s], 0.0) / p.half_life_s)
    return float(st.up[s]) * fade, float(st.down[s]) * fade


@stage
def novelty_of(st: NoveltyState, p: NoveltyParams, s: int, t: float, v: float) -> float:
    """|deviation| of ``v`` from the centre over the decayed envelope on its side (inf
    beyond an empty envelope; 0 for NaN or no deviation)."""
    up, down = _envelopes(st, p, s, t)
    signed = v - st.centre[s]
    envelope = up if signed >= 0 else down
    if math.isfinite(signed) and abs(signed) > 0:
        return abs(signed) / envelope if envelope > 0 else math.inf
    return 0.0


@stage
def judge(
    st: NoveltyState, p: NoveltyParams, s: int, t: float, v: float
) -> tuple[bool, bool, float]:
    """(may open an alert, may open one during the cooldown, deviation from the centre)
    of value ``v`` at ``t``, from what the series has learned; learns nothing."""
    signed = v - st.centre[s]
    deviation = abs(signed) if math.isfinite(signed) else 0.0
    eligible = st.count[s] < MIN_LEARNED or novelty_of(st, p, s, t, v) >= p.min_novelty
    last_dev = float(st.alert_dev[s])
    outgrows = p.cooldown_factor > 0 and last_dev > 0 and deviation >= p.cooldown_factor * last_dev
    return eligible, outgrows, deviation


@stage
def learn(st: NoveltyState, p: NoveltyParams, s: int, t: float, v: float) -> None:
    """Add a finite value: centre, deviation, envelopes (widened to it, then following the
    centre's move so they keep describing the same values)."""
    if not math.isfinite(v):
        return
    up, down = _envelopes(st, p, s, t)
    centre = st.centre[s]
    mad = float(st.mad[s])
    count = float(st.count[s]) + 1.0
    first = count == 1.0
    dev = 0.0 if first else v - centre
    weight = max(1.0 / count, CENTRE_ALPHA)
    # Huber-style: once the series has a deviation scale, a point moves the centre and the
    # scale by at most CENTRE_CLIP deviations, so a spike barely moves either.
    bound = CENTRE_CLIP * mad if count > MIN_LEARNED else math.inf
    clipped = clip(dev, -bound, bound)
    new_centre = v if first else centre + weight * clipped
    shift = new_centre - centre
    if first:
        up = 0.0
        down = 0.0
    else:
        up = max(max(up, dev) - shift, 0.0)
        down = max(max(down, -dev) + shift, 0.0)
    st.centre[s] = new_centre
    st.mad[s] = mad + weight * (abs(clipped) - mad)
    st.up[s] = up
    st.down[s] = down
    st.ts[s] = t
    st.count[s] = count


@stage
def note_alert(st: NoveltyState, s: int, deviation: float) -> None:
    """Remember the deviation of a point that opened an alert episode."""
    st.alert_dev[s] = deviation
