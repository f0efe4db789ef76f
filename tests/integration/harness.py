"""Drive ``streamrnn run`` as a real subprocess against the real broker, and look at topics."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import yaml
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient

from streamrnn.kafka.clients import create_topics
from streamrnn.kafka.topic_reader import group_progress, read_topic


@dataclass
class Topics:
    """Unique topic and group names for one test."""

    input: str
    alerts: str
    forecasts: str
    group: str

    @classmethod
    def fresh(cls, bootstrap: str, partitions: int = 2) -> Topics:
        tag = uuid.uuid4().hex[:10]
        topics = cls(f"in-{tag}", f"alerts-{tag}", f"forecasts-{tag}", f"group-{tag}")
        admin = AdminClient({"bootstrap.servers": bootstrap})
        create_topics(admin, [topics.input], partitions=partitions)
        create_topics(admin, [topics.alerts, topics.forecasts], partitions=1)
        return topics


def write_config(path: Path, bootstrap: str, names: Topics, **sections: dict[str, Any]) -> Path:
    """A config file for the daemon under test (sections override the defaults)."""
    doc: dict[str, Any] = {
        "kafka": {"bootstrap_servers": bootstrap, "group_id": names.group},
        "topics": {"input": [names.input], "alerts": names.alerts, "forecasts": names.forecasts},
        "consume": {"poll_timeout_s": 0.2},
        "logging": {"format": "json", "level": "INFO"},
        # Several daemons run side by side: each takes a free port (logged at start).
        "http": {"port": 0},
    }
    for name, values in sections.items():
        doc.setdefault(name, {}).update(values)
    path.write_text(yaml.safe_dump(doc))
    return path


def produce(bootstrap: str, topic: str, records: Iterable[tuple[str, bytes]]) -> int:
    """Produce (key, value) records and wait for all acknowledgements; returns the count."""
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    n = 0
    for key, value in records:
        producer.produce(topic, key=key.encode(), value=value)
        n += 1
        if n % 10_000 == 0:
            producer.flush(30)
    assert producer.flush(30) == 0
    return n


def point(series: str, ts: float, value: float, **extra: Any) -> tuple[str, bytes]:
    """A single-point message as (key, value)."""
    return series, orjson.dumps({"series": series, "ts": ts, "value": value, **extra})


class Daemon:
    """``python -m streamrnn run --config PATH`` with its stdout captured to a file."""

    def __init__(self, config: Path, log_path: Path, env: dict[str, str] | None = None) -> None:
        """``env``: ``STREAMRNN_*`` variables to set (the caller's own are never passed on)."""
        self.log_path = log_path
        env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMRNN_")} | (env or {})
        self._log = log_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "streamrnn", "run", "--config", str(config)],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
        )

    def log_lines(self) -> list[dict[str, Any]]:
        """The daemon's JSON log lines so far (non-JSON lines, e.g. librdkafka's, skipped)."""
        out = []
        for line in self.log_path.read_bytes().splitlines():
            try:
                out.append(orjson.loads(line))
            except orjson.JSONDecodeError:
                continue
        return out

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout_s: float = 60.0) -> int:
        """SIGTERM and wait; returns the exit code."""
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout_s)
        finally:
            self._log.close()

    def kill(self) -> None:
        if self.alive():
            self.proc.kill()
            self.proc.wait()
        self._log.close()


