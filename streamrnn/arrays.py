"""Array type aliases shared by the numeric modules (one definition, used everywhere)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

__all__ = ["BoolArray", "FloatArray", "Int8Array", "IntArray"]

#: Float64 arrays: values, timestamps (epoch s), scores.
FloatArray = npt.NDArray[np.float64]
#: Int64 arrays: slots, indices.
IntArray = npt.NDArray[np.int64]
#: Int8 arrays: severities.
Int8Array = npt.NDArray[np.int8]
#: Boolean masks.
BoolArray = npt.NDArray[np.bool_]
