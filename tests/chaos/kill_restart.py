"""Fault injection: ``kill -9`` the daemon every few seconds while it replays a long stream.

For each delivery mode it replays the same labelled synthetic stream (default 100 series ×
2,000 irregular points = 200,000 points, anomalies injected) twice through the real daemon
against the real broker: once without faults (the reference), once while a loop SIGKILLs the
daemon at random moments and restarts it at once. Then it compares:

* alerts (read with isolation.level=read_committed): lost = reference ids missing from the
  faulty run; duplicated = repeated ids; spurious = ids the reference does not have;
* forecasts: every forecast record of the faulty run against the reference's record for the
  same (series, ts) — equal within 1e-5 means each restart continued from the restored state.

Pass criteria: exactly_once — nothing lost, duplicated or spurious; at_least_once — nothing
lost or spurious (duplicates are allowed and counted). Forecasts match in both modes.

Run from the repo root (starts its own broker unless --bootstrap is given)::

    .venv/bin/python -m tests.chaos.kill_restart                   # both modes, ~10 minutes
    .venv/bin/python -m tests.chaos.kill_restart --series 20 --points 1500 --mode exactly_once
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from streamrnn.kafka.inspect import group_progress
from streamrnn.local_broker import start_broker, stop_broker
from streamrnn.synthetic import SyntheticSpec, synthetic_stream
from tests.integration.harness import Daemon, Topics, point, produce, read_json, write_config

#: Largest relative forecast difference that still counts as "the same state".
TOLERANCE = 1e-5


@dataclass
class RunResult:
    """What one replay produced."""

    alerts: list[str]
    forecasts: dict[tuple[str, float], list[dict[str, Any]]]
    kills: int
    restored_series: int
    seconds: float


@dataclass
class Comparison:
    """The faulty run against the reference."""

    mode: str
    kills: int
    restored_series: int
    reference_alerts: int
    lost: int
    duplicated: int
    spurious: int
    forecasts_compared: int
    forecasts_differing: int
    worst_relative_difference: float
    seconds: float

    def passed(self) -> bool:
        exact = self.duplicated == 0 if self.mode == "exactly_once" else True
        return (
            self.lost == 0
            and self.spurious == 0
            and exact
            and self.forecasts_differing == 0
            and self.kills > 0
        )


def replay(
    bootstrap: str,
    workdir: Path,
    records: list[tuple[str, bytes]],
    mode: str,
    kill_every_s: tuple[float, float] | None,
    seed: int,
    timeout_s: float,
) -> RunResult:
    """Replay ``records`` through the daemon; SIGKILL it every ``kill_every_s`` (uniform
    range, seconds) if given. Returns alerts and forecasts as a subscriber sees them."""
    workdir.mkdir(parents=True, exist_ok=True)
    topics = Topics.fresh(bootstrap, partitions=4)
    produce(bootstrap, topics.input, records)
    config = write_config(
        workdir / "config.yaml",
        bootstrap,
        topics,
        kafka={"instance_id": "chaos-1"},
        delivery={"mode": mode, "commit_interval_s": 0.5},
        state={"directory": str(workdir / "state"), "snapshot_interval_s": 5},
        topics={"dead_letter": f"dead-{topics.group}"},
    )
    rng = random.Random(seed)
    started = time.monotonic()
    lives = [Daemon(config, workdir / "daemon-0.log")]

    def finished() -> bool:
        committed, total = group_progress(
            {"bootstrap.servers": bootstrap}, topics.group, [topics.input]
        )
        return total > 0 and committed >= total

    try:
        while not finished():
            if time.monotonic() - started > timeout_s:
                raise TimeoutError(f"replay not finished within {timeout_s} s")
            if kill_every_s is None:
                time.sleep(0.5)
                assert lives[-1].alive(), lives[-1].log_path.read_text()[-2000:]
                continue
            # Kill a few seconds after the instance got its partitions (and restored their
            # state): a kill during start-up would test nothing but start-up.
            wait_until_ready(lives[-1], timeout_s=120)
            time.sleep(rng.uniform(*kill_every_s))
            if finished():
                break
            lives[-1].kill()
            lives.append(Daemon(config, workdir / f"daemon-{len(lives)}.log"))
        if kill_every_s is not None:
            # The killed life's last offset commit (asynchronous) may land just after the
            # check above: let the new life start before stopping it, so it exits cleanly
            # rather than dying of the signal before its handlers are installed.
            wait_until_ready(lives[-1], timeout_s=120)
    finally:
        code = lives[-1].stop()
    if code != 0:
        raise RuntimeError(f"the last daemon exited {code}")
    alerts = [a["alert_id"] for a in read_json(bootstrap, topics.alerts)]
    forecasts: dict[tuple[str, float], list[dict[str, Any]]] = {}
    for record in read_json(bootstrap, topics.forecasts):
        forecasts.setdefault((record["series"], record["ts"]), []).append(record)
    restored = sum(
        line.get("series", 0)
        for life in lives
        for line in life.log_lines()
        if line.get("event") == "state restored"
    )
    return RunResult(alerts, forecasts, len(lives) - 1, restored, time.monotonic() - started)


def wait_until_ready(daemon: Daemon, timeout_s: float) -> None:
    """Wait until ``daemon`` logs that it holds partitions (their state restored)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if any(line.get("event") == "partitions assigned" for line in daemon.log_lines()):
            return
        if not daemon.alive():
            raise RuntimeError(f"daemon exited: {daemon.log_path.read_text()[-2000:]}")
        time.sleep(0.1)
    raise TimeoutError("the daemon got no partitions")


