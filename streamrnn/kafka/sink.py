"""Produce records and know when the broker has acknowledged every one of them.

The daemon commits input offsets only once every record sent before them is acknowledged,
so an alert is never lost: either after :meth:`AckedSink.wait_acked` returns True (which
also produces failed records again, with backoff, until the broker takes them), or, not
waiting, once :meth:`AckedSink.acked_through` says so for a :meth:`AckedSink.mark` taken
when the offsets were.

A record that can never be taken as it is (larger than the producer's ``message.max.bytes``,
refused at once by ``produce()``, or than the topic's ``max.message.bytes``, refused by the
broker) is not retried: it is handed to the ``on_refused`` callback, which returns what to
send instead (e.g. a smaller dead letter) or None; so such a record neither kills the loop
nor blocks every later commit. Knows nothing of torch.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from confluent_kafka import KafkaError, KafkaException, Message, Producer

__all__ = ["REFUSED_CODES", "AckedSink", "Headers", "Record"]

Headers = list[tuple[str, str | bytes | None]]
#: (topic, key, value, headers, partition): everything needed to produce a record again.
Record = tuple[str, bytes | None, bytes | None, Headers | None, int]

#: Error codes that mean this record will never be taken as it is (too large for the
#: client or the topic); retrying would block every later commit for good.
REFUSED_CODES = frozenset({KafkaError.MSG_SIZE_TOO_LARGE, KafkaError.RECORD_LIST_TOO_LARGE})

_Refused = Callable[[Record, KafkaError], Record | None]


class AckedSink:
    """A producer wrapper that tracks delivery reports of everything it sent."""

    def __init__(
        self,
        producer: Producer,
        on_error: Callable[[str, KafkaError], None],
        on_refused: _Refused | None = None,
    ) -> None:
        """``on_error``: a delivery failed and the record will be sent again; ``on_refused``:
        a record will never be taken as it is; it returns the record to send instead, or
        None to let it go (None callback: every refusal is let go; the callback logs)."""
        self._producer = producer
        self._on_error = on_error
        self._on_refused = on_refused or (lambda _record, _err: None)
        self._failed: list[Record] = []
        #: Per (topic, partition) written to with an explicit partition: the offset after the
        #: last acknowledged record (changelog positions for the local state store).
        self.positions: dict[tuple[str, int], int] = {}
        self._generation = 0
        #: Records sent in the current epoch (see :meth:`mark`) and not yet reported: a
        #: one-item list, so each delivery callback holds its own epoch's count.
        self._epoch = 0
        self._unreported = [0]
        #: Ended epochs that still have unreported records, by epoch.
        self._marked: dict[int, list[int]] = {}

    def send(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: Headers | None = None,
        partition: int = -1,
    ) -> None:
        """Queue one record (``partition`` -1: the partitioner picks one by key); blocks
        briefly (serving callbacks) while the local queue is full. A record the client
        refuses at once goes to ``on_refused`` (see the module docstring)."""
        self._send((topic, key, value, headers, partition), self._unreported)

    def _send(self, record: Record, unreported: list[int]) -> None:
        """:meth:`send` of ``record``, counted in the epoch whose count is ``unreported``."""
        topic, key, value, headers, partition = record
        report = self._reporter(topic, partition, record, unreported)
        while True:
            try:
                self._producer.produce(
                    topic,
                    value=value,
                    key=key,
                    headers=headers,
                    partition=partition,
                    on_delivery=report,
                )
                unreported[0] += 1
                return
            except BufferError:
                self._producer.poll(0.05)
            except KafkaException as exc:
                err: KafkaError = exc.args[0]
                if err.code() not in REFUSED_CODES:
                    raise
                self._refused(record, err, unreported)
                return

    def _refused(self, record: Record, err: KafkaError, unreported: list[int]) -> None:
        """Send what ``on_refused`` puts in place of a refused ``record``, if anything, in
        the refused record's epoch (so no checkpoint of that epoch settles before it)."""
        replacement = self._on_refused(record, err)
        if replacement is not None:
            self._send(replacement, unreported)

    def send_many(self, topic: str, keys: Sequence[bytes], values: Sequence[bytes]) -> None:
        """Queue ``values[i]`` keyed by ``keys[i]`` (partition by key, no headers): the bulk
        form of :meth:`send` for one-record-per-point topics (one delivery callback for the
        whole call instead of one closure per record)."""
        unreported = self._unreported
        report = self._reporter(topic, -1, None, unreported)
        produce = self._producer.produce
        for key, value in zip(keys, values, strict=True):
            while True:
                try:
                    # Positional (topic, value, key, partition, on_delivery): keyword
                    # arguments cost ~0.4 us more per record.
                    produce(topic, value, key, -1, report)
                    unreported[0] += 1
                    break
                except BufferError:
                    self._producer.poll(0.05)
                except KafkaException as exc:
                    err: KafkaError = exc.args[0]
                    if err.code() not in REFUSED_CODES:
                        raise
                    self._refused((topic, key, value, None, -1), err, unreported)
                    break

    def _reporter(
        self, topic: str, partition: int, record: Record | None, unreported: list[int]
    ) -> Callable[[KafkaError | None, Message], None]:
        """A delivery callback for records sent to ``topic`` (``partition`` >= 0: explicit,
        its acknowledged offsets are tracked in :attr:`positions`). A failed record is
        queued for re-sending: ``record``, or (None) rebuilt from the message; one the
        broker refused for good goes to ``on_refused`` instead."""
        generation = self._generation

        def report(err: KafkaError | None, msg: Message) -> None:
            if generation != self._generation:
                return  # discarded with its aborted transaction
            unreported[0] -= 1
            if err is None:
                if partition >= 0:
                    offset = msg.offset()
                    if offset is not None and offset >= 0:
                        at = (topic, partition)
                        self.positions[at] = max(self.positions.get(at, 0), offset + 1)
            else:
                failed = record or (topic, msg.key(), msg.value(), None, -1)
                if err.code() in REFUSED_CODES:
                    self._refused(failed, err, unreported)
                    return
                self._failed.append(failed)
                self._on_error(topic, err)

        return report

    def mark(self) -> int:
        """End the current epoch and return it: :meth:`acked_through` of it tells when every
        record sent so far has been acknowledged, without waiting for later ones."""
        done = self._epoch
        if self._unreported[0]:
            self._marked[done] = self._unreported
        self._epoch, self._unreported = done + 1, [0]
        return done

    def acked_through(self, epoch: int) -> bool:
        """Whether every record sent up to the end of ``epoch`` (from :meth:`mark`) has been
        acknowledged (as far as the delivery reports served so far tell) and none failed.
        A failed record counts as unacknowledged until :meth:`wait_acked` delivers it."""
        if self._failed:
            return False
        for done in [e for e, count in self._marked.items() if count[0] == 0]:
            del self._marked[done]
        if epoch >= self._epoch and self._unreported[0]:
            return False
        return all(e > epoch for e in self._marked)

    def has_failed(self) -> bool:
        """Whether a record's delivery failed and awaits re-sending (by :meth:`wait_acked`)."""
        return bool(self._failed)

    def serve_reports(self) -> None:
        """Run the delivery callbacks of records acknowledged so far, without waiting.

        Called after every batch: otherwise they pile up until the next checkpoint's flush,
        which then spends tens of milliseconds running a second's worth of them (~75,000 at
        75,000 forecast records/s) while the loop, and every point's latency, waits."""
        self._producer.poll(0)

    def wait_acked(self, should_give_up: Callable[[], bool]) -> bool:
        """Block until every record sent so far is acknowledged; re-send failed ones.

        Returns False only when ``should_give_up()`` turns true first (shutdown deadline);
        records still pending then are neither acknowledged nor lost from the input, since
        the caller does not commit their offsets.
        """
        backoff_s = 0.1
        while True:
            self._producer.flush(1.0)
            pending = self._pending()
            if pending == 0 and not self._failed:
                return True
            if should_give_up():
                return False
            if pending == 0 and self._failed:
                retry, self._failed = self._failed, []
                time.sleep(backoff_s)
                backoff_s = min(backoff_s * 2, 5.0)
                for topic, key, value, headers, partition in retry:
                    self.send(topic, key, value, headers, partition)

    def _pending(self) -> int:
        """Records sent and not yet reported, in all epochs."""
        return self._unreported[0] + sum(count[0] for count in self._marked.values())

    def discard(self) -> None:
        """Forget failed and pending records (their transaction was aborted)."""
        self._failed = []
        self._generation += 1
        self._unreported, self._marked = [0], {}
