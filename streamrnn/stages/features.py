"""Per-point features of the forecaster, and the per-series state they are computed from.

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
the engine drops duplicate and out-of-order points first, with a reason):

* a series' first point: gap = 1 s nominal, typical interval = the gap, value features 0;
  it is not forecast (no previous value) and does not update the typical interval or the
  step scale;
* a huge gap: ``log_gap_ratio`` is clipped to ±10, ``gap_flag`` is set;
* a value of huge magnitude: values are clamped to ±:data:`VALUE_LIMIT` (1e30, in the
  series' own units) before they reach any per-series state (:func:`clamp`). Within that
  range every derived quantity is finite whatever the values: a deviation or change is at
  most 2e30, the normaliser's variance and the step variance (EW means of squares of those)
  at most 4e60, the level spread and step scale between 1e-8 and 2e30, so the normalised
  inputs are finite before they are clipped to ±:data:`INPUT_CLIP`. A finite value of any
  magnitude (up to ±1.8e308, down to denormals) thus never leaves a series' features
  non-finite. Tiny values need nothing: the spreads are floored (1e-6 + 1e-4 |mean| for
  the level, a hundredth of that for the step scale). The scoring chain holds a point
  beyond the limit out of learning (:mod:`.learning`), so one absurd value leaves the
  series as it was.

:func:`point_features` and :func:`learn_point` are what the serving kernel runs per point;
:func:`scan` runs the same two over a grid of series for training and re-warming, so
training and serving cannot compute different features.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from streamrnn.stages import schema
from streamrnn.stages.ewstats import ew_mean_update, ew_update, scale_of
from streamrnn.stages.jit import stage

__all__ = [
    "COLUMNS",
    "DAY_S",
    "DECAY_FEATURES",
    "GAP_FACTOR",
    "INPUT_CLIP",
    "INPUT_SIZE",
    "TIME_DELTA_FEATURES",
    "TIME_FEATURES",
    "TIME_FEATURE_COUNT",
    "VALUE_FEATURES",
    "VALUE_FEATURE_COUNT",
    "VALUE_LIMIT",
    "WEEK_S",
    "FeatureGrid",
    "FeatureParams",
    "FeatureState",
    "clamp",
    "learn_point",
    "point_features",
    "scan",
    "time_of",
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
#: Weight of the newest squared change in a series' running step scale.
STEP_ALPHA = 0.02
#: The step scale is at least this fraction of the level spread (a flat stretch stays finite).
STEP_FLOOR = 0.01
#: A change is clipped to this many step scales before the step scale learns it (robust).
STEP_CLIP = 5.0
#: Smallest gap and typical interval (s) the time features use (log of a positive number).
MIN_GAP_S = 1e-6
#: The log gap ratio is clipped to this magnitude (decades of e).
GAP_RATIO_CLIP = 10.0

TIME_FEATURES = ("log_gap_ratio", "log_gap", "gap_flag", "tod_sin", "tod_cos", "dow_sin", "dow_cos")
TIME_FEATURE_COUNT = len(TIME_FEATURES)
#: The time features that describe the gap; a model without time-delta features zeroes them.
TIME_DELTA_FEATURES = ("log_gap_ratio", "log_gap", "gap_flag")
#: The time features that drive GRU-D decay of the state (:mod:`.cell`), in this order.
DECAY_FEATURES = ("log_gap_ratio", "log_gap")
VALUE_FEATURES = ("level_z", "step_z")
VALUE_FEATURE_COUNT = len(VALUE_FEATURES)
#: Model input per point: the value features, then the time features.
INPUT_SIZE = VALUE_FEATURE_COUNT + TIME_FEATURE_COUNT

_TWO_PI = 2.0 * math.pi


class FeatureParams(NamedTuple):
    """``normaliser_alpha``: weight of the newest point in the value normaliser (the
    artifact's, since a model is trained on features normalised that way)."""

    normaliser_alpha: float


class FeatureState(NamedTuple):
    """Per series: ``value_mean``/``value_var`` the normaliser (EW mean and variance of
    values); ``count`` points learned; ``last_ts`` (epoch s) and ``last_value`` of the latest
    learned point; ``log_gap_mean`` EW mean of log(gap s), the typical interval being exp of
    it; ``gap_count`` gaps learned; ``step_var`` EW mean of squared successive changes."""

    value_mean: np.ndarray
    value_var: np.ndarray
    count: np.ndarray  # type: ignore[assignment]  # the column, not tuple.count
    last_ts: np.ndarray
    last_value: np.ndarray
    log_gap_mean: np.ndarray
    gap_count: np.ndarray
    step_var: np.ndarray

    @classmethod
    def empty(cls, rows: int) -> FeatureState:
        """The state of ``rows`` series that have seen nothing."""
        return cls(*(np.zeros(rows) for _ in cls._fields))


COLUMNS = tuple(schema.Column(name) for name in FeatureState._fields)


class FeatureGrid(NamedTuple):
    """:func:`scan` output for a (K, T) grid of points.

    ``inputs`` (K, T, INPUT_SIZE) float32: model input per point. ``target`` (K, T,
    TIME_FEATURE_COUNT) float32: time features of each point, used to forecast that point
    from the state before it. ``scale`` (K, T): the step scale before each point (value
    units), the unit in which the model forecasts the change from the previous value.
    ``prev_value`` (K, T): the previous value (the persistence forecast). ``seen_before``
    (K, T): points the series had learned before this one.
    """

    inputs: np.ndarray
    target: np.ndarray
    scale: np.ndarray
    prev_value: np.ndarray
    seen_before: np.ndarray


@stage
def clamp(x: float, limit: float) -> float:
    """``x`` clamped to [-limit, limit]; NaN stays NaN."""
    if x > limit:
        return limit
    if x < -limit:
        return -limit
    return x


@stage
def clip(x: float, low: float, high: float) -> float:
    """``x`` clipped to [low, high]."""
    return min(max(x, low), high)


@stage
def time_of(t: float, period: float) -> float:
    """``t % period`` (seconds into the day or week) without numba's float ``%``, a call into
    a C helper (1.5 % of the engine's time on 64-point windows at three calls a point).
    Exact where ``t / period`` is not within one rounding of a whole number; whole
    multiples give 0, as ``%`` does."""
    r = t - math.floor(t / period) * period
    if r < 0.0:
        return r + period
    if r >= period:
        return r - period
    return r


@stage
def time_features(t: float, gap: float, typical: float, out: np.ndarray) -> None:
    """The time features of a point at ``t`` (epoch s), ``gap`` s after the previous one,
    when the series' typical interval is ``typical`` s, into ``out`` (TIME_FEATURE_COUNT)."""
    gap_c = max(gap, MIN_GAP_S)
    typical_c = max(typical, MIN_GAP_S)
    # 1970-01-01 was a Thursday; the week phase only needs to be consistent.
    day_phase = (_TWO_PI / DAY_S) * time_of(t, DAY_S)
    week_phase = (_TWO_PI / WEEK_S) * time_of(t, WEEK_S)
    out[0] = clip(math.log(gap_c / typical_c), -GAP_RATIO_CLIP, GAP_RATIO_CLIP)
    out[1] = math.log1p(gap_c) / 10.0
    out[2] = 1.0 if gap_c > GAP_FACTOR * typical_c else 0.0
    out[3] = math.sin(day_phase)
    out[4] = math.cos(day_phase)
    out[5] = math.sin(week_phase)
    out[6] = math.cos(week_phase)


@stage
def gap_of(st: FeatureState, s: int, t: float) -> tuple[float, float]:
    """(gap s since the series' last learned point, its typical interval s); a first point
    has a nominal 1 s gap that is also its typical interval."""
    gap = t - st.last_ts[s] if st.count[s] > 0 else 1.0
    typical = math.exp(st.log_gap_mean[s]) if st.gap_count[s] > 0 else gap
    return gap, typical


@stage
def step_scale(st: FeatureState, s: int) -> float:
    """The unit of forecast changes (value units): RMS of recent changes, floored by
    :data:`STEP_FLOOR` level spreads; the level spread until the series has seen a change."""
    level = scale_of(st.value_mean[s], st.value_var[s])
    if st.count[s] >= 2:
        return max(math.sqrt(max(st.step_var[s], 0.0)), STEP_FLOOR * level)
    return level


@stage
def point_features(
    st: FeatureState, s: int, t: float, v: float, target: np.ndarray, x: np.ndarray
) -> tuple[float, float]:
    """Features of a point of series ``s`` at ``t`` (epoch s) with value ``v`` (within
    ±:data:`VALUE_LIMIT`), from the state before it: its time features into ``target``
    (TIME_FEATURE_COUNT) and the model input into ``x`` (INPUT_SIZE), both unmasked.
    Returns (step scale, gap s), which :func:`learn_point` needs."""
    gap, typical = gap_of(st, s, t)
    time_features(t, gap, typical, target)
    scale = step_scale(st, s)
    if st.count[s] > 0:
        model_inputs(st, s, v, v - st.last_value[s], scale, target, x)
    else:
        model_inputs(st, s, st.value_mean[s], 0.0, scale, target, x)
    return scale, gap


@stage
def model_inputs(
    st: FeatureState, s: int, v: float, change: float, scale: float, target: np.ndarray,
    x: np.ndarray,
) -> None:  # fmt: skip
    """The model input ``x`` (INPUT_SIZE) of value ``v``, ``change`` from the previous
    value, with the series' normaliser and step ``scale``, and time features ``target``."""
    level = scale_of(st.value_mean[s], st.value_var[s])
    x[0] = clip((v - st.value_mean[s]) / level, -INPUT_CLIP, INPUT_CLIP)
    x[1] = clip(change / scale, -INPUT_CLIP, INPUT_CLIP)
    for c in range(TIME_FEATURE_COUNT):
        x[VALUE_FEATURE_COUNT + c] = target[c]


@stage
def learn_point(
    st: FeatureState, p: FeatureParams, s: int, t: float, v: float, scale: float, gap: float
) -> None:
    """Learn a point (``scale`` and ``gap`` from :func:`point_features`): the step scale and
    typical interval (from a series' second point on), the normaliser and the last point."""
    count = st.count[s]
    if count > 0:
        change = v - st.last_value[s]
        limited = clip(change, -STEP_CLIP * scale, STEP_CLIP * scale)
        if count > 1:
            st.step_var[s] = (1 - STEP_ALPHA) * st.step_var[s] + STEP_ALPHA * (limited * limited)
        else:
            st.step_var[s] = change * change
        ew_mean_update(st.log_gap_mean, st.gap_count, s, math.log(max(gap, MIN_GAP_S)), GAP_ALPHA)
    ew_update(st.value_mean, st.value_var, st.count, s, v, p.normaliser_alpha)
    st.last_ts[s] = t
    st.last_value[s] = v


@stage
def scan_rows(
    st: FeatureState,
    p: FeatureParams,
    ts: np.ndarray,
    values: np.ndarray,
    active: np.ndarray,
    out: FeatureGrid,
) -> None:
    """:func:`scan` in place: row ``s`` of the (K, T) grid is series ``s`` of ``st``."""
    target = np.empty(TIME_FEATURE_COUNT, dtype=np.float32)
    x = np.empty(INPUT_SIZE, dtype=np.float32)
    for s in range(ts.shape[0]):
        for j in range(ts.shape[1]):
            if not active[s, j]:
                continue
            t = ts[s, j]
            v = clamp(values[s, j], VALUE_LIMIT)
            out.prev_value[s, j] = st.last_value[s]
            out.seen_before[s, j] = st.count[s]
            scale, gap = point_features(st, s, t, v, target, x)
            out.scale[s, j] = scale
            out.target[s, j] = target
            out.inputs[s, j] = x
            learn_point(st, p, s, t, v, scale, gap)


def scan(
    state: FeatureState,
    ts: np.ndarray,
    values: np.ndarray,
    active: np.ndarray,
    normaliser_alpha: float,
) -> tuple[FeatureGrid, FeatureState]:
    """Features of every active point of a (K, T) grid (series by row, time order within a
    row), and the state after them (``state`` is not changed). Inactive cells (padding) are
    zeros and change nothing. Every active point is learned (training has no notion of
    anomalies), its value clamped to ±:data:`VALUE_LIMIT`: exactly what serving computes."""
    k, t_max = ts.shape
    after = FeatureState(*(np.array(a, dtype=np.float64, copy=True) for a in state))
    grid = FeatureGrid(
        inputs=np.zeros((k, t_max, INPUT_SIZE), dtype=np.float32),
        target=np.zeros((k, t_max, TIME_FEATURE_COUNT), dtype=np.float32),
        scale=np.ones((k, t_max)),
        prev_value=np.zeros((k, t_max)),
        seen_before=np.zeros((k, t_max)),
    )
    scan_rows(
        after,
        FeatureParams(float(normaliser_alpha)),
        np.ascontiguousarray(ts, dtype=np.float64),
        np.ascontiguousarray(values, dtype=np.float64),
        np.ascontiguousarray(active, dtype=np.bool_),
        grid,
    )
    return grid, after
