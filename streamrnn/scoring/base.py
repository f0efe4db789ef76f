"""The scoring steps' shared pieces: the calibrator protocol and the score scale.

Scoring is three separate steps (each its own module, individually tested):

1. **raw score** (:mod:`streamrnn.scoring.raw`): the residual standardised by the
   forecast's predicted spread;
2. **calibration** (:mod:`streamrnn.scoring.tail`, :mod:`streamrnn.scoring.likelihood`):
   a per-series model of the series' own raw scores turns each into a tail probability
   ``p`` (how often something this unusual happens), reported as the score
   :func:`score_from_tail_probability` ``= min(1, -log10(p) / 10)``: 0.3 means p = 1e-3,
   0.5 means p = 1e-5, 1.0 means p <= 1e-10. The log scale keeps extreme points
   distinguishable (a probability near 1 would round to 1.0);
3. **alert rule** (:mod:`streamrnn.scoring.alert_rule`): thresholds with hysteresis,
   m-of-n hits, cooldown and severity.

A calibrator keeps per-series statistics in columns of a
:class:`~streamrnn.engine.series_table.SeriesTable` and is stepped one point per series at
a time, vectorised over series. Pure numpy; knows nothing of Kafka or torch.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import numpy.typing as npt

from streamrnn.engine.series_table import SeriesTable

__all__ = ["Calibrator", "score_from_tail_probability"]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

#: Tail probabilities are floored here before the log (score 1.0).
MIN_TAIL_PROBABILITY = 1e-10


def score_from_tail_probability(p: FloatArray) -> FloatArray:
    """Score in [0, 1] from a tail probability: ``min(1, -log10(p) / 10)``; NaN p scores 0."""
    p = np.where(np.isfinite(p), np.clip(p, MIN_TAIL_PROBABILITY, 1.0), 1.0)
    score: FloatArray = -np.log10(p) / 10.0
    return score


class Calibrator(Protocol):
    """Turns raw scores into calibrated scores, per series, learning online."""

    def bind(self, table: SeriesTable) -> None:
        """Declare the per-series columns this calibrator needs."""

    def score(self, slots: IntArray, raw: FloatArray) -> FloatArray:
        """Scores in [0, 1] for ``raw`` (one per distinct slot; NaN = no forecast: score 0).

        Uses only what the series has learned so far; learns nothing.
        """
        ...

    def learn(self, slots: IntArray, raw: FloatArray) -> None:
        """Add one raw score per slot to the series' history (NaN entries are ignored)."""
