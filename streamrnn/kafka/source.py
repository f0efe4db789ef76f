"""Poll batches of messages from the input topics and commit them once handled.

Offsets are never committed automatically: :meth:`BatchSource.commit` commits, for each
partition in a handled batch, the offset after its last message. Knows nothing of torch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import cast

from confluent_kafka import Consumer, KafkaError, Message, TopicPartition

__all__ = ["BatchSource", "as_partitions", "headers_of", "position_of"]


def position_of(msg: Message) -> tuple[str, int, int]:
    """(topic, partition, offset) of a consumed message (always set for those)."""
    topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
    assert topic is not None and partition is not None and offset is not None
    return topic, partition, offset


def headers_of(msg: Message) -> dict[str, bytes]:
    """A consumed message's headers by name (a header without a value: empty bytes)."""
    pairs = cast(list[tuple[str, bytes | None]], msg.headers() or [])
    return {name: raw or b"" for name, raw in pairs}


def as_partitions(offsets: dict[tuple[str, int], int]) -> list[TopicPartition]:
    """``{(topic, partition): offset}`` as the client's TopicPartition list."""
    return [TopicPartition(t, p, o) for (t, p), o in offsets.items()]


class BatchSource:
    """A subscribed consumer that hands out batches of good messages."""

    def __init__(
        self,
        consumer: Consumer,
        topics: Sequence[str],
        on_error: Callable[[KafkaError], None],
    ) -> None:
        self._consumer = consumer
        self._on_error = on_error
        self._topics = list(topics)

    def subscribe(
        self,
        on_assign: Callable[[list[TopicPartition]], None],
        on_revoke: Callable[[list[TopicPartition]], None],
        on_lost: Callable[[list[TopicPartition]], None],
    ) -> None:
        """Join the group; the callbacks run inside later polls (rebalances)."""
        self._consumer.subscribe(
            self._topics,
            on_assign=lambda _c, parts: on_assign(parts),
            on_revoke=lambda _c, parts: on_revoke(parts),
            on_lost=lambda _c, parts: on_lost(parts),
        )

    def poll_batch(self, max_messages: int, timeout_s: float) -> list[Message]:
        """Up to ``max_messages`` messages: whatever has arrived, or else the first one to
        arrive within ``timeout_s`` and what came with it.

        (``Consumer.consume(n, timeout)`` alone waits the whole timeout unless ``n`` messages
        arrive, which would add up to ``timeout_s`` of latency to every point under light
        load.)"""
        batch = self._consumer.consume(num_messages=max_messages, timeout=0)
        if not batch:
            first = self._consumer.poll(timeout_s)
            if first is None:
                return []
            batch = [first, *self._consumer.consume(num_messages=max_messages - 1, timeout=0)]
        good = []
        for msg in batch:
            err = msg.error()
            if err is None:
                good.append(msg)
            elif err.code() != KafkaError._PARTITION_EOF:
                self._on_error(err)
                if err.fatal():
                    raise RuntimeError(f"fatal consumer error: {err}")
        return good

    def commit(self, next_offsets: dict[tuple[str, int], int], asynchronous: bool = False) -> None:
        """Commit ``next_offsets`` (the offset after the last handled message, per input
        partition); ``asynchronous``: without waiting (the consumer's ``on_commit`` callback
        reports the outcome during a later poll)."""
        if not next_offsets:
            return
        if asynchronous:
            self._consumer.commit(offsets=as_partitions(next_offsets), asynchronous=True)
        else:
            self._consumer.commit(offsets=as_partitions(next_offsets), asynchronous=False)

    def committed(
        self, partitions: Sequence[tuple[str, int]], timeout_s: float
    ) -> dict[tuple[str, int], int]:
        """The group's committed offsets of ``partitions`` (0 where none is committed yet,
        which with auto.offset.reset=earliest is where reading starts)."""
        parts = self._consumer.committed(
            [TopicPartition(t, p) for t, p in partitions], timeout=timeout_s
        )
        return {(tp.topic, tp.partition): max(tp.offset, 0) for tp in parts}

    def seek(self, offsets: dict[tuple[str, int], int]) -> None:
        """Read the assigned ``offsets`` next (after an aborted transaction)."""
        for tp in as_partitions(offsets):
            self._consumer.seek(tp)

    def assignment(self) -> list[tuple[str, int]]:
        """The partitions this instance holds."""
        return [(tp.topic, tp.partition) for tp in self._consumer.assignment()]

    def lag(self) -> dict[tuple[str, int], int]:
        """Messages behind the end of each assigned partition: the high watermark the last
        fetch reported minus the consumer's position (no broker round trip). Partitions not
        fetched yet are left out."""
        out = {}
        for tp in self._consumer.position(self._consumer.assignment()):
            if tp.offset < 0:
                continue
            _low, high = self._consumer.get_watermark_offsets(tp, cached=True)
            if high >= 0:
                out[(tp.topic, tp.partition)] = max(high - tp.offset, 0)
        return out

    def group_metadata(self) -> object:
        """The consumer group metadata a transactional producer commits offsets with."""
        return self._consumer.consumer_group_metadata()

    def close(self) -> None:
        """Leave the group (triggers a rebalance for the others) and release the client."""
        self._consumer.close()
