"""Build confluent-kafka clients from the configuration, and create topics.

Every librdkafka setting under ``kafka.client`` goes to every client verbatim
(``security.protocol``, ``sasl.*``, ``ssl.*``...), then the role's own block
(``kafka.consumer`` or ``kafka.producer``); the keys the daemon manages itself
(bootstrap servers, group id, auto commit) are set last. Knows nothing of torch.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Literal

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from streamrnn.config import LibrdkafkaValue, Settings

__all__ = [
    "client_config",
    "create_new_topics",
    "create_topics",
    "make_admin",
    "make_consumer",
    "make_producer",
    "transactional_id",
]

Role = Literal["consumer", "producer", "admin"]


def client_config(settings: Settings, role: Role) -> dict[str, LibrdkafkaValue]:
    """librdkafka settings for one client role; see the module docstring for the order."""
    conf: dict[str, LibrdkafkaValue] = {"bootstrap.servers": settings.kafka.bootstrap_servers}
    conf.update(settings.kafka.client)
    if role == "consumer":
        conf.update(settings.kafka.consumer)
        conf["group.id"] = settings.kafka.group_id
        if settings.kafka.instance_id:
            conf["group.instance.id"] = settings.kafka.instance_id
        # Offsets are committed by the daemon only after the batch's alerts are acknowledged.
        conf["enable.auto.commit"] = False
        conf["enable.auto.offset.store"] = False
        if settings.delivery.mode == "exactly_once":
            conf["isolation.level"] = "read_committed"
    elif role == "producer":
        conf.update(settings.kafka.producer)
        if settings.delivery.mode == "exactly_once":
            conf["transactional.id"] = transactional_id(settings)
    return conf


def transactional_id(settings: Settings) -> str:
    """This instance's transactional.id: configured, else "{group_id}-{instance}" with the
    instance id or the host name (stable across restarts, so a restarted instance fences and
    aborts its predecessor's transaction instead of waiting for it to time out)."""
    configured = settings.delivery.transactional_id
    instance = settings.kafka.instance_id or socket.gethostname()
    return configured or f"{settings.kafka.group_id}-{instance}"


def make_consumer(
    settings: Settings,
    on_commit: Callable[[KafkaError | None, list[TopicPartition]], None] | None = None,
) -> Consumer:
    """A consumer in the configured group (not yet subscribed); ``on_commit`` receives the
    outcome of every offset commit (run inside the consumer's polls)."""
    conf: dict[str, Any] = dict(client_config(settings, "consumer"))
    if on_commit is not None:
        conf["on_commit"] = on_commit
    return Consumer(conf)


def make_producer(settings: Settings) -> Producer:
    """A producer for alerts and forecasts."""
    return Producer(client_config(settings, "producer"))


def make_admin(settings: Settings) -> AdminClient:
    """An admin client (topic creation, offset queries)."""
    return AdminClient(client_config(settings, "admin"))


def create_topics(
    admin: AdminClient,
    topics: Iterable[str],
    partitions: int = 1,
    replication_factor: int = 1,
    timeout_s: float = 30.0,
) -> list[str]:
    """Create the topics that do not exist yet; returns the names created."""
    existing = set(admin.list_topics(timeout=timeout_s).topics)
    wanted = [t for t in dict.fromkeys(topics) if t not in existing]
    if not wanted:
        return []
    return create_new_topics(
        admin,
        [
            NewTopic(t, num_partitions=partitions, replication_factor=replication_factor)
            for t in wanted
        ],
        timeout_s,
    )


def create_new_topics(
    admin: AdminClient, topics: Sequence[NewTopic], timeout_s: float = 30.0
) -> list[str]:
    """Create ``topics`` (partitions and configs as given); one that exists meanwhile is
    fine. Returns the names created."""
    if not topics:
        return []
    futures = admin.create_topics(list(topics), operation_timeout=timeout_s)
    created = []
    for topic, future in futures.items():
        try:
            future.result(timeout=timeout_s)
            created.append(topic)
        except KafkaException as exc:
            if exc.args[0].name() != "TOPIC_ALREADY_EXISTS":
                raise
    return created
