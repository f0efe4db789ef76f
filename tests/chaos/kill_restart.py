"""Fault injection: ``kill -9`` the daemon every few seconds while input streams in.

For each delivery mode it streams a labelled synthetic stream (100 series, anomalies
injected) into the real daemon against the real broker while a loop SIGKILLs the daemon at
random moments and restarts it at once; then it replays the same points without faults (the
reference) and compares:

* alerts (read with isolation.level=read_committed): lost = reference ids missing from the
  faulty run; duplicated = repeated ids; spurious = ids the reference does not have;
* forecasts: every forecast record of the faulty run against the reference's record for the
  same (series, ts) — equal within 1e-4 means each restart continued from the restored state.

The faulty run is sized by kills, not by a number of points, so that it kills as often on a
fast machine as on a slow one: each life of the daemon, once it holds its partitions, gets
points at ``--rate`` points/s until it is killed 0.5–4 s later (nothing is produced while a
life starts up, so a slow start does not pile up input); after ``--min-kills`` kills the last
life gets one more such slice, the input ends and the run waits until every point is
committed. A point stream of ``--series`` series is generated up front, long enough for the
longest possible run; the reference replays exactly the points the faulty run produced.

Pass criteria: at least ``--min-kills`` kills; exactly_once — nothing lost, duplicated or
spurious; at_least_once — nothing lost or spurious (duplicates are allowed and counted).
Forecasts match in both modes.

Run from the repo root (starts its own broker unless --bootstrap is given)::

    .venv/bin/python -m tests.chaos.kill_restart                 # both modes, 8 kills each
    .venv/bin/python -m tests.chaos.kill_restart --series 20 --min-kills 3 --mode exactly_once
"""

from __future__ import annotations

import argparse
import math
import random
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from confluent_kafka import KafkaError, Message, Producer

from streamrnn.kafka.topic_reader import group_progress
from streamrnn.local_broker import start_broker, stop_broker
from streamrnn.synthetic import SyntheticSpec, synthetic_stream
from tests.integration.harness import Daemon, Topics, point, produce, read_json, write_config

#: Largest relative forecast difference that still counts as "the same state". The model
#: runs in float32, and where OpenBLAS's sgemm is not row-invariant (OPENBLAS_CORETYPE forced,
#: see tests/unit/test_kernel.py) a series' products change in the last bits with the
#: batch it is in; through the recurrence that reached 2.5e-5 in a full run without any
#: fault. A series that did not continue from its restored state differs by its noise.
TOLERANCE = 1e-4
#: Extra time the last life gets to commit the input's end after the replay's timeout.
DRAIN_GRACE_S = 300.0


@dataclass(frozen=True)
class KillPlan:
    """How the faulty run kills: ``kills`` SIGKILLs, each a uniform ``kill_every_s`` range of
    seconds after the life got its partitions, while input flows at ``rate`` points/s."""

    kills: int
    kill_every_s: tuple[float, float]
    rate: float

    def max_points(self) -> int:
        """The most points a run of this plan can produce (every life fed for the longest)."""
        return math.ceil(self.rate * self.kill_every_s[1] * (self.kills + 1))


@dataclass
class RunResult:
    """What one replay produced."""

    alerts: list[str]
    forecasts: dict[tuple[str, float], list[dict[str, Any]]]
    points: int
    kills: int
    required_kills: int
    #: Input points produced but not committed at each kill (what the next life had to redo).
    uncommitted_at_kill: list[int]
    restored_series: int
    seconds: float


@dataclass
class Comparison:
    """The faulty run against the reference."""

    mode: str
    points: int
    kills: int
    required_kills: int
    uncommitted_at_kill: list[int]
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
            and self.kills >= max(1, self.required_kills)
        )


