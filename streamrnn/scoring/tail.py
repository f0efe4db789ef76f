"""Tail calibration: how improbable a raw score is, given the series' own recent raw scores.

The raw score is compared with the running (exponentially weighted) mean and spread of that
series' earlier raw scores; the tail probability is the two-sided Gaussian
``p = erfc(|z| / sqrt(2))`` of that distance. Calibrating per series corrects a model whose
predicted spread is off (an untrained model, a series unlike its training data) without a
hand-set threshold. Raw scores are clipped before they are learned so one wild point cannot
inflate the spread for long.

Pure numpy; knows nothing of Kafka or torch.
"""

from __future__ import annotations

import numpy as np
from scipy.special import log_ndtr

from streamrnn.arrays import FloatArray, IntArray
from streamrnn.engine.series_table import SeriesTable
from streamrnn.forecast.normaliser import ew_update
from streamrnn.scoring.base import score_from_log10_tail

__all__ = ["TailCalibrator"]


#: Raw scores are clipped to this magnitude before they are learned.
LEARN_CLIP = 10.0
#: Smallest spread of raw scores, so a perfectly forecast series stays finite.
MIN_SPREAD = 1e-3
#: Raw scores a series must have learned before its points score above 0.
MIN_LEARNED = 2


class TailCalibrator:
    """Running-Gaussian calibration of raw scores, per series."""

    def __init__(self, alpha: float) -> None:
        self.alpha = alpha
        self._table: SeriesTable | None = None

    def bind(self, table: SeriesTable) -> None:
        """Declare the raw-score mean, variance and count columns."""
        table.add_column("tail_mean")
        table.add_column("tail_var")
        table.add_column("tail_count")
        self._table = table

    def score(self, slots: IntArray, raw: FloatArray) -> FloatArray:
        """See :meth:`streamrnn.scoring.base.Calibrator.score`."""
        assert self._table is not None, "bind() first"
        mean = self._table.column("tail_mean")[slots]
        var = self._table.column("tail_var")[slots]
        count = self._table.column("tail_count")[slots]
        spread = np.maximum(np.sqrt(var), MIN_SPREAD)
        usable = np.isfinite(raw) & (count >= MIN_LEARNED)
        z = np.where(usable, np.abs(raw - mean) / spread, 0.0)
        # Two-sided tail, in decades, computed in log space so it never underflows.
        return score_from_log10_tail(-(log_ndtr(-z) + np.log(2.0)) / np.log(10.0))

    def learn(self, slots: IntArray, raw: FloatArray) -> None:
        """See :meth:`streamrnn.scoring.base.Calibrator.learn`."""
        assert self._table is not None, "bind() first"
        ok = np.isfinite(raw)
        slots, raw = slots[ok], raw[ok]
        mean_col = self._table.column("tail_mean")
        var_col = self._table.column("tail_var")
        count_col = self._table.column("tail_count")
        mean, var, count = ew_update(
            mean_col[slots],
            var_col[slots],
            count_col[slots],
            np.clip(raw, -LEARN_CLIP, LEARN_CLIP),
            self.alpha,
        )
        mean_col[slots], var_col[slots], count_col[slots] = mean, var, count
