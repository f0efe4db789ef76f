"""Anomaly likelihood: is the recent run of raw scores unusual for this series?

After Numenta's anomaly likelihood (Ahmad, Lavin, Purdy, Agha 2017, "Unsupervised real-time
anomaly detection for streaming data", Neurocomputing): the magnitude of each raw score,
``a = |raw|``, is averaged over a short recent window, and that short-run average is
compared with the long-run distribution of the same short-run averages of the series; the
tail probability is the one-sided Gaussian ``p = Q((short - long_mean) / long_sd)``. A
single large residual and a sustained run of moderately large ones both score high;
isolated noise does not. Windows are exponential (``short_alpha``, ``long_alpha``) so the
state is four numbers per series, not a buffer.

Pure numpy; knows nothing of Kafka or torch.
"""

from __future__ import annotations

import numpy as np
from scipy.special import log_ndtr

from streamrnn.arrays import FloatArray, IntArray
from streamrnn.engine.series_table import SeriesTable
from streamrnn.forecast.normaliser import ew_update
from streamrnn.scoring.base import score_from_log10_tail

__all__ = ["LikelihoodCalibrator"]


#: Magnitudes are clipped to this before they are learned (robust long-run statistics).
LEARN_CLIP = 10.0
#: Smallest long-run spread of magnitudes.
MIN_SPREAD = 1e-3
#: Magnitudes a series must have learned before its points score above 0.
MIN_LEARNED = 10


class LikelihoodCalibrator:
    """Short-vs-long run comparison of residual magnitudes, per series."""

    def __init__(self, short_alpha: float, long_alpha: float) -> None:
        self.short_alpha = short_alpha
        self.long_alpha = long_alpha
        self._table: SeriesTable | None = None

    def bind(self, table: SeriesTable) -> None:
        """Declare the short-run mean and the long-run mean, variance and count columns."""
        for name in ("lik_short", "lik_mean", "lik_var", "lik_count"):
            table.add_column(name)
        self._table = table

    def _short_with(self, slots: IntArray, magnitude: FloatArray) -> FloatArray:
        assert self._table is not None, "bind() first"
        short = self._table.column("lik_short")[slots]
        count = self._table.column("lik_count")[slots]
        weight = np.where(count > 0, self.short_alpha, 1.0)
        updated: FloatArray = short + weight * (magnitude - short)
        return updated

    def score(self, slots: IntArray, raw: FloatArray) -> FloatArray:
        """See :meth:`streamrnn.scoring.base.Calibrator.score`."""
        assert self._table is not None, "bind() first"
        ok = np.isfinite(raw)
        magnitude = np.where(ok, np.abs(raw), 0.0)
        short = self._short_with(slots, magnitude)
        mean = self._table.column("lik_mean")[slots]
        spread = np.maximum(np.sqrt(self._table.column("lik_var")[slots]), MIN_SPREAD)
        count = self._table.column("lik_count")[slots]
        z = np.where(ok & (count >= MIN_LEARNED), (short - mean) / spread, -np.inf)
        return score_from_log10_tail(-log_ndtr(-z) / np.log(10.0))

    def learn(self, slots: IntArray, raw: FloatArray) -> None:
        """See :meth:`streamrnn.scoring.base.Calibrator.learn`."""
        assert self._table is not None, "bind() first"
        ok = np.isfinite(raw)
        slots, magnitude = slots[ok], np.minimum(np.abs(raw[ok]), LEARN_CLIP)
        short = self._short_with(slots, magnitude)
        mean_col = self._table.column("lik_mean")
        var_col = self._table.column("lik_var")
        count_col = self._table.column("lik_count")
        mean, var, count = ew_update(
            mean_col[slots], var_col[slots], count_col[slots], short, self.long_alpha
        )
        self._table.column("lik_short")[slots] = short
        mean_col[slots], var_col[slots], count_col[slots] = mean, var, count
