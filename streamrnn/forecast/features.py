"""Per-point features of the forecaster, computed by one scan shared by serving and training.

For every point the forecaster sees two *value features*:

* ``level_z``: the value standardised by the series' running mean and spread;
* ``step_z``: the change from the previous value divided by the series' running *step
  scale* (root mean square of successive changes) — the units the model forecasts in, so a
  smooth series and a noisy one are both forecast at the resolution of their own changes;

and the point's *time features*:

* ``log_gap_ratio``: log(gap / the series' typical interval). 0 for a regular point,
  positive after a gap, negative for a burst. Scale-free, so one model serves series
  sampled every second and every hour.
* ``log_gap``: log1p(gap in seconds) / 10, the raw gap on a squashed scale.
* ``gap_flag``: 1.0 when the gap exceeds :data:`GAP_FACTOR` typical intervals.
* sin/cos of the time of day and of the day of week (UTC).

The time features of the point to be forecast are also fed to the forecast head, so the
forecast knows *when* the next point is (irregular intervals).

Treatment of special points (callers guarantee strictly increasing timestamps per series;
the engine drops duplicate and out-of-order points before the scan, with a reason):

* a series' first point: gap = 1 s nominal, typical interval = the gap, value features 0;
  it is not forecast (no previous value) and does not update the typical interval or the
  step scale;
* a huge gap: ``log_gap_ratio`` is clipped to ±10, ``gap_flag`` is set;
* a value of huge magnitude: values are clamped to ±:data:`VALUE_LIMIT` (1e30, in the
  series' own units) before they reach any per-series state (:func:`clamp_values`; the
  engine's two paths and :func:`scan` do it). Within that range every derived quantity is
  finite whatever the values: a deviation or change is at most 2e30, the normaliser's
  variance and the step variance (EW means of squares of those) at most 4e60, the level
  spread and step scale between 1e-8 and 2e30, so the normalised inputs are finite before
  they are clipped to ±:data:`INPUT_CLIP`. A finite value of any magnitude (up to
  ±1.8e308, down to denormals) thus never leaves a series' features non-finite. Tiny values
  need nothing: the spreads are floored (1e-6 + 1e-4 |mean| for the level, a hundredth of
  that for the step scale). The engine scores a point beyond the limit as if it were at
  the limit and does not learn it (unless ``max_skipped_points`` of them come in a row:
  :mod:`streamrnn.scoring.chain`), so one absurd value leaves the series as it was.

:func:`scan` walks a (K series × T points) grid column by column, vectorised over series,
and advances the per-series :class:`FeatureState` (normaliser, typical interval, last point).
The state is part of each series' state between calls. Pure numpy; knows nothing of Kafka or
torch.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import numpy.typing as npt

from streamrnn.arrays import BoolArray, FloatArray
from streamrnn.forecast.normaliser import ew_update, scale_of

__all__ = [
    "GAP_FACTOR",
    "INPUT_SIZE",
    "TIME_DELTA_FEATURES",
    "TIME_FEATURES",
    "TIME_FEATURE_COUNT",
    "VALUE_FEATURES",
    "VALUE_FEATURE_COUNT",
    "VALUE_LIMIT",
    "FeatureGrid",
    "FeatureState",
    "PointFeatures",
    "clamp_values",
    "learn_point",
    "point_features",
    "scan",
    "step_scale_of",
    "time_features",
]


DAY_S = 86_400.0
WEEK_S = 7 * DAY_S
#: A gap longer than this many typical intervals sets ``gap_flag``.
GAP_FACTOR = 3.0
#: Normalised inputs are clipped to this magnitude so one wild point cannot saturate the model.
INPUT_CLIP = 20.0
#: Weight of the newest gap in a series' running mean log-interval.
GAP_ALPHA = 0.05
#: Values are clamped to this magnitude (value units) before they reach any series state:
#: far above any metric (a 64-bit counter ends at 1.8e19, the decoder's default bound is
#: 1e15), and low enough that squares of differences (4e60) are finite in float64 and
#: differences (2e30) in float32 (level novelty's columns). See the module docstring.
VALUE_LIMIT = 1e30

TIME_FEATURES = ("log_gap_ratio", "log_gap", "gap_flag", "tod_sin", "tod_cos", "dow_sin", "dow_cos")
TIME_FEATURE_COUNT = len(TIME_FEATURES)
#: The time features that describe the gap; a model without time-delta features zeroes them.
TIME_DELTA_FEATURES = ("log_gap_ratio", "log_gap", "gap_flag")
VALUE_FEATURES = ("level_z", "step_z")
VALUE_FEATURE_COUNT = len(VALUE_FEATURES)
#: Model input per point: the value features, then the time features.
INPUT_SIZE = VALUE_FEATURE_COUNT + TIME_FEATURE_COUNT
#: Weight of the newest squared change in a series' running step scale.
STEP_ALPHA = 0.02
#: The step scale is at least this fraction of the level spread (a flat stretch stays finite).
STEP_FLOOR = 0.01


def time_features(ts_s: FloatArray, gap_s: FloatArray, typical_gap_s: FloatArray) -> FloatArray:
    """Time features for points at ``ts_s`` (epoch seconds), shape ``(*ts_s.shape, 7)``.

    Args:
        ts_s: timestamps, epoch seconds.
        gap_s: seconds since the series' previous point (> 0).
        typical_gap_s: the series' running typical interval before this point (> 0).
    """
    gap = np.maximum(gap_s, 1e-6)
    typical = np.maximum(typical_gap_s, 1e-6)
    out = np.empty((*np.shape(ts_s), TIME_FEATURE_COUNT), dtype=np.float64)
    out[..., 0] = np.clip(np.log(gap / typical), -10.0, 10.0)
    out[..., 1] = np.log1p(gap) / 10.0
    out[..., 2] = gap > GAP_FACTOR * typical
    day_phase = (2 * np.pi / DAY_S) * np.mod(ts_s, DAY_S)
    # 1970-01-01 was a Thursday; the phase only needs to be consistent, not Monday-based.
    week_phase = (2 * np.pi / WEEK_S) * np.mod(ts_s, WEEK_S)
    out[..., 3] = np.sin(day_phase)
    out[..., 4] = np.cos(day_phase)
    out[..., 5] = np.sin(week_phase)
    out[..., 6] = np.cos(week_phase)
    return out


def clamp_values(values: FloatArray) -> FloatArray:
    """``values`` clamped to ±:data:`VALUE_LIMIT` (NaN stays NaN), as every feature
    function expects them."""
    clamped: FloatArray = np.clip(values, -VALUE_LIMIT, VALUE_LIMIT)
    return clamped


def step_scale_of(step_var: FloatArray, level_scale: FloatArray, count: FloatArray) -> FloatArray:
    """The unit of forecast changes: RMS of recent changes, floored by the level spread.

    Before a series has seen a change (``count`` < 2) the level spread stands in.
    """
    rms = np.sqrt(np.maximum(step_var, 0.0))
    return np.where(count >= 2, np.maximum(rms, STEP_FLOOR * level_scale), level_scale)


@dataclass(frozen=True, slots=True)
class FeatureState:
    """What the scan remembers per series, one array entry per series (K,).

    ``value_mean``/``value_var``: the normaliser (EW mean and variance of values);
    ``count``: points seen; ``last_ts`` (epoch s) and ``last_value`` of the latest point;
    ``log_gap_mean``: EW mean of log(gap s), the typical interval being exp of it;
    ``gap_count``: gaps seen; ``step_var``: EW mean of squared successive changes.
    """

    value_mean: FloatArray
    value_var: FloatArray
    count: FloatArray
    last_ts: FloatArray
    last_value: FloatArray
    log_gap_mean: FloatArray
    gap_count: FloatArray
    step_var: FloatArray

    @classmethod
    def empty(cls, k: int) -> FeatureState:
        """The state of ``k`` series that have seen nothing."""
        return cls(*(np.zeros(k) for _ in fields(cls)))

    @classmethod
    def column_names(cls) -> tuple[str, ...]:
        """Names of the per-series arrays, for storing them column-wise."""
        return tuple(f.name for f in fields(cls))


@dataclass(frozen=True, slots=True)
class FeatureGrid:
    """Scan output for a (K, T) grid of points.

    ``inputs`` (K, T, INPUT_SIZE) float32: model input per point.
    ``target`` (K, T, TIME_FEATURE_COUNT) float32: time features of each point, used to
    forecast that point from the state before it.
    ``scale`` (K, T): the step scale before each point (value units): the unit in which the
    model forecasts the change from the previous value.
    ``prev_value`` (K, T): the series' previous value (the persistence forecast).
    ``seen_before`` (K, T): points the series had seen before this one.
    """

    inputs: npt.NDArray[np.float32]
    target: npt.NDArray[np.float32]
    scale: FloatArray
    prev_value: FloatArray
    seen_before: FloatArray


@dataclass(frozen=True, slots=True)
class PointFeatures:
    """Features of one point per series (one grid column), before the point is learned.

    ``inputs`` (K, INPUT_SIZE) and ``target`` (K, TIME_FEATURE_COUNT) float32; ``scale``,
    ``prev_value`` and ``seen_before`` (K,) as in :class:`FeatureGrid`; ``gap_s`` (K,) the
    seconds since the series' previous point (1.0 for a first point).
    """

    inputs: npt.NDArray[np.float32]
    target: npt.NDArray[np.float32]
    scale: FloatArray
    prev_value: FloatArray
    seen_before: FloatArray
    gap_s: FloatArray


def point_features(s: FeatureState, ts: FloatArray, values: FloatArray) -> PointFeatures:
    """Features of one point of each series, (K,) ``ts`` (epoch s) and ``values`` (within
    ±:data:`VALUE_LIMIT`: see :func:`clamp_values`)."""
    has_prev = s.count > 0
    gap = np.where(has_prev, ts - s.last_ts, 1.0)
    typical = np.where(s.gap_count > 0, np.exp(s.log_gap_mean), gap)
    feats = time_features(ts, gap, typical)
    level = scale_of(s.value_mean, s.value_var)
    step = step_scale_of(s.step_var, level, s.count)
    clip = INPUT_CLIP
    inputs = np.empty((len(ts), INPUT_SIZE), dtype=np.float32)
    inputs[:, 0] = np.where(has_prev, np.clip((values - s.value_mean) / level, -clip, clip), 0)
    inputs[:, 1] = np.where(has_prev, np.clip((values - s.last_value) / step, -clip, clip), 0)
    inputs[:, VALUE_FEATURE_COUNT:] = feats
    return PointFeatures(
        inputs=inputs,
        target=feats.astype(np.float32),
        scale=step,
        prev_value=s.last_value,
        seen_before=s.count,
        gap_s=gap,
    )


def learn_point(
    s: FeatureState,
    ts: FloatArray,
    values: FloatArray,
    features: PointFeatures,
    learn: BoolArray,
    normaliser_alpha: float,
) -> FeatureState:
    """The state after learning one point per series where ``learn`` is true (``values``
    within ±:data:`VALUE_LIMIT`: see :func:`clamp_values`).

    A series whose point is not learned (padding, or an anomaly the engine chose not to
    learn from) keeps its state exactly, as if the point had not arrived.
    """
    mean, var, count = ew_update(s.value_mean, s.value_var, s.count, values, normaliser_alpha)
    g_mean, _, g_count = ew_update(
        s.log_gap_mean,
        np.zeros(len(ts)),
        s.gap_count,
        np.log(np.maximum(features.gap_s, 1e-6)),
        GAP_ALPHA,
    )
    learn_gap = learn & (s.count > 0)
    # The step scale learns robustly: a change is clipped to 5 step scales first.
    change = values - s.last_value
    clipped = np.clip(change, -5 * features.scale, 5 * features.scale)
    step_var = np.where(
        s.count > 1, (1 - STEP_ALPHA) * s.step_var + STEP_ALPHA * clipped**2, change**2
    )
    return FeatureState(
        value_mean=np.where(learn, mean, s.value_mean),
        value_var=np.where(learn, var, s.value_var),
        count=np.where(learn, count, s.count),
        last_ts=np.where(learn, ts, s.last_ts),
        last_value=np.where(learn, values, s.last_value),
        log_gap_mean=np.where(learn_gap, g_mean, s.log_gap_mean),
        gap_count=np.where(learn_gap, g_count, s.gap_count),
        step_var=np.where(learn_gap, step_var, s.step_var),
    )


def scan(
    state: FeatureState,
    ts: FloatArray,
    values: FloatArray,
    active: BoolArray,
    normaliser_alpha: float,
) -> tuple[FeatureGrid, FeatureState]:
    """Features of every active point of a (K, T) grid, and the state after them.

    Points of a row are in time order; inactive cells (padding) change nothing. Every
    active point is learned (training has no notion of anomalies), its value clamped to
    ±:data:`VALUE_LIMIT`.
    """
    values = clamp_values(values)
    k, t_max = ts.shape
    inputs = np.zeros((k, t_max, INPUT_SIZE), dtype=np.float32)
    target = np.zeros((k, t_max, TIME_FEATURE_COUNT), dtype=np.float32)
    scale = np.ones((k, t_max))
    prev_value = np.zeros((k, t_max))
    seen_before = np.zeros((k, t_max))
    s = state
    for j in range(t_max):
        f = point_features(s, ts[:, j], values[:, j])
        inputs[:, j], target[:, j] = f.inputs, f.target
        scale[:, j], prev_value[:, j], seen_before[:, j] = f.scale, f.prev_value, f.seen_before
        s = learn_point(s, ts[:, j], values[:, j], f, active[:, j], normaliser_alpha)
    return FeatureGrid(inputs, target, scale, prev_value, seen_before), s
