"""``streamrnn run`` as a subprocess against the real local Apache Kafka broker."""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import orjson
import pytest
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient

from streamrnn.kafka.clients import create_topics
from streamrnn.kafka.topic_reader import read_topic
from streamrnn.synthetic import SyntheticSpec, synthetic_stream

from .harness import (
    Daemon,
    Topics,
    point,
    produce,
    read_json,
    wait_committed,
    wait_until,
    write_config,
)

pytestmark = pytest.mark.integration

ALERT_FIELDS = {
    "alert_id",
    "series",
    "labels",
    "ts",
    "time",
    "value",
    "forecast",
    "residual",
    "spread",
    "score",
    "threshold",
    "severity",
    "rule",
    "model_version",
    "source",
}


def test_points_in_alerts_out_for_injected_anomalies(kafka_bootstrap: str, tmp_path: Path) -> None:
    topics = Topics.fresh(kafka_bootstrap, partitions=2)
    stream = synthetic_stream(SyntheticSpec(series=6, points=400, seed=3, anomalies_per_series=1))
    produce(
        kafka_bootstrap,
        topics.input,
        (
            point(s, ts, v, labels={"host": s.split(".")[0]})
            for s, ts, v in stream[["series", "ts", "value"]].itertuples(index=False)
        ),
    )
    # No cooldown: an earlier alert on a series must not hide its injected spike here; tail
    # calibration: it judges each point on its own (the default likelihood averages a few).
    config = write_config(
        tmp_path / "c.yaml",
        kafka_bootstrap,
        topics,
        scoring={"calibration": "tail", "alert": {"cooldown_points": 0, "cooldown_s": 0}},
    )
    daemon = Daemon(config, tmp_path / "d.log")
    try:
        wait_committed(kafka_bootstrap, topics, daemon)
    finally:
        assert daemon.stop() == 0

    alerts = read_json(kafka_bootstrap, topics.alerts)
    assert alerts, "no alerts at all"
    for alert in alerts:
        assert alert.keys() >= ALERT_FIELDS
        assert alert["_key"] == alert["series"]
        assert alert["labels"] == {"host": alert["series"].split(".")[0]}
        assert alert["severity"] in {"warning", "critical"}
        assert alert["score"] >= alert["threshold"]
        assert alert["source"]["topic"] == topics.input
    assert len({a["alert_id"] for a in alerts}) == len(alerts)
    # Every injected spike (12 noise sigmas) is alerted at its own timestamp.
    spikes = stream[stream["anomaly"] == "spike"]
    alerted = {(a["series"], a["ts"]) for a in alerts}
    for row in spikes.itertuples():
        assert (row.series, row.ts) in alerted, f"spike in {row.series} at {row.ts} missed"
    # Alert log lines carry the series, topic and partition.
    alert_lines = [line for line in daemon.log_lines() if line.get("event") == "alert"]
    assert len(alert_lines) == len(alerts)
    assert all({"series", "topic", "partition", "offset"} <= line.keys() for line in alert_lines)


