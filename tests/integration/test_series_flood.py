"""A flood of distinct series: memory stays bounded by ``series.max_series``, and the series
evicted to the local store come back with their state when they send again.

``STREAMRNN_FLOOD_SERIES`` overrides the number of series (default 1,000,000).
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest
from confluent_kafka import Producer

from .harness import (
    Daemon,
    Topics,
    end_offsets,
    proc_status_kib,
    read_json_from,
    stopped_line,
    wait_committed,
    wait_until,
    write_config,
)

pytestmark = pytest.mark.integration

N_SERIES = int(os.environ.get("STREAMRNN_FLOOD_SERIES", "1000000"))
MAX_SERIES = 20_000
PARTITIONS = 4
#: Series seen first that send a second point after the flood (long evicted by then).
RETURNING = 20
#: Memory one live series may take: its table row (hidden state 64 float32, normaliser,
#: scorer and alert-rule columns: about 1 KiB) plus the name index, labels and the rows of
#: the batch arrays, rounded up generously.
PER_SERIES_BYTES = 8 * 1024
#: Everything that does not scale with live series: librdkafka's queues (a batch's
#: forecast and changelog records in flight), SQLite's page cache, allocator slack.
MARGIN_MIB = 250
#: How much the resident set may still grow after the first tenth of the flood (the table is
#: full after its first 20,000 points): 1,000,000 series measured +38 MiB (allocator and
#: SQLite cache); a leak of 100 bytes per series ever seen would be +95 MiB.
LATE_GROWTH_MIB = 80


def _produce_flood(bootstrap: str, topic: str, n: int, t0: float) -> None:
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "linger.ms": 50,
            "batch.size": 1_000_000,
            "compression.type": "lz4",
            "queue.buffering.max.messages": 500_000,
        }
    )
    for i in range(n):
        name = f"flood-{i:07d}"
        value = f'{{"series":"{name}","ts":{t0 + i * 1e-4:.4f},"value":{i % 97}.5}}'.encode()
        while True:
            try:
                producer.produce(topic, value, name.encode())
                break
            except BufferError:
                producer.poll(0.05)
    assert producer.flush(120) == 0


class PeakMemory:
    """Samples a process's ``VmHWM`` (peak resident set) and ``VmRSS`` until it exits."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak_kib = 0
        #: (monotonic time, VmRSS KiB) every sample.
        self.timeline: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            hwm, rss = proc_status_kib(self.pid, "VmHWM"), proc_status_kib(self.pid, "VmRSS")
            if hwm is None or rss is None:
                return
            self.peak_kib = max(self.peak_kib, hwm)
            self.timeline.append((time.monotonic(), rss))
            self._stop.wait(0.25)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak_kib


def test_a_million_series_stay_within_max_series_memory(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    topics = Topics.fresh(kafka_bootstrap, partitions=PARTITIONS)
    t0 = float(int(time.time()) - 3 * 3600)
    produce_started = time.monotonic()
    _produce_flood(kafka_bootstrap, topics.input, N_SERIES, t0)
    produce_s = time.monotonic() - produce_started

    config = write_config(
        tmp_path / "c.yaml",
        kafka_bootstrap,
        topics,
        series={"max_series": MAX_SERIES},
        state={"directory": str(tmp_path / "state")},
    )
    daemon = Daemon(config, tmp_path / "d.log")
    peak = PeakMemory(daemon.proc.pid)
    try:
        wait_until(
            lambda: any(line.get("event") == "started" for line in daemon.log_lines()),
            120,
            "the daemon to start",
        )
        # Torch, the model and the clients loaded, no series yet: the fixed cost.
        baseline_kib = proc_status_kib(daemon.proc.pid, "VmRSS") or 0
        started = time.monotonic()
        wait_committed(kafka_bootstrap, topics, daemon, timeout_s=1200)
        flood_s = time.monotonic() - started
        flood_peak_kib = peak.peak_kib

        # The first series, evicted long ago, send a second point: their state comes back
        # from the store, so the forecast for it is not the null of a series' first point.
        forecasts_end = end_offsets(kafka_bootstrap, topics.forecasts)
        returning = [f"flood-{i:07d}" for i in range(RETURNING)]
        producer = Producer({"bootstrap.servers": kafka_bootstrap})
        for name in returning:
            value = f'{{"series":"{name}","ts":{t0 + 3600:.4f},"value":1.5}}'.encode()
            producer.produce(topics.input, value, name.encode())
        assert producer.flush(30) == 0
        wait_committed(kafka_bootstrap, topics, daemon, timeout_s=120)
        assert daemon.alive()
    finally:
        code = daemon.stop(timeout_s=180)
        peak_kib = peak.stop()
    assert code == 0, daemon.log_path.read_text()[-3000:]

    mib = 1024
    # Resident memory through the flood, the highest sample in each tenth of its duration:
    # flat once the table is full, however many series have been seen.
    tenths = [
        max(
            (rss for t, rss in peak.timeline if 0 <= t - started - k * flood_s / 10 < flood_s / 10),
            default=0,
        )
        for k in range(10)
    ]
    print("\n  RSS (MiB), peak of each tenth of the flood:", [round(r / mib) for r in tenths])
    bound_kib = baseline_kib + MAX_SERIES * PER_SERIES_BYTES // 1024 + MARGIN_MIB * mib
    print(
        f"\nseries flood: {N_SERIES:,} series on {PARTITIONS} partitions, max_series"
        f" {MAX_SERIES:,}\n  produced in {produce_s:.1f} s ({N_SERIES / produce_s:,.0f} msg/s)"
        f"\n  consumed in {flood_s:.1f} s ({N_SERIES / flood_s:,.0f} points/s)"
        f"\n  RSS at start {baseline_kib / mib:.0f} MiB, peak during flood"
        f" {flood_peak_kib / mib:.0f} MiB, peak overall (incl. shutdown)"
        f" {peak_kib / mib:.0f} MiB, bound {bound_kib / mib:.0f} MiB"
    )

    # Every point was processed, none rejected: one forecast record each.
    stopped = stopped_line(daemon)
    assert stopped["points"] == N_SERIES + RETURNING
    assert stopped["rejected"] == {}
    assert stopped["live_series"] <= MAX_SERIES
    assert stopped["stored_series"] >= N_SERIES
    assert sum(end_offsets(kafka_bootstrap, topics.forecasts).values()) == N_SERIES + RETURNING
    progress = [line for line in daemon.log_lines() if line.get("event") == "progress"]
    assert all(line["live_series"] <= MAX_SERIES for line in progress)

    back = read_json_from(kafka_bootstrap, topics.forecasts, forecasts_end)
    assert sorted(r["series"] for r in back) == returning
    for record in back:
        assert record["ts"] == t0 + 3600
        assert record["forecast"] is not None, f"{record['series']}: state not restored"
        assert record["lower"] is not None and record["upper"] is not None

    assert max(tenths[5:]) - tenths[0] <= LATE_GROWTH_MIB * mib, (
        "resident memory keeps growing with the series seen"
    )
    assert peak_kib <= bound_kib, (
        f"peak RSS {peak_kib / mib:.0f} MiB above {bound_kib / mib:.0f} MiB"
        f" (start {baseline_kib / mib:.0f} MiB + {MAX_SERIES:,} series)"
    )
