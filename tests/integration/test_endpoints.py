"""The daemon's HTTP endpoints and its graceful shutdown, against the real broker.

``/metrics`` is scraped from a running daemon and its counters move with the input;
``/readyz`` answers 503 until the instance has joined its group and restored its
partitions' state, then 200; SIGTERM mid-stream exits 0 well within a Kubernetes grace
period with offsets and series state committed, and a restart carries on exactly there.
"""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from streamrnn.kafka.topic_reader import read_topic
from streamrnn.synthetic import SyntheticSpec, synthetic_stream

from .harness import (
    Daemon,
    Topics,
    point,
    produce,
    read_json,
    stopped_line,
    wait_committed,
    wait_until,
    write_config,
)

pytestmark = pytest.mark.integration


def _port(daemon: Daemon) -> int:
    lines: list[dict[str, Any]] = []

    def bound() -> bool:
        assert daemon.alive(), daemon.log_path.read_text()[-3000:]
        lines[:] = [x for x in daemon.log_lines() if x.get("event") == "http endpoints"]
        return bool(lines)

    wait_until(bound, 60, "the HTTP endpoints")
    return int(lines[0]["port"])


def _get(port: int, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    status, body = _get(port, "/metrics")
    assert status == 200
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(body.decode())
        for s in family.samples
    }


def _stream(series: int, points: int, seed: int) -> list[tuple[str, bytes]]:
    stream = synthetic_stream(SyntheticSpec(series=series, points=points, seed=seed))
    return [
        point(s, ts, v) for s, ts, v in stream[["series", "ts", "value"]].itertuples(index=False)
    ]


def test_metrics_move_and_ready_only_after_the_restore(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    topics = Topics.fresh(kafka_bootstrap, partitions=2)
    everything = _stream(series=20, points=450, seed=11)  # in time order
    first, second = everything[:6000], everything[6000:]
    produce(kafka_bootstrap, topics.input, first)
    # No state directory: the second run restores everything from the changelog.
    config = write_config(tmp_path / "c.yaml", kafka_bootstrap, topics)
    # A first run leaves state in the changelog, so the second run has a restore to do.
    daemon = Daemon(config, tmp_path / "first.log")
    try:
        wait_committed(kafka_bootstrap, topics, daemon)
    finally:
        assert daemon.stop() == 0

    daemon = Daemon(config, tmp_path / "second.log")
    try:
        port = _port(daemon)
        probes: list[tuple[float, int]] = []

        def ready() -> bool:
            status, _ = _get(port, "/readyz")
            probes.append((time.time(), status))
            return status == 200

        wait_until(ready, 60, "/readyz to answer 200")
        restored = [x for x in daemon.log_lines() if x.get("event") == "state restored"]
        assert restored and restored[0]["series"] == 20
        restored_at = datetime.fromisoformat(restored[0]["ts"].replace("Z", "+00:00")).timestamp()
        assert probes[0][1] == 503  # the first probe came before the group was joined
        first_ready = next(t for t, status in probes if status == 200)
        assert first_ready >= restored_at
        assert _get(port, "/healthz")[0] == 200

        before = _scrape(port)
        assert before[("streamrnn_ready", ())] == 1
        assert before[("streamrnn_restored_series_total", ())] == 20
        bad = [("bad", b"this is not json")] * 3
        produce(kafka_bootstrap, topics.input, second + bad)
        wait_committed(kafka_bootstrap, topics, daemon)
        time.sleep(1.5)  # the gauges are refreshed about once a second
        after = _scrape(port)
    finally:
        assert daemon.stop() == 0

    def grew(name: str, labels: tuple[tuple[str, str], ...] = ()) -> float:
        return after.get((name, labels), 0.0) - before.get((name, labels), 0.0)

    assert grew("streamrnn_messages_total") == len(second) + 3
    assert grew("streamrnn_points_total") == len(second)
    assert grew("streamrnn_rejected_messages_total", (("reason", "not_json"),)) == 3
    assert grew("streamrnn_batch_seconds_count") >= 1
    assert grew("streamrnn_checkpoint_seconds_count") >= 1
    # Restored series come into memory when they send a point again.
    assert after[("streamrnn_live_series", ())] == len({key for key, _ in second})
    assert after[("streamrnn_assigned_partitions", ())] == 2
    lag = {k: v for k, v in after.items() if k[0] == "streamrnn_consumer_lag"}
    assert len(lag) == 2 and set(lag.values()) == {0.0}
    assert time.time() - after[("streamrnn_last_progress_timestamp_seconds", ())] < 30
    versions = [dict(k[1]) for k, v in after.items() if k[0] == "streamrnn_model_info" and v == 1]
    assert [v["group"] for v in versions] == ["global"]
    assert after.get(("streamrnn_training", ())) == 0


def test_sigterm_mid_stream_exits_zero_with_offsets_and_state_committed(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    topics = Topics.fresh(kafka_bootstrap, partitions=2)
    records = _stream(series=50, points=1200, seed=5)
    produce(kafka_bootstrap, topics.input, records)
    config = write_config(
        tmp_path / "c.yaml",
        kafka_bootstrap,
        topics,
        consume={"batch_max_messages": 500},
    )  # no state directory: the restart restores from the changelog alone
    daemon = Daemon(config, tmp_path / "first.log")
    try:
        wait_until(
            lambda: _forecast_count(kafka_bootstrap, topics) > 5000, 120, "the daemon mid-stream"
        )
    finally:
        asked = time.monotonic()
        code = daemon.stop()
        took = time.monotonic() - asked
    assert code == 0
    assert took < 30, f"shutdown took {took:.1f} s"
    stopped = stopped_line(daemon)
    handled = stopped["messages"]
    assert 0 < handled < len(records), "SIGTERM came after the end of the stream"
    # Offsets: exactly what was handled is committed.
    forecasts = read_json(kafka_bootstrap, topics.forecasts)
    assert len(forecasts) == handled
    # State: every series seen has a changelog record stamped at or before the committed
    # offsets (the next run restores from it).
    changelog = read_topic(
        {"bootstrap.servers": kafka_bootstrap}, f"{topics.group}-{topics.input}-state"
    )
    seen = {f["series"] for f in forecasts}
    assert {m.key().decode() for m in changelog} == seen

    # A restart carries on where the first run stopped: nothing lost, nothing repeated.
    daemon = Daemon(config, tmp_path / "second.log")
    try:
        wait_committed(kafka_bootstrap, topics, daemon)
    finally:
        assert daemon.stop() == 0
    restored = [x for x in daemon.log_lines() if x.get("event") == "state restored"]
    assert sum(x["series"] for x in restored) == len(seen)
    forecasts = read_json(kafka_bootstrap, topics.forecasts)
    keys = [(f["series"], f["ts"]) for f in forecasts]
    assert len(keys) == len(records) and len(set(keys)) == len(records)


def _forecast_count(bootstrap: str, topics: Topics) -> int:
    from .harness import end_offsets

    return sum(end_offsets(bootstrap, topics.forecasts).values())
