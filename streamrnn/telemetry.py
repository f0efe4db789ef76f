"""What the daemon tells operators about itself: Prometheus metrics, probes, systemd.

Every count the daemon keeps (messages, points, alerts by severity, rejections by reason,
batches) lives in its Prometheus metrics (:class:`streamrnn.metrics.DaemonMetrics`) and
nowhere else: the ``progress`` and ``stopped`` log lines read them back from there
(:meth:`Telemetry.log_fields`), so the log, ``/metrics`` and the tests cannot disagree.
Three things a Prometheus metric cannot hold are kept beside them, for the log lines only:
the most recent batch latencies (``batch_ms``: exact percentiles and the maximum, split by
whether a retrain was running, where a histogram has only its buckets), the seconds per
stage of the loop (``profile_s``) and the garbage collector's pauses (``gc``).

:class:`StateGauges` copies, about once a second, what other components know (live series,
partitions, lag, the cumulative counts of evicted and restored series, whether a retrain
runs) into the gauges and counters that describe it. Knows nothing of torch.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping

import numpy as np
from prometheus_client import Counter
from prometheus_client.metrics import MetricWrapperBase

from streamrnn.gc_pauses import GcPauses
from streamrnn.http_endpoints import Health
from streamrnn.metrics import DaemonMetrics
from streamrnn.service_notify import ServiceNotifier
from streamrnn.stage_timer import StageTimer

__all__ = ["LATENCY_WINDOW", "STATE_EXPORT_INTERVAL_S", "StateGauges", "Telemetry"]

#: Batch latencies kept for the percentiles in the log (the most recent ones).
LATENCY_WINDOW = 100_000
#: Seconds between two copies of the state into the gauges.
STATE_EXPORT_INTERVAL_S = 1.0


class Telemetry:
    """The daemon's metrics, the probes' state and systemd notifications."""

    def __init__(self, metrics: DaemonMetrics, health: Health, notifier: ServiceNotifier) -> None:
        self.metrics = metrics
        self.health = health
        self.notifier = notifier
        #: Seconds per stage of the loop (logged as ``profile_s`` at exit).
        self.timer = StageTimer()
        #: Garbage-collector pauses (they stop the loop inside whatever stage is running).
        self.gc_pauses = GcPauses()
        #: Seconds to handle each recent batch (decode → engine → produce → buffer), by
        #: whether a retrain was running meanwhile.
        self._latency: dict[bool, deque[float]] = {
            training: deque(maxlen=LATENCY_WINDOW) for training in (False, True)
        }

    # -- counting (Prometheus) ----------------------------------------------------------

    def count_batch(self, messages: int) -> None:
        """A polled batch of ``messages`` messages."""
        self.metrics.messages.inc(messages)
        self.metrics.batch_messages.observe(messages)

    def count_points(self, points: int) -> None:
        """Points accepted and processed."""
        self.metrics.points.inc(points)

    def count_alert(self, severity: str) -> None:
        """An alert produced."""
        self.metrics.alerts.labels(severity).inc()

    def count_rejection(self, reason: str) -> None:
        """A message (or a point of one) rejected."""
        self.metrics.rejected.labels(reason).inc()

    def count_latency(self, seconds: float, training: bool) -> None:
        """The handling time of one batch."""
        self._latency[training].append(seconds)
        self.metrics.batch_seconds.observe(seconds)

    def count_checkpoint(self, seconds: float, committed: bool) -> None:
        """A checkpoint that took ``seconds`` and (not ``committed``) failed to commit."""
        if not committed:
            self.metrics.checkpoint_failures.inc()
        self.metrics.checkpoint_seconds.observe(seconds)
        self.timer.add("checkpoint", seconds)

    # -- probes and systemd -------------------------------------------------------------

    def alive(self) -> None:
        """The loop is not stuck (also while it restores or waits for topics)."""
        self.health.progressed()
        self.notifier.watchdog()

    def progressed(self) -> None:
        """The loop completed an iteration."""
        self.alive()
        self.metrics.last_progress.set(time.time())

    def serving(self, partitions: int) -> None:
        """Joined the group with the assigned partitions' state restored."""
        self.health.joined()
        self.metrics.ready.set(1)
        self.notifier.ready(f"serving {partitions} partition(s)")

    def stopping(self) -> None:
        """Shutdown began."""
        self.health.stopping()
        self.notifier.stopping()

    # -- the log lines ------------------------------------------------------------------

    def log_fields(self) -> dict[str, object]:
        """Totals since start for the ``progress`` and ``stopped`` lines, read from the
        Prometheus metrics, with the batch latencies and GC pauses."""
        m = self.metrics
        return {
            "messages": _total(m.messages),
            "points": _total(m.points),
            "alerts": _totals_by(m.alerts, "severity"),
            "rejected": _totals_by(m.rejected, "reason"),
            "batches": _sample(m.batch_messages, "_count"),
            "batch_ms": {
                "idle": _percentiles_ms(self._latency[False]),
                "training": _percentiles_ms(self._latency[True]),
            },
            **self.gc_pauses.as_log_fields(),
        }


