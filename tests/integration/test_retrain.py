"""Background retraining against the real broker: drift → retrain → promotion, and model
sharing between instances (model topic), rollback, and loading the newest model at start.

The stream is :func:`tests.retrain_scenario.shifted_series`: a slow sine, then from point
700 a six-point oscillation the shipped model has not learned.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from streamrnn.kafka.model_topic import ModelTopic
from tests.retrain_scenario import shifted_series

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

SERIES, POINTS, SHIFT_AT = 24, 1400, 700


def _records(
    data: dict[str, tuple[np.ndarray, np.ndarray]], first: int, last: int
) -> list[tuple[str, bytes]]:
    """Points first..last-1 of every series, interleaved in time."""
    return [
        point(name, float(ts[i]), float(values[i]))
        for i in range(first, last)
        for name, (ts, values) in data.items()
    ]


def _events(daemon: Daemon, event: str) -> list[dict[str, Any]]:
    return [line for line in daemon.log_lines() if line.get("event") == event]


def _swapped(daemon: Daemon, reason: str, version: str | None = None) -> bool:
    assert daemon.alive(), daemon.log_path.read_text()[-3000:]
    return any(
        line.get("reason") == reason and (version is None or line.get("version") == version)
        for line in _events(daemon, "model swapped")
    )


def test_drift_is_detected_retrained_promoted_and_the_error_drops(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    topics = Topics.fresh(kafka_bootstrap, partitions=2)
    config = write_config(
        tmp_path / "config.yaml",
        kafka_bootstrap,
        topics,
        consume={"poll_timeout_s": 0.2, "batch_max_messages": 120},
        state={"directory": str(tmp_path / "state")},
        retrain={"interval_s": None, "drift_min_interval_s": 0, "min_train_points": 5000},
    )
    data = shifted_series(SERIES, POINTS, SHIFT_AT, seed=3)
    daemon = Daemon(config, tmp_path / "daemon.log")
    try:
        produce(kafka_bootstrap, topics.input, _records(data, 0, 1150))
        wait_until(lambda: _swapped(daemon, "promotion"), 240, "a promoted model to take over")
        produce(kafka_bootstrap, topics.input, _records(data, 1150, POINTS))
        wait_committed(kafka_bootstrap, topics, daemon)
    finally:
        assert daemon.stop() == 0
    drift = _events(daemon, "forecast error drift")
    started = _events(daemon, "retrain started")
    promoted = _events(daemon, "candidate promoted")
    assert drift and drift[0]["error_after"] > 1.25 * drift[0]["error_before"]
    assert started[0]["trigger"] == "drift"
    assert promoted[0]["candidate_nll"] < promoted[0]["serving_nll"] - 0.01
    old, new = promoted[0]["serving"], promoted[0]["candidate"]

    # One-step error on the new regime (after 50 points of settling), before vs after.
    index = {
        (name, round(float(t), 3)): i for name, (ts, _) in data.items() for i, t in enumerate(ts)
    }
    errors: dict[str, list[float]] = {old: [], new: []}
    for r in read_json(kafka_bootstrap, topics.forecasts):
        i = index[(r["series"], round(r["ts"], 3))]
        if i >= SHIFT_AT + 50 and r["forecast"] is not None and r["model_version"] in errors:
            errors[r["model_version"]].append(abs(r["value"] - r["forecast"]))
    before, after = float(np.mean(errors[old])), float(np.mean(errors[new]))
    print(f"MAE on the new regime: {before:.3f} before promotion, {after:.3f} after")
    assert len(errors[old]) > 1000 and len(errors[new]) > 3000
    assert after < 0.6 * before


def test_instances_share_promoted_models_roll_back_and_load_the_newest_at_start(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    topics = Topics.fresh(kafka_bootstrap, partitions=2)

    def config(name: str) -> Path:
        return write_config(
            tmp_path / f"{name}.yaml",
            kafka_bootstrap,
            topics,
            kafka={"instance_id": name},
            consume={"poll_timeout_s": 0.2, "batch_max_messages": 120},
            state={"directory": str(tmp_path / name)},
            retrain={"interval_s": 15, "drift": "off", "min_train_points": 3000},
        )

    data = shifted_series(SERIES, POINTS, POINTS, seed=4)  # no shift: a plain retrain
    a = Daemon(config("a"), tmp_path / "a.log")
    b = None
    try:
        wait_until(lambda: bool(_events(a, "partitions assigned")), 60, "a to get partitions")
        b = Daemon(config("b"), tmp_path / "b.log")
        wait_until(lambda: bool(_events(b, "partitions assigned")), 60, "b to get partitions")
        produce(kafka_bootstrap, topics.input, _records(data, 0, 600))
        daemons = {"a": a, "b": b}
        wait_until(
            lambda: any(_events(d, "candidate promoted") for d in daemons.values()),
            180,
            "a retrain to be promoted",
        )
        trainer = next(n for n, d in daemons.items() if _events(d, "candidate promoted"))
        other = "b" if trainer == "a" else "a"
        promoted = _events(daemons[trainer], "candidate promoted")[0]
        first, version = promoted["serving"], promoted["candidate"]
        assert not _events(daemons[other], "retrain started")  # exactly one instance trains
        wait_until(
            lambda: _swapped(daemons[other], "promotion", version),
            60,
            "the other instance to load the promoted model",
        )
        # Roll back to the first model from the command line: both instances switch.
        listing = subprocess.run(
            [sys.executable, "-m", "streamrnn", "models", "list", "--config", str(config(trainer))],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert first in listing and version in listing
        rollback = subprocess.run(
            [
                sys.executable,
                "-m",
                "streamrnn",
                "models",
                "rollback",
                first,
                "--config",
                str(config(trainer)),
            ],
            capture_output=True,
            text=True,
        )
        assert rollback.returncode == 0, rollback.stderr
        for d in daemons.values():
            wait_until(lambda d=d: _swapped(d, "rollback", first), 60, "the rollback")
        produce(kafka_bootstrap, topics.input, _records(data, 600, 700))
        wait_committed(kafka_bootstrap, topics, a)
    finally:
        assert a.stop() == 0
        if b is not None:
            assert b.stop() == 0

    # Whatever was published last is what a new instance serves from its first point.
    models = ModelTopic({"bootstrap.servers": kafka_bootstrap}, f"{topics.group}-models", "test")
    try:
        newest = models.read_latest()["global"]
    finally:
        models.close()
    c = Daemon(config("c"), tmp_path / "c.log")
    try:
        wait_until(lambda: bool(_events(c, "started")), 60, "c to start")
        assert _events(c, "started")[0]["model_versions"] == {"global": newest.version}
        if newest.version != first:  # else the configured model already is the newest
            lines = [x.get("event") for x in c.log_lines()]
            assert lines.index("model swapped") < lines.index("started")
    finally:
        assert c.stop() == 0
