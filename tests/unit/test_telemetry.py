"""The daemon's log totals are read from its Prometheus metrics, and the state gauges follow
what the components report."""

from __future__ import annotations

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from streamrnn.http_endpoints import Health
from streamrnn.metrics import DaemonMetrics
from streamrnn.service_notify import ServiceNotifier
from streamrnn.telemetry import StateGauges, Telemetry


def _telemetry() -> Telemetry:
    return Telemetry(DaemonMetrics(), Health(60.0, lambda: True), ServiceNotifier())


def _samples(metrics: DaemonMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    families = text_string_to_metric_families(generate_latest(metrics.registry).decode())
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for f in families for s in f.samples}


def test_log_fields_are_the_prometheus_totals() -> None:
    telemetry = _telemetry()
    assert telemetry.log_fields()["messages"] == 0
    assert telemetry.log_fields()["alerts"] == {} and telemetry.log_fields()["rejected"] == {}
    telemetry.count_batch(5)
    telemetry.count_batch(3)
    telemetry.count_points(7)
    telemetry.count_alert("warning")
    telemetry.count_alert("warning")
    telemetry.count_alert("critical")
    telemetry.count_rejection("not_json")
    telemetry.count_latency(0.010, training=False)
    telemetry.count_latency(0.030, training=True)
    fields = telemetry.log_fields()
    assert fields["messages"] == 8 and fields["batches"] == 2 and fields["points"] == 7
    assert fields["alerts"] == {"warning": 2, "critical": 1}
    assert fields["rejected"] == {"not_json": 1}
    assert fields["batch_ms"] == {
        "idle": {"n": 1, "p50": 10.0, "p99": 10.0, "max": 10.0},
        "training": {"n": 1, "p50": 30.0, "p99": 30.0, "max": 30.0},
    }
    assert "gc" in fields
    samples = _samples(telemetry.metrics)
    assert samples[("streamrnn_messages_total", ())] == 8
    assert samples[("streamrnn_alerts_total", (("severity", "warning"),))] == 2
    assert samples[("streamrnn_batch_seconds_count", ())] == 2


def test_checkpoints_are_counted_and_timed() -> None:
    telemetry = _telemetry()
    telemetry.count_checkpoint(0.5, committed=True)
    telemetry.count_checkpoint(0.25, committed=False)
    samples = _samples(telemetry.metrics)
    assert samples[("streamrnn_checkpoint_failures_total", ())] == 1
    assert samples[("streamrnn_checkpoint_seconds_count", ())] == 2
    assert telemetry.timer.rounded() == {"checkpoint": 0.75}


def test_state_gauges_follow_the_components() -> None:
    metrics = DaemonMetrics()
    state = {"evicted": 4, "restored": 0, "training": True}
    lag = {("in", 0): 10, ("in", 1): 0}
    gauges = StateGauges(
        metrics,
        lambda: 42,
        lambda: int(state["evicted"]),
        lambda: int(state["restored"]),
        lambda: lag,
        lambda: len(lag),
        lambda: bool(state["training"]),
    )
    gauges.export()
    state.update(evicted=6, training=False)
    del lag[("in", 1)]
    gauges.export()
    samples = _samples(metrics)
    assert samples[("streamrnn_live_series", ())] == 42
    assert samples[("streamrnn_evicted_series_total", ())] == 6  # cumulative, not 4 + 6
    assert samples[("streamrnn_restored_series_total", ())] == 0
    assert samples[("streamrnn_assigned_partitions", ())] == 1
    assert samples[("streamrnn_training", ())] == 0
    lags = {k: v for k, v in samples.items() if k[0] == "streamrnn_consumer_lag"}
    assert lags == {("streamrnn_consumer_lag", (("partition", "0"), ("topic", "in"))): 10}
