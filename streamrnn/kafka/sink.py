"""Produce records and know when the broker has acknowledged every one of them.

The daemon commits input offsets only once every record sent before them is acknowledged,
so an alert is never lost: either after :meth:`AckedSink.wait_acked` returns True (which
also produces failed records again, with backoff, until the broker takes them), or, not
waiting, once :meth:`AckedSink.acked_through` says so for a :meth:`AckedSink.mark` taken
when the offsets were. Knows nothing of torch.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from confluent_kafka import KafkaError, Message, Producer

__all__ = ["AckedSink"]

_Headers = list[tuple[str, str | bytes | None]]
_Record = tuple[str, bytes | None, bytes | None, _Headers | None, int]


class AckedSink:
    """A producer wrapper that tracks delivery reports of everything it sent."""

    def __init__(self, producer: Producer, on_error: Callable[[str, KafkaError], None]) -> None:
        self._producer = producer
        self._on_error = on_error
        self._failed: list[_Record] = []
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
        headers: _Headers | None = None,
        partition: int = -1,
    ) -> None:
        """Queue one record (``partition`` -1: the partitioner picks one by key); blocks
        briefly (serving callbacks) while the local queue is full."""
        record: _Record = (topic, key, value, headers, partition)
        report = self._reporter(topic, partition, record)
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
                self._unreported[0] += 1
                return
            except BufferError:
                self._producer.poll(0.05)

    def send_many(self, topic: str, keys: Sequence[bytes], values: Sequence[bytes]) -> None:
        """Queue ``values[i]`` keyed by ``keys[i]`` (partition by key, no headers): the bulk
        form of :meth:`send` for one-record-per-point topics (one delivery callback for the
        whole call instead of one closure per record)."""
        report = self._reporter(topic, -1, None)
        produce = self._producer.produce
        unreported = self._unreported
        for key, value in zip(keys, values, strict=True):
            while True:
                try:
                    # Positional (topic, value, key, partition, on_delivery): keyword
                    # arguments cost ~0.4 us more per record.
                    produce(topic, value, key, -1, report)
                    break
                except BufferError:
                    self._producer.poll(0.05)
            unreported[0] += 1

    def _reporter(
        self, topic: str, partition: int, record: _Record | None
    ) -> Callable[[KafkaError | None, Message], None]:
        """A delivery callback for records sent to ``topic`` (``partition`` >= 0: explicit,
        its acknowledged offsets are tracked in :attr:`positions`). A failed record is
        queued for re-sending: ``record``, or (None) rebuilt from the message."""
        generation = self._generation
        unreported = self._unreported

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
                self._failed.append(record or (topic, msg.key(), msg.value(), None, -1))
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
