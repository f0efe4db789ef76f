"""Per-point input features of the forecaster, vectorised over series with numpy.

The forecaster sees, for every point: its normalised value, and the point's *time features*:

* ``log_gap_ratio``: log(gap / the series' typical interval). 0 for a regular point,
  positive after a gap, negative for a burst. Scale-free, so one model serves series
  sampled every second and every hour.
* ``log_gap``: log1p(gap in seconds) / 10, the raw gap on a squashed scale.
* ``gap_flag``: 1.0 when the gap exceeds :data:`GAP_FACTOR` typical intervals.
* sin/cos of the time of day and of the day of week (UTC).

The time features of the point to be forecast are also fed to the forecast head, so the
forecast knows *when* the next point is (irregular intervals).

Pure numpy; knows nothing of Kafka or torch.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

__all__ = [
    "GAP_FACTOR",
    "INPUT_SIZE",
    "TIME_FEATURES",
    "TIME_FEATURE_COUNT",
    "time_features",
]

FloatArray = npt.NDArray[np.float64]

DAY_S = 86_400.0
WEEK_S = 7 * DAY_S
#: A gap longer than this many typical intervals sets ``gap_flag``.
GAP_FACTOR = 3.0

TIME_FEATURES = ("log_gap_ratio", "log_gap", "gap_flag", "tod_sin", "tod_cos", "dow_sin", "dow_cos")
TIME_FEATURE_COUNT = len(TIME_FEATURES)
#: GRU input per point: the normalised value, then the time features.
INPUT_SIZE = 1 + TIME_FEATURE_COUNT


def time_features(ts_s: FloatArray, gap_s: FloatArray, typical_gap_s: FloatArray) -> FloatArray:
    """Time features for points at ``ts_s`` (epoch seconds), shape ``(*ts_s.shape, 7)``.

    Args:
        ts_s: timestamps, epoch seconds.
        gap_s: seconds since the series' previous point (> 0).
        typical_gap_s: the series' running typical interval before this point (> 0).
    """
    gap = np.maximum(gap_s, 1e-6)
    typical = np.maximum(typical_gap_s, 1e-6)
    log_ratio = np.log(gap / typical)
    out = np.empty((*np.shape(ts_s), TIME_FEATURE_COUNT), dtype=np.float64)
    out[..., 0] = np.clip(log_ratio, -10.0, 10.0)
    out[..., 1] = np.log1p(gap) / 10.0
    out[..., 2] = (gap > GAP_FACTOR * typical).astype(np.float64)
    day_phase = 2 * np.pi * np.mod(ts_s, DAY_S) / DAY_S
    # 1970-01-01 was a Thursday; the phase only needs to be consistent, not Monday-based.
    week_phase = 2 * np.pi * np.mod(ts_s, WEEK_S) / WEEK_S
    out[..., 3] = np.sin(day_phase)
    out[..., 4] = np.cos(day_phase)
    out[..., 5] = np.sin(week_phase)
    out[..., 6] = np.cos(week_phase)
    return out