def compare(mode: str, reference: RunResult, faulty: RunResult) -> Comparison:
    """Count lost, duplicated and spurious alerts and differing forecasts."""
    want = set(reference.alerts)
    counts = Counter(faulty.alerts)
    worst = 0.0
    differing = compared = 0
    for key, records in faulty.forecasts.items():
        expected = reference.forecasts.get(key)
        if not expected:
            differing += 1
            continue
        for record in records:
            compared += 1
            diff = _relative_difference(record, expected[0])
            worst = max(worst, diff)
            differing += diff > TOLERANCE
    differing += len(reference.forecasts.keys() - faulty.forecasts.keys())
    return Comparison(
        mode=mode,
        kills=faulty.kills,
        restored_series=faulty.restored_series,
        reference_alerts=len(want),
        lost=len(want - counts.keys()),
        duplicated=sum(c - 1 for c in counts.values()),
        spurious=len(counts.keys() - want),
        forecasts_compared=compared,
        forecasts_differing=differing,
        worst_relative_difference=worst,
        seconds=faulty.seconds,
    )


def _relative_difference(a: dict[str, Any], b: dict[str, Any]) -> float:
    worst = 0.0
    for field in ("forecast", "lower", "upper"):
        x, y = a[field], b[field]
        if x is None or y is None:
            if x is not y:
                return float("inf")
            continue
        worst = max(worst, abs(x - y) / max(1.0, abs(y)))
    return worst


def labelled_stream(series: int, points: int, seed: int) -> list[tuple[str, bytes]]:
    """Single-point messages of a synthetic stream with injected, labelled anomalies."""
    frame = synthetic_stream(
        SyntheticSpec(series=series, points=points, seed=seed, anomalies_per_series=4)
    )
    columns = frame[["series", "ts", "value"]].itertuples(index=False)
    return [point(s, ts, v) for s, ts, v in columns]


@contextmanager
def broker(bootstrap: str | None) -> Iterator[str]:
    """The given bootstrap address, or a fresh local broker for the duration."""
    if bootstrap:
        yield bootstrap
        return
    with tempfile.TemporaryDirectory(prefix="streamrnn-chaos-broker-") as tmp:
        started = start_broker(Path(tmp))
        try:
            yield started.bootstrap_servers
        finally:
            stop_broker(Path(tmp))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--series", type=int, default=100)
    parser.add_argument("--points", type=int, default=2000, help="points per series")
    parser.add_argument("--mode", choices=["exactly_once", "at_least_once", "both"], default="both")
    parser.add_argument(
        "--kill-min-s",
        type=float,
        default=0.5,
        help="earliest kill, seconds after the daemon got its partitions",
    )
    parser.add_argument("--kill-max-s", type=float, default=4.0)
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--timeout-s", type=float, default=1200.0)
    parser.add_argument("--bootstrap", default=None, help="use this broker instead of a new one")
    parser.add_argument("--workdir", type=Path, default=None, help="keep configs and logs here")
    args = parser.parse_args(argv)
    modes = ["exactly_once", "at_least_once"] if args.mode == "both" else [args.mode]
    records = labelled_stream(args.series, args.points, args.seed)
    print(f"stream: {len(records):,} points over {args.series} series", flush=True)
    results = []
    with broker(args.bootstrap) as bootstrap, tempfile.TemporaryDirectory() as tmp:
        for mode in modes:
            work = (args.workdir or Path(tmp)) / mode
            reference = replay(
                bootstrap, work / "reference", records, mode, None, args.seed, args.timeout_s
            )
            print(
                f"[{mode}] reference: {len(reference.alerts)} alerts in {reference.seconds:.0f} s",
                flush=True,
            )
            faulty = replay(
                bootstrap,
                work / "faulty",
                records,
                mode,
                (args.kill_min_s, args.kill_max_s),
                args.seed,
                args.timeout_s,
            )
            result = compare(mode, reference, faulty)
            results.append(result)
            print(
                f"[{mode}] kills {result.kills}, series restored {result.restored_series}, "
                f"alerts: reference {result.reference_alerts}, lost {result.lost}, "
                f"duplicated {result.duplicated}, spurious {result.spurious}; forecasts compared "
                f"{result.forecasts_compared:,}, differing {result.forecasts_differing} "
                f"(worst relative difference {result.worst_relative_difference:.1e}); "
                f"{result.seconds:.0f} s -> {'PASS' if result.passed() else 'FAIL'}",
                flush=True,
            )
    return 0 if all(r.passed() for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
