"""A daemon that dies inside a batch commits nothing it did not deliver, and a message that
kills it is set aside at the next start (real broker, real daemon subprocesses).

* Faults are injected at random points of the batch path (``STREAMRNN_FAULT_INJECTION``, see
  :mod:`streamrnn.fault_injection`); the daemon is restarted after each death until it has
  committed the whole input. Then every point has its forecast and every alert of a faultless
  reference run is there: at least once (repeats allowed, same ``alert_id``) or exactly once
  (no repeats; read_committed).
* A message that makes every batch it is in raise kills the first run; the second run
  dead-letters it as ``poison_pill`` and processes everything else.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka.admin import AdminClient

from streamrnn.fault_injection import ENV_VAR
from streamrnn.kafka.clients import create_topics
from streamrnn.kafka.topic_reader import group_progress, read_topic
from streamrnn.synthetic import SyntheticSpec, synthetic_stream

from .harness import (
    Daemon,
    Topics,
    committed_all,
    point,
    produce_positions,
    read_json,
    write_config,
)

pytestmark = pytest.mark.integration

#: Points per call of a fault point that raise (each batch passes about seven points).
FAULT_PROBABILITY = 0.03
#: Deaths the fault run must go through, at least.
MIN_DEATHS = 3
#: Most lives one run may take (a bound on the loop, not an expectation).
MAX_LIVES = 60


def _stream(seed: int) -> list[tuple[str, bytes]]:
    frame = synthetic_stream(SyntheticSpec(series=8, points=400, seed=seed, anomalies_per_series=3))
    return [
        point(s, ts, v) for s, ts, v in frame[["series", "ts", "value"]].itertuples(index=False)
    ]


def _outputs_for(bootstrap: str, input_topic: str, name: str) -> Topics:
    """New output topics and group reading an existing ``input_topic``."""
    topics = Topics.fresh(bootstrap, partitions=1)
    topics = Topics(input_topic, topics.alerts, topics.forecasts, f"{topics.group}-{name}")
    return topics


def _config(tmp_path: Path, bootstrap: str, topics: Topics, name: str, mode: str) -> Path:
    return write_config(
        tmp_path / f"{name}.yaml",
        bootstrap,
        topics,
        topics={"dead_letter": f"dead-{topics.group}"},
        consume={"batch_max_messages": 100},
        delivery={"mode": mode, "commit_interval_s": 0.3},
        state={"directory": str(tmp_path / f"state-{name}")},
        retrain={"enabled": False},
        scoring={"alert": {"cooldown_points": 0, "cooldown_s": 0}},
    )


def _run_until_committed(
    bootstrap: str, topics: Topics, config: Path, logs: Path, env: dict[str, str], timeout_s: float
) -> tuple[int, list[Path]]:
    """Start the daemon, and again after every death, until the group has committed the
    whole input; then stop it. Returns (deaths, log files of every life)."""
    deadline = time.monotonic() + timeout_s
    paths = []
    for deaths in range(MAX_LIVES):
        path = logs / f"life-{deaths}.log"
        paths.append(path)
        daemon = Daemon(config, path, env=env)
        try:
            while daemon.alive() and not committed_all(bootstrap, topics):
                assert time.monotonic() < deadline, f"not done after {timeout_s} s, {deaths} deaths"
                time.sleep(0.3)
        finally:
            code = daemon.stop()
        if committed_all(bootstrap, topics) and code == 0:
            return deaths, paths
        assert code != 0, path.read_text()[-3000:]
    raise AssertionError(f"still not done after {MAX_LIVES} lives")


def _log_events(paths: list[Path], event: str) -> list[dict[str, Any]]:
    out = []
    for path in paths:
        for line in path.read_bytes().splitlines():
            try:
                doc = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
            if doc.get("event") == event:
                out.append(doc)
    return out


def _alert_ids(bootstrap: str, topic: str) -> Counter[str]:
    return Counter(a["alert_id"] for a in read_json(bootstrap, topic))


@pytest.mark.parametrize("mode", ["at_least_once", "exactly_once"])
def test_injected_faults_never_commit_undelivered_work(
    kafka_bootstrap: str, tmp_path: Path, mode: str
) -> None:
    source = Topics.fresh(kafka_bootstrap, partitions=2)
    records = _stream(seed=11)
    produce_positions(kafka_bootstrap, source.input, records)
    points = Counter((orjson.loads(v)["series"], orjson.loads(v)["ts"]) for _, v in records)

    reference = _outputs_for(kafka_bootstrap, source.input, "reference")
    config = _config(tmp_path, kafka_bootstrap, reference, "reference", mode)
    deaths, _ = _run_until_committed(
        kafka_bootstrap, reference, config, tmp_path, {}, timeout_s=120
    )
    assert deaths == 0
    want = _alert_ids(kafka_bootstrap, reference.alerts)
    assert want, "the reference run raised no alert: the test would prove nothing"

    faulty = _outputs_for(kafka_bootstrap, source.input, "faulty")
    config = _config(tmp_path, kafka_bootstrap, faulty, "faulty", mode)
    logs = tmp_path / "faulty"
    logs.mkdir()
    env = {ENV_VAR: f"random={FAULT_PROBABILITY},seed=5"}
    deaths, paths = _run_until_committed(kafka_bootstrap, faulty, config, logs, env, timeout_s=420)
    where = Counter(
        str(line.get("error", "")).rsplit(" at ", 1)[-1]
        for line in _log_events(paths, "the consume loop failed")
    )
    print(f"\n{mode}: {deaths} deaths, injected at {dict(where)}")
    assert deaths >= MIN_DEATHS, f"only {deaths} deaths: raise FAULT_PROBABILITY"
    assert not _log_events(paths, "message rejected"), "a good message was rejected"

    forecasts = Counter(
        (f["series"], f["ts"]) for f in read_json(kafka_bootstrap, faulty.forecasts)
    )
    got = _alert_ids(kafka_bootstrap, faulty.alerts)
    assert set(forecasts) == set(points), (
        f"{len(set(points) - set(forecasts))} points without a forecast,"
        f" {len(set(forecasts) - set(points))} forecasts of no point"
    )
    assert set(got) == set(want), (
        f"lost {len(set(want) - set(got))} alerts, {len(set(got) - set(want))} spurious"
    )
    if mode == "exactly_once":
        assert max(forecasts.values()) == 1, "a point has two forecasts"
        assert max(got.values()) == 1, "an alert was published twice"


def test_a_message_that_kills_the_daemon_is_dead_lettered_at_the_next_start(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    topics = Topics.fresh(kafka_bootstrap, partitions=1)
    dead_letter = f"dead-{topics.group}"
    create_topics(AdminClient({"bootstrap.servers": kafka_bootstrap}), [dead_letter])
    t0 = float(int(time.time()) - 3600)
    records = []
    for i in range(300):
        for s in ("a.cpu", "b.cpu"):
            labels = {"note": "POISON-7f3a"} if (i, s) == (150, "a.cpu") else {"note": "fine"}
            records.append(point(s, t0 + 10 * i, 5.0 + (i % 7), labels=labels))
    positions = produce_positions(kafka_bootstrap, topics.input, records)
    poison_at = positions[2 * 150]
    config = write_config(
        tmp_path / "c.yaml",
        kafka_bootstrap,
        topics,
        topics={"dead_letter": dead_letter},
        consume={"batch_max_messages": 64},
        state={"directory": str(tmp_path / "state")},
        retrain={"enabled": False},
    )
    env = {ENV_VAR: "poison=POISON-7f3a"}
    first = Daemon(config, tmp_path / "first.log", env=env)
    deadline = time.monotonic() + 90
    while first.alive():
        assert time.monotonic() < deadline, "the poison message did not kill the first run"
        time.sleep(0.2)
    assert first.stop() != 0
    committed, _total = group_progress(
        {"bootstrap.servers": kafka_bootstrap}, topics.group, [topics.input]
    )
    assert committed <= poison_at[1], "offsets committed past the batch the daemon died in"

    second = Daemon(config, tmp_path / "second.log", env=env)
    try:
        deadline = time.monotonic() + 120
        while not committed_all(kafka_bootstrap, topics):
            assert second.alive(), (tmp_path / "second.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "the second run did not get past the poison"
            time.sleep(0.3)
    finally:
        code = second.stop()
    assert code == 0
    letters = read_topic({"bootstrap.servers": kafka_bootstrap}, dead_letter)
    assert len(letters) == 1
    headers = {k: (v or b"").decode() for k, v in letters[0].headers() or []}
    assert headers["streamrnn.reason"] == "poison_pill"
    assert int(headers["streamrnn.source.offset"]) == poison_at[1]
    assert letters[0].value() == records[2 * 150][1]
    assert _log_events(
        [tmp_path / "second.log"],
        "poison pill: a message the daemon died on fails again alone; dead-lettered",
    )
    forecasts = {(f["series"], f["ts"]) for f in read_json(kafka_bootstrap, topics.forecasts)}
    good = {(orjson.loads(v)["series"], orjson.loads(v)["ts"]) for _, v in records}
    good.discard(("a.cpu", t0 + 1500))
    assert forecasts == good
