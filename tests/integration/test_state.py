"""Series state survives restarts and moves with its partitions (real broker, real daemon).

Every test compares against a *reference*: the same stream processed by one daemon that never
stops. Forecasts depend on each series' hidden state, normaliser and scorer history, so equal
forecasts after a restart or a rebalance show that all of that state was restored.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from streamrnn.synthetic import SyntheticSpec, synthetic_stream

from .harness import (
    Daemon,
    Topics,
    point,
    produce,
    read_json,
    wait_committed,
    wait_until,
    write_config,
)

pytestmark = pytest.mark.integration

#: Forecasts of a restored series may differ from the reference by float32 rounding only.
TOLERANCE = 1e-5


def _stream(series: int = 12, points: int = 300) -> list[tuple[str, bytes]]:
    frame = synthetic_stream(SyntheticSpec(series=series, points=points, seed=11))
    return [
        point(s, ts, v) for s, ts, v in frame[["series", "ts", "value"]].itertuples(index=False)
    ]


def _forecasts(bootstrap: str, topic: str) -> dict[tuple[str, float], dict[str, Any]]:
    """The forecast record per (series, ts); a repeat (re-processing) must agree with it."""
    out: dict[tuple[str, float], dict[str, Any]] = {}
    for record in read_json(bootstrap, topic):
        out[(record["series"], record["ts"])] = record
    return out


def _reference(
    bootstrap: str, tmp_path: Path, records: list[tuple[str, bytes]], partitions: int
) -> dict[tuple[str, float], dict[str, Any]]:
    topics = Topics.fresh(bootstrap, partitions=partitions)
    produce(bootstrap, topics.input, records)
    daemon = Daemon(write_config(tmp_path / "ref.yaml", bootstrap, topics), tmp_path / "ref.log")
    try:
        wait_committed(bootstrap, topics, daemon)
    finally:
        assert daemon.stop() == 0
    return _forecasts(bootstrap, topics.forecasts)


def _assert_same_forecasts(
    got: dict[tuple[str, float], dict[str, Any]], want: dict[tuple[str, float], dict[str, Any]]
) -> None:
    assert got.keys() == want.keys()
    keys = sorted(want)
    for field in ("forecast", "lower", "upper"):
        a = np.array([np.nan if got[k][field] is None else got[k][field] for k in keys])
        b = np.array([np.nan if want[k][field] is None else want[k][field] for k in keys])
        assert np.array_equal(np.isnan(a), np.isnan(b)), field
        ok = ~np.isnan(b)
        scale = np.maximum(1.0, np.abs(b[ok]))
        worst = float(np.max(np.abs(a[ok] - b[ok]) / scale))
        assert worst <= TOLERANCE, f"{field}: relative difference {worst:.2e}"
    scores = np.array([got[k]["score"] for k in keys]) - np.array([want[k]["score"] for k in keys])
    assert float(np.max(np.abs(scores))) <= 1e-4


@pytest.mark.parametrize("local_store", [False, True], ids=["changelog-only", "with-snapshot"])
def test_a_restarted_daemon_continues_from_the_restored_state(
    kafka_bootstrap: str, tmp_path: Path, local_store: bool
) -> None:
    records = _stream()
    want = _reference(kafka_bootstrap, tmp_path, records, partitions=2)

    topics = Topics.fresh(kafka_bootstrap, partitions=2)
    state = {"directory": str(tmp_path / "state")} if local_store else {}
    config = write_config(tmp_path / "c.yaml", kafka_bootstrap, topics, state=state)
    half = len(records) // 2
    produce(kafka_bootstrap, topics.input, records[:half])
    first = Daemon(config, tmp_path / "first.log")
    try:
        wait_committed(kafka_bootstrap, topics, first)
    finally:
        assert first.stop() == 0
    produce(kafka_bootstrap, topics.input, records[half:])
    second = Daemon(config, tmp_path / "second.log")
    try:
        wait_committed(kafka_bootstrap, topics, second)
    finally:
        assert second.stop() == 0

    _assert_same_forecasts(_forecasts(kafka_bootstrap, topics.forecasts), want)
    restored = [r for r in second.log_lines() if r.get("event") == "state restored"]
    # With a local snapshot the store already holds every series: nothing to read back.
    assert sum(r["series"] for r in restored) == (0 if local_store else 12)


def test_the_survivor_restores_the_partitions_of_a_stopped_instance(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    records = _stream(series=16)
    want = _reference(kafka_bootstrap, tmp_path, records, partitions=4)

    topics = Topics.fresh(kafka_bootstrap, partitions=4)
    config = write_config(tmp_path / "c.yaml", kafka_bootstrap, topics)
    third = len(records) // 3
    produce(kafka_bootstrap, topics.input, records[:third])
    one = Daemon(config, tmp_path / "one.log")
    two = Daemon(config, tmp_path / "two.log")
    try:
        wait_committed(kafka_bootstrap, topics, one)

        def both_own_partitions() -> bool:
            return all(
                any(
                    r.get("event") == "partitions assigned" and r["partitions"]
                    for r in d.log_lines()
                )
                for d in (one, two)
            )

        wait_until(both_own_partitions, 60, "both instances to own partitions")
        produce(kafka_bootstrap, topics.input, records[third : 2 * third])
        wait_committed(kafka_bootstrap, topics, one)
        assert two.stop() == 0
        produce(kafka_bootstrap, topics.input, records[2 * third :])
        wait_committed(kafka_bootstrap, topics, one)
    finally:
        two.kill()
        assert one.stop() == 0

    moved = [r for r in one.log_lines() if r.get("event") == "state restored" and r["series"]]
    assert moved, "the survivor restored no state for the moved partitions"
    _assert_same_forecasts(_forecasts(kafka_bootstrap, topics.forecasts), want)