class PacedFeed(threading.Thread):
    """Produces ``records`` in order at ``rate`` points/s, but only while ``flowing`` is set
    (time spent paused earns nothing); ``finish()`` ends the input and flushes it."""

    def __init__(self, bootstrap: str, topic: str, records: list[tuple[str, bytes]], rate: float):
        super().__init__(name="paced-feed", daemon=True)
        self.flowing = threading.Event()
        self.produced = 0
        self._servers, self._topic, self._records, self._rate = bootstrap, topic, records, rate
        self._finish = threading.Event()
        self._errors: list[str] = []
        self._failure: BaseException | None = None

    def run(self) -> None:
        try:
            self._feed()
        except BaseException as exc:  # reported by finish()
            self._failure = exc

    def _feed(self) -> None:
        # Idempotent: retries can never reorder a series' points.
        producer = Producer(
            {"bootstrap.servers": self._servers, "linger.ms": 5, "enable.idempotence": True}
        )
        credit, last = 0.0, None
        while not self._finish.is_set() and self.produced < len(self._records):
            if not self.flowing.wait(0.05):
                last = None
                producer.poll(0)
                continue
            now = time.monotonic()
            credit += 0.0 if last is None else (now - last) * self._rate
            last = now
            n = min(int(credit), len(self._records) - self.produced)
            for key, value in self._records[self.produced : self.produced + n]:
                for _ in range(1200):  # a full queue waits at most a minute to drain
                    try:
                        producer.produce(
                            self._topic, key=key.encode(), value=value, on_delivery=self._acked
                        )
                        break
                    except BufferError:
                        producer.poll(0.05)
                else:
                    raise RuntimeError("the producer's queue stayed full for a minute")
            self.produced += n
            credit -= n
            producer.poll(0)
            time.sleep(0.01)
        if producer.flush(60) != 0:
            raise RuntimeError("the paced feed could not deliver its last points in 60 s")

    def _acked(self, err: KafkaError | None, _msg: Message) -> None:
        if err is not None:
            self._errors.append(str(err))

    def abandon(self) -> None:
        """Stop producing without waiting for acknowledgements (a run that failed)."""
        self.flowing.clear()
        self._finish.set()
        self.join(90)

    def finish(self) -> int:
        """Stop producing, wait until every produced point is acknowledged; returns the count."""
        self.flowing.clear()
        self._finish.set()
        self.join(90)
        if self.is_alive():
            raise TimeoutError("the paced feed did not stop")
        if self._failure is not None:
            raise self._failure
        if self._errors:
            raise RuntimeError(f"{len(self._errors)} points not delivered: {self._errors[:3]}")
        return self.produced


def replay(
    bootstrap: str,
    workdir: Path,
    records: list[tuple[str, bytes]],
    mode: str,
    plan: KillPlan | None,
    seed: int,
    timeout_s: float,
) -> RunResult:
    """Run the daemon over ``records`` and return alerts and forecasts as a subscriber sees
    them. Without a ``plan``: every record is produced up front and the daemon runs until it
    has committed them all. With one: see the module docstring (records are produced paced,
    and only as many as the kills take; ``RunResult.points`` says how many)."""
    workdir.mkdir(parents=True, exist_ok=True)
    topics = Topics.fresh(bootstrap, partitions=4)
    config = write_config(
        workdir / "config.yaml",
        bootstrap,
        topics,
        kafka={"instance_id": "chaos-1"},
        delivery={"mode": mode, "commit_interval_s": 0.5},
        state={"directory": str(workdir / "state"), "snapshot_interval_s": 5},
        topics={"dead_letter": f"dead-{topics.group}"},
    )
    client = {"bootstrap.servers": bootstrap}
    started = time.monotonic()
    deadline = started + timeout_s
    uncommitted: list[int] = []
    feed = None
    if plan is None:
        points = produce(bootstrap, topics.input, records)
    else:
        if len(records) < plan.max_points():
            raise ValueError(f"{len(records)} records; the plan may take {plan.max_points()}")
        feed = PacedFeed(bootstrap, topics.input, records, plan.rate)
        feed.start()
    lives = [Daemon(config, workdir / "daemon-0.log")]
    try:
        if plan is not None and feed is not None:
            rng = random.Random(seed)
            # Every life is fed from the moment it holds its partitions (their state restored)
            # until its kill: a kill during start-up would test nothing but start-up.
            while len(lives) - 1 < plan.kills and time.monotonic() < deadline:
                wait_until_ready(lives[-1], timeout_s=120)
                feed.flowing.set()
                time.sleep(rng.uniform(*plan.kill_every_s))
                feed.flowing.clear()
                if not lives[-1].alive():
                    raise RuntimeError(f"daemon exited: {lives[-1].log_path.read_text()[-2000:]}")
                lives[-1].kill()
                lives.append(Daemon(config, workdir / f"daemon-{len(lives)}.log"))
                committed, total = group_progress(client, topics.group, [topics.input])
                uncommitted.append(total - committed)
            # The last life gets a slice of input too, then the input ends.
            wait_until_ready(lives[-1], timeout_s=120)
            feed.flowing.set()
            time.sleep(rng.uniform(*plan.kill_every_s))
            points = feed.finish()
            deadline += DRAIN_GRACE_S
        while True:
            committed, total = group_progress(client, topics.group, [topics.input])
            if total >= points and committed >= total:
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"replay not finished within {timeout_s} s")
            assert lives[-1].alive(), lives[-1].log_path.read_text()[-2000:]
            time.sleep(0.5)
    finally:
        if feed is not None and feed.is_alive():
            feed.abandon()
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
    return RunResult(
        alerts=alerts,
        forecasts=forecasts,
        points=points,
        kills=len(lives) - 1,
        required_kills=plan.kills if plan else 0,
        uncommitted_at_kill=uncommitted,
        restored_series=restored,
        seconds=time.monotonic() - started,
    )


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
    if reference.points != faulty.points:
        raise ValueError(f"reference of {reference.points} points, faulty run {faulty.points}")
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
        points=faulty.points,
        kills=faulty.kills,
        required_kills=faulty.required_kills,
        uncommitted_at_kill=faulty.uncommitted_at_kill,
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