def test_hidden_state_is_carried_between_messages_and_kept_per_series(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    topics = Topics.fresh(kafka_bootstrap, partitions=1)
    t0 = 1_700_000_000.0
    # Two series with different histories, produced in two rounds so that the state must
    # survive between separate polls; then the same three final points for both.
    history_a = [point("a", t0 + 60 * i, 10 + 3 * math.sin(i / 5)) for i in range(60)]
    history_b = [point("b", t0 + 60 * i, 10 + 0.05 * i) for i in range(60)]
    config = write_config(tmp_path / "c.yaml", kafka_bootstrap, topics, model={"horizon_points": 3})
    daemon = Daemon(config, tmp_path / "d.log")
    try:
        produce(kafka_bootstrap, topics.input, history_a[:30] + history_b[:30])
        wait_committed(kafka_bootstrap, topics, daemon)
        produce(kafka_bootstrap, topics.input, history_a[30:] + history_b[30:])
        wait_committed(kafka_bootstrap, topics, daemon)
        final = [(t0 + 60 * (60 + i), 11.0) for i in range(3)]
        produce(
            kafka_bootstrap, topics.input, [point(s, ts, v) for s in ("a", "b") for ts, v in final]
        )
        wait_committed(kafka_bootstrap, topics, daemon)
    finally:
        assert daemon.stop() == 0

    forecasts = read_json(kafka_bootstrap, topics.forecasts)
    by_series = {s: [f for f in forecasts if f["series"] == s] for s in ("a", "b")}
    assert [len(v) for v in by_series.values()] == [63, 63]
    for series, records in by_series.items():
        ts = [r["ts"] for r in records]
        assert ts == sorted(ts), f"{series}: forecasts out of order"
        assert records[0]["forecast"] is None  # the first point has no history
        assert all(r["forecast"] is not None for r in records[1:])
    final_a = [r["forecast"] for r in by_series["a"][-3:]]
    final_b = [r["forecast"] for r in by_series["b"][-3:]]
    # Multi-step forecasts ride on the last record of each series in a batch: 3 steps ahead
    # at the series' typical interval (about 60 s), intervals widening with the step.
    last = by_series["a"][-1]
    assert last["horizon"] is not None and len(last["horizon"]) == 3
    steps = np.diff([last["ts"]] + [h["ts"] for h in last["horizon"]])
    assert np.allclose(steps, steps[0]) and 50 < steps[0] < 70
    widths = [h["upper"] - h["lower"] for h in last["horizon"]]
    assert widths == sorted(widths)
    # Same next values, different histories: different forecasts.
    assert not np.allclose(final_a, final_b, rtol=1e-3, atol=1e-3)
    # The same input twice in a row does not give the same forecast: the state moved on.
    assert final_a[1] != final_a[2] and final_b[1] != final_b[2]
    # Forecasts after the round boundaries continue smoothly (state was not reset):
    # a reset would forecast the last value exactly, with a NaN-free but history-less state.
    a_values = [r["value"] for r in by_series["a"]]
    a_forecasts = [r["forecast"] for r in by_series["a"]]
    errors = np.abs(np.array(a_values[31:60]) - np.array(a_forecasts[31:60]))
    assert errors.mean() < 3.0


def test_malformed_messages_are_logged_dead_lettered_and_skipped(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    topics = Topics.fresh(kafka_bootstrap, partitions=1)
    dead_letter = f"dead-{topics.group}"
    create_topics(AdminClient({"bootstrap.servers": kafka_bootstrap}), [dead_letter])
    t0 = 1_700_000_000.0
    good_before = [point("ok", t0 + 60 * i, float(i % 7)) for i in range(5)]
    bad = [
        ("bad", b"this is not json"),
        ("bad", orjson.dumps({"ts": t0, "value": 1.0})),  # missing series
        ("bad", orjson.dumps({"series": "bad", "value": 1.0})),  # missing ts
        ("bad", orjson.dumps({"series": "bad", "ts": t0, "value": "12"})),  # non-numeric
        ("bad", b'{"series": "bad", "ts": 1700000000, "value": NaN}'),  # NaN is not JSON
        ("bad", orjson.dumps({"series": "bad", "ts": "yesterday", "value": 1.0})),
        ("bad", orjson.dumps([1, 2, 3])),
    ]
    good_after = [point("ok", t0 + 60 * i, float(i % 7)) for i in range(5, 10)]
    produce(kafka_bootstrap, topics.input, good_before + bad + good_after)
    config = write_config(
        tmp_path / "c.yaml", kafka_bootstrap, topics, topics={"dead_letter": dead_letter}
    )
    daemon = Daemon(config, tmp_path / "d.log")
    try:
        wait_committed(kafka_bootstrap, topics, daemon)
        assert daemon.alive()
        # Still working after the bad input: a new good point is processed too.
        produce(kafka_bootstrap, topics.input, [point("ok", t0 + 6000, 3.0)])
        wait_committed(kafka_bootstrap, topics, daemon)
        assert daemon.alive()
    finally:
        assert daemon.stop() == 0

    rejected = [line for line in daemon.log_lines() if line.get("event") == "message rejected"]
    reasons = [line["reason"] for line in rejected]
    assert reasons == [
        "not_json",
        "missing_field",
        "missing_field",
        "non_numeric_value",
        "not_json",
        "bad_timestamp",
        "not_object",
    ]
    for line, offset in zip(rejected, range(5, 12), strict=True):
        assert line["topic"] == topics.input and line["partition"] == 0
        assert line["offset"] == offset
        assert line["detail"]
        assert line["level"] == "warning"
    assert "'ts'" in rejected[2]["detail"] and "'value'" in rejected[3]["detail"]
    forecasts = read_json(kafka_bootstrap, topics.forecasts)
    assert [f["series"] for f in forecasts] == ["ok"] * 11

    # Every bad message is in the dead-letter topic: original key and bytes, and headers
    # naming the reason and where it came from.
    letters = read_topic({"bootstrap.servers": kafka_bootstrap}, dead_letter)
    assert [m.value() for m in letters] == [value for _, value in bad]
    assert all(m.key() == b"bad" for m in letters)
    for message, reason, offset in zip(letters, reasons, range(5, 12), strict=True):
        headers = {k: v.decode() for k, v in message.headers() or []}
        assert headers["streamrnn.reason"] == reason
        assert headers["streamrnn.detail"]
        assert headers["streamrnn.source.topic"] == topics.input
        assert (headers["streamrnn.source.partition"], headers["streamrnn.source.offset"]) == (
            "0",
            str(offset),
        )


def test_sigterm_finishes_the_batch_commits_and_exits_zero(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    topics = Topics.fresh(kafka_bootstrap, partitions=2)
    stream = synthetic_stream(SyntheticSpec(series=50, points=1200, seed=5))
    total = produce(
        kafka_bootstrap,
        topics.input,
        (point(s, ts, v) for s, ts, v in stream[["series", "ts", "value"]].itertuples(index=False)),
    )
    config = write_config(
        tmp_path / "c.yaml", kafka_bootstrap, topics, consume={"batch_max_messages": 500}
    )
    daemon = Daemon(config, tmp_path / "d.log")
    try:
        wait_until(
            lambda: any(line.get("event") == "started" for line in daemon.log_lines()),
            60,
            "the daemon to start",
        )
        wait_until(lambda: _committed(kafka_bootstrap, topics) > 0, 60, "a first commit")
    finally:
        code = daemon.stop()
    assert code == 0
    committed = _committed(kafka_bootstrap, topics)
    assert 0 < committed <= total
    # Every point whose offset was committed has its forecast on the output topic, and
    # nothing was published beyond the committed batch: finish batch -> ack -> commit.
    forecasts = read_json(kafka_bootstrap, topics.forecasts)
    assert len(forecasts) == committed
    stopped = [line for line in daemon.log_lines() if line.get("event") == "stopped"]
    assert stopped and stopped[0]["points"] == committed


def _committed(bootstrap: str, topics: Topics) -> int:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": topics.group})
    try:
        parts = [TopicPartition(topics.input, p) for p in range(2)]
        return sum(max(tp.offset, 0) for tp in consumer.committed(parts, timeout=10))
    finally:
        consumer.close()


def test_sigterm_during_start_up_still_exits_zero(kafka_bootstrap: str, tmp_path: Path) -> None:
    topics = Topics.fresh(kafka_bootstrap, partitions=1)
    daemon = Daemon(write_config(tmp_path / "c.yaml", kafka_bootstrap, topics), tmp_path / "d.log")
    time.sleep(0.5)  # the process is still importing torch
    assert daemon.stop() == 0
