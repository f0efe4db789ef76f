"""The alert topic is unavailable for a while: the daemon retries, commits nothing beyond
what was delivered, and delivers every alert once the topic is there (real broker, with
topic auto-creation off as on the local broker)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient

from streamrnn.kafka.clients import create_topics
from streamrnn.kafka.topic_reader import group_progress
from streamrnn.synthetic import SyntheticSpec, synthetic_stream

from .harness import Daemon, Topics, point, produce, read_json, wait_committed, write_config

pytestmark = pytest.mark.integration


def _records() -> list[tuple[str, bytes]]:
    frame = synthetic_stream(SyntheticSpec(series=6, points=400, seed=3, anomalies_per_series=2))
    return [
        point(s, ts, v) for s, ts, v in frame[["series", "ts", "value"]].itertuples(index=False)
    ]


def _run(bootstrap: str, tmp_path: Path, name: str, outage_s: float) -> set[str]:
    topics = Topics.fresh(bootstrap, partitions=2)
    admin = AdminClient({"bootstrap.servers": bootstrap})
    missing_alerts = f"{topics.alerts}-late"
    records = _records()
    produce(bootstrap, topics.input, records)
    config = write_config(
        tmp_path / f"{name}.yaml",
        bootstrap,
        topics,
        topics={"alerts": missing_alerts, "create": False, "dead_letter": None},
        kafka={"producer": {"message.timeout.ms": 2000}},
        scoring={"calibration": "tail", "alert": {"cooldown_points": 0, "cooldown_s": 0}},
    )
    if outage_s == 0:
        create_topics(admin, [missing_alerts])
    daemon = Daemon(config, tmp_path / f"{name}.log")
    try:
        if outage_s > 0:
            deadline = time.monotonic() + outage_s
            while time.monotonic() < deadline:
                assert daemon.alive(), daemon.log_path.read_text()[-2000:]
                committed, total = group_progress(
                    {"bootstrap.servers": bootstrap}, topics.group, [topics.input]
                )
                # Nothing is committed while the batch's alerts cannot be delivered.
                assert committed == 0, f"committed {committed} of {total} without the alerts"
                time.sleep(0.5)
            failures = [
                r for r in daemon.log_lines() if r.get("event") == "delivery failed, will retry"
            ]
            assert failures, "no delivery failure was seen during the outage"
            create_topics(admin, [missing_alerts])
        wait_committed(bootstrap, topics, daemon, timeout_s=120)
    finally:
        assert daemon.stop() == 0
    return {a["alert_id"] for a in read_json(bootstrap, missing_alerts)}


def test_alerts_held_back_by_a_missing_alert_topic_are_delivered_later(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    reference = _run(kafka_bootstrap, tmp_path, "reference", outage_s=0)
    assert reference, "the stream raised no alerts"
    after_outage = _run(kafka_bootstrap, tmp_path, "outage", outage_s=12)
    assert after_outage == reference
