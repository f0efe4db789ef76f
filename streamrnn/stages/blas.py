"""Matrix products of float32 rows through BLAS ``sgemm``, callable from code without NRT.

The composers run without numba's reference-counting runtime (``_nrt=False``): with it,
every state record handed from stage to stage cost an atomic increment and decrement per
array per point, which made the per-point path two to three times slower. ``np.dot`` needs
that runtime, so the products call the same BLAS routine numba's ``np.dot`` calls
(``sgemm`` of scipy's ``cython_blas``, registered with LLVM by name so compiled code that
calls it can be cached), with the same arguments, so the sums are bit for bit the same.
With ``NUMBA_DISABLE_JIT=1`` the product is numpy's (the same BLAS, called from Python; plain
Python float32 arithmetic elsewhere then agrees with the compiled code to float32 rounding).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import llvmlite.binding as llvm
import numba
import numpy as np
from numba import types
from numba.extending import get_cython_function_address

from streamrnn.stages.jit import stage

__all__ = ["BlasScratch", "matmul", "scratch"]

_SYMBOL = "streamrnn_sgemm"
llvm.add_symbol(_SYMBOL, get_cython_function_address("scipy.linalg.cython_blas", "sgemm"))
#: Fortran sgemm: every argument by reference.
_sgemm: Any = types.ExternalFunction(_SYMBOL, types.void(*([types.voidptr] * 13)))
_NO_TRANSPOSE = ord("N")


class BlasScratch(NamedTuple):
    """Room for sgemm's by-reference arguments: m, n, k and the three leading dimensions
    (int32), alpha and beta (float32), the transpose flag (a byte)."""

    ints: np.ndarray
    floats: np.ndarray
    flag: np.ndarray


def scratch() -> BlasScratch:
    """A :class:`BlasScratch` (one per thread)."""
    return BlasScratch(
        np.zeros(6, dtype=np.int32),
        np.array([1.0, 0.0], dtype=np.float32),
        np.array([_NO_TRANSPOSE], dtype=np.uint8),
    )


@stage
def _sgemm_product(
    a: np.ndarray, b: np.ndarray, out: np.ndarray, m: int, room: BlasScratch
) -> None:
    """``out[:m] = a[:m] @ b`` for C-contiguous float32 ``a`` (≥ m, k), ``b`` (k, n) and
    ``out`` (≥ m, n). Row-major products are column-major ones transposed: C^T = B^T A^T."""
    ints = room.ints
    ints[0] = b.shape[1]
    ints[1] = m
    ints[2] = a.shape[1]
    ints[3] = b.strides[0] // 4
    ints[4] = a.strides[0] // 4
    ints[5] = out.strides[0] // 4
    _sgemm(
        room.flag.ctypes, room.flag.ctypes, ints[0:].ctypes, ints[1:].ctypes,
        ints[2:].ctypes, room.floats.ctypes, b.ctypes, ints[3:].ctypes, a.ctypes,
        ints[4:].ctypes, room.floats[1:].ctypes, out.ctypes, ints[5:].ctypes,
    )  # fmt: skip


def _numpy_product(
    a: np.ndarray, b: np.ndarray, out: np.ndarray, m: int, room: BlasScratch
) -> None:
    """:func:`matmul` as plain Python (``NUMBA_DISABLE_JIT=1``): numpy's product."""
    np.matmul(a[:m], b, out=out[:m])


#: ``out[:m] = a[:m] @ b``; see :func:`_sgemm_product`.
matmul = _numpy_product if getattr(numba.config, "DISABLE_JIT", False) else _sgemm_product
