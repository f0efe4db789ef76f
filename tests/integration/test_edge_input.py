"""Messages that used to crash or wedge the daemon, through the real daemon and broker:

* a 3 MiB message on an input topic that accepts it, while the producer takes 1 MB: it is
  dead-lettered as a truncated copy, and as headers only once the dead-letter topic's limit
  drops below what the daemon read at start-up;
* a dead-letter topic that does not exist: nothing is committed past the bad message until
  the topic appears, then everything is delivered;
* timestamps far in the past (rejected) and far in the future (accepted, and they alert);
* extreme values during a series' warm-up (rejected beyond consume.max_abs_value; within it
  the series stays finite).

After each: the daemon is alive, every bad message is dead-lettered with its reason, every
good point has its forecast.
"""

from __future__ import annotations

import math
import random
import time
from pathlib import Path

import orjson
import pytest
from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewTopic,
)

from streamrnn.kafka.clients import create_new_topics, create_topics
from streamrnn.kafka.topic_reader import group_progress, read_topic

from .harness import (
    Daemon,
    Topics,
    committed_all,
    point,
    produce_positions,
    read_json,
    wait_until,
    write_config,
)

pytestmark = pytest.mark.integration

BIG = 3 * 2**20


def _headers(letter: object) -> dict[str, str]:
    return {k: (v or b"").decode() for k, v in letter.headers() or []}  # type: ignore[attr-defined]


def _good(series: str, t0: float, n: int, start: int = 0) -> list[tuple[str, bytes]]:
    return [point(series, t0 + 10.0 * i, 10.0 + (i % 5)) for i in range(start, start + n)]


def _forecast_keys(bootstrap: str, topic: str) -> set[tuple[str, float]]:
    return {(f["series"], f["ts"]) for f in read_json(bootstrap, topic)}


def _keys(records: list[tuple[str, bytes]]) -> set[tuple[str, float]]:
    return {(orjson.loads(v)["series"], orjson.loads(v)["ts"]) for _, v in records}


