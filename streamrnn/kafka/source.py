"""Poll batches of messages from the input topics and commit them once handled.

Offsets are never committed automatically: :meth:`BatchSource.commit` commits, for each
partition in a handled batch, the offset after its last message. Knows nothing of torch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from confluent_kafka import Consumer, KafkaError, Message, TopicPartition

__all__ = ["BatchSource", "position_of"]


def position_of(msg: Message) -> tuple[str, int, int]:
    """(topic, partition, offset) of a consumed message (always set for those)."""
    topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
    assert topic is not None and partition is not None and offset is not None
    return topic, partition, offset


class BatchSource:
    """A subscribed consumer that hands out batches of good messages."""

    def __init__(
        self,
        consumer: Consumer,
        topics: Sequence[str],
        on_error: Callable[[KafkaError], None],
        on_assign: Callable[[list[TopicPartition]], None],
        on_revoke: Callable[[list[TopicPartition]], None],
    ) -> None:
        self._consumer = consumer
        self._on_error = on_error
        consumer.subscribe(
            list(topics),
            on_assign=lambda _c, parts: on_assign(parts),
            on_revoke=lambda _c, parts: on_revoke(parts),
        )

    def poll_batch(self, max_messages: int, timeout_s: float) -> list[Message]:
        """Up to ``max_messages`` messages, waiting at most ``timeout_s`` for the first."""
        batch = self._consumer.consume(num_messages=max_messages, timeout=timeout_s)
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

    def commit(self, messages: Sequence[Message]) -> None:
        """Synchronously commit the position after the last of ``messages`` per partition."""
        next_offsets: dict[tuple[str, int], int] = {}
        for msg in messages:
            topic, partition, offset = position_of(msg)
            key = (topic, partition)
            next_offsets[key] = max(next_offsets.get(key, 0), offset + 1)
        if next_offsets:
            self._consumer.commit(
                offsets=[TopicPartition(t, p, o) for (t, p), o in next_offsets.items()],
                asynchronous=False,
            )

    def close(self) -> None:
        """Leave the group (triggers a rebalance for the others) and release the client."""
        self._consumer.close()
