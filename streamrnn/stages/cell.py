"""The recurrent cell's inference step: GRU-D decay, then stacked GRU or LSTM layers.

This is the compiled inference form of :class:`streamrnn.forecast.gru.RecurrentForecaster`
(which trains it with autograd; :mod:`streamrnn.forecast.export` turns its weights into a
:class:`CellWeights`, and a parity test holds the two to 1e-5). A series' state is
(S, H) float32: one row of h per layer, then for an LSTM one row of c per layer.

Before a point the state left by the previous point is *decayed* by the gap (GRU-D, Che
et al. 2018): ``gamma = exp(-max(0, W·delta + b))`` per hidden unit, ``h <- prior + gamma
(h - prior)`` with a learned prior, on the h rows only (an LSTM's c rows are kept). The
layers then consume the point. The matrix products of a layer run as one BLAS call over
the rows (series) stepped together, the gates per row; products always span at least two
rows, because BLAS takes another path for a single row (a matrix-vector product) whose
float32 sums differ in the last bits, and a series' forecasts must not depend on how many
others share its batch (a restart replays the same points in other batches).

Torch's gate orders: GRU reset, update, new; LSTM input, forget, cell, output.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from streamrnn.stages.activations import F32, sigmoid, tanh
from streamrnn.stages.blas import BlasScratch, matmul
from streamrnn.stages.features import DECAY_FEATURES, TIME_FEATURES
from streamrnn.stages.jit import stage

__all__ = ["CellWeights", "advance", "decay_into", "gate_count", "mask", "mask_inputs"]

#: Indices (in the time features) of the gap features that drive the decay.
_DECAY_0 = TIME_FEATURES.index(DECAY_FEATURES[0])
_DECAY_1 = TIME_FEATURES.index(DECAY_FEATURES[1])


class CellWeights(NamedTuple):
    """One model's cell, float32, inputs-major so the products' rows vectorise. L layers,
    H hidden units, G gates (3 GRU, 4 LSTM), I inputs, D = 2 decay inputs.

    ``w_ih0_t`` (I, G·H) first layer's input weights; ``w_ihn_t`` (max(L-1, 1), H, G·H) the
    others'; ``w_hh_t`` (L, H, G·H) recurrent weights; ``b_ih``/``b_hh`` (L, G·H);
    ``decay_w_t`` (L, D, H), ``decay_b`` (L, H) and ``h_prior`` (L, H) the decay (zeros
    without it); ``input_mask`` (I,) and ``target_mask`` (TIME_FEATURE_COUNT,) zero the
    features the model does not use; ``lstm`` and ``decay`` the architecture."""

    w_ih0_t: np.ndarray
    w_ihn_t: np.ndarray
    w_hh_t: np.ndarray
    b_ih: np.ndarray
    b_hh: np.ndarray
    decay_w_t: np.ndarray
    decay_b: np.ndarray
    h_prior: np.ndarray
    input_mask: np.ndarray
    target_mask: np.ndarray
    lstm: bool
    decay: bool


def gate_count(lstm: bool) -> int:
    """Gates per hidden unit: 4 for an LSTM, 3 for a GRU."""
    return 4 if lstm else 3


@stage
def mask(weights: np.ndarray, v: np.ndarray) -> None:
    """``v`` times the 0/1 ``weights``, in place (idempotent)."""
    for c in range(v.shape[0]):
        v[c] *= weights[c]


@stage
def mask_inputs(w: CellWeights, x: np.ndarray, target: np.ndarray) -> None:
    """Zero, in place, the inputs ``x`` and time features ``target`` the model does not use."""
    mask(w.input_mask, x)
    mask(w.target_mask, target)


@stage
def decay_into(
    w: CellWeights, h: np.ndarray, i: int, target: np.ndarray, hd: np.ndarray, a: int
) -> None:
    """Series state ``h[i]`` (S, H), decayed by the gap before the next point (its masked
    time features ``target``), into ``hd[:, a]`` (S rows of the batched layout)."""
    layers, hidden = w.h_prior.shape
    for layer in range(layers):
        for c in range(hidden):
            hv = h[i, layer, c]
            if w.decay:
                lin = w.decay_b[layer, c]
                lin += w.decay_w_t[layer, 0, c] * target[_DECAY_0]
                lin += w.decay_w_t[layer, 1, c] * target[_DECAY_1]
                gamma = np.exp(-max(lin, F32(0.0)))
                prior = w.h_prior[layer, c]
                hd[layer, a, c] = prior + gamma * (hv - prior)
            else:
                hd[layer, a, c] = hv
    for row in range(layers, h.shape[1]):
        for c in range(hidden):
            hd[row, a, c] = h[i, row, c]


@stage
def _gru_gates(
    gi: np.ndarray, gh: np.ndarray, b_ih: np.ndarray, b_hh: np.ndarray, h: np.ndarray,
    out: np.ndarray,
) -> None:  # fmt: skip
    """torch.nn.GRUCell's gates from ``gi`` = W_ih·x and ``gh`` = W_hh·h (3H each)."""
    hidden = h.shape[0]
    for r in range(hidden):
        reset = sigmoid(gi[r] + b_ih[r] + gh[r] + b_hh[r])
        u = hidden + r
        update = sigmoid(gi[u] + b_ih[u] + gh[u] + b_hh[u])
        n = 2 * hidden + r
        new = tanh(gi[n] + b_ih[n] + reset * (gh[n] + b_hh[n]))
        out[r] = new + update * (h[r] - new)


