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

Pure numpy; knows nothing of Kafka or torch.
"""

from __future__ import annotations

import numpy as np

from streamrnn.arrays import FloatArray, IntArray
from streamrnn.engine.series_table import SeriesTable
from streamrnn.forecast.features import DAY_S

__all__ = ["SeasonalDeflation"]


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


class SeasonalDeflation:
    """Per-series daily profile of residual magnitudes; see the module docstring."""

    def __init__(self) -> None:
        self._table: SeriesTable | None = None

    def bind(self, table: SeriesTable) -> None:
        """Declare the per-bin means and counts and the overall mean magnitude.

        The 48-bin columns are most of a series' scoring state, so they are small: magnitudes
        are float32 (no more precision needed); counts are uint8, saturating at
        :data:`COUNT_CAP` (a bin's weight stops changing after 1 / BIN_ALPHA points); first
        days are uint16 days since 1970 (:data:`NEVER` = not seen; exact until 2149).
        """
        table.add_column("season_mag", shape=(BINS,), dtype=np.float32)
        table.add_column("season_count", shape=(BINS,), dtype=np.uint8)
        table.add_column("season_first_day", shape=(BINS,), dtype=np.uint16, fill=NEVER)
        table.add_column("season_overall")
        table.add_column("season_overall_count")
        self._table = table

    def deflate(self, slots: IntArray, raw: FloatArray, ts: FloatArray) -> FloatArray:
        """``raw`` divided by how much rougher this time of day usually is (>= 1)."""
        assert self._table is not None, "bind() first"
        rows = _bins(ts)
        mag = self._table.column("season_mag")[slots, rows]
        first_day = self._table.column("season_first_day")[slots, rows]
        seen = first_day < np.floor(ts / DAY_S)
        overall = self._table.column("season_overall")[slots]
        ready = seen & (self._table.column("season_overall_count")[slots] >= 10)
        factor = np.where(ready, np.maximum(1.0, mag / np.maximum(overall, 1e-9)), 1.0)
        deflated: FloatArray = raw / factor
        return deflated

    def learn(self, slots: IntArray, raw: FloatArray, ts: FloatArray) -> None:
        """Add the magnitude of each (finite) raw score to its bin and to the overall mean."""
        assert self._table is not None, "bind() first"
        ok = np.isfinite(raw)
        slots, magnitude, rows = slots[ok], np.minimum(np.abs(raw[ok]), LEARN_CLIP), _bins(ts[ok])
        mag_col = self._table.column("season_mag")
        count_col = self._table.column("season_count")
        first_col = self._table.column("season_first_day")
        day = np.clip(np.floor(ts[ok] / DAY_S), 0, NEVER - 1)
        first_col[slots, rows] = np.minimum(first_col[slots, rows], day)
        count = count_col[slots, rows] + 1.0
        weight = np.maximum(1.0 / count, BIN_ALPHA)
        mag_col[slots, rows] = mag_col[slots, rows] + weight * (magnitude - mag_col[slots, rows])
        count_col[slots, rows] = np.minimum(count, COUNT_CAP)
        overall_col = self._table.column("season_overall")
        overall_count = self._table.column("season_overall_count")
        n = overall_count[slots] + 1.0
        w = np.maximum(1.0 / n, OVERALL_ALPHA)
        overall_col[slots] = overall_col[slots] + w * (magnitude - overall_col[slots])
        overall_count[slots] = n


def _bins(ts: FloatArray) -> IntArray:
    bins: IntArray = (np.mod(ts, DAY_S) * (BINS / DAY_S)).astype(np.int64) % BINS
    return bins
