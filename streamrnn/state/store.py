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

Everything in the store is also in the changelog (snapshots and evictions hold only committed,
clean state): the store is a cache that spares a restart reading the whole changelog. So a
restore need not wait for its rows to reach the disk: :meth:`LocalStateStore.put_behind`
writes them from a background thread (its own connection) while :meth:`~LocalStateStore.get`
and :meth:`~LocalStateStore.count` already answer as if they were written; every other call
first waits for that write. Its changelog positions are written in the same transaction, so
a crash before it commits only makes the next restore read those records again.
"""

from __future__ import annotations

import fcntl
import sqlite3
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from streamrnn.logs import get_logger

__all__ = ["LocalStateStore", "PendingRows", "StoreLockedError", "StoredRow", "StoredState"]

log = get_logger("store")


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
CREATE TABLE IF NOT EXISTS in_flight (
    in_topic TEXT NOT NULL,
    in_partition INTEGER NOT NULL,
    first_offset INTEGER NOT NULL,
    last_offset INTEGER NOT NULL,
    error TEXT NOT NULL,
    PRIMARY KEY (in_topic, in_partition)
);
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

_DELETE = "DELETE FROM series WHERE name = ?"

_POSITION = (
    "INSERT INTO changelog_position VALUES (?, ?, ?) ON CONFLICT"
    " (log_topic, log_partition) DO UPDATE SET position = excluded.position"
)

#: Names per ``IN (...)`` lookup (SQLite's default variable limit is 32,766).
_LOOKUP_CHUNK = 900

#: Seconds a connection waits for another one's lock (the background writer's) before failing.
_BUSY_TIMEOUT_S = 60.0

#: The columns of a :class:`StoredState`, in its field order, as a plain tuple: (name, input
#: topic, input partition, input offset, model, labels, blob). Restores build 100,000s of
#: them, and a tuple costs a fraction of a frozen dataclass.
StoredRow = tuple[str, str, int, int, str, str | None, bytes]


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


@dataclass(slots=True)
class PendingRows:
    """Changes for :meth:`LocalStateStore.put_behind`, by series name.

    ``deleted`` series lose their row first; then each of ``rows`` is written, newest wins
    against the stored row, except that a series also in ``deleted`` takes its row
    unconditionally (a changelog tombstone followed by a new record). ``rows`` may build
    its rows when asked for them (in the background write, or for :meth:`get`).
    """

    rows: Mapping[str, StoredRow] = field(default_factory=dict)
    deleted: set[str] = field(default_factory=set)

    def __len__(self) -> int:
        """Series changed."""
        return len(self.rows) + self.deleted_only()

    def deleted_only(self) -> int:
        """Series deleted and not written again."""
        return sum(1 for name in self.deleted if name not in self.rows)


def replaces(new: StoredRow, old: StoredState) -> bool:
    """Whether ``new`` replaces ``old`` in the store (the rule of ``_UPSERT``): it comes from
    another input partition, or reflects an input offset at least as new."""
    return new[1] != old.topic or new[2] != old.partition or new[3] >= old.offset


class LocalStateStore:
    """See the module docstring. Not thread-safe: the consume loop owns it (a write from
    :meth:`put_behind` runs on its own connection in a thread of the store's own)."""

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
        self._db = _connect(path)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(_SCHEMA)
        #: What the background write (if any) is writing; None once it is settled.
        self._pending: PendingRows | None = None
        self._writer: threading.Thread | None = None
        self._write_error: BaseException | None = None
        #: Series held when the background write started.
        self._held_before = 0

    def put(
        self, rows: Iterable[StoredState], positions: dict[tuple[str, int], int] | None = None
    ) -> int:
        """Write ``rows`` (newest wins) and changelog ``positions`` in one transaction.

        Returns the number of rows offered.
        """
        self._settle()
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
            _write_positions(self._db, positions or {})
        return count

    def put_behind(
        self, pending: PendingRows, positions: dict[tuple[str, int], int] | None = None
    ) -> None:
        """Apply ``pending`` and write changelog ``positions`` in one transaction, in a
        background thread; returns at once.

        Until it is written :meth:`get` and :meth:`count` answer as if it were; every other
        call (and the next ``put_behind``) first waits for it, and raises its error if it
        failed. ``pending`` must not change afterwards. For a restore: SQLite takes about
        1 s to write 100,000 rows of 1 kB (B-tree inserts, then the WAL checkpoint), longer
        than reading them from the changelog.
        """
        self._settle()
        self._pending = pending
        self._held_before = self._count()
        self._writer = threading.Thread(
            target=self._write_pending,
            args=(pending, dict(positions or {})),
            name="state-store-writer",
            daemon=True,
        )
        self._writer.start()

    def get(self, names: Sequence[str]) -> list[StoredState]:
        """The stored states of those ``names`` that have one (in no particular order),
        including what a background write is writing."""
        pending = self._pending
        found: dict[str, StoredState] = {}
        for start in range(0, len(names), _LOOKUP_CHUNK):
            chunk = list(names[start : start + _LOOKUP_CHUNK])
            marks = ",".join("?" * len(chunk))
            cursor = self._db.execute(
                "SELECT name, in_topic, in_partition, in_offset, model, labels, blob FROM series"
                f" WHERE name IN ({marks})",
                chunk,
            )
            found.update((row[0], StoredState(*row)) for row in cursor)
        if pending is not None:
            _overlay(found, names, pending)
        return list(found.values())

    def changelog_position(self, topic: str, partition: int) -> int:
        """First changelog offset not yet reflected in the store (0: read from the start)."""
        self._settle()
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
        self._settle()
        with self._transaction():
            cursor = self._db.execute(
                "DELETE FROM series WHERE in_topic = ? AND in_partition = ? AND in_offset > ?",
                (topic, partition, offset),
            )
        return cursor.rowcount

    def put_in_flight(self, ranges: Iterable[tuple[str, int, int, int, str]]) -> None:
        """Remember input offset ranges (topic, partition, first, last, error) that were
        being processed when the daemon died (one range per partition, replaced whole);
        see :mod:`streamrnn.poison`."""
        self._settle()
        with self._transaction():
            self._db.executemany(
                "INSERT OR REPLACE INTO in_flight VALUES (?, ?, ?, ?, ?)", list(ranges)
            )

    def in_flight(self) -> list[tuple[str, int, int, int, str]]:
        """The ranges :meth:`put_in_flight` remembered (and :meth:`forget_in_flight` did not
        forget)."""
        self._settle()
        return [
            (str(t), int(p), int(a), int(b), str(e))
            for t, p, a, b, e in self._db.execute("SELECT * FROM in_flight")
        ]

    def forget_in_flight(self, topic: str, partition: int) -> None:
        """Drop the in-flight range of one input partition."""
        self._settle()
        with self._transaction():
            self._db.execute(
                "DELETE FROM in_flight WHERE in_topic = ? AND in_partition = ?", (topic, partition)
            )

    def count(self) -> int:
        """Series held, counting what a background write is writing (without waiting)."""
        pending = self._pending
        if pending is None:
            return self._count()
        if self._held_before == 0:  # e.g. a new instance's first restore: no lookups
            return len(pending.rows)
        # One read transaction: the count and the lookups see the same snapshot, from before
        # or after the background write commits.
        rows = set(pending.rows)
        with self._transaction():
            held = self._count()
            present = self._present(list(rows | pending.deleted))
        gained = len(rows - present)
        lost = len((pending.deleted - rows) & present)
        return held + gained - lost

    def close(self) -> None:
        """Wait for a background write, then release the database and its lock."""
        try:
            self._settle()
        finally:
            self._db.close()
            self._lock.close()

    def _count(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM series").fetchone()[0])

    def _present(self, names: Sequence[str]) -> set[str]:
        """Those of ``names`` that have a row (in the connection's current snapshot)."""
        present: set[str] = set()
        for start in range(0, len(names), _LOOKUP_CHUNK):
            chunk = names[start : start + _LOOKUP_CHUNK]
            marks = ",".join("?" * len(chunk))
            cursor = self._db.execute(f"SELECT name FROM series WHERE name IN ({marks})", chunk)
            present.update(row[0] for row in cursor)
        return present

    def _settle(self) -> None:
        """Wait for the background write, if any; raise its error if it failed."""
        writer = self._writer
        if writer is None:
            return
        writer.join()
        self._writer = self._pending = None
        error, self._write_error = self._write_error, None
        if error is not None:
            raise RuntimeError(f"background write to state store {self.path} failed") from error

    def _write_pending(self, pending: PendingRows, positions: dict[tuple[str, int], int]) -> None:
        """The background write (its own thread and connection)."""
        started = time.monotonic()
        try:
            db = _connect(self.path)
            try:
                with _Transaction(db, "BEGIN IMMEDIATE"):
                    db.executemany(_DELETE, [(name,) for name in pending.deleted])
                    db.executemany(_UPSERT, pending.rows.values())
                    _write_positions(db, positions)
            finally:
                db.close()
        except BaseException as exc:  # handed to the owner by _settle
            self._write_error = exc
            return
        # Written: get() and count() read it all from SQLite now, and the rows (and the
        # changelog records behind them) can be freed before the owner's next call.
        self._pending = None
        log.info(
            "state written",
            series=len(pending.rows),
            deleted=pending.deleted_only(),
            seconds=round(time.monotonic() - started, 3),
        )

    def _transaction(self) -> _Transaction:
        return _Transaction(self._db)


class _Transaction:
    def __init__(self, db: sqlite3.Connection, begin: str = "BEGIN") -> None:
        self._db = db
        self._begin = begin

    def __enter__(self) -> None:
        self._db.execute(self._begin)

    def __exit__(self, exc_type: object, *_: object) -> None:
        self._db.execute("ROLLBACK" if exc_type else "COMMIT")


def _connect(path: Path) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are explicit), synced at WAL
    checkpoints only (``synchronous`` is per connection)."""
    db = sqlite3.connect(path, isolation_level=None, timeout=_BUSY_TIMEOUT_S)
    db.execute("PRAGMA synchronous=NORMAL")
    return db


def _write_positions(db: sqlite3.Connection, positions: dict[tuple[str, int], int]) -> None:
    db.executemany(_POSITION, [(t, p, position) for (t, p), position in positions.items()])


def _overlay(found: dict[str, StoredState], names: Sequence[str], pending: PendingRows) -> None:
    """Apply ``pending`` to the rows ``found`` for ``names``, as its write will."""
    rows, deleted = pending.rows, pending.deleted
    for name in names:
        row = rows.get(name)
        if name in deleted:
            found.pop(name, None)
            if row is not None:
                found[name] = StoredState(*row)
        elif row is not None:
            old = found.get(name)
            if old is None or replaces(row, old):
                found[name] = StoredState(*row)


def _chunks(rows: Iterable[StoredState], size: int) -> Iterable[list[StoredState]]:
    chunk: list[StoredState] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
