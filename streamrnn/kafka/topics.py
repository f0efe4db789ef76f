"""Make sure the topics the daemon writes exist, with the properties they need.

* each input topic's changelog: compacted (one record per series survives), never compacted
  within ``state.changelog_compaction_lag_s`` (so a restore after a crash finds the state
  that the committed offsets point at), and with the *same partition count* as its input
  topic, because the state of input partition p lives in changelog partition p;
* the model topic (one partition, compacted; see :mod:`streamrnn.kafka.model_topic`);
* the alert, forecast and dead-letter topics, when missing, with as many partitions as the
  largest input topic.

Knows nothing of torch.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from streamrnn.config import Settings
from streamrnn.kafka.clients import create_new_topics
from streamrnn.kafka.model_topic import model_topic_spec
from streamrnn.logs import get_logger

__all__ = ["TopicLayoutError", "ensure_topics"]

log = get_logger("topics")

#: Seconds between checks while an input topic does not exist yet.
_WAIT_FOR_INPUT_S = 5.0


class TopicLayoutError(RuntimeError):
    """A changelog topic exists with another partition count than its input topic."""


def ensure_topics(
    settings: Settings, admin: AdminClient, stop: Callable[[], bool], timeout_s: float = 30.0
) -> dict[str, int]:
    """Create what is missing; returns the partition count of each input topic.

    Waits (logging every few seconds) while an input topic does not exist, until ``stop()``;
    returns {} when stopped before that.
    """
    topics = settings.topics
    while True:
        listed = admin.list_topics(timeout=timeout_s).topics
        missing = [t for t in topics.input if t not in listed]
        if not missing:
            break
        log.warning("input topic does not exist yet; waiting", topics=missing)
        deadline = time.monotonic() + _WAIT_FOR_INPUT_S
        while time.monotonic() < deadline:
            if stop():
                return {}
            time.sleep(0.1)
    counts = {t: len(listed[t].partitions) for t in topics.input}
    wanted: list[NewTopic] = []
    group = settings.kafka.group_id
    lag_ms = int(settings.state.changelog_compaction_lag_s * 1000)
    for topic, count in counts.items():
        changelog = topics.changelog_of(topic, group)
        if changelog in listed:
            have = len(listed[changelog].partitions)
            if have != count:
                raise TopicLayoutError(
                    f"changelog topic {changelog} has {have} partitions but its input topic"
                    f" {topic} has {count}; they must match (state of input partition p is"
                    " kept in changelog partition p)"
                )
            continue
        wanted.append(
            NewTopic(
                changelog,
                num_partitions=count,
                replication_factor=-1,
                config={
                    "cleanup.policy": "compact",
                    "min.compaction.lag.ms": str(lag_ms),
                },
            )
        )
    models = topics.models_of(group)
    if models not in listed:
        wanted.append(model_topic_spec(models))
    if topics.create:
        outputs = [topics.alerts, topics.forecasts, topics.dead_letter]
        for name in dict.fromkeys(o for o in outputs if o):
            if name not in listed:
                wanted.append(
                    NewTopic(name, num_partitions=max(counts.values()), replication_factor=-1)
                )
    for name in create_new_topics(admin, wanted, timeout_s):
        log.info("topic created", topic=name)
    return counts
