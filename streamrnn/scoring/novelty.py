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
anomalous or not, updates the envelopes, so a second burst as large as one a few days ago
is no longer novel: repeated episodes of the same size alert once.

The scoring chain lets an alert fire only at points whose novelty is at least
``min_novelty``; scores, hits and the learning policy are unchanged. It also remembers the
deviation of each series' last alert: with ``cooldown_factor`` > 0 a point at least that
many times as far from the centre may open a new alert during the cooldown (a much larger
excursion than the one alerted is a new event, not a repeat). A series' first
deviation on a side (empty envelope) is infinitely novel. Everything is vectorised over
series, six numbers per series.

The deviations, envelopes and the last alert's deviation are float32 (value units, at most
3.4e38): the chain hands this values clamped to ±1e30, so they stay below 2e30, and it does
not let this learn a value beyond that limit at all (``learn`` of :meth:`LevelNovelty.step`;
see :mod:`streamrnn.scoring.chain`), or one absurd value would widen the envelopes so far that
no later excursion would be novel for months (the half-life is a week by default).

Pure numpy; knows nothing of Kafka or torch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from streamrnn.arrays import BoolArray, FloatArray, IntArray
from streamrnn.engine.series_table import SeriesTable

__all__ = ["LevelNovelty", "NoveltyStep"]


#: Weight of the newest value in the running centre and deviation (floor; exact at first).
CENTRE_ALPHA = 0.01
#: Updates of the centre are clipped to this many mean absolute deviations.
CENTRE_CLIP = 3.0
#: Values a series must have learned before novelty can block an alert.
MIN_LEARNED = 10


@dataclass(frozen=True, slots=True)
class NoveltyStep:
    """One point per series: may it open an alert, its distance from the series' centre,
    and may it open one during the cooldown."""

    eligible: BoolArray
    deviation: FloatArray
    skip_cooldown: BoolArray


