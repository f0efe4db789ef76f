"""Seasonal deflation of raw scores: a surprise that comes every day at this time is no surprise.

Many metrics have daily rhythms in how *predictable* they are, not only in their level: a
batch job that starts at 02:00, a shop that opens at 09:00, traffic that is bursty in the
afternoon. The forecaster misses such a jump every day, and the calibration, which compares
a residual with the series' recent residuals, would flag it every day.

Per series this keeps, for each 30-minute bin of the day (UTC), a running mean of the raw
score's magnitude, and the series' overall running mean magnitude. A raw score is divided by
``max(1, bin_mean / overall_mean)``: residuals in a bin that is usually rougher than the
series as a whole are shrunk in proportion, residuals elsewhere are left as they are. Only a
bin first seen on an *earlier day* deflates (a rhythm has to recur to count), so a series
younger than a day, or a bin not seen before, leaves the raw score unchanged. Magnitudes
are learned from every scored point (anomalous or not), so a rhythm is recognised after it
has been seen once or twice.

The 48-bin columns are most of a series' scoring state, so they are small: magnitudes are
float32; counts uint8, saturating at :data:`COUNT_CAP` (a bin's weight stops changing after
1 / BIN_ALPHA points); first days uint16 days since 1970 (:data:`NEVER` = not seen; exact
until 2149).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from streamrnn.stages import schema
from streamrnn.stages.features import DAY_S, clip, time_of
from streamrnn.stages.jit import stage

__all__ = ["BINS", "COLUMNS", "SeasonalParams", "SeasonalState", "deflate", "learn"]

#: Bins of the daily profile of residual magnitudes (30 minutes each).
BINS = 48
#: Weight of the newest magnitude in its bin, once the bin has seen a few of them.
BIN_ALPHA = 0.3
#: Weight of the newest magnitude in the series' overall mean magnitude.
OVERALL_ALPHA = 0.01
#: Magnitudes are clipped to this before they are learned.
LEARN_CLIP = 50.0
#: Bin counts saturate here (uint8); any count >= 1 / BIN_ALPHA weighs the same.
COUNT_CAP = 255
#: ``season_first_day`` of a bin never seen (uint16).
NEVER = 65535
#: Magnitudes the overall mean needs before any bin deflates.
MIN_LEARNED = 10
#: Smallest overall mean magnitude a bin is compared with.
_MIN_OVERALL = 1e-9


class SeasonalParams(NamedTuple):
    """``on``: deflate (``scoring.seasonal_deflation``)."""

    on: bool


class SeasonalState(NamedTuple):
    """Per series: per-bin mean magnitude, count and first day; overall mean and count."""

    mag: np.ndarray
    count: np.ndarray  # type: ignore[assignment]  # the column, not tuple.count
    first_day: np.ndarray
    overall: np.ndarray
    overall_count: np.ndarray


COLUMNS = (
    schema.Column("season_mag", np.float32, (BINS,)),
    schema.Column("season_count", np.uint8, (BINS,)),
    schema.Column("season_first_day", np.uint16, (BINS,), NEVER),
    schema.Column("season_overall"),
    schema.Column("season_overall_count"),
)


@stage
def _bin_of(t: float) -> int:
    return int(time_of(t, DAY_S) * (BINS / DAY_S)) % BINS


@stage
def deflate(st: SeasonalState, s: int, raw: float, t: float) -> float:
    """``raw`` divided by how much rougher this time of day usually is (>= 1)."""
    b = _bin_of(t)
    ready = st.first_day[s, b] < math.floor(t / DAY_S) and st.overall_count[s] >= MIN_LEARNED
    if ready:
        return float(raw / max(1.0, st.mag[s, b] / max(st.overall[s], _MIN_OVERALL)))
    return raw


@stage
def learn(st: SeasonalState, s: int, raw: float, t: float) -> None:
    """Add the magnitude of a finite raw score to its bin and to the overall mean."""
    if not math.isfinite(raw):
        return
    b = _bin_of(t)
    magnitude = min(abs(raw), LEARN_CLIP)
    day = math.floor(t / DAY_S)
    st.first_day[s, b] = min(float(st.first_day[s, b]), clip(day, 0.0, NEVER - 1.0))
    bin_count = float(st.count[s, b]) + 1.0
    weight = max(1.0 / bin_count, BIN_ALPHA)
    mag = float(st.mag[s, b])
    st.mag[s, b] = mag + weight * (magnitude - mag)
    st.count[s, b] = min(bin_count, float(COUNT_CAP))
    n = st.overall_count[s] + 1.0
    w = max(1.0 / n, OVERALL_ALPHA)
    st.overall[s] = st.overall[s] + w * (magnitude - st.overall[s])
    st.overall_count[s] = n
