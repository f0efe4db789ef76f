"""AckedSink's epochs against the real broker: offsets may be committed for a mark only once
every record sent before it is acknowledged, whatever was sent after it."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from confluent_kafka import Producer

from streamrnn.kafka.sink import AckedSink

from .harness import Topics

pytestmark = pytest.mark.integration


def _sink(bootstrap: str, **conf: object) -> tuple[AckedSink, list[str]]:
    errors: list[str] = []
    producer = Producer(
        {"bootstrap.servers": bootstrap, "linger.ms": 5, "enable.idempotence": True, **conf}
    )
    return AckedSink(producer, lambda topic, err: errors.append(f"{topic}: {err.name()}")), errors


def _serve_until(sink: AckedSink, condition: Callable[[], bool], timeout_s: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        sink.serve_reports()
        if condition():
            return True
        time.sleep(0.01)
    return False


def test_a_mark_is_acknowledged_once_the_records_before_it_are(kafka_bootstrap: str) -> None:
    topic = Topics.fresh(kafka_bootstrap, partitions=2).input
    sink, errors = _sink(kafka_bootstrap)
    sink.send_many(topic, [b"k%d" % i for i in range(2000)], [b"v"] * 2000)
    sink.send(topic, b"state", b"blob", [("h", b"1")], partition=1)
    first = sink.mark()
    # reports run only inside the producer's polls: none has been served yet
    assert not sink.acked_through(first)
    sink.send_many(topic, [b"late"] * 500, [b"v"] * 500)
    second = sink.mark()
    assert second == first + 1
    assert _serve_until(sink, lambda: sink.acked_through(first))
    assert _serve_until(sink, lambda: sink.acked_through(second))
    assert not errors
    assert sink.positions[(topic, 1)] >= 1
    # an epoch with nothing sent is acknowledged at once
    assert sink.acked_through(sink.mark())
    assert sink.wait_acked(lambda: True)


def test_a_failed_record_holds_every_mark_back(kafka_bootstrap: str) -> None:
    topic = Topics.fresh(kafka_bootstrap, partitions=1).input
    sink, errors = _sink(kafka_bootstrap, **{"message.timeout.ms": 1000})
    sink.send_many(topic, [b"a"], [b"v"])
    first = sink.mark()
    assert _serve_until(sink, lambda: sink.acked_through(first))
    # a topic that does not exist (the broker creates none): delivery times out
    sink.send(f"{topic}-missing", b"k", b"v")
    second = sink.mark()
    assert _serve_until(sink, sink.has_failed)
    assert errors and errors[0].startswith(f"{topic}-missing")
    assert not sink.acked_through(second)
    assert not sink.acked_through(first)  # a failure waits for wait_acked, which re-sends it
    sink.discard()
    assert not sink.has_failed()
    assert sink.acked_through(sink.mark())
