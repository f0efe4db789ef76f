"""The training buffer: the most recent points of a bounded sample of series.

Background retraining needs recent history, but the daemon keeps only state, not points.
The buffer keeps, for at most ``max_series`` series, a ring of each one's last
``points_per_series`` accepted points (timestamp and value, float64): memory is fixed at
``max_series * points_per_series * 16`` bytes, allocated up front.

Which series: every series is admitted while there is room; after that the buffer keeps the
``max_series`` series with the smallest hash of their name (a bottom-k sample): a uniform
sample of the distinct series seen, with nothing remembered about the series left out, the
same choice on every instance and after a restart, and a flood of new series cannot wash
out the long-lived ones (each newcomer displaces a buffered series only if its hash is
smaller, which becomes ever rarer).

Pure numpy; knows nothing of Kafka or torch.
"""

from __future__ import annotations

import heapq
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from streamrnn.arrays import FloatArray, IntArray

__all__ = ["BufferedSeries", "TrainingBuffer"]


@dataclass(frozen=True, slots=True)
class BufferedSeries:
    """One series' buffered points, oldest first: ts (epoch seconds) and values."""

    name: str
    ts: FloatArray
    values: FloatArray


class TrainingBuffer:
    """See the module docstring."""

    def __init__(self, max_series: int, points_per_series: int) -> None:
        self.max_series = max_series
        self.points_per_series = points_per_series
        self._ts = np.zeros((max_series, points_per_series))
        self._values = np.zeros((max_series, points_per_series))
        #: Next write position of each row's ring, and how many points it holds.
        self._head = np.zeros(max_series, dtype=np.int64)
        self._count = np.zeros(max_series, dtype=np.int64)
        self._group = np.zeros(max_series, dtype=np.int64)
        self._rows: dict[str, int] = {}
        #: Max-heap (negated) of the buffered series' name hashes, with their names.
        self._hashes: list[tuple[int, str]] = []

    @property
    def nbytes(self) -> int:
        """Bytes held by the point arrays (the configured bound)."""
        return int(self._ts.nbytes + self._values.nbytes)

    def __len__(self) -> int:
        return len(self._rows)

    def __contains__(self, series: str) -> bool:
        return series in self._rows

    def append(
        self,
        names: Sequence[str],
        groups: IntArray,
        starts: IntArray,
        ts: FloatArray,
        values: FloatArray,
    ) -> None:
        """Add a batch of points grouped by series.

        The points of ``names[i]`` (model group ``groups[i]``) are ``ts[starts[i]:starts[i+1]]``
        (the last group runs to the end), oldest first; ``starts`` is increasing.
        """
        if len(names) == 0:
            return
        rows = np.fromiter(
            (self._row_for(n, int(g)) for n, g in zip(names, groups, strict=True)),
            dtype=np.int64,
            count=len(names),
        )
        lengths = np.diff(np.append(starts, len(ts)))
        point_row = np.repeat(rows, lengths)
        rank = np.arange(len(ts)) - np.repeat(starts, lengths)
        keep = point_row >= 0
        if not keep.all():
            point_row, rank, ts, values = point_row[keep], rank[keep], ts[keep], values[keep]
            lengths = lengths[rows >= 0]
            rows = rows[rows >= 0]
        if len(rows) == 0:
            return
        p = self.points_per_series
        # More points than the ring holds in one batch: only the last p land (same cell
        # written several times; numpy keeps the last assignment).
        position = (self._head[point_row] + rank) % p
        self._ts[point_row, position] = ts
        self._values[point_row, position] = values
        self._head[rows] = (self._head[rows] + lengths) % p
        self._count[rows] = np.minimum(self._count[rows] + lengths, p)

    def series(self, group: int | None = None, min_points: int = 2) -> list[BufferedSeries]:
        """Copies of the buffered series (of one model group, if given) with at least
        ``min_points`` points, each in time order."""
        out = []
        for name, row in self._rows.items():
            n = int(self._count[row])
            if n < min_points or (group is not None and int(self._group[row]) != group):
                continue
            order = (self._head[row] - n + np.arange(n)) % self.points_per_series
            out.append(BufferedSeries(name, self._ts[row, order], self._values[row, order]))
        return out

    def points(self, group: int | None = None) -> int:
        """Points buffered (for one model group, if given)."""
        n = len(self._rows)
        if n == 0:
            return 0
        rows = np.fromiter(self._rows.values(), dtype=np.int64, count=n)
        if group is not None:
            rows = rows[self._group[rows] == group]
        return int(self._count[rows].sum())

    def _row_for(self, name: str, group: int) -> int:
        """The row of ``name``; a new series gets one if there is room or its hash is
        smaller than the largest buffered one (whose row it takes); else -1."""
        row = self._rows.get(name)
        if row is not None:
            return row
        if self.max_series == 0:
            return -1
        h = zlib.crc32(name.encode())
        if len(self._rows) < self.max_series:
            row = len(self._rows)
            heapq.heappush(self._hashes, (-h, name))
        else:
            largest, old = self._hashes[0]
            if h >= -largest:
                return -1
            heapq.heapreplace(self._hashes, (-h, name))
            row = self._rows.pop(old)
        self._rows[name] = row
        self._group[row] = group
        self._head[row] = 0
        self._count[row] = 0
        return row
