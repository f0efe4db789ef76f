"""Multi-step forecasts: roll the one-step model forward on its own predictions, compiled.

From each series' state after its latest point, the model forecasts the next point at the
series' typical interval, consumes that forecast as if observed, and repeats ``horizon``
times. The mean path follows the predicted changes; the variance adds the predicted
one-step variances (errors taken as independent), so intervals widen with the horizon.
The model is trained with teacher forcing (true values as inputs); the rollout is the
standard way to use such a model for k steps. The normaliser and step scale are held fixed
over the horizon. A composer of the same stages as :mod:`streamrnn.engine.kernel`; nothing
here is stored (the series' states are read, not changed).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numba
import numpy as np

from streamrnn.engine.kernel import Model
from streamrnn.stages import cell, features, head
from streamrnn.stages.blas import BlasScratch
from streamrnn.stages.features import INPUT_SIZE, TIME_FEATURE_COUNT

__all__ = ["Horizon", "rollout"]


class Horizon(NamedTuple):
    """k-step forecasts of K series: ``ts`` (epoch s), ``mean`` and ``spread`` (value
    units) are (K, k); NaN for a series that has not seen two points."""

    ts: np.ndarray
    mean: np.ndarray
    spread: np.ndarray


@numba.njit(cache=True, nogil=True, error_model="numpy")
def rollout(
    slots: np.ndarray, fs: features.FeatureState, model: Model, room: BlasScratch, out: Horizon
) -> None:
    """Roll the series in ``slots`` forward ``out.ts.shape[1]`` points into ``out``
    (``room``: :func:`streamrnn.stages.blas.scratch`)."""
    k = slots.shape[0]
    steps = out.ts.shape[1]
    states, hidden = model.state.shape[1], model.state.shape[2]
    top = model.cell.h_prior.shape[0] - 1
    padded = max(k, 2)
    h = np.empty((k, states, hidden), dtype=np.float32)
    hd = np.zeros((states, padded, hidden), dtype=np.float32)
    new_h = np.zeros((states, padded, hidden), dtype=np.float32)
    head_in = np.zeros((padded, hidden + TIME_FEATURE_COUNT), dtype=np.float32)
    z1 = np.empty((padded, model.head.b1.shape[0]), dtype=np.float32)
    x = np.zeros((padded, INPUT_SIZE), dtype=np.float32)
    gi = np.empty((padded, model.cell.b_ih.shape[1]), dtype=np.float32)
    gh = np.empty((padded, model.cell.b_ih.shape[1]), dtype=np.float32)
    target = np.empty((k, TIME_FEATURE_COUNT), dtype=np.float32)
    value = np.empty(k)
    acc_var = np.zeros(k)

    for a in range(k):
        h[a] = model.state[slots[a]]
        value[a] = fs.last_value[slots[a]]
    for j in range(steps):
        for a in range(k):
            s = slots[a]
            young = fs.gap_count[s] < 1
            typical = math.nan if young else math.exp(fs.log_gap_mean[s])
            gap = 1.0 if young else typical
            out.ts[a, j] = fs.last_ts[s] + typical * (j + 1)
            features.time_features(out.ts[a, j], gap, gap, target[a])
            cell.mask(model.cell.target_mask, target[a])
            cell.decay_into(model.cell, h, a, target[a], hd, a)
            head.fill_input(head_in, a, hd, top, target[a])
        head.hidden_layer(model.head, head_in, k, z1, room)
        for a in range(k):
            s = slots[a]
            scale = features.step_scale(fs, s)
            delta, log_var = head.output(model.head, z1, a)
            change = scale * delta
            value[a] += change
            acc_var[a] += scale * scale * math.exp(log_var)
            young = fs.gap_count[s] < 1
            out.mean[a, j] = math.nan if young else value[a]
            out.spread[a, j] = math.nan if young else math.sqrt(acc_var[a])
            features.model_inputs(fs, s, value[a], change, scale, target[a], x[a])
            cell.mask(model.cell.input_mask, x[a])
        cell.advance(model.cell, x, hd, k, gi, gh, new_h, room)
        for a in range(k):
            h[a] = new_h[:, a]
