"""The broker goes away mid-stream and comes back: the daemon waits it out and loses nothing.

Uses its own broker (not the session one), stopped and restarted on the same ports and data
with :func:`streamrnn.local_broker.restart_broker`.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from streamrnn.local_broker import restart_broker, running_broker, start_broker, stop_broker
from streamrnn.synthetic import SyntheticSpec, synthetic_stream

from .harness import (
    Daemon,
    Topics,
    point,
    produce,
    read_json,
    stopped_line,
    wait_committed,
    write_config,
)

pytestmark = pytest.mark.integration

#: How long the broker stays down while the daemon runs, seconds.
OUTAGE_S = 10.0


@pytest.fixture
def own_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The work directory of a broker that only this test uses (and may stop)."""
    workdir = tmp_path_factory.mktemp("restarted-broker")
    start_broker(workdir)
    try:
        yield workdir
    finally:
        stop_broker(workdir)


def test_daemon_survives_a_broker_restart_without_losing_points(
    own_broker: Path, tmp_path: Path
) -> None:
    broker = running_broker(own_broker)
    assert broker is not None
    bootstrap = broker.bootstrap_servers
    topics = Topics.fresh(bootstrap, partitions=2)
    stream = synthetic_stream(SyntheticSpec(series=8, points=300, seed=11))
    rows = list(stream[["series", "ts", "value"]].itertuples(index=False))
    half = {s: ts for s, ts in stream.groupby("series")["ts"].median().items()}
    before = [point(s, ts, v) for s, ts, v in rows if ts <= half[s]]
    after = [point(s, ts, v) for s, ts, v in rows if ts > half[s]]
    assert before and after

    config = write_config(tmp_path / "c.yaml", bootstrap, topics)
    daemon = Daemon(config, tmp_path / "d.log")
    try:
        produce(bootstrap, topics.input, before)
        wait_committed(bootstrap, topics, daemon)

        stopped_at = time.monotonic()
        assert stop_broker(own_broker)
        log_size = daemon.log_path.stat().st_size
        while time.monotonic() - stopped_at < OUTAGE_S:
            assert daemon.alive(), f"daemon exited: {daemon.log_path.read_text()[-3000:]}"
            time.sleep(0.5)
        # The outage was real: the daemon's clients lost the broker (librdkafka's own lines).
        during = daemon.log_path.read_bytes()[log_size:]
        assert b"Connection refused" in during or b"Disconnected" in during
        restarted = restart_broker(own_broker)
        down_s = time.monotonic() - stopped_at
        assert restarted.bootstrap_servers == bootstrap
        assert daemon.alive()

        produce(bootstrap, topics.input, after)
        resumed_at = time.monotonic()
        wait_committed(bootstrap, topics, daemon, timeout_s=180)
        resume_s = time.monotonic() - resumed_at
        assert daemon.alive()
    finally:
        code = daemon.stop()
    assert code == 0, daemon.log_path.read_text()[-3000:]

    # Every point has at least one forecast record (at-least-once: a batch may repeat),
    # and no record is for a point that was not sent.
    expected = {(s, float(ts)) for s, ts, _ in rows}
    forecasts = read_json(bootstrap, topics.forecasts)
    got = Counter((f["series"], f["ts"]) for f in forecasts)
    missing = expected - set(got)
    assert not missing, f"{len(missing)} points lost, e.g. {sorted(missing)[:5]}"
    assert set(got) <= expected
    # The series kept their state through the outage: only a series' first point has no
    # forecast (a state reset would null the first forecast after the restart too).
    first = {s: float(ts) for s, ts in stream.groupby("series")["ts"].min().items()}
    nulls = {(f["series"], f["ts"]) for f in forecasts if f["forecast"] is None}
    assert nulls == set(first.items())

    stopped = stopped_line(daemon)
    assert stopped["points"] >= len(rows)
    assert stopped["rejected"] == {}
    print(
        f"\nbroker restart: {len(rows)} points, broker down {down_s:.1f} s, rest committed"
        f" {resume_s:.1f} s after producing it; {sum(got.values()) - len(got)} repeated"
        " forecast records"
    )
