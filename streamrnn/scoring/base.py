"""What every anomaly scorer does: turn standardised residuals into scores in [0, 1].

A scorer keeps per-series statistics in columns of a
:class:`~streamrnn.engine.series_table.SeriesTable` and is stepped one point per series at a
time, vectorised over series. Pure numpy; knows nothing of Kafka or torch.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import numpy.typing as npt

from streamrnn.engine.series_table import SeriesTable

__all__ = ["Scorer"]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


class Scorer(Protocol):
    """Scores one point of each of several series, then learns from it."""

    def bind(self, table: SeriesTable) -> None:
        """Declare the per-series columns this scorer needs."""

    def score_and_learn(self, slots: IntArray, raw: FloatArray) -> FloatArray:
        """Scores in [0, 1] for ``raw`` (one standardised residual per slot, NaN = none).

        ``slots`` holds distinct slots. The score of a point uses only what came before it;
        the point is then learned. A NaN residual scores 0 and is not learned.
        """
        ...
