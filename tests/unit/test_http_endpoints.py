"""The HTTP endpoints and the probes' logic, served for real on a free local port."""

from __future__ import annotations

import socket
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from streamrnn.http_endpoints import Health, HttpEndpoints
from streamrnn.metrics import METRIC_NAMES, DaemonMetrics
from streamrnn.service_notify import ServiceNotifier


class Broker:
    def __init__(self) -> None:
        self.up = True
        self.calls = 0

    def __call__(self) -> bool:
        self.calls += 1
        return self.up


@pytest.fixture
def served() -> Iterator[tuple[HttpEndpoints, DaemonMetrics, Broker]]:
    metrics = DaemonMetrics()
    broker = Broker()
    endpoints = HttpEndpoints("127.0.0.1", 0, metrics.registry, Health(0.5, broker))
    endpoints.start()
    try:
        yield endpoints, metrics, broker
    finally:
        endpoints.stop()


def _get(endpoints: HttpEndpoints, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{endpoints.port}{path}", timeout=5) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_ready_only_after_joining_and_while_the_broker_answers(
    served: tuple[HttpEndpoints, DaemonMetrics, Broker],
) -> None:
    endpoints, _, broker = served
    status, body = _get(endpoints, "/readyz")
    assert status == 503 and b"not yet joined" in body
    endpoints.health.joined()
    assert _get(endpoints, "/readyz")[0] == 200
    broker.up = False
    endpoints.health._broker_checked = -float("inf")  # expire the cached answer
    status, body = _get(endpoints, "/readyz")
    assert status == 503 and b"broker" in body
    broker.up = True
    endpoints.health._broker_checked = -float("inf")
    assert _get(endpoints, "/readyz")[0] == 200
    endpoints.health.stopping()
    status, body = _get(endpoints, "/readyz")
    assert status == 503 and orjson.loads(body)["reason"] == "shutting down"


def test_the_broker_check_is_cached_between_probes(
    served: tuple[HttpEndpoints, DaemonMetrics, Broker],
) -> None:
    endpoints, _, broker = served
    endpoints.health.joined()
    for _ in range(5):
        assert _get(endpoints, "/readyz")[0] == 200
    assert broker.calls == 1


def test_live_while_the_loop_progresses_and_not_when_it_stalls(
    served: tuple[HttpEndpoints, DaemonMetrics, Broker],
) -> None:
    endpoints, _, _ = served
    endpoints.health.progressed()
    assert _get(endpoints, "/healthz")[0] == 200
    time.sleep(0.7)  # the stall limit of this fixture is 0.5 s
    status, body = _get(endpoints, "/healthz")
    assert status == 503 and b"no progress" in body
    endpoints.health.progressed()
    assert _get(endpoints, "/healthz")[0] == 200


def test_metrics_are_exposed_in_the_prometheus_format(
    served: tuple[HttpEndpoints, DaemonMetrics, Broker],
) -> None:
    endpoints, metrics, _ = served
    metrics.points.inc(7)
    metrics.alerts.labels("critical").inc()
    metrics.batch_seconds.observe(0.02)
    metrics.consumer_lag.labels("metrics", "3").set(12)
    status, body = _get(endpoints, "/metrics")
    assert status == 200
    families = {f.name: f for f in text_string_to_metric_families(body.decode())}
    assert set(families) == METRIC_NAMES
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in families.values()
        for s in f.samples
    }
    assert samples[("streamrnn_points_total", ())] == 7
    assert samples[("streamrnn_alerts_total", (("severity", "critical"),))] == 1
    assert samples[("streamrnn_batch_seconds_count", ())] == 1
    assert samples[("streamrnn_consumer_lag", (("partition", "3"), ("topic", "metrics")))] == 12


def test_unknown_paths_are_404(served: tuple[HttpEndpoints, DaemonMetrics, Broker]) -> None:
    endpoints, _, _ = served
    assert _get(endpoints, "/nope")[0] == 404


def test_a_taken_port_is_an_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(OSError):
            HttpEndpoints("127.0.0.1", port, DaemonMetrics().registry, Health(1, lambda: True))


def test_systemd_notifications_reach_the_notify_socket(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
        listener.bind(path)
        listener.settimeout(2)
        monkeypatch.setenv("NOTIFY_SOCKET", path)
        notifier = ServiceNotifier()
        notifier.ready("serving 2 partition(s)")
        notifier.ready("again")  # READY is sent once
        notifier.watchdog()
        notifier.watchdog()  # rate-limited: within a second, not sent again
        notifier.stopping()
        got = [listener.recv(4096).decode() for _ in range(3)]
        assert got == ["READY=1\nSTATUS=serving 2 partition(s)", "WATCHDOG=1", "STOPPING=1"]
        listener.settimeout(0.2)
        with pytest.raises(TimeoutError):
            listener.recv(4096)


def test_without_systemd_notifications_do_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    notifier = ServiceNotifier()
    assert not notifier.enabled
    notifier.ready("x")
    notifier.watchdog()
    notifier.stopping()
