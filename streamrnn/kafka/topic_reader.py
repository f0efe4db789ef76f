"""Read topics and groups from the outside: a topic to its end, a group's committed progress.

Used by ``streamrnn demo`` and the tests to read alerts back and to wait until the daemon
has committed everything. Knows nothing of torch.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from streamrnn.kafka.source import position_of

__all__ = ["group_progress", "read_topic"]

_COORDINATOR_NOT_READY = frozenset(
    {
        KafkaError.NOT_COORDINATOR,
        KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
        KafkaError.COORDINATOR_NOT_AVAILABLE,
    }
)


def read_topic(
    client_conf: dict[str, Any],
    topic: str,
    timeout_s: float = 30.0,
    isolation: str = "read_committed",
) -> list[Message]:
    """Every message of ``topic`` from the beginning up to its end offsets at call time."""
    consumer = Consumer(
        {
            **client_conf,
            "group.id": f"streamrnn-reader-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "isolation.level": isolation,
        }
    )
    try:
        metadata = consumer.list_topics(topic, timeout=timeout_s)
        parts = [TopicPartition(topic, p) for p in metadata.topics[topic].partitions]
        ends = {}
        for tp in parts:
            low, high = consumer.get_watermark_offsets(tp, timeout=timeout_s)
            if high > low:
                ends[tp.partition] = high
        consumer.assign([TopicPartition(topic, p, 0) for p in ends])
        out: list[Message] = []
        position = dict.fromkeys(ends, 0)
        deadline = time.monotonic() + timeout_s
        while any(position[p] < ends[p] for p in ends):
            if time.monotonic() > deadline:
                raise TimeoutError(f"reading {topic}: got {len(out)} messages before the timeout")
            for msg in consumer.consume(num_messages=10_000, timeout=0.5):
                if msg.error() is None:
                    out.append(msg)
                    _, partition, offset = position_of(msg)
                    position[partition] = offset + 1
            # Transaction markers take offsets but are never delivered: the consumer's own
            # position says when a transactional topic has been read to its end.
            for tp in consumer.position([TopicPartition(topic, p) for p in ends]):
                position[tp.partition] = max(position[tp.partition], tp.offset)
        return out
    finally:
        consumer.close()


def group_progress(
    client_conf: dict[str, Any], group_id: str, topics: Sequence[str], timeout_s: float = 10.0
) -> tuple[int, int]:
    """(messages committed by ``group_id``, messages in ``topics``), summed over partitions."""
    consumer = Consumer({**client_conf, "group.id": group_id, "enable.auto.commit": False})
    try:
        parts = []
        for topic in topics:
            metadata = consumer.list_topics(topic, timeout=timeout_s)
            parts += [TopicPartition(topic, p) for p in metadata.topics[topic].partitions]
        committed = _committed_with_retry(consumer, parts, timeout_s)
        done = total = 0
        for tp in committed:
            low, high = consumer.get_watermark_offsets(tp, timeout=timeout_s)
            total += high - low
            if tp.offset >= 0:
                done += tp.offset - low
        return done, total
    finally:
        consumer.close()


def _committed_with_retry(
    consumer: Consumer, parts: list[TopicPartition], timeout_s: float
) -> list[TopicPartition]:
    """Committed offsets, retrying while the group coordinator is still being set up.

    On a fresh broker the first offset fetch of a group can fail with NOT_COORDINATOR or
    COORDINATOR_LOAD_IN_PROGRESS while the offsets topic is created; those are retriable.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            result: list[TopicPartition] = consumer.committed(parts, timeout=timeout_s)
            return result
        except KafkaException as exc:
            error = exc.args[0]
            transient = error.retriable() or error.code() in _COORDINATOR_NOT_READY
            if not transient or time.monotonic() > deadline:
                raise
            time.sleep(0.2)
