"""Per-series state, stored column-wise: one row ("slot") per live series.

Every stage that keeps state per series (normaliser, hidden state, scorer) declares a column
here; a batch of points is then processed by gathering the rows of the series present,
computing on whole arrays and scattering the results back. Columns grow by doubling up to
``max_series`` rows.

Columns whose fill is 0 are allocated zeroed by the OS (``numpy.zeros``): rows not yet used
are never touched, so they cost address space, not resident memory.

A series' latest labels are kept as their compact JSON (:func:`streamrnn.decode.encode_labels`),
at most ``consume.max_labels_bytes`` of it (decoding rejects larger ones), and decoded only
when asked for (an alert). At the largest labels allowed (32 entries, 4,096 bytes) that holds
4,150 bytes a series where the decoded dict held 6,930; three short labels, 105 against 395.

Knows nothing of Kafka or torch (hidden states are stored as numpy arrays).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import numpy as np
import orjson

from streamrnn.arrays import IntArray
from streamrnn.decode import encode_labels, tight_bytes

__all__ = ["SeriesTable"]


_INITIAL_CAPACITY = 1024


class SeriesTable:
    """Maps series names to slots and holds named per-slot columns."""

    def __init__(self, max_series: int) -> None:
        self.max_series = max_series
        self._slots: dict[str, int] = {}
        self._names: list[str] = []
        #: Per slot: the latest labels as compact JSON, or None (none, or empty).
        self._labels: list[bytes | None] = []
        self._capacity = min(_INITIAL_CAPACITY, max_series)
        self._columns: dict[str, np.ndarray[Any, Any]] = {}
        self._fill: dict[str, float] = {}
        #: Incremented whenever the columns are reallocated (growth, a new column), so a
        #: view bound to them knows when to bind again.
        self.generation = 0

    def __len__(self) -> int:
        return len(self._names)

    def __contains__(self, series: str) -> bool:
        return series in self._slots

    def add_column(
        self, name: str, shape: tuple[int, ...] = (), dtype: Any = np.float64, fill: float = 0.0
    ) -> np.ndarray[Any, Any]:
        """Declare a column with per-row ``shape``; new rows start at ``fill``."""
        if name in self._columns:
            raise ValueError(f"column {name!r} already exists")
        self._columns[name] = _allocate((self._capacity, *shape), fill, dtype)
        self._fill[name] = fill
        self.generation += 1
        return self._columns[name]

    def column(self, name: str) -> np.ndarray[Any, Any]:
        """The live array of a column (rows beyond ``len(self)`` are unused)."""
        return self._columns[name]

    def name_of(self, slot: int) -> str:
        """The series stored in ``slot``."""
        return self._names[slot]

    def labels_of(self, slot: int) -> dict[str, str] | None:
        """The latest labels seen for the series in ``slot`` (None: none, or empty)."""
        raw = self._labels[slot]
        return None if raw is None else cast(dict[str, str], orjson.loads(raw))

    def labels_json_of(self, slot: int) -> bytes | None:
        """:meth:`labels_of` as the compact JSON it is kept in (not decoded)."""
        return self._labels[slot]

    def set_labels_json(self, slot: int, raw: bytes | None) -> None:
        """Set the labels of ``slot`` from their JSON (as :meth:`labels_json_of` gave it,
        e.g. restored from the state store); None or ``{}`` clears them."""
        self._labels[slot] = None if raw is None or raw == b"{}" else tight_bytes(raw)

    def slot_of(self, series: str) -> int | None:
        """The slot of a live series, or None."""
        return self._slots.get(series)

    def resolve(self, names: Sequence[str], labels: Sequence[dict[str, str] | None]) -> IntArray:
        """Slots for ``names``, adding new series while there is room; -1 where there is none.

        ``labels[i]``, when not None, replaces the stored labels of ``names[i]`` (encoded:
        70-90 ns for a few short labels; a message without labels costs nothing here).
        """
        out = np.empty(len(names), dtype=np.int64)
        for i, name in enumerate(names):
            slot = self._slots.get(name)
            if slot is None:
                if len(self._names) >= self.max_series:
                    out[i] = -1
                    continue
                slot = self._add(name)
            new = labels[i]
            if new is not None:
                self._labels[slot] = encode_labels(new) if new else None
            out[i] = slot
        return out

    def column_names(self) -> list[str]:
        """Every column's name, in declaration order."""
        return list(self._columns)

    def names(self) -> list[str]:
        """The live series, in slot order."""
        return list(self._names)

    def remove(self, slots: IntArray) -> None:
        """Forget the series in ``slots``; rows from the end move into the holes, so the
        slots of other series may change."""
        n = len(self._names)
        doomed = np.zeros(n, dtype=bool)
        doomed[slots] = True
        m = n - int(doomed.sum())
        holes = np.flatnonzero(doomed[:m])
        movers = m + np.flatnonzero(~doomed[m:])
        for name, column in self._columns.items():
            column[holes] = column[movers]
            column[m:n] = self._fill[name]
        for slot in np.flatnonzero(doomed):
            del self._slots[self._names[slot]]
        for hole, mover in zip(holes.tolist(), movers.tolist(), strict=True):
            self._names[hole] = self._names[mover]
            self._labels[hole] = self._labels[mover]
            self._slots[self._names[hole]] = hole
        del self._names[m:]
        del self._labels[m:]

    def _add(self, name: str) -> int:
        slot = len(self._names)
        if slot >= self._capacity:
            self._grow(min(self._capacity * 2, self.max_series))
        self._slots[name] = slot
        self._names.append(name)
        self._labels.append(None)
        return slot

    def _grow(self, capacity: int) -> None:
        for name, old in self._columns.items():
            new = _allocate((capacity, *old.shape[1:]), self._fill[name], old.dtype)
            new[: self._capacity] = old
            self._columns[name] = new
        self._capacity = capacity
        self.generation += 1


def _allocate(shape: tuple[int, ...], fill: float, dtype: Any) -> np.ndarray[Any, Any]:
    """A column of ``shape`` filled with ``fill``; zero fills stay untouched (lazily resident)."""
    if fill == 0:
        return np.zeros(shape, dtype=dtype)
    return np.full(shape, fill, dtype=dtype)
