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
from streamrnn.kafka.inspect import group_progress, read_topic


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

    def __init__(self, config: Path, log_path: Path) -> None:
        self.log_path = log_path
        env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMRNN_")}
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
