"""Raw score: the forecast residual in units of the forecast's own predicted spread.

``raw = (value - forecast) / spread``. It grows with the residual and shrinks when the model
said it was unsure (a wide spread). NaN where there is no forecast (a series' first points).
Pure numpy; knows nothing of Kafka or torch.
"""

from __future__ import annotations

import numpy as np

from streamrnn.arrays import FloatArray

__all__ = ["standardised_residual"]


def standardised_residual(
    value: FloatArray, forecast: FloatArray, spread: FloatArray
) -> FloatArray:
    """``(value - forecast) / spread``, NaN where the forecast or spread is missing or <= 0."""
    ok = np.isfinite(forecast) & np.isfinite(spread) & (spread > 0)
    safe_spread = np.where(ok, spread, 1.0)
    raw: FloatArray = np.where(ok, (value - forecast) / safe_spread, np.nan)
    return raw
