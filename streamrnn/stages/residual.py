"""The forecast in value units, and the raw score: the residual in units of its spread.

The head forecasts a change in step-scale units; the forecast is ``last value + scale ·
change`` and its spread ``scale · exp(log_var / 2)``. The raw score ``(value - forecast) /
spread`` grows with the residual and shrinks when the model said it was unsure. A series'
first point has no forecast (NaN), and its first :data:`MIN_SEEN_TO_SCORE` points no raw
score (NaN: the step scale needs a change first).
"""

from __future__ import annotations

import math

from streamrnn.stages.jit import stage

__all__ = ["MIN_SEEN_TO_SCORE", "forecast_of", "raw_score"]

#: Points a series must have learned before its residuals are scored (and learned).
MIN_SEEN_TO_SCORE = 2


@stage
def forecast_of(
    seen: float, last_value: float, scale: float, delta: float, log_var: float
) -> tuple[float, float]:
    """(forecast, spread) in value units; NaN for a series that has seen nothing."""
    if seen > 0:
        return last_value + scale * delta, scale * math.exp(0.5 * log_var)
    return math.nan, math.nan


@stage
def raw_score(value: float, forecast: float, spread: float, seen: float) -> float:
    """``(value - forecast) / spread``; NaN without a usable forecast or before
    :data:`MIN_SEEN_TO_SCORE` points."""
    usable = math.isfinite(forecast) and math.isfinite(spread) and spread > 0
    if seen >= MIN_SEEN_TO_SCORE and usable:
        return (value - forecast) / spread
    return math.nan
