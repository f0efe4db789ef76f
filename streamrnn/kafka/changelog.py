"""Read changelog partitions back to their end, for restoring series state.

A changelog topic holds one record per series per checkpoint, keyed by series and written
to the same partition number as the series' input partition (co-partitioned), so the state
of an input partition is exactly one changelog partition. Knows nothing of torch.

A restore reads 100,000s of records of about a kilobyte, so the reader hands them on in the
client's own batches of messages (no object of ours per record) and never waits for a batch
to fill up once the partitions' ends are near; :class:`ChangelogFold` then keeps the latest
committed record of each series, so the store writes each series once however many
checkpoints the topic still holds of it.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Mapping, Sequence, ValuesView
from typing import cast

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from streamrnn.config import LibrdkafkaValue
from streamrnn.state.codec import OFFSET_BYTES, offset_of
from streamrnn.state.store import PendingRows, StoredRow

__all__ = [
    "BATCH_RECORDS",
    "LABELS_HEADER",
    "MODEL_HEADER",
    "ChangelogFold",
    "read_changelog",
]

#: Headers of a changelog record besides key (series) and value (encoded state).
MODEL_HEADER = "streamrnn.model"
LABELS_HEADER = "streamrnn.labels"

#: Most records in one batch of :func:`read_changelog`.
BATCH_RECORDS = 10_000
#: Longest wait for a batch to fill, seconds: the batch in hand is returned after it, so the
#: end of the partitions (marked by events behind the last records) costs at most this.
_BATCH_WAIT_S = 0.02

#: Fetch settings of the reader: no 1 s pause (the default) each time its local queue is
#: full, which a restore that reads as fast as the broker serves keeps hitting. (Larger
#: fetches and a deeper queue were measured no faster against a local broker.)
_READER_CONF: dict[str, LibrdkafkaValue] = {"fetch.queue.backoff.ms": 5}


def read_changelog(
    conf: dict[str, LibrdkafkaValue],
    partitions: Sequence[tuple[str, int, int]],
    ends: dict[tuple[str, int], int],
    timeout_s: float = 120.0,
) -> Iterator[list[Message]]:
    """Every record of each (topic, partition, start offset) up to the partition's end, in
    batches of at most :data:`BATCH_RECORDS` messages, each partition in offset order.

    Every message has a key; one without a value is a tombstone. ``conf`` is a client
    configuration (bootstrap and security settings); the reader uses no consumer group and
    commits nothing. With ``isolation.level`` read_committed (the librdkafka default)
    records of aborted transactions are skipped and the end is the last stable offset. A
    start before the log start (compacted or deleted) reads from the log start. ``ends``
    receives each partition's end offset (where a later read resumes). Raises TimeoutError
    when the end is not reached within ``timeout_s`` seconds.
    """
    if not partitions:
        return
    consumer = Consumer(
        {
            **_READER_CONF,
            **conf,
            "group.id": "streamrnn-changelog-reader",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "auto.offset.reset": "earliest",
        }
    )
    try:
        consumer.assign([TopicPartition(t, p, max(0, start)) for t, p, start in partitions])
        open_parts = {(t, p) for t, p, _ in partitions}
        deadline = time.monotonic() + timeout_s
        while open_parts:
            if time.monotonic() > deadline:
                raise TimeoutError(f"changelog not read to its end within {timeout_s} s")
            batch = consumer.consume(num_messages=BATCH_RECORDS, timeout=_BATCH_WAIT_S)
            records = _records(batch, open_parts, ends)
            if records:
                yield records
    finally:
        consumer.close()


def _records(
    batch: list[Message], open_parts: set[tuple[str, int]], ends: dict[tuple[str, int], int]
) -> list[Message]:
    """The records of ``batch`` (those with a key); its events close partitions at their
    end (into ``ends``) or raise, unless transient."""
    records = [msg for msg in batch if msg.error() is None and msg.key() is not None]
    if len(records) == len(batch):
        return records
    for msg in batch:
        err = msg.error()
        if err is None:
            continue
        topic, partition = msg.topic(), msg.partition()
        assert topic is not None and partition is not None
        if err.code() == KafkaError._PARTITION_EOF:
            if (topic, partition) in open_parts:
                open_parts.discard((topic, partition))
                ends[(topic, partition)] = int(msg.offset() or 0)
            continue
        if err.fatal() or err.code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
            raise KafkaException(err)
        # transient (e.g. broker briefly unreachable): keep reading
    return records


#: Bytes of state a :class:`ChangelogFold` holds before handing them on (about 120,000
#: series of 1.1 kB): what a restore adds to the daemon's memory, at most twice over (one
#: part being written while the next is folded).
FOLD_BUDGET_BYTES = 128 * 1024 * 1024


class ChangelogFold:
    """The latest committed state of each series among changelog records read in log order,
    as changes for the store (:class:`PendingRows`).

    ``sources`` maps each changelog (topic, partition) to its input topic, input partition
    and that partition's committed offset. A record whose state reflects an input offset
    beyond the committed one describes a batch whose offsets were never committed (a crash
    between flush and commit): that batch will be processed again, so the record is
    skipped. Of the others, the last of each series in log order is kept (checkpoints write
    a series' records in the order its state evolved), and a tombstone deletes the series
    (until a later record). Written to the store (newest wins against a stored row of the
    same input partition), that gives what writing every record in log order gives, as
    each input partition's records reflect non-decreasing offsets.
    """

    def __init__(self, sources: dict[tuple[str, int], tuple[str, int, int]]) -> None:
        self._sources: _Sources = {}
        for (topic, partition), source in sources.items():
            self._sources.setdefault(topic, {})[partition] = source
        #: Series key → its latest committed record.
        self._latest: dict[bytes, Message] = {}
        self._deleted: set[bytes] = set()
        self._row_bytes = 1
        #: Records offered, and those skipped as uncommitted (since construction).
        self.records = 0
        self.skipped = 0

    def add(self, batch: Sequence[Message]) -> None:
        """Fold a batch of :func:`read_changelog`: the hot loop of a restore, a dict
        operation per record and no object built (about 0.4 µs per record)."""
        latest, deleted, sources = self._latest, self._deleted, self._sources
        from_bytes = int.from_bytes
        skipped = 0
        for msg in batch:
            key, value = msg.key(), msg.value()
            assert key is not None
            if value is None:
                latest.pop(key, None)
                deleted.add(key)
                continue
            committed = sources[msg.topic()][msg.partition()][2]
            if from_bytes(value[OFFSET_BYTES], "little", signed=True) > committed:  # offset_of()
                skipped += 1
                continue
            latest[key] = msg
        if latest:  # blobs are of one size: any held one tells the memory per series
            self._row_bytes = len(next(reversed(latest.values())).value() or b"") or 1
        self.records += len(batch)
        self.skipped += skipped

    @property
    def full(self) -> bool:
        """Whether the held states reach :data:`FOLD_BUDGET_BYTES`."""
        return len(self._latest) * self._row_bytes >= FOLD_BUDGET_BYTES

    def take(self) -> PendingRows:
        """The changes held (the latest record of each series, the series deleted), which
        are then forgotten. Their rows are built when asked for (:class:`_FoldedRows`)."""
        rows = _FoldedRows(self._latest, self._sources)
        pending = PendingRows(rows, {key.decode() for key in self._deleted})
        self._latest, self._deleted = {}, set()
        return pending

    def parts(self, batches: Iterable[Sequence[Message]]) -> Iterator[PendingRows]:
        """Fold ``batches``; the changes in parts of at most about :data:`FOLD_BUDGET_BYTES`,
        in log order (the last one possibly empty)."""
        for batch in batches:
            self.add(batch)
            if self.full:
                yield self.take()
        yield self.take()


#: Changelog topic → partition → (input topic, input partition, committed offset).
_Sources = dict[str | None, dict[int | None, tuple[str, int, int]]]


class _FoldedRows(Mapping[str, StoredRow]):
    """The rows of a fold's latest records by series name, each built when asked for.

    Building 100,000 rows (name, headers) takes about 0.1 s: a restore hands them to the
    store without, and the store's background write builds them as it writes them.
    Read-only, so the restoring thread and the writer may both read it.
    """

    def __init__(self, latest: dict[bytes, Message], sources: _Sources) -> None:
        self._latest = latest
        self._sources = sources
        self._models: dict[bytes, str] = {}  # the raw header of nearly every record is one

    def __getitem__(self, name: str) -> StoredRow:
        return self._row(name, self._latest[name.encode()])

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.encode() in self._latest

    def __iter__(self) -> Iterator[str]:
        return (key.decode() for key in self._latest)

    def __len__(self) -> int:
        return len(self._latest)

    def values(self) -> ValuesView[StoredRow]:
        """The rows, built as they are iterated (what the store's background write does)."""
        return _FoldedValues(self)

    def rows(self) -> Iterator[StoredRow]:
        """The rows, built as they are iterated (one name decoded per row, none encoded)."""
        return (self._row(key.decode(), msg) for key, msg in self._latest.items())

    def _row(self, name: str, msg: Message) -> StoredRow:
        topic, partition, _ = self._sources[msg.topic()][msg.partition()]
        blob = msg.value() or b""
        model, labels = "", None
        for header, raw in cast(_Headers, msg.headers() or ()):
            if header == MODEL_HEADER and raw:
                model = self._models.get(raw) or self._models.setdefault(raw, raw.decode())
            elif header == LABELS_HEADER and raw:
                labels = raw.decode()
        return (name, topic, partition, offset_of(blob), model, labels, blob)


class _FoldedValues(ValuesView[StoredRow]):
    """:meth:`_FoldedRows.values`: iterated without looking every name up again."""

    _mapping: _FoldedRows

    def __iter__(self) -> Iterator[StoredRow]:
        return self._mapping.rows()


#: A changelog record's headers, as the daemon writes them (a module-level alias: written
#: inside the loop, ``list[...]`` would build a new generic alias per record).
_Headers = list[tuple[str, bytes]]
