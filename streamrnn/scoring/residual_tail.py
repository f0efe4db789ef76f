"""Score = how improbable a residual is, given the series' own recent residuals.

The model's standardised residual (residual / forecast spread) is compared with the running
mean and spread of that series' earlier standardised residuals; the score is the two-sided
Gaussian tail mass *inside* that distance, ``erf(|z| / sqrt(2))``. A score of 0.999 means a
residual that large happens about once in a thousand points if residuals stay as they were.
Calibrating per series this way corrects a forecaster whose predicted spread is off (an
untrained model, or a series unlike its training data) without a hand-set threshold.

Pure numpy; knows nothing of Kafka or torch.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from scipy.special import erf

from streamrnn.engine.series_table import SeriesTable
from streamrnn.forecast.normaliser import ew_update

__all__ = ["ResidualTailScorer"]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

#: Standardised residuals are clipped to this magnitude before they are learned, so one wild
#: point cannot inflate the running spread for long.
LEARN_CLIP = 10.0
#: Smallest spread of standardised residuals, so a perfectly forecast series stays finite.
MIN_SPREAD = 1e-3


class ResidualTailScorer:
    """Running-Gaussian calibration of standardised residuals, per series."""

    def __init__(self, alpha: float) -> None:
        self.alpha = alpha
        self._table: SeriesTable | None = None

    def bind(self, table: SeriesTable) -> None:
        """Declare the residual mean, variance and count columns."""
        table.add_column("resid_mean")
        table.add_column("resid_var")
        table.add_column("resid_count")
        self._table = table

    def score_and_learn(self, slots: IntArray, raw: FloatArray) -> FloatArray:
        """See :meth:`streamrnn.scoring.base.Scorer.score_and_learn`."""
        assert self._table is not None, "bind() first"
        mean_col = self._table.column("resid_mean")
        var_col = self._table.column("resid_var")
        count_col = self._table.column("resid_count")
        mean, var, count = mean_col[slots], var_col[slots], count_col[slots]
        valid = np.isfinite(raw)
        spread = np.maximum(np.sqrt(var), MIN_SPREAD)
        z = np.where(valid & (count >= 2), np.abs(raw - mean) / spread, 0.0)
        scores: FloatArray = erf(z / np.sqrt(2.0))
        new_mean, new_var, new_count = ew_update(
            mean,
            var,
            count,
            np.where(valid, np.clip(raw, -LEARN_CLIP, LEARN_CLIP), mean),
            self.alpha,
        )
        learn = valid
        mean_col[slots[learn]] = new_mean[learn]
        var_col[slots[learn]] = new_var[learn]
        count_col[slots[learn]] = new_count[learn]
        return scores
