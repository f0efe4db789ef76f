"""Produce records and know when the broker has acknowledged every one of them.

The daemon commits input offsets only after :meth:`AckedSink.wait_acked` returns True, so
an alert is never lost: a record whose delivery failed is produced again (with backoff)
until the broker takes it. Knows nothing of torch.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from confluent_kafka import KafkaError, Message, Producer

__all__ = ["AckedSink"]

_Headers = list[tuple[str, str | bytes | None]]
_Record = tuple[str, bytes | None, bytes | None, _Headers | None]


class AckedSink:
    """A producer wrapper that tracks delivery reports of everything it sent."""

    def __init__(self, producer: Producer, on_error: Callable[[str, KafkaError], None]) -> None:
        self._producer = producer
        self._on_error = on_error
        self._pending = 0
        self._failed: list[_Record] = []
        self.delivered = 0

    def send(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: _Headers | None = None,
    ) -> None:
        """Queue one record; blocks briefly (serving callbacks) while the local queue is full."""
        record: _Record = (topic, key, value, headers)

        def report(err: KafkaError | None, _msg: Message) -> None:
            self._pending -= 1
            if err is None:
                self.delivered += 1
            else:
                self._failed.append(record)
                self._on_error(topic, err)

        while True:
            try:
                self._producer.produce(
                    topic, value=value, key=key, headers=headers, on_delivery=report
                )
                self._pending += 1
                return
            except BufferError:
                self._producer.poll(0.05)

    def wait_acked(self, should_give_up: Callable[[], bool]) -> bool:
        """Block until every record sent so far is acknowledged; re-send failed ones.

        Returns False only when ``should_give_up()`` turns true first (shutdown deadline);
        records still pending then are neither acknowledged nor lost from the input, since
        the caller does not commit their offsets.
        """
        backoff_s = 0.1
        while True:
            self._producer.flush(1.0)
            if self._pending == 0 and not self._failed:
                return True
            if should_give_up():
                return False
            if self._pending == 0 and self._failed:
                retry, self._failed = self._failed, []
                time.sleep(backoff_s)
                backoff_s = min(backoff_s * 2, 5.0)
                for topic, key, value, headers in retry:
                    self.send(topic, key, value, headers)
