"""Exponentially weighted running mean and variance, vectorised over series.

Used for the per-series value normaliser (so one model serves series of any scale), the
typical sampling interval and the scorer's residual statistics. The weight of a new
observation is ``max(1 / n, alpha)``: an exact mean and variance while a series is young,
then an exponential forgetting that follows slow drift.

Pure numpy; knows nothing of Kafka or torch.
"""

from __future__ import annotations

import numpy as np

from streamrnn.arrays import FloatArray

__all__ = ["ew_update", "scale_of"]


def ew_update(
    mean: FloatArray, var: FloatArray, count: FloatArray, x: FloatArray, alpha: float
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """One observation ``x`` per row; returns the new (mean, var, count). Inputs are unchanged."""
    count = count + 1.0
    weight = np.maximum(1.0 / count, alpha)
    delta = x - mean
    mean = mean + weight * delta
    var = (1.0 - weight) * (var + weight * delta * delta)
    return mean, var, count


def scale_of(mean: FloatArray, var: FloatArray) -> FloatArray:
    """A strictly positive spread: the standard deviation, floored relative to the level.

    The floor keeps a constant series from producing infinite normalised values.
    """
    return np.maximum(np.sqrt(np.maximum(var, 0.0)), 1e-6 + 1e-4 * np.abs(mean))
