"""Export a trained :class:`~streamrnn.forecast.gru.RecurrentForecaster` to the compiled
inference stages: its weights as :class:`~streamrnn.stages.cell.CellWeights` and
:class:`~streamrnn.stages.head.HeadWeights` (float32, inputs-major so rows vectorise).

Done once per model swap, not per batch; the kernel itself knows nothing of torch.
``tests/unit/test_model_export.py`` holds the export's forecasts to the torch model's.
"""

from __future__ import annotations

from typing import Any, cast

import numpy as np
import torch

from streamrnn.forecast.gru import RecurrentForecaster
from streamrnn.stages.cell import CellWeights, gate_count
from streamrnn.stages.features import DECAY_FEATURES
from streamrnn.stages.head import HeadWeights

__all__ = ["cell_weights", "head_weights"]


def _f32(tensor: torch.Tensor) -> np.ndarray[Any, Any]:
    """A float32 C-contiguous copy (never a view of the model's memory: a model edited in
    place after export must not change what serves)."""
    return np.array(tensor.detach().cpu().numpy(), dtype=np.float32, order="C", copy=True)


def cell_weights(model: RecurrentForecaster) -> CellWeights:
    """The model's cells, decay and masks in the compiled cell's layout."""
    spec = model.spec
    layers, hidden = spec.num_layers, spec.hidden_size
    width = gate_count(spec.cell == "lstm") * hidden

    def transposed(name: str, first: int) -> np.ndarray[Any, Any]:
        parts = [_f32(getattr(model.cells[i], name)).T for i in range(first, layers)]
        if not parts:
            return np.zeros((1, hidden, width), dtype=np.float32)
        return np.ascontiguousarray(np.stack(parts))

    if model.decay is None:
        decay_w_t = np.zeros((layers, len(DECAY_FEATURES), hidden), dtype=np.float32)
        decay_b = np.zeros((layers, hidden), dtype=np.float32)
    else:
        linears = [cast(torch.nn.Linear, lin) for lin in model.decay]
        decay_w_t = np.ascontiguousarray(np.stack([_f32(lin.weight).T for lin in linears]))
        decay_b = np.stack([_f32(lin.bias) for lin in linears])
    cells = [cast(torch.nn.GRUCell | torch.nn.LSTMCell, c) for c in model.cells]
    return CellWeights(
        w_ih0_t=np.ascontiguousarray(_f32(cells[0].weight_ih).T),
        w_ihn_t=transposed("weight_ih", 1),
        w_hh_t=transposed("weight_hh", 0),
        b_ih=np.stack([_f32(c.bias_ih) for c in cells]),
        b_hh=np.stack([_f32(c.bias_hh) for c in cells]),
        decay_w_t=decay_w_t,
        decay_b=decay_b,
        h_prior=_f32(model.h_prior),
        input_mask=_f32(model.input_mask),
        target_mask=_f32(model.target_mask),
        lstm=spec.cell == "lstm",
        decay=spec.decay,
    )


def head_weights(model: RecurrentForecaster) -> HeadWeights:
    """The model's forecast head in the compiled head's layout."""
    first, last = model.head[0], model.head[2]
    assert isinstance(first, torch.nn.Linear) and isinstance(last, torch.nn.Linear)
    return HeadWeights(
        w1_t=np.ascontiguousarray(_f32(first.weight).T),
        b1=_f32(first.bias),
        w2=_f32(last.weight),
        b2=_f32(last.bias),
    )
