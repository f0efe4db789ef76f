"""The recurrent cell's and head's nonlinearities in float32, as plain arithmetic.

A libm call per hidden unit keeps numba from vectorising the loops over a layer's units;
a rational approximation does not, and is as exact as float32 needs.
"""

from __future__ import annotations

import numpy as np

from streamrnn.stages.jit import stage

__all__ = ["F32", "sigmoid", "tanh"]

F32 = np.float32
#: Beyond this magnitude tanh is ±1 in float32; the approximation is clamped to it.
_TANH_CLAMP = F32(7.90531110763549805)


@stage
def tanh(a: np.float32) -> np.float32:
    """tanh in float32 by a [13/6] rational approximation on [-7.9, 7.9] (Eigen's
    ``generic_fast_tanh_float``): within 3e-7 of the exact value."""
    x = min(max(a, -_TANH_CLAMP), _TANH_CLAMP)
    x2 = x * x
    p = x2 * F32(-2.76076847742355e-16) + F32(2.00018790482477e-13)
    p = p * x2 + F32(-8.60467152213735e-11)
    p = p * x2 + F32(5.12229709037114e-08)
    p = p * x2 + F32(1.48572235717979e-05)
    p = p * x2 + F32(6.37261928875436e-04)
    p = p * x2 + F32(4.89352455891786e-03)
    q = x2 * F32(1.19825839466702e-06) + F32(1.18534705686654e-04)
    q = q * x2 + F32(2.26843463243900e-03)
    q = q * x2 + F32(4.89352518554385e-03)
    return p * x / q


@stage
def sigmoid(x: np.float32) -> np.float32:
    """The logistic function as ``(1 + tanh(x / 2)) / 2`` (an exact identity)."""
    return F32(0.5) + F32(0.5) * tanh(F32(0.5) * x)
