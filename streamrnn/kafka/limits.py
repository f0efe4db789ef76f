"""Record size limits: what the producer and the topics accept, checked once at start-up.

A topic's ``max.message.bytes`` and the producer's ``message.max.bytes`` are set apart, and
often differently: an input topic that takes 3 MiB messages while the producer takes 1 MB
means that a rejected 3 MiB message cannot be dead-lettered whole. The daemon then sends a
truncated copy (see :mod:`streamrnn.publisher`); this module finds the limits and says so in
the log at start-up instead of at the first such message. Knows nothing of torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, ConfigResource  # type: ignore[attr-defined]

from streamrnn.config import LibrdkafkaValue
from streamrnn.logs import get_logger

__all__ = ["PRODUCER_DEFAULT_MAX_BYTES", "SizeLimits", "read_limits"]

log = get_logger("limits")

#: librdkafka's default ``message.max.bytes``.
PRODUCER_DEFAULT_MAX_BYTES = 1_000_000


@dataclass(frozen=True)
class SizeLimits:
    """The producer's limit and each topic's ``max.message.bytes`` (None: not known)."""

    producer_bytes: int
    topic_bytes: dict[str, int | None]

    def writable_bytes(self, topic: str) -> int:
        """The largest record ``topic`` takes from this producer."""
        known = self.topic_bytes.get(topic)
        return self.producer_bytes if known is None else min(self.producer_bytes, known)


def read_limits(
    admin: AdminClient,
    producer_conf: dict[str, LibrdkafkaValue],
    topics: Sequence[str],
    timeout_s: float = 10.0,
) -> SizeLimits:
    """The producer's ``message.max.bytes`` and the ``max.message.bytes`` of ``topics`` (a
    topic whose configuration cannot be read, e.g. for lack of DescribeConfigs rights,
    is None: then only the producer's limit is assumed)."""
    producer = int(str(producer_conf.get("message.max.bytes", PRODUCER_DEFAULT_MAX_BYTES)))
    found: dict[str, int | None] = dict.fromkeys(topics)
    wanted = [ConfigResource(ConfigResource.Type.TOPIC, t) for t in dict.fromkeys(topics)]
    if not wanted:
        return SizeLimits(producer, found)
    futures = admin.describe_configs(wanted, request_timeout=timeout_s)
    for resource, future in futures.items():
        try:
            entries = future.result(timeout=timeout_s)
            found[resource.name] = int(entries["max.message.bytes"].value)
        except (KafkaException, KeyError, ValueError, TypeError) as exc:
            log.warning(
                "cannot read a topic's max.message.bytes", topic=resource.name, error=str(exc)
            )
    return SizeLimits(producer, found)


def log_mismatches(
    limits: SizeLimits, inputs: Sequence[str], dead_letter: str | None, max_message_bytes: int
) -> list[str]:
    """Log (and return) what the limits mean for dead letters: input messages that may be
    larger than the dead-letter topic takes are dead-lettered truncated."""
    notes = []
    if dead_letter is not None:
        room = limits.writable_bytes(dead_letter)
        for topic in inputs:
            largest = limits.topic_bytes.get(topic)
            if largest is not None and largest > room:
                notes.append(
                    f"input topic {topic} takes messages up to {largest} bytes but the"
                    f" dead-letter topic {dead_letter} takes at most {room} from this producer"
                    " (message.max.bytes / max.message.bytes): larger rejected messages are"
                    " dead-lettered as a truncated copy"
                )
        known = limits.topic_bytes.get(dead_letter)
        if known is not None and known < limits.producer_bytes:
            notes.append(
                f"dead-letter topic {dead_letter} takes at most {known} bytes, less than the"
                f" producer's message.max.bytes {limits.producer_bytes}"
            )
    for topic in inputs:
        largest = limits.topic_bytes.get(topic)
        if largest is not None and largest > max_message_bytes:
            log.info(
                "input messages above consume.max_message_bytes are rejected as oversized",
                topic=topic,
                topic_max_bytes=largest,
                max_message_bytes=max_message_bytes,
            )
    for note in notes:
        log.warning("record size limits differ", detail=note)
    return notes
