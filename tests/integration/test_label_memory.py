"""Labels are bounded (``consume.max_labels*``), so what a series keeps of them is too: 20,000
series with the largest labels allowed stay within a stated resident-memory bound.

Before the bounds, 20,000 series with ~30 KB of labels each raised the daemon's RSS by
2.0 GiB (~100 KiB a series). Now a message's labels are at most 32 entries and 4,096 bytes of
compact JSON, and a series keeps them as that JSON (``SeriesTable``), decoded only for an
alert.

The daemon (a real subprocess, against the real broker) first gets one plain point for each
of ``N_SERIES`` series, then a second point for each with labels exactly at every limit,
distinct per series; the resident set is read once each phase is committed and the daemon
has handed freed heap back to the OS (after its next checkpoint, at most every
``HEAP_TRIM_INTERVAL_S``). Their difference is what the labels cost. Run it alone with
``.venv/bin/python -m pytest tests/integration/test_label_memory.py -q -s``: it prints the
bytes per series.
"""

from __future__ import annotations

import time
from pathlib import Path

import orjson
import pytest

from streamrnn.config import ConsumeConfig
from streamrnn.daemon import HEAP_TRIM_INTERVAL_S
from streamrnn.decode import DecodedMessage, DecodeRules, decode_message, encode_labels

from .harness import (
    Daemon,
    Topics,
    proc_status_kib,
    produce,
    stopped_line,
    wait_committed,
    wait_until,
    write_config,
)

pytestmark = pytest.mark.integration

N_SERIES = 20_000
PARTITIONS = 4
#: Resident memory the largest labels may add per series: their 4,096 bytes of JSON in a
#: bytes object (4,150 bytes held in-process) and the allocator's share of the transient
#: dicts of the batches that brought them. Measured: 4,770-5,170 bytes; kept as decoded dicts,
#: as before, 9,357.
LABEL_BYTES_PER_SERIES = 6 * 1024
#: A series without labels: its table row and index (1,180-1,900 bytes at 100,000 series,
#: README "Performance"), rounded up.
ROW_BYTES_PER_SERIES = 2 * 1024
#: What does not scale with the series: the first batches' buffers (the kernel's, the
#: clients' queues, SQLite's cache), measured at ~85 MiB here.
MARGIN_MIB = 150


def _largest_labels(i: int) -> dict[str, str]:
    """32 labels, keys and values distinct per series, exactly 4,096 bytes of JSON."""
    consume = ConsumeConfig()
    count, size = consume.max_labels, consume.max_labels_bytes
    keys = [f"label-{j:02d}-{i:06d}" for j in range(count)]
    room = size - (2 + (count - 1) + 5 * count + sum(map(len, keys)))
    shares = [room // count + (1 if j < room % count else 0) for j in range(count)]
    labels = {
        k: (f"{i:06d}-{j}-" + "v" * size)[:n]
        for j, (k, n) in enumerate(zip(keys, shares, strict=True))
    }
    assert len(labels) == count and len(encode_labels(labels)) == size
    return labels


def _settled_rss_kib(daemon: Daemon) -> int:
    """VmRSS once the daemon has had a checkpoint and a heap trim after the load: the lowest
    of a few samples over two trim intervals."""
    time.sleep(HEAP_TRIM_INTERVAL_S + 1.5)
    samples = []
    for _ in range(8):
        samples.append(proc_status_kib(daemon.proc.pid, "VmRSS") or 0)
        time.sleep(HEAP_TRIM_INTERVAL_S / 4)
    return min(samples)


def test_twenty_thousand_series_with_the_largest_labels_stay_within_bound(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    topics = Topics.fresh(kafka_bootstrap, partitions=PARTITIONS)
    t0 = float(int(time.time()) - 3600)
    names = [f"labelled-{i:06d}" for i in range(N_SERIES)]
    plain = [
        (name, orjson.dumps({"series": name, "ts": t0 + i * 1e-3, "value": i % 89 + 0.5}))
        for i, name in enumerate(names)
    ]
    labelled = [
        (
            name,
            orjson.dumps(
                {
                    "series": name,
                    "ts": t0 + 60 + i * 1e-3,
                    "value": i % 89 + 1.5,
                    "labels": _largest_labels(i),
                }
            ),
        )
        for i, name in enumerate(names)
    ]
    # Exactly at the limits: accepted, on the daemon's default rules.
    first = decode_message(labelled[0][1], DecodeRules.of(ConsumeConfig(), time.time()))
    assert isinstance(first, DecodedMessage), first

    config = write_config(
        tmp_path / "c.yaml",
        kafka_bootstrap,
        topics,
        topics={"forecasts": None},
        state={"directory": str(tmp_path / "state")},
    )
    daemon = Daemon(config, tmp_path / "d.log")
    try:
        wait_until(
            lambda: any(line.get("event") == "partitions assigned" for line in daemon.log_lines()),
            120,
            "the daemon to be assigned its partitions",
        )
        time.sleep(1.0)
        baseline_kib = proc_status_kib(daemon.proc.pid, "VmRSS") or 0

        produce(kafka_bootstrap, topics.input, plain)
        wait_committed(kafka_bootstrap, topics, daemon, timeout_s=300)
        plain_kib = _settled_rss_kib(daemon)

        produce(kafka_bootstrap, topics.input, labelled)
        wait_committed(kafka_bootstrap, topics, daemon, timeout_s=300)
        labelled_kib = _settled_rss_kib(daemon)
        assert daemon.alive()
    finally:
        code = daemon.stop(timeout_s=180)
    assert code == 0, daemon.log_path.read_text()[-3000:]

    stopped = stopped_line(daemon)
    assert stopped["points"] == 2 * N_SERIES
    assert stopped["rejected"] == {}
    progress = [line for line in daemon.log_lines() if line.get("event") == "progress"]
    assert max(line["live_series"] for line in progress) == N_SERIES

    labels_per_series = (labelled_kib - plain_kib) * 1024 / N_SERIES
    bound_kib = (
        baseline_kib
        + N_SERIES * (ROW_BYTES_PER_SERIES + LABEL_BYTES_PER_SERIES) // 1024
        + MARGIN_MIB * 1024
    )
    print(
        f"\nlabel memory: {N_SERIES:,} series, labels of {ConsumeConfig().max_labels} entries"
        f" and {ConsumeConfig().max_labels_bytes:,} bytes of JSON each"
        f"\n  VmRSS ready {baseline_kib / 1024:,.0f} MiB, after plain points"
        f" {plain_kib / 1024:,.0f} MiB, after labelled points {labelled_kib / 1024:,.0f} MiB"
        f" (bound {bound_kib / 1024:,.0f} MiB)"
        f"\n  the labels: {labels_per_series:,.0f} bytes a series"
        f" (bound {LABEL_BYTES_PER_SERIES:,})"
    )
    assert labels_per_series <= LABEL_BYTES_PER_SERIES
    assert labelled_kib <= bound_kib
