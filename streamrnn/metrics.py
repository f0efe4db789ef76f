"""The daemon's Prometheus metrics (prometheus-client), in one registry per daemon.

Every metric the daemon exports is declared here, so the names live in one place: the
Grafana dashboard (``deploy/grafana/streamrnn.json``) is checked against
:data:`METRIC_NAMES` by a test. Counters and histograms are updated by the consume loop;
gauges that describe state (lag, live series, model versions) are set once per loop
iteration or when they change.

Knows nothing of Kafka or torch: it only counts what it is told.
"""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
)

__all__ = ["METRIC_NAMES", "DaemonMetrics"]

# No "<name>_created" series beside every counter and histogram: dashboards never use
# them, and they double the series a scrape stores.
disable_created_metrics()  # type: ignore[no-untyped-call]

#: Batch and checkpoint latency buckets, seconds.
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class DaemonMetrics:
    """The metrics of one daemon, registered in :attr:`registry`."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.messages = Counter(
            "streamrnn_messages", "Input messages consumed (good and rejected).", registry=r
        )
        self.points = Counter(
            "streamrnn_points", "Points accepted and processed (forecast and scored).", registry=r
        )
        self.alerts = Counter(
            "streamrnn_alerts", "Alerts produced, by severity.", ["severity"], registry=r
        )
        self.rejected = Counter(
            "streamrnn_rejected_messages",
            "Messages (or points) rejected, by reason; each is dead-lettered when a"
            " dead-letter topic is configured.",
            ["reason"],
            registry=r,
        )
        self.dead_letters_shrunk = Counter(
            "streamrnn_dead_letters_shrunk",
            "Dead letters too large for the producer or the dead-letter topic, sent as a"
            " truncated copy or as headers only, by form.",
            ["form"],
            registry=r,
        )
        self.records_refused = Counter(
            "streamrnn_records_refused",
            "Alert, forecast or state records the producer or broker refused as too large"
            " (their source message is dead-lettered as unencodable_record), by topic kind.",
            ["kind"],
            registry=r,
        )
        self.poison_pills = Counter(
            "streamrnn_poison_pills",
            "Messages dead-lettered as poison_pill: one that a previous run of the daemon"
            " died on is set aside instead of being processed again.",
            registry=r,
        )
        self.batch_seconds = Histogram(
            "streamrnn_batch_seconds",
            "Time to handle one polled batch: decode, forecast, score, produce (seconds).",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_messages = Histogram(
            "streamrnn_batch_messages",
            "Messages per polled batch.",
            buckets=(1, 10, 100, 500, 1000, 2500, 5000, 10000, 50000),
            registry=r,
        )
        self.consumer_lag = Gauge(
            "streamrnn_consumer_lag",
            "Messages behind the end of each assigned input partition (high watermark minus"
            " position).",
            ["topic", "partition"],
            registry=r,
        )
        self.live_series = Gauge(
            "streamrnn_live_series", "Series whose state is in memory.", registry=r
        )
        self.evicted_series = Counter(
            "streamrnn_evicted_series",
            "Series moved from memory to the local store (least recently seen, or revoked).",
            registry=r,
        )
        self.restored_series = Counter(
            "streamrnn_restored_series",
            "Series states read back from the changelog on partition assignment.",
            registry=r,
        )
        self.assigned_partitions = Gauge(
            "streamrnn_assigned_partitions",
            "Input partitions assigned to this instance.",
            registry=r,
        )
        self.checkpoint_seconds = Histogram(
            "streamrnn_checkpoint_seconds",
            "Time of one checkpoint: changelog, flush, commit (seconds).",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.checkpoint_failures = Counter(
            "streamrnn_checkpoint_failures",
            "Checkpoints that could not commit (retried at the next one).",
            registry=r,
        )
        self.model_info = Gauge(
            "streamrnn_model_info",
            "The model version serving each model group (value 1).",
            ["group", "version"],
            registry=r,
        )
        self.retrains = Counter(
            "streamrnn_retrains",
            "Retrains started, by model group and trigger.",
            ["group", "trigger"],
            registry=r,
        )
        self.promotions = Counter(
            "streamrnn_retrain_promotions", "Retrained candidates promoted.", ["group"], registry=r
        )
        self.rejections = Counter(
            "streamrnn_retrain_rejections",
            "Retrained candidates rejected by the validation gate.",
            ["group"],
            registry=r,
        )
        self.retrain_failures = Counter(
            "streamrnn_retrain_failures",
            "Retrains that failed with an error.",
            ["group"],
            registry=r,
        )
        self.drift_events = Counter(
            "streamrnn_drift_events", "Rises of forecast error detected.", ["group"], registry=r
        )
        self.training = Gauge(
            "streamrnn_training", "1 while a retrain runs on this instance.", registry=r
        )
        self.last_progress = Gauge(
            "streamrnn_last_progress_timestamp_seconds",
            "Unix time the consume loop last completed an iteration.",
            registry=r,
        )
        self.ready = Gauge(
            "streamrnn_ready",
            "1 when partitions are assigned and their state restored.",
            registry=r,
        )


#: Every metric family the daemon exports (counters without the ``_total`` suffix; a
#: histogram ``h`` is queried as ``h_bucket``, ``h_sum`` and ``h_count``).
METRIC_NAMES: frozenset[str] = frozenset(
    metric.name for metric in DaemonMetrics().registry.collect()
)
