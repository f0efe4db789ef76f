"""Re-warm recurrent states: replay a series' recent points through a model.

When a new model takes over (a retrain was promoted, a model arrived from another
instance), a hidden state computed by the old model means little to the new one. Replaying
each series' buffered history through the new model, from its initial state, gives the
state the new model would hold had it served those points; this is also exactly how the
promotion gate measured the new model on held-out data (see
:func:`streamrnn.forecast.train.evaluate_holdout`), so the quality that was validated is
the quality that serves.

Pure numpy/torch; knows nothing of Kafka.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import torch

from streamrnn.arrays import FloatArray
from streamrnn.forecast.gru import RecurrentForecaster
from streamrnn.stages.features import FeatureState, scan

__all__ = ["rewarm_states"]

#: Series replayed side by side in one tensor batch.
_CHUNK_SERIES = 1024


def rewarm_states(
    model: RecurrentForecaster,
    series: Sequence[tuple[FloatArray, FloatArray]],
    normaliser_alpha: float,
    last_points: int | None = None,
) -> npt.NDArray[np.float32]:
    """The state (K, S, H) each series (ts epoch s, values; time order, >= 1 point) reaches
    when ``model`` consumes its points from the initial state.

    ``last_points``: the model consumes only each series' last ``last_points`` points (the
    features still come from all of them, so the normaliser is settled): a recurrent state
    forgets its start within a few tens of points, and this bounds the cost of a swap.
    """
    spec = model.spec
    out = np.zeros((len(series), spec.state_rows, spec.hidden_size), dtype=np.float32)
    with torch.inference_mode():
        for first in range(0, len(series), _CHUNK_SERIES):
            part = series[first : first + _CHUNK_SERIES]
            lengths = np.array([len(ts) for ts, _ in part], dtype=np.int64)
            k, t_max = len(part), int(lengths.max())
            ts = np.zeros((k, t_max))
            values = np.zeros((k, t_max))
            active = np.zeros((k, t_max), dtype=bool)
            for row, (t, v) in enumerate(part):
                n = lengths[row]
                ts[row, :n], values[row, :n], active[row, :n] = t, v, True
            grid, _ = scan(FeatureState.empty(k), ts, values, active, normaliser_alpha)
            inputs, target = grid.inputs, grid.target
            if last_points is not None and last_points < t_max:
                # Each row's last points, moved to the front: (K, last_points, ...).
                begin = np.maximum(lengths - last_points, 0)
                cols = np.minimum(begin[:, None] + np.arange(last_points), t_max - 1)
                rows = np.arange(k)[:, None]
                inputs, target = inputs[rows, cols], target[rows, cols]
                lengths = lengths - begin
            step = model.step(
                model.initial_state(k),
                torch.from_numpy(np.ascontiguousarray(inputs)),
                torch.from_numpy(np.ascontiguousarray(target)),
                torch.from_numpy(lengths),
            )
            out[first : first + k] = step.state.numpy().transpose(1, 0, 2)
    return out
