"""Exponentially weighted running mean and variance of one series' row, in place.

Used for the value normaliser and the typical sampling interval (:mod:`.features`) and for
the calibrators' statistics of residuals (:mod:`.likelihood`, :mod:`.tail`). The weight of
a new observation is ``max(1 / n, alpha)``: an exact mean and variance while a series is
young, then an exponential forgetting that follows slow drift.
"""

from __future__ import annotations

import math

import numpy as np

from streamrnn.stages.jit import stage

__all__ = ["ew_mean_update", "ew_update", "scale_of"]


@stage
def ew_update(
    mean: np.ndarray, var: np.ndarray, count: np.ndarray, s: int, x: float, alpha: float
) -> None:
    """Add observation ``x`` to row ``s`` of the running ``mean``, ``var`` and ``count``."""
    n = count[s] + 1.0
    weight = max(1.0 / n, alpha)
    delta = x - mean[s]
    mean[s] = mean[s] + weight * delta
    var[s] = (1.0 - weight) * (var[s] + weight * delta * delta)
    count[s] = n


@stage
def ew_mean_update(mean: np.ndarray, count: np.ndarray, s: int, x: float, alpha: float) -> None:
    """:func:`ew_update` of the mean and count only."""
    n = count[s] + 1.0
    weight = max(1.0 / n, alpha)
    mean[s] = mean[s] + weight * (x - mean[s])
    count[s] = n


@stage
def scale_of(mean: float, var: float) -> float:
    """A strictly positive spread: the standard deviation, floored relative to the level
    (so a constant series never produces infinite normalised values)."""
    return max(math.sqrt(max(var, 0.0)), 1e-6 + 1e-4 * abs(mean))
