"""Read changelog partitions back to their end, for restoring series state.

A changelog topic holds one record per series per checkpoint, keyed by series and written
to the same partition number as the series' input partition (co-partitioned), so the state
of an input partition is exactly one changelog partition. Knows nothing of torch.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from streamrnn.config import LibrdkafkaValue
from streamrnn.kafka.source import headers_of

__all__ = ["ChangelogRecord", "read_changelog"]

#: Headers of a changelog record besides key (series) and value (encoded state).
MODEL_HEADER = "streamrnn.model"
LABELS_HEADER = "streamrnn.labels"


@dataclass(frozen=True, slots=True)
class ChangelogRecord:
    """One record read back from a changelog partition."""

    topic: str
    partition: int
    offset: int
    key: str
    value: bytes
    model: str
    labels: str | None


def read_changelog(
    conf: dict[str, LibrdkafkaValue],
    partitions: Sequence[tuple[str, int, int]],
    ends: dict[tuple[str, int], int],
    timeout_s: float = 120.0,
) -> Iterator[ChangelogRecord]:
    """Every record of each (topic, partition, start offset) up to the partition's end.

    ``conf`` is a client configuration (bootstrap and security settings); the reader uses no
    consumer group and commits nothing. With ``isolation.level`` read_committed (the
    librdkafka default) records of aborted transactions are skipped and the end is the last
    stable offset. A start before the log start (compacted or deleted) reads from the log
    start. ``ends`` receives each partition's end offset (where a later read resumes).
    Raises TimeoutError when the end is not reached within ``timeout_s`` seconds.
    """
    if not partitions:
        return
    consumer = Consumer(
        {
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
            for msg in consumer.consume(num_messages=10_000, timeout=0.5):
                topic, partition = msg.topic(), msg.partition()
                assert topic is not None and partition is not None
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        if (topic, partition) in open_parts:
                            open_parts.discard((topic, partition))
                            ends[(topic, partition)] = int(msg.offset() or 0)
                        continue
                    if err.fatal() or err.code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
                        raise KafkaException(err)
                    continue  # transient (e.g. broker briefly unreachable): keep reading
                key, value = msg.key(), msg.value()
                if key is None or value is None:
                    continue
                headers = headers_of(msg)
                model = headers.get(MODEL_HEADER, b"")
                labels = headers.get(LABELS_HEADER)
                offset = msg.offset()
                assert offset is not None
                yield ChangelogRecord(
                    topic,
                    partition,
                    offset,
                    key.decode(),
                    value,
                    model.decode(),
                    labels.decode() if labels else None,
                )
    finally:
        consumer.close()
