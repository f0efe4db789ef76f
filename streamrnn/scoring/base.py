"""The scoring steps' shared pieces: the calibrator protocol and the score scale.

Scoring is three separate steps (each its own module, individually tested):

1. **raw score** (:mod:`streamrnn.scoring.raw`): the residual standardised by the
   forecast's predicted spread;
2. **calibration** (:mod:`streamrnn.scoring.tail`, :mod:`streamrnn.scoring.likelihood`):
   a per-series model of the series' own raw scores turns each into a tail probability
   ``p`` (how often something this unusual happens), reported on a log scale by
   :func:`score_from_log10_tail`: 0.3 means p = 1e-3, 0.5 means p = 1e-5, then the score
   approaches 1 ever more slowly (p = 1e-10: 0.82). The log scale keeps extreme points
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

from streamrnn.arrays import FloatArray, IntArray
from streamrnn.engine.series_table import SeriesTable

__all__ = ["Calibrator", "score_from_log10_tail", "score_from_tail_probability"]


#: Up to this many decades of improbability (p = 1e-5) the score is linear: L / 10.
LINEAR_DECADES = 5.0


def score_from_log10_tail(decades: FloatArray) -> FloatArray:
    """Score in [0, 1) from ``L = -log10(p)``, the decades of improbability of a point.

    ``L / 10`` up to L = 5 (score 0.5, p = 1e-5), then ``1 - 0.5 exp(-(L - 5) / 5)``, which
    continues with the same slope and approaches 1 without reaching it: p = 1e-10 scores
    0.82, 1e-20 scores 0.975. Extreme points thus stay distinguishable from merely rare
    ones (a threshold can still tell a 1e-12 from a 1e-40 point). NaN scores 0.
    """
    decades = np.where(np.isfinite(decades) | (decades > 0), np.maximum(decades, 0.0), 0.0)
    linear = decades / 10.0
    tail = 1.0 - 0.5 * np.exp(-(np.minimum(decades, 1e6) - LINEAR_DECADES) / LINEAR_DECADES)
    score: FloatArray = np.where(decades <= LINEAR_DECADES, linear, tail)
    return score


def score_from_tail_probability(p: FloatArray) -> FloatArray:
    """:func:`score_from_log10_tail` of a tail probability ``p`` (NaN p scores 0)."""
    with np.errstate(divide="ignore"):
        decades = np.where(np.isfinite(p), -np.log10(np.clip(p, 0.0, 1.0)), 0.0)
    return score_from_log10_tail(decades)


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