def test_a_message_too_large_for_the_producer_is_dead_lettered_truncated_then_headers_only(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    topics = Topics.fresh(kafka_bootstrap, partitions=1)
    big_input = f"{topics.input}-big"
    create_new_topics(
        admin, [NewTopic(big_input, 1, 1, config={"max.message.bytes": str(8 * 2**20)})]
    )
    topics = Topics(big_input, topics.alerts, topics.forecasts, topics.group)
    dead_letter = f"dead-{topics.group}"
    create_topics(admin, [dead_letter])
    t0 = float(int(time.time()) - 3600)
    # Random hex: the producer's compression must not shrink it below the limits.
    pad = random.Random(3).randbytes(BIG // 2).hex()
    huge = orjson.dumps({"series": "a.cpu", "ts": t0 + 5, "value": 1.0, "pad": pad})
    first = [*_good("a.cpu", t0, 20), ("a.cpu", huge), *_good("a.cpu", t0, 20, start=20)]
    produce_positions_big(kafka_bootstrap, big_input, first)
    config = write_config(
        tmp_path / "c.yaml",
        kafka_bootstrap,
        topics,
        topics={"dead_letter": dead_letter},
        retrain={"enabled": False},
    )
    daemon = Daemon(config, tmp_path / "d.log")
    try:
        wait_until(lambda: committed_all(kafka_bootstrap, topics), 90, "the first batch")
        assert daemon.alive()
        assert any(
            line.get("event") == "record size limits differ" for line in daemon.log_lines()
        ), "the start-up check did not say the input takes larger messages"
        # The dead-letter topic now takes less than the daemon read at start-up: the
        # truncated copy is refused by the broker and goes again as headers only.
        resource = ConfigResource(
            ConfigResource.Type.TOPIC,
            dead_letter,
            incremental_configs=[
                ConfigEntry(
                    "max.message.bytes", "20000", incremental_operation=AlterConfigOpType.SET
                )
            ],
        )
        for future in admin.incremental_alter_configs([resource]).values():
            future.result(30)
        time.sleep(2)
        second = [("a.cpu", huge), *_good("a.cpu", t0, 20, start=40)]
        produce_positions_big(kafka_bootstrap, big_input, second)
        wait_until(lambda: committed_all(kafka_bootstrap, topics), 90, "the second batch")
        assert daemon.alive()
    finally:
        code = daemon.stop()
    assert code == 0, daemon.log_path.read_text()[-3000:]
    letters = read_topic({"bootstrap.servers": kafka_bootstrap}, dead_letter)
    assert len(letters) == 2
    truncated, headers_only = (_headers(x) for x in letters)
    for h in (truncated, headers_only):
        assert h["streamrnn.reason"] == "oversized"
        assert h["streamrnn.original_bytes"] == str(len(huge))
        assert h["streamrnn.source.topic"] == big_input
    assert truncated["streamrnn.truncated"] == "true"
    value = letters[0].value() or b""
    assert 0 < len(value) < 1_000_000 and huge.startswith(value)
    assert headers_only["streamrnn.truncated"] == "headers_only"
    assert letters[1].value() is None
    assert _forecast_keys(kafka_bootstrap, topics.forecasts) == _keys(
        [r for r in first + second if r[1] is not huge]
    )


def produce_positions_big(bootstrap: str, topic: str, records: list[tuple[str, bytes]]) -> None:
    """Produce with a client that takes 8 MiB messages (the harness's takes 1 MB)."""
    from confluent_kafka import Producer

    producer = Producer(
        {"bootstrap.servers": bootstrap, "message.max.bytes": 10 * 2**20, "linger.ms": 5}
    )
    for key, value in records:
        producer.produce(topic, key=key.encode(), value=value)
        producer.poll(0)
    assert producer.flush(30) == 0


def test_a_missing_dead_letter_topic_holds_the_commit_until_it_exists(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    topics = Topics.fresh(kafka_bootstrap, partitions=1)
    dead_letter = f"dead-late-{topics.group}"
    t0 = float(int(time.time()) - 3600)
    records = [*_good("a.cpu", t0, 30), ("a.cpu", b"not json"), *_good("a.cpu", t0, 30, start=30)]
    positions = produce_positions(kafka_bootstrap, topics.input, records)
    bad_offset = positions[30][1]
    config = write_config(
        tmp_path / "c.yaml",
        kafka_bootstrap,
        topics,
        topics={"dead_letter": dead_letter, "create": False},
        kafka={"producer": {"message.timeout.ms": 2000}},
        retrain={"enabled": False},
    )
    daemon = Daemon(config, tmp_path / "d.log")
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            assert daemon.alive(), daemon.log_path.read_text()[-3000:]
            committed, _ = group_progress(
                {"bootstrap.servers": kafka_bootstrap}, topics.group, [topics.input]
            )
            assert committed <= bad_offset, "committed past a dead letter not delivered"
            time.sleep(0.5)
        create_topics(AdminClient({"bootstrap.servers": kafka_bootstrap}), [dead_letter])
        wait_until(lambda: committed_all(kafka_bootstrap, topics), 90, "the commit")
    finally:
        code = daemon.stop()
    assert code == 0, daemon.log_path.read_text()[-3000:]
    letters = read_topic({"bootstrap.servers": kafka_bootstrap}, dead_letter)
    assert [(_headers(x)["streamrnn.reason"], x.value()) for x in letters][:1] == [
        ("not_json", b"not json")
    ]
    assert _forecast_keys(kafka_bootstrap, topics.forecasts) == _keys(
        [r for r in records if r[1] != b"not json"]
    )


def test_far_timestamps_and_extreme_values_in_warm_up(kafka_bootstrap: str, tmp_path: Path) -> None:
    topics = Topics.fresh(kafka_bootstrap, partitions=1)
    dead_letter = f"dead-{topics.group}"
    create_topics(AdminClient({"bootstrap.servers": kafka_bootstrap}), [dead_letter])
    t0 = float(int(time.time()) - 3600)
    far = 250_000_000_000.0  # year 9892: representable, in the future
    good: list[tuple[str, bytes]] = []
    bad: list[tuple[str, bytes, str]] = []
    for i in range(120):
        # A series in the far future, with a spike that alerts.
        good.append(point("future.cpu", far + 10.0 * i, 500.0 if i == 100 else 10.0 + (i % 3)))
        # Extreme values at the 10th point of two series (warm-up): one rejected, one kept.
        value = 1e14 if i == 9 else 10.0 + (i % 3)
        good.append(point("huge.cpu", t0 + 10.0 * i, value))
        if i == 9:
            bad.append(
                ("tiny.cpu", *point("tiny.cpu", t0 + 10.0 * i, 1e308)[1:], "value_out_of_range")
            )
        else:
            good.append(point("tiny.cpu", t0 + 10.0 * i, 1e-308 if i == 10 else 10.0 + (i % 3)))
        if i == 50:
            bad.append(("past.cpu", *point("past.cpu", -1e11, 1.0)[1:], "bad_timestamp"))
    records = good + [(s, v) for s, v, _ in bad]
    produce_positions(kafka_bootstrap, topics.input, records)
    config = write_config(
        tmp_path / "c.yaml",
        kafka_bootstrap,
        topics,
        topics={"dead_letter": dead_letter},
        consume={"max_future_s": 1e12},
        retrain={"enabled": False},
        scoring={"calibration": "tail"},
    )
    daemon = Daemon(config, tmp_path / "d.log")
    try:
        wait_until(lambda: committed_all(kafka_bootstrap, topics), 120, "the commit")
        assert daemon.alive()
    finally:
        code = daemon.stop()
    assert code == 0, daemon.log_path.read_text()[-3000:]
    reasons = sorted(
        _headers(x)["streamrnn.reason"]
        for x in read_topic({"bootstrap.servers": kafka_bootstrap}, dead_letter)
    )
    assert reasons == sorted(r for _, _, r in bad)
    forecasts = read_json(kafka_bootstrap, topics.forecasts)
    assert {(f["series"], f["ts"]) for f in forecasts} == _keys(good)
    for series in ("huge.cpu", "tiny.cpu"):
        late = [f for f in forecasts if f["series"] == series and f["ts"] >= t0 + 10.0 * 30]
        assert late and all(
            f["forecast"] is not None and math.isfinite(f["forecast"]) and f["upper"] is not None
            for f in late
        ), f"{series} has non-finite forecasts after an extreme value in warm-up"
    alerts = [a for a in read_json(kafka_bootstrap, topics.alerts) if a["series"] == "future.cpu"]
    assert any(a["ts"] == far + 1000.0 for a in alerts), "the far-future spike did not alert"
    assert all(a["time"].startswith("9892-") for a in alerts)