class LevelNovelty:
    """Per-series robust centre and decaying deviation envelopes; see the module docstring."""

    def __init__(
        self, min_novelty: float, half_life_s: float, cooldown_factor: float = 0.0
    ) -> None:
        if min_novelty < 0 or half_life_s <= 0 or cooldown_factor < 0:
            raise ValueError("need min_novelty >= 0, half_life_s > 0 and cooldown_factor >= 0")
        self.min_novelty = min_novelty
        self.half_life_s = half_life_s
        self.cooldown_factor = cooldown_factor
        self._table: SeriesTable | None = None

    def bind(self, table: SeriesTable) -> None:
        """Declare the centre (float64: values may be large), deviation, envelopes, time,
        count, and the deviation at the last alert."""
        table.add_column("nov_centre")
        table.add_column("nov_mad", dtype=np.float32)
        table.add_column("nov_up", dtype=np.float32)
        table.add_column("nov_down", dtype=np.float32)
        table.add_column("nov_ts", fill=-np.inf)
        table.add_column("nov_count", dtype=np.float32)
        table.add_column("nov_alert_dev", dtype=np.float32)
        self._table = table

    def _envelopes(self, slots: IntArray, ts: FloatArray) -> tuple[FloatArray, FloatArray]:
        assert self._table is not None, "bind() first"
        age = np.maximum(ts - self._table.column("nov_ts")[slots], 0.0)
        decay = np.exp2(-age / self.half_life_s)
        up = self._table.column("nov_up")[slots].astype(np.float64) * decay
        down = self._table.column("nov_down")[slots].astype(np.float64) * decay
        return up, down

    def novelty(self, slots: IntArray, value: FloatArray, ts: FloatArray) -> FloatArray:
        """Deviation from the centre over the decayed envelope on its side (inf: beyond an
        empty envelope; NaN values: 0). Uses only what the series has learned so far."""
        assert self._table is not None, "bind() first"
        up, down = self._envelopes(slots, ts)
        return _ratio(value - self._table.column("nov_centre")[slots], up, down)

    def eligible(self, slots: IntArray, value: FloatArray, ts: FloatArray) -> BoolArray:
        """Points novel enough to alert (a series younger than MIN_LEARNED: all)."""
        return self._eligible(slots, self.novelty(slots, value, ts))

    def step(
        self, slots: IntArray, value: FloatArray, ts: FloatArray, learn: BoolArray | None = None
    ) -> NoveltyStep:
        """Judge one point per slot, then learn it: what :meth:`eligible`,
        :meth:`outgrows_last_alert` and :meth:`learn` do, with the envelopes decayed once.
        ``learn``: the points to learn (None: all)."""
        assert self._table is not None, "bind() first"
        up, down = self._envelopes(slots, ts)
        signed = value - self._table.column("nov_centre")[slots]
        deviation = np.abs(signed)
        deviation = np.where(np.isfinite(deviation), deviation, 0.0)
        judged = NoveltyStep(
            eligible=self._eligible(slots, _ratio(signed, up, down)),
            deviation=deviation,
            skip_cooldown=self.outgrows_last_alert(slots, deviation),
        )
        self._learn(slots, value, ts, up, down, learn)
        return judged

    def _eligible(self, slots: IntArray, novelty: FloatArray) -> BoolArray:
        assert self._table is not None, "bind() first"
        young = self._table.column("nov_count")[slots] < MIN_LEARNED
        ok: BoolArray = young | (novelty >= self.min_novelty)
        return ok

    def outgrows_last_alert(self, slots: IntArray, deviation: FloatArray) -> BoolArray:
        """Deviations at least ``cooldown_factor`` times that of the series' last alert
        (never when the factor is 0 or the last alert had no deviation)."""
        assert self._table is not None, "bind() first"
        last = self._table.column("nov_alert_dev")[slots].astype(np.float64)
        out: BoolArray = (self.cooldown_factor > 0) & (last > 0)
        out &= deviation >= self.cooldown_factor * last
        return out

    def note_alerts(self, slots: IntArray, deviation: FloatArray, opened: BoolArray) -> None:
        """Remember the deviation of the points that opened an alert episode."""
        assert self._table is not None, "bind() first"
        column = self._table.column("nov_alert_dev")
        column[slots] = np.where(opened, deviation, column[slots])

    def learn(self, slots: IntArray, value: FloatArray, ts: FloatArray) -> None:
        """Add one value per slot (NaN values are ignored): centre, deviation, envelopes."""
        up, down = self._envelopes(slots, ts)
        self._learn(slots, value, ts, up, down)

    def _learn(
        self,
        slots: IntArray,
        value: FloatArray,
        ts: FloatArray,
        up: FloatArray,
        down: FloatArray,
        learn: BoolArray | None = None,
    ) -> None:
        """:meth:`learn` with the envelopes already decayed to ``ts`` (only ``learn``)."""
        assert self._table is not None, "bind() first"
        ok = np.isfinite(value)
        if learn is not None:
            ok &= learn
        slots, value, ts, up, down = slots[ok], value[ok], ts[ok], up[ok], down[ok]
        tbl = self._table
        centre = tbl.column("nov_centre")[slots]
        mad = tbl.column("nov_mad")[slots].astype(np.float64)
        count = tbl.column("nov_count")[slots].astype(np.float64) + 1.0
        first = count == 1.0
        deviation = np.where(first, 0.0, value - centre)
        weight = np.maximum(1.0 / count, CENTRE_ALPHA)
        # Huber-style: once the series has a deviation scale, a point moves the centre and
        # the scale by at most CENTRE_CLIP deviations, so a spike barely moves either.
        bound = np.where(count > MIN_LEARNED, CENTRE_CLIP * mad, np.inf)
        clipped = np.clip(deviation, -bound, bound)
        new_mad = mad + weight * (np.abs(clipped) - mad)
        new_centre = np.where(first, value, centre + weight * clipped)
        shift = new_centre - centre
        # The envelopes are deviations from the centre: widen to this point, then follow the
        # centre's move so they keep describing the same values.
        up = np.where(first, 0.0, np.maximum(np.maximum(up, deviation) - shift, 0.0))
        down = np.where(first, 0.0, np.maximum(np.maximum(down, -deviation) + shift, 0.0))
        tbl.column("nov_centre")[slots] = new_centre
        tbl.column("nov_mad")[slots] = new_mad
        tbl.column("nov_up")[slots] = up
        tbl.column("nov_down")[slots] = down
        tbl.column("nov_ts")[slots] = ts
        tbl.column("nov_count")[slots] = count


def _ratio(signed: FloatArray, up: FloatArray, down: FloatArray) -> FloatArray:
    """|deviation| over the envelope on its side (inf beyond an empty one; NaN values: 0)."""
    envelope = np.where(signed >= 0, up, down)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(envelope > 0, np.abs(signed) / envelope, np.inf)
    ratio = np.where(np.abs(signed) > 0, ratio, 0.0)
    novelty: FloatArray = np.where(np.isfinite(signed), ratio, 0.0)
    return novelty
