"""The batch kernel's scratch: every buffer a work unit needs, allocated once per thread.

The kernel runs without numba's reference-counting runtime (see :mod:`streamrnn.stages.blas`
for why), so it allocates nothing itself: the stepper hands each thread one
:class:`Workspace`, grown to the largest work unit it has seen.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from streamrnn.stages import blas
from streamrnn.stages.blas import BlasScratch
from streamrnn.stages.cell import CellWeights
from streamrnn.stages.features import INPUT_SIZE, TIME_FEATURE_COUNT
from streamrnn.stages.head import HeadWeights

__all__ = ["Workspace", "workspace"]


class Workspace(NamedTuple):
    """One thread's scratch for work units of up to R rows (series) of a model with S
    state rows, H hidden units, G·H gates and HH head units."""

    h: np.ndarray  # (R, S, H) f32: the unit's series' states
    hd: np.ndarray  # (S, max(R, 2), H) f32: decayed states of the column's rows
    new_h: np.ndarray  # (S, max(R, 2), H) f32: states after the column
    head_in: np.ndarray  # (max(R, 2), H + TIME_FEATURE_COUNT) f32
    z1: np.ndarray  # (max(R, 2), HH) f32
    x: np.ndarray  # (max(R, 2), INPUT_SIZE) f32
    gi: np.ndarray  # (max(R, 2), G·H) f32
    gh: np.ndarray  # (max(R, 2), G·H) f32
    target: np.ndarray  # (TIME_FEATURE_COUNT,) f32
    active: np.ndarray  # (R,) int64: per column, the unit rows with a point in it ...
    slot: np.ndarray  # (R,) int64: ... their slots ...
    point: np.ndarray  # (R,) int64: ... and point indices
    scale: np.ndarray  # (R,) step scale of each active row's point
    gap: np.ndarray  # (R,) gap (s) before it
    learn: np.ndarray  # (R,) bool: whether it was learned
    blas: BlasScratch


def workspace(rows: int, cell_weights: CellWeights, head_weights: HeadWeights) -> Workspace:
    """A :class:`Workspace` for units of up to ``rows`` rows of this model."""
    layers, hidden = cell_weights.h_prior.shape
    states = layers * (2 if cell_weights.lstm else 1)
    padded = max(rows, 2)
    gates = cell_weights.b_ih.shape[1]
    f32 = np.float32
    return Workspace(
        h=np.zeros((rows, states, hidden), f32),
        hd=np.zeros((states, padded, hidden), f32),
        new_h=np.zeros((states, padded, hidden), f32),
        head_in=np.zeros((padded, hidden + TIME_FEATURE_COUNT), f32),
        z1=np.zeros((padded, head_weights.b1.shape[0]), f32),
        x=np.zeros((padded, INPUT_SIZE), f32),
        gi=np.zeros((padded, gates), f32),
        gh=np.zeros((padded, gates), f32),
        target=np.zeros(TIME_FEATURE_COUNT, f32),
        active=np.zeros(rows, np.int64),
        slot=np.zeros(rows, np.int64),
        point=np.zeros(rows, np.int64),
        scale=np.zeros(rows),
        gap=np.zeros(rows),
        learn=np.zeros(rows, np.bool_),
        blas=blas.scratch(),
    )