@stage
def _lstm_gates(
    gi: np.ndarray, gh: np.ndarray, b_ih: np.ndarray, b_hh: np.ndarray, c_in: np.ndarray,
    out_h: np.ndarray, out_c: np.ndarray,
) -> None:  # fmt: skip
    """torch.nn.LSTMCell's gates from ``gi`` = W_ih·x and ``gh`` = W_hh·h (4H each)."""
    hidden = c_in.shape[0]
    for r in range(hidden):
        f, g, o = hidden + r, 2 * hidden + r, 3 * hidden + r
        in_gate = sigmoid(gi[r] + b_ih[r] + gh[r] + b_hh[r])
        forget = sigmoid(gi[f] + b_ih[f] + gh[f] + b_hh[f])
        cell = tanh(gi[g] + b_ih[g] + gh[g] + b_hh[g])
        out_gate = sigmoid(gi[o] + b_ih[o] + gh[o] + b_hh[o])
        c = forget * c_in[r] + in_gate * cell
        out_c[r] = c
        out_h[r] = out_gate * tanh(c)


@stage
def advance(
    w: CellWeights,
    x: np.ndarray,
    hd: np.ndarray,
    m: int,
    gi: np.ndarray,
    gh: np.ndarray,
    new_h: np.ndarray,
    room: BlasScratch,
) -> None:
    """Step rows 0..m-1 of the batch: inputs ``x`` (≥ max(m, 2), I) masked, decayed states
    ``hd`` (S, ≥ max(m, 2), H), into ``new_h`` (same layout). ``gi``/``gh`` are scratch
    (≥ max(m, 2), G·H)."""
    layers = w.h_prior.shape[0]
    mm = max(m, 2)
    for layer in range(layers):
        if layer == 0:
            matmul(x, w.w_ih0_t, gi, mm, room)
        else:
            matmul(new_h[layer - 1], w.w_ihn_t[layer - 1], gi, mm, room)
        matmul(hd[layer], w.w_hh_t[layer], gh, mm, room)
        for a in range(m):
            if w.lstm:
                _lstm_gates(
                    gi[a], gh[a], w.b_ih[layer], w.b_hh[layer], hd[layers + layer, a],
                    new_h[layer, a], new_h[layers + layer, a],
                )  # fmt: skip
            else:
                _gru_gates(
                    gi[a], gh[a], w.b_ih[layer], w.b_hh[layer], hd[layer, a], new_h[layer, a]
                )