class StateGauges:
    """Copies state kept by other components into the metrics (see the module docstring);
    each source is a callable read at :meth:`export`."""

    def __init__(
        self,
        metrics: DaemonMetrics,
        live_series: Callable[[], int],
        evicted_series: Callable[[], int],
        restored_series: Callable[[], int],
        lag: Callable[[], Mapping[tuple[str, int], int]],
        assigned_partitions: Callable[[], int],
        training: Callable[[], bool],
    ) -> None:
        """``evicted_series`` and ``restored_series``: cumulative counts since start;
        ``lag``: messages behind the end, per assigned (topic, partition)."""
        self._metrics = metrics
        self._live_series = live_series
        self._cumulative = {
            "evicted": (metrics.evicted_series, evicted_series),
            "restored": (metrics.restored_series, restored_series),
        }
        self._counted: dict[str, int] = {}
        self._lag = lag
        self._assigned_partitions = assigned_partitions
        self._training = training
        self._next_export = 0.0

    def export_if_due(self) -> None:
        """:meth:`export`, at most every :data:`STATE_EXPORT_INTERVAL_S`."""
        now = time.monotonic()
        if now >= self._next_export:
            self._next_export = now + STATE_EXPORT_INTERVAL_S
            self.export()

    def export(self) -> None:
        """Set the gauges, and bring the cumulative counts into their counters."""
        m = self._metrics
        m.live_series.set(self._live_series())
        for name, (counter, total) in self._cumulative.items():
            self._advance(name, counter, total())
        lag = self._lag()
        m.assigned_partitions.set(self._assigned_partitions())
        for labels in list(_lag_labels(m)):
            if (labels[0], int(labels[1])) not in lag:
                m.consumer_lag.remove(*labels)  # a partition no longer ours
        for (topic, partition), behind in lag.items():
            m.consumer_lag.labels(topic, str(partition)).set(behind)
        m.training.set(1 if self._training() else 0)

    def _advance(self, name: str, counter: Counter, total: int) -> None:
        """Increase ``counter`` by what the cumulative count ``total`` gained since the
        last call."""
        gained = total - self._counted.get(name, 0)
        if gained > 0:
            counter.inc(gained)
        self._counted[name] = total


def _samples(metric: MetricWrapperBase) -> Iterator[tuple[str, dict[str, str], float]]:
    """(name, labels, value) of every sample ``metric`` exports."""
    for family in metric.collect():
        for sample in family.samples:
            yield sample.name, sample.labels, sample.value


def _total(counter: Counter) -> int:
    """The value of an unlabelled counter."""
    return _sample(counter, "_total")


def _sample(metric: MetricWrapperBase, suffix: str) -> int:
    """The value of the one sample of ``metric`` whose name ends with ``suffix``."""
    return sum(int(value) for name, _, value in _samples(metric) if name.endswith(suffix))


def _totals_by(counter: Counter, label: str) -> dict[str, int]:
    """A labelled counter's values, by ``label``."""
    return {
        labels[label]: int(value)
        for name, labels, value in _samples(counter)
        if name.endswith("_total")
    }


def _lag_labels(metrics: DaemonMetrics) -> Iterator[tuple[str, str]]:
    for _, labels, _ in _samples(metrics.consumer_lag):
        yield labels["topic"], labels["partition"]


def _percentiles_ms(seconds: deque[float]) -> dict[str, float | int]:
    """Count, p50, p99 and max of batch latencies, in milliseconds."""
    if not seconds:
        return {"n": 0}
    ms = np.fromiter(seconds, dtype=np.float64, count=len(seconds)) * 1000.0
    p50, p99 = (float(p) for p in np.percentile(ms, [50, 99]))
    return {
        "n": len(ms),
        "p50": round(p50, 2),
        "p99": round(p99, 2),
        "max": round(float(ms.max()), 2),
    }
