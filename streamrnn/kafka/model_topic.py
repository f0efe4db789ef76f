"""The model topic: promoted models shared between the instances of a consumer group.

One partition, compacted, keyed by model group name; the value is the model artifact's
bytes and headers say which version it is, why it was published (a promotion or a
rollback) and by whom. The newest record of a key is the model every instance must serve.
Compaction keeps at least that record forever, so an instance starting a year later still
finds it.

Each instance reads the topic to its end at start-up (:meth:`ModelTopic.read_latest`) and
then checks for new records between batches (:meth:`ModelTopic.poll`); the training
instance publishes with its own idempotent, non-transactional producer (a model is not
part of any batch's transaction). Knows nothing of torch: artifacts are bytes here.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import NewTopic  # type: ignore[attr-defined]

from streamrnn.config import LibrdkafkaValue
from streamrnn.kafka.source import headers_of

__all__ = ["MODEL_MAX_BYTES", "ModelRecord", "ModelTopic", "model_topic_spec"]

#: Largest artifact the topic accepts (bytes); a 3-layer hidden-256 GRU is about 5 MB.
MODEL_MAX_BYTES = 32 * 1024 * 1024

VERSION_HEADER = "streamrnn.model.version"
REASON_HEADER = "streamrnn.model.reason"
PUBLISHER_HEADER = "streamrnn.model.publisher"


@dataclass(frozen=True, slots=True)
class ModelRecord:
    """One published model: its group (the key), version, artifact bytes and provenance."""

    group: str
    version: str
    artifact: bytes
    reason: str
    publisher: str
    offset: int


def model_topic_spec(name: str) -> NewTopic:
    """How the model topic is created: one partition, compacted, large messages allowed."""
    return NewTopic(
        name,
        num_partitions=1,
        replication_factor=-1,
        config={"cleanup.policy": "compact", "max.message.bytes": str(MODEL_MAX_BYTES)},
    )


class ModelTopic:
    """Reads (and, on the training instance, writes) the model topic."""

    def __init__(self, conf: dict[str, LibrdkafkaValue], topic: str, publisher: str) -> None:
        """``conf``: bootstrap and security settings (no role-specific keys)."""
        self.topic = topic
        self.publisher = publisher
        self._conf = conf
        self._consumer = Consumer(
            {
                **conf,
                "group.id": f"{topic}-reader",
                "enable.auto.commit": False,
                "enable.partition.eof": True,
                "auto.offset.reset": "earliest",
                "fetch.max.bytes": MODEL_MAX_BYTES,
                "receive.message.max.bytes": MODEL_MAX_BYTES + 1024 * 1024,
            }
        )
        self._consumer.assign([TopicPartition(topic, 0, 0)])
        self._producer: Producer | None = None

    def read_latest(self, timeout_s: float = 60.0) -> dict[str, ModelRecord]:
        """Read to the end of the topic; the newest record of each model group.

        Raises TimeoutError when the end is not reached within ``timeout_s`` seconds.
        """
        latest: dict[str, ModelRecord] = {}
        deadline = time.monotonic() + timeout_s
        while True:
            if time.monotonic() > deadline:
                raise TimeoutError(f"model topic {self.topic} not read to its end in {timeout_s} s")
            records, at_end = self._consume(0.5)
            for record in records:
                latest[record.group] = record
            if at_end:
                return latest

    def poll(self) -> list[ModelRecord]:
        """Records published since the last call (never blocks)."""
        records, _ = self._consume(0.0)
        return records

    def publish(self, record_group: str, version: str, artifact: bytes, reason: str) -> None:
        """Publish a model and wait for the broker's acknowledgement.

        Raises:
            KafkaException: not acknowledged within 30 s (the caller may retry).
        """
        if self._producer is None:
            self._producer = Producer(
                {
                    **self._conf,
                    "enable.idempotence": True,
                    "message.max.bytes": MODEL_MAX_BYTES + 1024 * 1024,
                    "compression.type": "lz4",
                }
            )
        errors: list[KafkaError] = []

        def on_delivery(err: KafkaError | None, _msg: object) -> None:
            if err is not None:
                errors.append(err)

        self._producer.produce(
            self.topic,
            key=record_group.encode(),
            value=artifact,
            headers=[
                (VERSION_HEADER, version.encode()),
                (REASON_HEADER, reason.encode()),
                (PUBLISHER_HEADER, self.publisher.encode()),
            ],
            on_delivery=on_delivery,
        )
        if self._producer.flush(30.0) > 0:
            raise KafkaException(KafkaError(KafkaError._TIMED_OUT, "model not acknowledged"))
        if errors:
            raise KafkaException(errors[0])

    def close(self) -> None:
        """Close the clients."""
        self._consumer.close()
        if self._producer is not None:
            self._producer.flush(5.0)
            self._producer = None

    def _consume(self, timeout_s: float) -> tuple[list[ModelRecord], bool]:
        out: list[ModelRecord] = []
        at_end = False
        for msg in self._consumer.consume(num_messages=100, timeout=timeout_s):
            err = msg.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    at_end = True
                    continue
                if err.fatal():
                    raise KafkaException(err)
                continue  # transient: keep going
            key, value, offset = msg.key(), msg.value(), msg.offset()
            if key is None or value is None or offset is None:
                continue  # a tombstone or foreign record: nothing to serve
            headers = {k: v.decode(errors="replace") for k, v in headers_of(msg).items()}
            out.append(
                ModelRecord(
                    group=key.decode(errors="replace"),
                    version=headers.get(VERSION_HEADER, ""),
                    artifact=value,
                    reason=headers.get(REASON_HEADER, ""),
                    publisher=headers.get(PUBLISHER_HEADER, ""),
                    offset=offset,
                )
            )
            at_end = False
        return out, at_end
