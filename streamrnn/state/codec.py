"""Encode the rows of a :class:`SeriesTable` as fixed-size byte strings, and back.

One encoded row ("state blob") holds every persistent column of one series: normaliser,
recurrent state, scorer history, alert-rule state, latest timestamp — the columns the
stages declare in their schemas (:mod:`streamrnn.stages.schema`), in the table's
declaration order. Its layout is::

    b"S1" | layout fingerprint (8 bytes) | input offset (int64, little-endian) | columns...

The input offset is the offset of the series' input partition that the state reflects (the
offset the checkpoint commits). The fingerprint changes whenever the column names, types or
shapes change (another model size, another scorer), so a blob from an incompatible build is
recognised and ignored instead of being misread. Encoding and decoding are vectorised over
many rows: restore speed is one ``numpy.frombuffer`` per batch of records.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from streamrnn.arrays import IntArray
from streamrnn.state.series_table import SeriesTable

__all__ = ["OFFSET_BYTES", "DecodedRows", "RowCodec", "offset_of"]

_MAGIC = b"S1"
_HEADER = len(_MAGIC) + 8 + 8
#: Where a blob keeps its input offset (int64, little-endian), after magic and fingerprint.
OFFSET_BYTES = slice(_HEADER - 8, _HEADER)


def offset_of(blob: bytes) -> int:
    """The input offset an encoded row reflects."""
    return int.from_bytes(blob[OFFSET_BYTES], "little", signed=True)


@dataclass(frozen=True, slots=True)
class DecodedRows:
    """Rows decoded from blobs: the input offset of each, and each column's values."""

    offsets: IntArray
    columns: dict[str, np.ndarray[Any, Any]]

    def __len__(self) -> int:
        return len(self.offsets)


class RowCodec:
    """Encodes and decodes the persistent columns of one table; see the module docstring."""

    def __init__(self, table: SeriesTable, transient: Sequence[str] = ()) -> None:
        self._table = table
        self.layout: list[tuple[str, np.dtype[Any], tuple[int, ...]]] = []
        for name in table.column_names():
            if name in transient:
                continue
            column = table.column(name)
            self.layout.append((name, column.dtype, tuple(column.shape[1:])))
        spec = repr([(n, d.str, s) for n, d, s in self.layout]).encode()
        self.fingerprint = hashlib.sha256(spec).digest()[:8]
        self.row_bytes = _HEADER + sum(
            d.itemsize * int(np.prod(s, dtype=np.int64)) for _, d, s in self.layout
        )

    def encode(self, slots: IntArray, offsets: IntArray) -> list[bytes]:
        """One blob per slot; ``offsets[i]`` is the input offset row ``i`` reflects."""
        n = len(slots)
        if n == 0:
            return []
        parts = [
            np.frombuffer(_MAGIC + self.fingerprint, dtype=np.uint8)[None, :].repeat(n, axis=0),
            np.ascontiguousarray(offsets, dtype="<i8").reshape(n, 1).view(np.uint8),
        ]
        for name, dtype, _ in self.layout:
            values = np.ascontiguousarray(self._table.column(name)[slots], dtype=dtype)
            parts.append(values.reshape(n, -1).view(np.uint8))
        rows = np.concatenate(parts, axis=1)
        return [row.tobytes() for row in rows]

    def decode(self, blobs: Sequence[bytes]) -> tuple[DecodedRows, list[int]]:
        """Decode ``blobs``; also returns the indices of blobs that do not fit this layout."""
        good = [
            i
            for i, blob in enumerate(blobs)
            if len(blob) == self.row_bytes and blob[: _HEADER - 8] == _MAGIC + self.fingerprint
        ]
        bad = sorted(set(range(len(blobs))) - set(good))
        raw = np.frombuffer(b"".join(blobs[i] for i in good), dtype=np.uint8)
        raw = raw.reshape(len(good), self.row_bytes)
        offsets = raw[:, OFFSET_BYTES].copy().view("<i8").reshape(-1).astype(np.int64)
        columns: dict[str, np.ndarray[Any, Any]] = {}
        at = _HEADER
        for name, dtype, shape in self.layout:
            width = dtype.itemsize * int(np.prod(shape, dtype=np.int64))
            chunk = raw[:, at : at + width].copy()
            columns[name] = chunk.view(dtype).reshape(len(good), *shape)
            at += width
        return DecodedRows(offsets, columns), bad
