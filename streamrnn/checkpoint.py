"""Checkpoints, restores and rebalances: how series state and input offsets stay consistent.

A *checkpoint* makes everything the daemon did since the previous one durable, in this order
(see :meth:`Checkpointer.checkpoint`)::

    1. produce a changelog record for every series that changed (alerts, forecasts and
       dead letters of the same batches were produced as they were made)
    2. flush the producer: wait until the broker has every record of 1
       (exactly_once: the transaction commit in 3 does this flush)
    3. commit the input offsets (exactly_once: sent to and committed with the transaction)
    4. now and then, write the local snapshot (series changed since the last one)

The loop's periodic checkpoints (at_least_once) do not wait for 2 and 3: they note the
offsets with a mark of the producer's records, and :meth:`Checkpointer.settle` (after every
batch) commits them, asynchronously, once the broker has acknowledged every record up to
that mark. The loop keeps processing meanwhile (waiting cost every point's latency ~15 ms a
second), and the order above still holds for everything committed. Revocations, shutdown,
eviction and snapshot checkpoints wait, as does any checkpoint while a record awaits
re-sending.

Why this order: after a crash, input is re-read from the committed offsets. Because 3
follows 1–2, every committed offset has its alerts and its state in Kafka: nothing is lost.
A crash between 2 and 3 leaves records of a batch whose offsets were not committed; restore
skips state records newer than the committed offset (the batch will be processed again from
the older state), and in at_least_once mode its alerts are produced again with the same
``alert_id``. In exactly_once mode such records belong to an aborted transaction and no
read_committed subscriber ever sees them. The snapshot comes last so the local store never
holds state beyond a committed offset.

*Restore* (an input partition is assigned): fold the partition's changelog, from where the
local store left off, into the store — keeping only state at or before the committed offset,
the latest of each series — and load series into memory lazily when their points arrive.
*Revocation*: checkpoint, then move the partitions' series to the store.

*Abandon* (an exception escaped the loop): from then on nothing is committed, flushed into the
store or checkpointed, not by the revocation that closing the consumer triggers, nor by
shutdown: the batch that failed may be half done (its offsets are already noted, some of its
alerts not produced), so the next start re-reads everything after the last commit that
preceded it, from the state that commit describes. Knows nothing of torch.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence

import numpy as np
from confluent_kafka import KafkaError, KafkaException, Message, Producer, TopicPartition

from streamrnn.arrays import IntArray
from streamrnn.config import LibrdkafkaValue, Settings
from streamrnn.kafka.changelog import (
    BATCH_RECORDS,
    LABELS_HEADER,
    MODEL_HEADER,
    ChangelogFold,
    read_changelog,
)
from streamrnn.kafka.sink import AckedSink
from streamrnn.kafka.source import BatchSource, as_partitions, position_of
from streamrnn.logs import get_logger
from streamrnn.state.manager import SeriesStateManager

__all__ = ["Checkpointer"]

log = get_logger("checkpoint")

#: Seconds a transaction call (commit, abort, send offsets) may take before it is retried.
TXN_TIMEOUT_S = 30.0
#: Seconds the abort of an abandoned transaction may take.
ABANDON_ABORT_S = 5.0
#: Seconds a rebalance callback may spend on its checkpoint (below max.poll.interval.ms).
REBALANCE_CHECKPOINT_S = 60.0
#: Most changelog records read between two progress reports during a restore (one report
#: per batch of the reader).
PROGRESS_EVERY = BATCH_RECORDS


class Checkpointer:
    """Owns the order of checkpoints, restores and rebalance handling; see module docstring."""

    def __init__(
        self,
        settings: Settings,
        source: BatchSource,
        producer: Producer,
        sink: AckedSink,
        manager: SeriesStateManager,
        reader_conf: dict[str, LibrdkafkaValue],
        on_progress: Callable[[], None] | None = None,
    ) -> None:
        """``on_progress`` is called now and then during a long state restore (which runs
        inside a rebalance callback, not in the loop), so liveness checks see it working."""
        self.settings = settings
        self._on_progress = on_progress
        self.exactly_once = settings.delivery.mode == "exactly_once"
        self._source = source
        self._producer = producer
        self._sink = sink
        self.manager = manager
        self._reader_conf = reader_conf
        #: Per input partition: the offset after the last message handled.
        self._next: dict[tuple[str, int], int] = {}
        #: Per input partition: the offset last committed (or found committed, or being
        #: committed asynchronously).
        self._committed: dict[tuple[str, int], int] = {}
        #: Checkpoints taken without waiting, oldest first: the sink's epoch (see
        #: :meth:`AckedSink.mark`) and the offsets to commit once it is acknowledged.
        self._unsettled: deque[tuple[int, dict[tuple[str, int], int]]] = deque()
        self._last_checkpoint = time.monotonic()
        self._last_snapshot = time.monotonic()
        #: Series states read back from changelogs (since start).
        self.restored_series = 0
        #: Set by :meth:`abandon`: commit nothing more.
        self._abandoned = False

    # -- life cycle ---------------------------------------------------------------------

    def start(self) -> None:
        """exactly_once: fence any previous incarnation of this transactional.id (aborting
        its open transaction) and open the first transaction."""
        if self.exactly_once:
            self._producer.init_transactions(TXN_TIMEOUT_S)
            self._producer.begin_transaction()

    def close(self, give_up: Callable[[], bool]) -> bool:
        """Final checkpoint and snapshot (before the consumer leaves the group)."""
        return self.checkpoint(give_up, snapshot=True)

    def abandon(self) -> None:
        """An exception escaped the loop: commit nothing from now on (see the module
        docstring); exactly_once: abort the open transaction (best effort: the next start
        fences it anyway). Never raises."""
        self._abandoned = True
        self._unsettled.clear()
        if self.exactly_once:
            try:
                self._producer.abort_transaction(ABANDON_ABORT_S)
            except Exception as exc:  # dying already; the next start aborts it
                log.warning("abort after a failure did not complete", error=str(exc))
        log.error("abandoned: nothing more is committed by this process")

    def committed(self) -> dict[tuple[str, int], int]:
        """The offsets committed (or being committed) per input partition: the offset after
        the last message whose work is delivered."""
        return dict(self._committed)

    # -- the batch path -----------------------------------------------------------------

    def make_room(self, names: Sequence[str], give_up: Callable[[], bool]) -> None:
        """Before a batch: bring its series into memory (from the local store where they
        have state), evicting the least recently seen series when memory is full."""
        manager = self.manager
        new = manager.unknown(names)
        if not new:
            return
        table = manager.table
        need = len(table) + len(new) - table.max_series
        if need > 0:
            if manager.has_dirty() or self._unsettled:
                # Only clean series can be evicted: their state must be in the changelog,
                # and committed (the store holds only committed state).
                self.checkpoint(give_up)
            manager.evict_least_recent(need + table.max_series // 10)
        manager.load(new)

    def handled(
        self, messages: Sequence[Message], origins: Sequence[Message], slots: IntArray
    ) -> None:
        """After a batch: its ``messages`` are handled; the engine stepped the series of
        ``origins[i]`` (the decoded ones) in ``slots[i]`` (-1: none)."""
        nxt = self._next
        for msg in messages:
            key = (msg.topic(), msg.partition())
            offset = msg.offset()
            assert offset is not None
            if offset >= nxt.get(key, -1):  # type: ignore[arg-type]
                nxt[key] = offset + 1  # type: ignore[index]
        pid_of: dict[tuple[str | None, int | None], int] = {}
        pids = np.empty(len(origins), dtype=np.int64)
        for i, msg in enumerate(origins):
            key = (msg.topic(), msg.partition())
            pid = pid_of.get(key)
            if pid is None:
                pid = pid_of[key] = self.manager.partition_id(*position_of(msg)[:2])
            pids[i] = pid
        live = slots >= 0
        self.manager.note_processed(slots[live], pids[live])

    def due(self) -> bool:
        """Whether ``delivery.commit_interval_s`` has passed since the last checkpoint."""
        return time.monotonic() - self._last_checkpoint >= self.settings.delivery.commit_interval_s

    def checkpoint(
        self, give_up: Callable[[], bool], snapshot: bool = False, wait: bool = True
    ) -> bool:
        """One checkpoint, in the order the module docstring explains. Returns False when
        it could not complete (outage or shutdown deadline); nothing beyond what was
        delivered is committed then, and the next checkpoint tries again.

        ``wait`` False (at_least_once only; the loop's periodic checkpoints): steps 2 and 3
        do not block the loop. The offsets are committed, asynchronously, by
        :meth:`settle` once the broker has acknowledged every record sent before them, so
        the order of the module docstring holds for what is committed; the loop goes on
        meanwhile. Revocations, shutdown, eviction and snapshots wait (the snapshot may
        only hold committed state)."""
        if self._abandoned:
            return False
        self._last_checkpoint = time.monotonic()
        # 1. changelog records of the series that changed, co-partitioned with the input
        self._send_changelog()
        offsets = {k: v for k, v in self._next.items() if self._committed.get(k) != v}
        now = time.monotonic()
        snapshot = snapshot or now - self._last_snapshot >= self.settings.state.snapshot_interval_s
        if self.exactly_once:
            # 2 + 3. the transaction carries the offsets; its commit flushes the producer
            if not self._commit_transaction(offsets):
                return False
        elif not wait and not snapshot and not self._sink.has_failed():
            # 2 + 3, later: see settle()
            if offsets:
                self._unsettled.append((self._sink.mark(), offsets))
            self.settle()
            return True
        else:
            # 2. flush: every alert, dead letter and state record acknowledged
            if not self._sink.wait_acked(give_up):
                return False
            # 3. commit the input offsets (those of unsettled checkpoints are among them)
            self._unsettled.clear()
            try:
                self._source.commit(offsets)
            except KafkaException as exc:
                # E.g. a rebalance took the partitions: their new owner re-reads the batches
                # and skips our uncommitted state records.
                log.warning("offset commit failed; will retry", error=str(exc))
                return False
        self._committed.update(offsets)
        # 4. the local snapshot, only ever of committed state
        if snapshot:
            self._snapshot()
        return True

    def settle(self) -> None:
        """Commit (asynchronously) the offsets of the newest checkpoint taken with
        ``wait=False`` whose records, and all records before them, the broker has
        acknowledged; cheap when there is none. Called after every batch, once its delivery
        reports are served. A failed commit is reported by :meth:`on_commit`."""
        if self._abandoned:
            return
        unsettled = self._unsettled
        offsets: dict[tuple[str, int], int] = {}
        while unsettled and self._sink.acked_through(unsettled[0][0]):
            offsets.update(unsettled.popleft()[1])  # partitions no longer ours: see _forget
        if not offsets:
            return
        try:
            self._source.commit(offsets, asynchronous=True)
        except KafkaException as exc:
            log.warning("offset commit failed; will retry", error=str(exc))
            return
        self._committed.update(offsets)

    def on_commit(self, error: KafkaError | None, parts: list[TopicPartition]) -> None:
        """The consumer's report of an offset commit: a failed one is logged and its
        partitions are committed again by the next checkpoint (unless revoked meanwhile)."""
        failed = parts if error is not None else [tp for tp in parts if tp.error is not None]
        if not failed:
            return
        log.warning(
            "offset commit failed; will retry",
            error=str(error or failed[0].error),
            partitions=_names([(tp.topic, tp.partition) for tp in failed]),
        )
        for tp in failed:
            key = (tp.topic, tp.partition)
            if self._committed.get(key) == tp.offset:
                del self._committed[key]

    # -- rebalances ---------------------------------------------------------------------

    def on_assign(self, parts: list[TopicPartition]) -> None:
        """Restore the state of newly assigned partitions before any of their messages."""
        keys = [(tp.topic, tp.partition) for tp in parts]
        if keys:
            committed = self._source.committed(keys, TXN_TIMEOUT_S)
            self._restore(committed)
            self._next.update(committed)
            self._committed.update(committed)
        log.info("partitions assigned", partitions=_names(keys))

    def on_revoke(self, parts: list[TopicPartition]) -> None:
        """Checkpoint, then move the revoked partitions' series out of memory (abandoned:
        forget them; their committed state is in the changelog)."""
        keys = [(tp.topic, tp.partition) for tp in parts]
        if self._abandoned:
            dropped = self.manager.drop_partitions(keys)
            self._forget(keys)
            log.warning(
                "partitions revoked after a failure",
                partitions=_names(keys),
                series_dropped=dropped,
            )
            return
        deadline = time.monotonic() + REBALANCE_CHECKPOINT_S
        if not self.checkpoint(lambda: time.monotonic() > deadline):
            log.warning("checkpoint before revocation failed; the new owner re-reads")
        moved = self.manager.evict_partitions(keys)
        self._forget(keys)
        log.info("partitions revoked", partitions=_names(keys), series_saved=moved)

    def on_lost(self, parts: list[TopicPartition]) -> None:
        """Partitions taken without a revocation (session expired): their uncommitted work
        belongs to the new owner now. exactly_once: abort and rewind what remains."""
        keys = [(tp.topic, tp.partition) for tp in parts]
        log.warning("partitions lost", partitions=_names(keys))
        self._forget(keys)
        self.manager.drop_partitions(keys)
        if self.exactly_once and not self._abandoned:
            self.rewind()

    def rewind(self) -> None:
        """exactly_once: abort the open transaction and return to the last committed state
        (state restored from the changelog, input read again from the committed offsets)."""
        try:
            self._producer.abort_transaction(TXN_TIMEOUT_S)
        except KafkaException as exc:
            if exc.args[0].fatal():
                raise
            log.warning("abort failed", error=str(exc))
        self._sink.discard()
        self.manager.drop_partitions(None)
        keys = self._source.assignment()
        if keys:
            committed = self._source.committed(keys, TXN_TIMEOUT_S)
            self._restore(committed)
            self._next = dict(committed)
            self._committed = dict(committed)
            self._source.seek(committed)
        self._producer.begin_transaction()
        log.warning("transaction aborted; rewound to the last committed offsets")

    # -- internals ----------------------------------------------------------------------

    def _send_changelog(self) -> None:
        """Step 1: a changelog record for every series that changed, co-partitioned with
        its input partition and stamped with the offset about to be committed."""
        for (topic, partition), state in self.manager.take_dirty(self._next):
            headers: list[tuple[str, str | bytes | None]] = [(MODEL_HEADER, state.model.encode())]
            if state.labels:
                headers.append((LABELS_HEADER, state.labels.encode()))
            self._sink.send(
                self._changelog(topic), state.name.encode(), state.blob, headers, partition
            )

    def _changelog(self, input_topic: str) -> str:
        return self.settings.topics.changelog_of(input_topic, self.settings.kafka.group_id)

    def _commit_transaction(self, offsets: dict[tuple[str, int], int]) -> bool:
        try:
            if offsets:
                self._producer.send_offsets_to_transaction(
                    as_partitions(offsets), self._source.group_metadata(), TXN_TIMEOUT_S
                )
            while True:
                try:
                    self._producer.commit_transaction(TXN_TIMEOUT_S)
                    break
                except KafkaException as exc:
                    if not exc.args[0].retriable():
                        raise
                    log.warning("transaction commit timed out; retrying", error=str(exc))
        except KafkaException as exc:
            err: KafkaError = exc.args[0]
            if err.fatal():
                raise
            log.warning("transaction failed", error=str(err))
            self.rewind()
            return False
        self._sink.discard()  # every record was delivered with the commit
        self._producer.begin_transaction()
        return True

    def _restore(self, committed: dict[tuple[str, int], int]) -> None:
        started = time.monotonic()
        store = self.manager.store
        # Every assigned partition's changelog is read in one pass, folded to the latest
        # committed state of each series (memory: at most about two FOLD_BUDGET_BYTES).
        inputs = {(self._changelog(t), p): (t, p) for t, p in committed}
        starts = [(c, p, store.changelog_position(c, p)) for c, p in inputs]
        ends: dict[tuple[str, int], int] = {}
        fold = ChangelogFold({c: (*inputs[c], committed[inputs[c]]) for c in inputs})
        batches = self._reporting(read_changelog(self._reader_conf, starts, ends))
        restored, deleted = self.manager.merge_changelog(fold.parts(batches), committed, ends)
        self.restored_series += restored
        log.info(
            "state restored",
            partitions=_names(list(committed)),
            series=restored,
            deleted_series=deleted,
            records=fold.records,
            skipped_uncommitted=fold.skipped,
            stored_series=store.count(),
            seconds=round(time.monotonic() - started, 3),
        )

    def _reporting(self, batches: Iterator[list[Message]]) -> Iterator[list[Message]]:
        """``batches`` (of at most :data:`PROGRESS_EVERY` records), calling ``on_progress``
        after each."""
        for batch in batches:
            yield batch
            if self._on_progress is not None:
                self._on_progress()

    def _snapshot(self) -> None:
        started = time.monotonic()
        owned = {(self._changelog(t), p) for t, p in self._committed}
        positions = {k: v for k, v in self._sink.positions.items() if k in owned}
        written = self.manager.snapshot(positions)
        self._last_snapshot = time.monotonic()
        log.info(
            "snapshot written", series=written, seconds=round(self._last_snapshot - started, 3)
        )

    def _forget(self, keys: list[tuple[str, int]]) -> None:
        for _, offsets in self._unsettled:
            for key in keys:
                offsets.pop(key, None)
        for key in keys:
            self._next.pop(key, None)
            self._committed.pop(key, None)
            self._sink.positions.pop((self._changelog(key[0]), key[1]), None)


def _names(keys: Sequence[tuple[str, int]]) -> list[str]:
    return [f"{t}[{p}]" for t, p in keys]
