"""Multi-step forecasts: roll the one-step model forward on its own predictions.

From each series' state after its latest point, the model forecasts the next point at the
series' typical interval, consumes that forecast as if observed, and repeats ``horizon``
times. The mean path follows the predicted changes; the variance adds the predicted
one-step variances (errors taken as independent), so intervals widen with the horizon.
The model is trained with teacher forcing (true values as inputs); the rollout is the
standard way to use such a model for k steps. The normaliser is held fixed over the horizon.

Pure numpy/torch; knows nothing of Kafka.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from streamrnn.arrays import FloatArray
from streamrnn.forecast.features import (
    INPUT_CLIP,
    FeatureState,
    step_scale_of,
    time_features,
)
from streamrnn.forecast.gru import RecurrentForecaster
from streamrnn.forecast.normaliser import scale_of

__all__ = ["Horizon", "rollout"]


@dataclass(frozen=True, slots=True)
class Horizon:
    """k-step forecasts of K series: ``ts``, ``mean`` and ``spread`` are (K, k)."""

    ts: FloatArray
    mean: FloatArray
    spread: FloatArray


def rollout(
    model: RecurrentForecaster, state: torch.Tensor, features: FeatureState, horizon: int
) -> Horizon:
    """Forecast ``horizon`` points ahead of each series' latest point.

    ``state`` (S, K, H) and ``features`` are the series' states after their latest point.
    Series with fewer than two points get NaN forecasts (no interval or scale yet).
    """
    k = state.shape[1]
    typical = np.where(features.gap_count > 0, np.exp(features.log_gap_mean), np.nan)
    level = scale_of(features.value_mean, features.value_var)
    scale = step_scale_of(features.step_var, level, features.count)
    ts = features.last_ts[:, None] + typical[:, None] * np.arange(1, horizon + 1)[None, :]
    mean = np.empty((k, horizon))
    var = np.empty((k, horizon))
    value = features.last_value.copy()
    acc_var = np.zeros(k)
    gap = np.nan_to_num(typical, nan=1.0)
    with torch.inference_mode():
        for j in range(horizon):
            tf = time_features(ts[:, j], gap, gap).astype(np.float32)
            tf_t = torch.from_numpy(tf)
            decayed = model.decay_state(state, tf_t)
            delta, log_var = model.predict(decayed[model.spec.num_layers - 1], tf_t)
            change = scale * delta.double().numpy()
            value = value + change
            acc_var = acc_var + scale**2 * np.exp(log_var.double().numpy())
            mean[:, j], var[:, j] = value, acc_var
            level_z = np.clip((value - features.value_mean) / level, -INPUT_CLIP, INPUT_CLIP)
            step_z = np.clip(change / scale, -INPUT_CLIP, INPUT_CLIP)
            inputs = np.concatenate([level_z[:, None], step_z[:, None], tf], axis=1)
            inputs = inputs.astype(np.float32)
            state = model.advance(decayed, torch.from_numpy(inputs))
    young = features.gap_count < 1
    mean[young], var[young] = np.nan, np.nan
    return Horizon(ts=ts, mean=mean, spread=np.sqrt(var))
