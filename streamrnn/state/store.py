"""The local state store: series state blobs and changelog positions in one SQLite file.

It holds (1) snapshots of live series, written periodically after a checkpoint committed
them, (2) series evicted from memory, and (3) per changelog partition, the position up to
which every changelog record is reflected in the store. A restart or a newly assigned
partition then reads only the changelog beyond that position.

Every stored row carries the input (topic, partition, offset) its state reflects; a write
never replaces a row with an older one of the same input partition ("newest wins"), so
snapshots, evictions and changelog replays can be merged in any order.

SQLite (standard library) gives atomic multi-row writes and indexed lookups by series with a
bounded page cache, so the evicted series of a flood of new names live on disk, not in RAM.
"""

from __future__ import annotations

import fcntl
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ["LocalStateStore", "StoreLockedError", "StoredState"]


class StoreLockedError(RuntimeError):
    """Another process holds the state store."""


_SCHEMA = """
CREATE TABLE IF NOT EXISTS series (
    name TEXT PRIMARY KEY,
    in_topic TEXT NOT NULL,
    in_partition INTEGER NOT NULL,
    in_offset INTEGER NOT NULL,
    model TEXT NOT NULL,
    labels TEXT,
    blob BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS series_partition ON series (in_topic, in_partition);
CREATE TABLE IF NOT EXISTS changelog_position (
    log_topic TEXT NOT NULL,
    log_partition INTEGER NOT NULL,
    position INTEGER NOT NULL,
    PRIMARY KEY (log_topic, log_partition)
);
"""

_UPSERT = """
INSERT INTO series (name, in_topic, in_partition, in_offset, model, labels, blob)
VALUES (?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (name) DO UPDATE SET
    in_topic = excluded.in_topic, in_partition = excluded.in_partition,
    in_offset = excluded.in_offset, model = excluded.model, labels = excluded.labels,
    blob = excluded.blob
WHERE excluded.in_topic != series.in_topic OR excluded.in_partition != series.in_partition
    OR excluded.in_offset >= series.in_offset
"""

#: Names per ``IN (...)`` lookup (SQLite's default variable limit is 32,766).
_LOOKUP_CHUNK = 900


@dataclass(frozen=True, slots=True)
class StoredState:
    """One series' state as stored: where it comes from and its encoded row.

    ``topic`` and ``partition`` are the series' *input* partition; ``offset`` is the input
    offset the state reflects; ``labels`` is the JSON of the series' labels, if any.
    """

    name: str
    topic: str
    partition: int
    offset: int
    model: str
    labels: str | None
    blob: bytes


class LocalStateStore:
    """See the module docstring. Not thread-safe: the consume loop owns it."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        # One instance per store: a second daemon pointed at the same directory would
        # interleave two partitions' worth of state.
        self._lock = open(path.with_suffix(".lock"), "a+")  # noqa: SIM115 (held until close)
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            self._lock.close()
            raise StoreLockedError(
                f"state store {path} is in use by another process; give each instance its"
                " own state.directory"
            ) from exc
        self._db = sqlite3.connect(path, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)

    def put(
        self, rows: Iterable[StoredState], positions: dict[tuple[str, int], int] | None = None
    ) -> int:
        """Write ``rows`` (newest wins) and changelog ``positions`` in one transaction.

        Returns the number of rows offered.
        """
        count = 0
        with self._transaction():
            for chunk in _chunks(rows, 10_000):
                self._db.executemany(
                    _UPSERT,
                    [
                        (r.name, r.topic, r.partition, r.offset, r.model, r.labels, r.blob)
                        for r in chunk
                    ],
                )
                count += len(chunk)
            for (topic, partition), position in (positions or {}).items():
                self._db.execute(
                    "INSERT INTO changelog_position VALUES (?, ?, ?) ON CONFLICT"
                    " (log_topic, log_partition) DO UPDATE SET position = excluded.position",
                    (topic, partition, position),
                )
        return count

    def get(self, names: Sequence[str]) -> list[StoredState]:
        """The stored states of those ``names`` that have one (in no particular order)."""
        found: list[StoredState] = []
        for start in range(0, len(names), _LOOKUP_CHUNK):
            chunk = list(names[start : start + _LOOKUP_CHUNK])
            marks = ",".join("?" * len(chunk))
            cursor = self._db.execute(
                "SELECT name, in_topic, in_partition, in_offset, model, labels, blob FROM series"
                f" WHERE name IN ({marks})",
                chunk,
            )
            found.extend(StoredState(*row) for row in cursor)
        return found

    def changelog_position(self, topic: str, partition: int) -> int:
        """First changelog offset not yet reflected in the store (0: read from the start)."""
        row = self._db.execute(
            "SELECT position FROM changelog_position WHERE log_topic = ? AND log_partition = ?",
            (topic, partition),
        ).fetchone()
        return int(row[0]) if row else 0

    def forget_newer(self, topic: str, partition: int, offset: int) -> int:
        """Delete rows of an input partition that reflect offsets beyond ``offset``.

        Used when the committed offset is behind the store (offsets reset by an operator):
        such state describes points that will be read again. Returns the rows deleted.
        """
        with self._transaction():
            cursor = self._db.execute(
                "DELETE FROM series WHERE in_topic = ? AND in_partition = ? AND in_offset > ?",
                (topic, partition, offset),
            )
        return cursor.rowcount

    def count(self) -> int:
        """Series held."""
        return int(self._db.execute("SELECT COUNT(*) FROM series").fetchone()[0])

    def close(self) -> None:
        """Release the database and its lock."""
        self._db.close()
        self._lock.close()

    def _transaction(self) -> _Transaction:
        return _Transaction(self._db)


class _Transaction:
    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN")

    def __exit__(self, exc_type: object, *_: object) -> None:
        self._db.execute("ROLLBACK" if exc_type else "COMMIT")


def _chunks(rows: Iterable[StoredState], size: int) -> Iterable[list[StoredState]]:
    chunk: list[StoredState] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
