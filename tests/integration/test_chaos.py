"""A small run of the fault-injection script: kill -9 mid-stream, alerts and forecasts exact.

The full run (``python -m tests.chaos.kill_restart``: 200,000 points, both modes) takes
several minutes; this one replays 120,000 points with a kill 0.2–0.8 s after each start
(once the partitions are restored): the daemon gets through the whole stream in about a
second, so later kills would find nothing left to interrupt.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.chaos.kill_restart import compare, labelled_stream, replay

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("mode", ["exactly_once", "at_least_once"])
def test_kill_9_loses_nothing_and_state_continues(
    kafka_bootstrap: str, tmp_path: Path, mode: str
) -> None:
    records = labelled_stream(series=20, points=6000, seed=3)
    reference = replay(kafka_bootstrap, tmp_path / "ref", records, mode, None, 3, 300)
    faulty = replay(kafka_bootstrap, tmp_path / "faulty", records, mode, (0.2, 0.8), 3, 600)
    result = compare(mode, reference, faulty)
    print(result)
    assert result.kills >= 1
    assert result.reference_alerts > 0
    assert result.lost == 0 and result.spurious == 0
    if mode == "exactly_once":
        assert result.duplicated == 0
    assert result.forecasts_differing == 0, result
    assert result.passed()
