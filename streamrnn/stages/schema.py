"""Per-series state schemas: which table columns a stage keeps, and how they start.

A stage declares its state once, as a tuple of :class:`Column` (name, dtype, per-series
shape, initial value) beside a named tuple type with one field per column in the same order.
That one declaration makes the :class:`~streamrnn.state.series_table.SeriesTable` columns
(:func:`declare`), the arrays the compiled stage functions get (:func:`bind`), stand-alone
state for training and tests (:func:`allocate`), and — since the state codec encodes the
table's columns in declaration order — the persistent record layout and its fingerprint
(:mod:`streamrnn.state.codec`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple, Protocol, TypeVar

import numpy as np

__all__ = ["Column", "Table", "allocate", "bind", "bind_if", "declare"]


class Column(NamedTuple):
    """One per-series column: ``shape`` is per series (``()``: a scalar per series)."""

    name: str
    dtype: Any = np.float64
    shape: tuple[int, ...] = ()
    fill: float = 0.0


class Table(Protocol):
    """What the schema needs of a table (:class:`~streamrnn.state.series_table.SeriesTable`)."""

    def add_column(
        self, name: str, shape: tuple[int, ...] = ..., dtype: Any = ..., fill: float = ...
    ) -> np.ndarray[Any, Any]: ...

    def column(self, name: str) -> np.ndarray[Any, Any]: ...


_S = TypeVar("_S", bound=tuple[Any, ...])


def declare(table: Table, columns: Sequence[Column]) -> None:
    """Add ``columns`` to ``table`` (in order: the order is the state record's layout)."""
    for c in columns:
        table.add_column(c.name, shape=c.shape, dtype=c.dtype, fill=c.fill)


def bind(state_type: type[_S], table: Table, columns: Sequence[Column]) -> _S:
    """The stage's state record over the table's live arrays (bind again after the table
    grows: growing reallocates its columns)."""
    return state_type(*(table.column(c.name) for c in columns))


def allocate(state_type: type[_S], columns: Sequence[Column], rows: int) -> _S:
    """A stand-alone state record of ``rows`` series that have seen nothing (0 rows: the
    placeholder of a stage that is switched off)."""
    return state_type(*(np.full((rows, *c.shape), c.fill, dtype=c.dtype) for c in columns))


def bind_if(on: bool, state_type: type[_S], table: Table, columns: Sequence[Column]) -> _S:
    """:func:`bind` for a stage that is on, else its zero-row placeholder (the compiled
    composers take every stage's record; a stage that is off never reads it)."""
    return bind(state_type, table, columns) if on else allocate(state_type, columns, 0)