def wait_until(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    """Poll ``condition`` every 0.2 s; fail the test with ``what`` on timeout."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


def committed_all(bootstrap: str, topics: Topics) -> bool:
    """Whether ``topics.group`` has committed every message of ``topics.input``."""
    committed, total = group_progress(
        {"bootstrap.servers": bootstrap}, topics.group, [topics.input]
    )
    return total > 0 and committed >= total


def wait_committed(bootstrap: str, topics: Topics, daemon: Daemon, timeout_s: float = 90.0) -> None:
    """Wait until the daemon's group has committed every input message."""

    def done() -> bool:
        assert daemon.alive(), f"daemon exited: {daemon.log_path.read_text()[-3000:]}"
        committed, total = group_progress(
            {"bootstrap.servers": bootstrap}, topics.group, [topics.input]
        )
        return total > 0 and committed >= total

    wait_until(done, timeout_s, "the daemon to commit every input message")


def read_json(bootstrap: str, topic: str) -> list[dict[str, Any]]:
    """Every record of ``topic`` decoded, with its key under ``_key``."""
    out = []
    for msg in read_topic({"bootstrap.servers": bootstrap}, topic):
        doc = orjson.loads(msg.value() or b"null")
        doc["_key"] = (msg.key() or b"").decode()
        out.append(doc)
    return out


def produce_positions(
    bootstrap: str, topic: str, records: Iterable[tuple[str | None, bytes | None]]
) -> list[tuple[int, int]]:
    """Produce (key, value) records in order (idempotent producer: no reordering on retries)
    and return the (partition, offset) the broker gave each one, in the same order."""
    producer = Producer(
        {"bootstrap.servers": bootstrap, "linger.ms": 20, "enable.idempotence": True}
    )
    positions: list[tuple[int, int] | None] = []
    errors: list[str] = []

    def delivered(index: int) -> Callable[[Any, Any], None]:
        def callback(err: Any, msg: Any) -> None:
            if err is not None:
                errors.append(str(err))
            else:
                positions[index] = (msg.partition(), msg.offset())

        return callback

    for key, value in records:
        positions.append(None)
        while True:
            try:
                producer.produce(
                    topic,
                    key=None if key is None else key.encode(),
                    value=value,
                    on_delivery=delivered(len(positions) - 1),
                )
                break
            except BufferError:
                producer.poll(0.1)
        producer.poll(0)
    assert producer.flush(60) == 0
    assert not errors, errors[:5]
    assert all(p is not None for p in positions)
    return [p for p in positions if p is not None]


def stopped_line(daemon: Daemon) -> dict[str, Any]:
    """The daemon's final "stopped" log line (totals since start)."""
    lines = [line for line in daemon.log_lines() if line.get("event") == "stopped"]
    assert len(lines) == 1, f"expected one 'stopped' line, got {len(lines)}"
    return lines[0]


def proc_status_kib(pid: int, field: str) -> int | None:
    """A ``/proc/<pid>/status`` memory field (``VmHWM``, ``VmRSS``) in KiB; None once gone."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return None


def end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    """The high watermark of every partition of ``topic``."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"ends-{uuid.uuid4().hex}"})
    try:
        metadata = consumer.list_topics(topic, timeout=30)
        return {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=30)[1]
            for p in metadata.topics[topic].partitions
        }
    finally:
        consumer.close()


def read_json_from(bootstrap: str, topic: str, start: dict[int, int]) -> list[dict[str, Any]]:
    """The records of ``topic`` from offsets ``start`` (per partition) to the current end,
    decoded, with the key under ``_key``."""
    from confluent_kafka import Consumer, TopicPartition

    ends = end_offsets(bootstrap, topic)
    wanted = {p: (start.get(p, 0), end) for p, end in ends.items() if end > start.get(p, 0)}
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"reader-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
        }
    )
    out = []
    try:
        consumer.assign([TopicPartition(topic, p, lo) for p, (lo, _) in wanted.items()])
        position = {p: lo for p, (lo, _) in wanted.items()}
        deadline = time.monotonic() + 60
        while any(position[p] < wanted[p][1] for p in wanted):
            assert time.monotonic() < deadline, f"reading {topic}: timed out"
            for msg in consumer.consume(num_messages=10_000, timeout=0.5):
                if msg.error() is None and msg.offset() < wanted[msg.partition()][1]:
                    doc = orjson.loads(msg.value() or b"null")
                    doc["_key"] = (msg.key() or b"").decode()
                    out.append(doc)
                    position[msg.partition()] = msg.offset() + 1
        return out
    finally:
        consumer.close()