def stream_for(plan: KillPlan, series: int, seed: int) -> list[tuple[str, bytes]]:
    """A labelled stream of ``series`` series long enough for any run of ``plan``."""
    return labelled_stream(series, max(300, math.ceil(plan.max_points() / series)), seed)


def chaos_run(
    bootstrap: str,
    workdir: Path,
    mode: str,
    plan: KillPlan,
    series: int,
    seed: int,
    timeout_s: float,
) -> Comparison:
    """The faulty run of one mode, then the reference over the same points, compared."""
    records = stream_for(plan, series, seed)
    faulty = replay(bootstrap, workdir / "faulty", records, mode, plan, seed, timeout_s)
    reference = replay(
        bootstrap, workdir / "reference", records[: faulty.points], mode, None, seed, timeout_s
    )
    return compare(mode, reference, faulty)


def describe(result: Comparison) -> str:
    """One line: kills, what they interrupted, alerts, forecasts, verdict."""
    pending = result.uncommitted_at_kill or [0]
    interrupted = f"{min(pending):,}-{max(pending):,} points uncommitted at each"
    return (
        f"[{result.mode}] {result.points:,} points; kills {result.kills} "
        f"(required {result.required_kills}; {interrupted}), series restored "
        f"{result.restored_series}; alerts: reference {result.reference_alerts}, lost "
        f"{result.lost}, duplicated {result.duplicated}, spurious {result.spurious}; forecasts "
        f"compared {result.forecasts_compared:,}, differing {result.forecasts_differing} "
        f"(worst relative difference {result.worst_relative_difference:.1e}); "
        f"{result.seconds:.0f} s -> {'PASS' if result.passed() else 'FAIL'}"
    )


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
    parser.add_argument(
        "--min-kills",
        type=int,
        default=8,
        help="SIGKILLs per mode; the run fails if fewer happened (default 8)",
    )
    parser.add_argument(
        "--rate",
        type=float,
        default=10_000.0,
        help="points/s produced while a life of the daemon is up (default 10,000)",
    )
    parser.add_argument("--mode", choices=["exactly_once", "at_least_once", "both"], default="both")
    parser.add_argument(
        "--kill-min-s",
        type=float,
        default=0.5,
        help="earliest kill, seconds after the daemon got its partitions",
    )
    parser.add_argument("--kill-max-s", type=float, default=4.0)
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument(
        "--timeout-s",
        type=float,
        default=1200.0,
        help="per replay: no kill starts after it (the run then fails on the kill count)",
    )
    parser.add_argument("--bootstrap", default=None, help="use this broker instead of a new one")
    parser.add_argument("--workdir", type=Path, default=None, help="keep configs and logs here")
    args = parser.parse_args(argv)
    if args.min_kills < 1 or args.rate <= 0 or not 0 < args.kill_min_s <= args.kill_max_s:
        parser.error("need --min-kills >= 1, --rate > 0 and 0 < --kill-min-s <= --kill-max-s")
    modes = ["exactly_once", "at_least_once"] if args.mode == "both" else [args.mode]
    plan = KillPlan(args.min_kills, (args.kill_min_s, args.kill_max_s), args.rate)
    print(
        f"plan: {plan.kills} kills per mode, {args.series} series at {plan.rate:,.0f} points/s "
        f"while a life is up (at most {plan.max_points():,} points)",
        flush=True,
    )
    results = []
    with broker(args.bootstrap) as bootstrap, tempfile.TemporaryDirectory() as tmp:
        for mode in modes:
            work = (args.workdir or Path(tmp)) / mode
            result = chaos_run(bootstrap, work, mode, plan, args.series, args.seed, args.timeout_s)
            results.append(result)
            print(describe(result), flush=True)
    print("summary:", flush=True)
    for r in results:
        print(
            f"  {r.mode}: kills {r.kills} (required {r.required_kills}), lost {r.lost}, "
            f"duplicated {r.duplicated}, spurious {r.spurious}, forecasts differing "
            f"{r.forecasts_differing} -> {'PASS' if r.passed() else 'FAIL'}",
            flush=True,
        )
        if r.kills < r.required_kills:
            print(f"  {r.mode}: only {r.kills} of {r.required_kills} kills", flush=True)
    return 0 if all(r.passed() for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
