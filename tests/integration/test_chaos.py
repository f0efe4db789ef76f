"""A small run of the fault-injection script: kill -9 mid-stream, alerts and forecasts exact.

The full run (``python -m tests.chaos.kill_restart``: 8 kills per mode over 100 series) takes
several minutes; this one kills 3 times per mode over 20 series, each kill 0.2–0.8 s after the
life got its partitions while points stream in at 5,000/s (so a few thousand points a life,
whatever the machine's speed), and checks that all 3 kills happened.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.chaos.kill_restart import KillPlan, chaos_run

pytestmark = pytest.mark.integration

KILLS = 3


@pytest.mark.parametrize("mode", ["exactly_once", "at_least_once"])
def test_kill_9_loses_nothing_and_state_continues(
    kafka_bootstrap: str, tmp_path: Path, mode: str
) -> None:
    plan = KillPlan(kills=KILLS, kill_every_s=(0.2, 0.8), rate=5_000.0)
    result = chaos_run(kafka_bootstrap, tmp_path, mode, plan, series=20, seed=3, timeout_s=300)
    print(result)
    assert result.kills == KILLS, result
    assert len(result.uncommitted_at_kill) == KILLS
    assert result.reference_alerts > 0
    assert result.lost == 0 and result.spurious == 0
    if mode == "exactly_once":
        assert result.duplicated == 0
    assert result.forecasts_differing == 0, result
    assert result.passed()
