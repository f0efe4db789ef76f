"""End-to-end throughput, latency, memory and restore speed of ``streamrnn run``.

``python -m tests.benchmarks.e2e`` starts the local broker (or uses ``--bootstrap-servers``),
runs every part below in one invocation, prints each number as it is measured and a summary
table with the targets at the end. Every topic and group name is new (uuid) per run; every
daemon and the broker it started are stopped however the run ends.

1. **Stream.** ``--points`` points over ``--series`` series: per series a base interval of
   10–60 s with log-normal jitter and occasional long gaps, values a noisy sine, timestamps
   in the past; produced (pre-encoded with orjson, lz4, linger 50 ms, batches of 10,000)
   to two 4-partition topics keyed by series: one single-point message per point, and
   windows of 64 points of one series. The window topic holds ``--window-points`` points
   (default: the larger of ``--points`` and 12,000,000, the same generator): a batch of
   5,000 window messages is 320,000 points, and a run of one or two batches cannot be
   timed by commits made once a second.
2. **Throughput.** (a) A bare passthrough with the daemon's own client settings
   (``client_config`` of the default config): consume batches of 5,000, decode each message,
   produce one small message per input message, wait for the acknowledgements, commit the
   batch; points/s from the first message consumed to the last batch committed. (b) The
   daemon (``retrain.enabled: false``) on the single-point topic and on the window topic,
   each twice: with ``topics.forecasts`` set (one forecast record per point, its equivalent
   of the passthrough's output) and with the default configuration (alerts only). Its
   group's committed offsets are polled every 0.2 s (one long-lived client, not a new one
   per poll); rate = points committed between the
   first observation with progress and the one that saw everything committed, divided by
   the time between them (start-up excluded; window offsets are turned into points with
   the offsets the broker acknowledged). The daemon commits about once a second
   (``delivery.commit_interval_s``), so a short run is coarse: the span of the forecast
   records' CreateTime is printed as a cross-check (an upper bound: it leaves out the
   first batch's work before its first record). The ``profile_s`` of the daemon's
   ``stopped`` line (seconds per stage), when the build has it, is printed with each
   stage's share.
3. **Latency.** Once the machine is quiet again (``os.sync()``, then until it is less than
   a quarter of a core busy, at most 90 s), a fresh daemon on a new topic, offered half the
   measured single-point maximum (round-robin over ``--series`` series, 10 ms slices) for
   ``--latency-seconds`` by a load process, while a subscriber process reads the forecast
   topic. Latency of a record = the wall-clock time the subscriber got it − the wall-clock
   time its input message was handed to produce() (input producer linger 5 ms included).
   The load runs ``--latency-warmup-seconds`` (30) before the ``--latency-seconds`` (30)
   that are measured: on a broker that has not yet served a paced load, its JIT compiler
   threads took 30–90 % of a core for the first ~20 s of it and came back now and then
   until ~30 s (measured per thread from ``/proc``). That is the benchmark's fresh broker
   warming up, not the daemon's steady state. Each second's p99 is printed, the warm-up's
   too (before the ``|``).
4. **Memory and restore** (``--skip-memory`` skips it). A fresh daemon, ready (its
   ``partitions assigned`` line), VmRSS read; one point for each of 100,000 series, then a
   second one for each; once all are committed VmRSS is read again: (after − before) /
   100,000 bytes per live series (it includes whatever the allocator keeps of consumer
   and producer buffers). Then SIGTERM (exit 0 expected) and a fresh daemon in the same
   group with no state directory, which restores every series from the changelog topic:
   its ``state restored`` lines' ``series`` / ``seconds`` (and ``stored_series`` /
   ``seconds``, the distinct series).

Targets: daemon / bare passthrough ≥ 0.5 (single points, both outputs); ≥ 1,000,000 points/s
with 64-point windows (the default output, alerts; with a forecast record per point the rate
is printed, not judged: that is a million records produced a second, several times what the
bare passthrough produces here); p99 end-to-end latency < 100 ms at half the maximum load;
≤ 2 KiB of RSS per live series; ≥ 100,000 series/s restored.

``--hidden H`` (≠ 64) runs every daemon with ``STREAMRNN_MODEL__HIDDEN_SIZE=H`` and
``model.pretrained: false`` (untrained weights of that size); 64 uses the shipped model.
"""

from __future__ import annotations

import argparse
import gc
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from confluent_kafka.admin import AdminClient

from streamrnn.config import load_settings
from streamrnn.daemon import HEAP_TRIM_INTERVAL_S
from streamrnn.kafka.clients import client_config, create_topics
from streamrnn.kafka.topic_reader import group_progress
from streamrnn.local_broker import start_broker, stop_broker
from tests.benchmarks.e2e_latency import LatencyClients, machine_cpu_s, process_cpu_s
from tests.benchmarks.e2e_load import (
    BenchError,
    CommitProbe,
    CommitRate,
    Produced,
    create_time_span,
    encode_points,
    encode_windows,
    events,
    make_stream,
    passthrough,
    produce_bulk,
    tail,
    wait_for_event,
    watch_commits,
)
from tests.integration.harness import Daemon, Topics, proc_status_kib, write_config

PARTITIONS = 4
DEFAULT_WINDOW_POINTS = 12_000_000
#: Different committed totals a daemon run must show to be timed by its commits.
MIN_COMMIT_STEPS = 5
MEMORY_SERIES = 100_000
STARTUP_TIMEOUT_S = 180.0

TARGET_RATIO = 0.5
TARGET_WINDOW_POINTS_S = 1_000_000.0
TARGET_P99_MS = 100.0
TARGET_BYTES_PER_SERIES = 2048.0
TARGET_RESTORE_S = 100_000.0


@dataclass
class Row:
    """One line of the summary table."""

    name: str
    target: str
    value: str
    passed: bool | None  # None: no target, or not measured


@dataclass
class DaemonRun:
    rate: CommitRate
    stopped: dict[str, Any]
    exit_code: int
    forecasts: int
    forecast_span_s: float

    @property
    def points_per_s(self) -> float | None:
        return self.rate.points_per_s


def main() -> None:
    parser = argparse.ArgumentParser(
        description=(__doc__ or "").splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--points", type=int, default=1_500_000, help="points in the stream")
    parser.add_argument("--series", type=int, default=1_000, help="series in the stream")
    parser.add_argument(
        "--window-points",
        type=int,
        help=(
            "points in the window topic (default: the larger of --points and 12,000,000, so"
            " that the window run spans many batches and commits)"
        ),
    )
    parser.add_argument("--hidden", type=int, default=64, help="GRU hidden size of the daemon")
    parser.add_argument("--bootstrap-servers", help="an existing broker (default: start one)")
    parser.add_argument("--skip-memory", action="store_true", help="skip part 4")
    parser.add_argument(
        "--daemon-env",
        action="append",
        default=[],
        metavar="STREAMRNN_X__Y=VALUE",
        help="a setting for every daemon started (repeatable), e.g."
        " STREAMRNN_MODEL__KERNEL_THREADS=2",
    )
    parser.add_argument(
        "--parts",
        default="1234",
        help="parts to run, e.g. 4 (memory and restore) or 3 (latency: give --latency-rate)",
    )
    parser.add_argument(
        "--latency-seconds", type=float, default=30.0, help="part 3's measured load (s)"
    )
    parser.add_argument(
        "--latency-warmup-seconds",
        type=float,
        default=30.0,
        help="part 3's load before the measured seconds (s): the broker's JIT warm-up",
    )
    parser.add_argument(
        "--latency-rate", type=float, help="part 3's points/s (default: half the daemon's max)"
    )
    args = parser.parse_args()
    if args.window_points is None:
        args.window_points = max(args.points, DEFAULT_WINDOW_POINTS)

    with tempfile.TemporaryDirectory(prefix="streamrnn-e2e-") as tmp:
        work = Path(tmp)
        bootstrap = args.bootstrap_servers
        if bootstrap is None:
            print("starting a local broker ...", flush=True)
            bootstrap = start_broker(work / "broker").bootstrap_servers
        bench = Bench(bootstrap, work, args)
        failure: BenchError | None = None
        try:
            bench.run()
        except BenchError as exc:
            failure = exc
        finally:
            bench.admin = None
            if args.bootstrap_servers is None:
                gc.collect()  # let go of our clients before their broker goes
                stop_broker(work / "broker")
    summary(bench.rows)
    if failure is not None:
        print(f"\nbenchmark failed: {failure}", file=sys.stderr)
        sys.exit(1)


class Bench:
    def __init__(self, bootstrap: str, work: Path, args: argparse.Namespace) -> None:
        self.bootstrap = bootstrap
        self.work = work
        self.args = args
        self.tag = uuid.uuid4().hex[:8]
        self.admin: AdminClient | None = AdminClient({"bootstrap.servers": bootstrap})
        settings = load_settings(None)
        self.consumer_conf = {
            **client_config(settings, "consumer"),
            "bootstrap.servers": bootstrap,
        }
        self.producer_conf = {
            **client_config(settings, "producer"),
            "bootstrap.servers": bootstrap,
        }
        self.env: dict[str, str] = dict(item.split("=", 1) for item in args.daemon_env)
        self.model: dict[str, dict[str, Any]] = {}
        if args.hidden != 64:
            self.env["STREAMRNN_MODEL__HIDDEN_SIZE"] = str(args.hidden)
            self.model = {"model": {"pretrained": False}}
        self.timeout_s = max(120.0, args.points / 5000)
        self.window_timeout_s = max(120.0, args.window_points / 5000)
        self.rows: list[Row] = []
        self.daemons = 0

    # -- helpers -----------------------------------------------------------------------

    def name(self, kind: str) -> str:
        return f"e2e-{kind}-{self.tag}"

    def topics(self, kind: str, partitions: int = PARTITIONS) -> list[str]:
        names = [self.name(kind)]
        assert self.admin is not None
        create_topics(self.admin, names, partitions=partitions)
        return names

    def names(self, kind: str, input_topic: str, forecasts: bool = True) -> Topics:
        """Fresh alert / forecast topics and group for one daemon on ``input_topic``."""
        topics = Topics(
            input=input_topic,
            alerts=self.name(f"{kind}-alerts"),
            forecasts=self.name(f"{kind}-forecasts"),
            group=self.name(f"{kind}-group"),
        )
        wanted = [topics.alerts] + ([topics.forecasts] if forecasts else [])
        assert self.admin is not None
        create_topics(self.admin, wanted, partitions=PARTITIONS)
        return topics

    def config(
        self, kind: str, names: Topics, forecasts: bool = True, **sections: dict[str, Any]
    ) -> Path:
        topic_section: dict[str, Any] = {"dead_letter": self.name(f"{kind}-dead")}
        if not forecasts:
            topic_section["forecasts"] = None
        merged: dict[str, dict[str, Any]] = {
            "retrain": {"enabled": False},
            "topics": topic_section,
            **self.model,
        }
        for key, values in sections.items():
            merged.setdefault(key, {}).update(values)
        return write_config(self.work / f"{kind}.yaml", self.bootstrap, names, **merged)

    def start(self, config: Path, kind: str) -> Daemon:
        self.daemons += 1
        log = self.work / f"daemon-{self.daemons}-{kind}.log"
        return Daemon(config, log, self.env)

    @staticmethod
    def stop(daemon: Daemon) -> int:
        """SIGTERM and wait (60 s), else SIGKILL; the exit code."""
        try:
            return daemon.stop(60.0)
        except subprocess.TimeoutExpired:
            daemon.kill()
            print("  (the daemon did not stop within 60 s of SIGTERM: killed)")
            return -9

    # -- the run -----------------------------------------------------------------------

    def run(self) -> None:
        args = self.args
        hidden = f"hidden {args.hidden}" + (" (shipped model)" if args.hidden == 64 else "")
        print(
            f"broker {self.bootstrap}; {args.points:,} points over {args.series:,} series"
            f" ({args.window_points:,} in windows);"
            f" {hidden}; {PARTITIONS} partitions per topic",
            flush=True,
        )
        daemon_rate = None
        if "1" in args.parts or "2" in args.parts:
            single, windows, sizes = self.part1_stream()
            daemon_rate = self.part2_throughput(single, windows, sizes)
        if "3" in args.parts:
            self.part3_latency(daemon_rate)
        if "4" in args.parts and args.skip_memory:
            print("\n== 4. memory and restore: skipped (--skip-memory)")
            self.rows.append(Row("RSS per live series", "<= 2,048 B", "skipped", None))
            self.rows.append(Row("restore rate", ">= 100,000 series/s", "skipped", None))
        elif "4" in args.parts:
            self.part4_memory_restore()

    def part1_stream(self) -> tuple[str, str, Produced]:
        args = self.args
        print("\n== 1. stream", flush=True)
        started = time.perf_counter()
        stream = make_stream(args.points, args.series)
        keys, values = encode_points(stream)
        span_h = (float(stream.ts.max()) - float(stream.ts.min())) / 3600
        print(
            f"{len(values):,} single-point messages generated and encoded in"
            f" {time.perf_counter() - started:.1f} s; timestamps span {span_h:.1f} h, ending"
            f" {time.time() - float(stream.ts.max()):.0f} s before now"
        )
        single = self.topics("points")[0]
        produced = produce_bulk(self.bootstrap, single, keys, values)
        print(
            f"produced {produced.messages:,} single-point messages in {produced.seconds:.1f} s"
            f" ({produced.messages / produced.seconds:,.0f}/s) to {single}",
            flush=True,
        )
        del keys, values
        started = time.perf_counter()
        if args.window_points != args.points:
            stream = make_stream(args.window_points, args.series, seed=1)
        wkeys, wvalues, wsizes = encode_windows(stream)
        del stream
        print(
            f"{len(wvalues):,} window messages ({sum(wsizes):,} points) generated and encoded"
            f" in {time.perf_counter() - started:.1f} s"
        )
        windows = self.topics("windows")[0]
        wproduced = produce_bulk(self.bootstrap, windows, wkeys, wvalues, sizes=wsizes)
        print(
            f"produced {wproduced.messages:,} window messages in {wproduced.seconds:.1f} s"
            f" to {windows}",
            flush=True,
        )
        return single, windows, wproduced

    def part2_throughput(self, single: str, windows: str, wproduced: Produced) -> float | None:
        args = self.args
        print("\n== 2. throughput", flush=True)
        out = self.topics("passthrough-out")[0]
        bare = passthrough(
            {**self.consumer_conf, "group.id": self.name("passthrough-group")},
            self.producer_conf,
            single,
            out,
            args.points,
            self.timeout_s,
        )
        print(
            f"bare passthrough (single points): {bare.points_per_s:,.0f} points/s,"
            f" {bare.messages_per_s:,.0f} messages/s ({bare.messages:,} messages in"
            f" {bare.seconds:.2f} s)",
            flush=True,
        )
        self.rows.append(Row("bare passthrough points/s", "-", f"{bare.points_per_s:,.0f}", None))

        run = self.daemon_throughput("single", single, args.points, lambda o: sum(o.values()))
        rate, value, exact = self.judged_rate(run, "--points")
        self.rows.append(Row("daemon points/s (single, forecast per point)", "-", value, None))
        ratio = None if rate is None else rate / bare.points_per_s
        print(f"daemon / bare passthrough: {fmt(ratio, 2)} (target >= {TARGET_RATIO})")
        self.rows.append(ratio_row("daemon (forecast per point) / bare", ratio, exact))

        arun = self.daemon_throughput(
            "single", single, args.points, lambda o: sum(o.values()), forecasts=False
        )
        arate, avalue, aexact = self.judged_rate(arun, "--points")
        aratio = None if arate is None else arate / bare.points_per_s
        print(f"daemon (alerts only) / bare passthrough: {fmt(aratio, 2)}")
        self.rows.append(Row("daemon points/s (single, alerts only)", "-", avalue, None))
        self.rows.append(ratio_row("daemon (alerts only) / bare passthrough", aratio, aexact))

        for with_forecasts in (False, True):
            self.window_run(windows, wproduced, with_forecasts)
        return rate

    def window_run(self, windows: str, wproduced: Produced, forecasts: bool) -> None:
        """The daemon on the window topic, with or without a forecast record per point."""
        args = self.args
        wrun = self.daemon_throughput(
            "windows",
            windows,
            args.window_points,
            wproduced.points_before,
            messages=wproduced.messages,
            timeout_s=self.window_timeout_s,
            forecasts=forecasts,
        )
        wrate, value, exact = self.judged_rate(wrun, "--window-points")
        if forecasts:
            # Not judged: a record per point is a produce() and a delivery report per point,
            # more records a second than the bare passthrough moves here (part 2a).
            self.rows.append(
                Row("daemon points/s (64-pt windows, forecast per point)", "-", value, None)
            )
            return
        self.rows.append(
            Row(
                "daemon points/s (64-pt windows, alerts only)",
                f">= {TARGET_WINDOW_POINTS_S:,.0f}",
                value,
                None if wrate is None or not exact else wrate >= TARGET_WINDOW_POINTS_S,
            )
        )

    @staticmethod
    def judged_rate(run: DaemonRun, flag: str) -> tuple[float | None, str, bool]:
        """(points/s, as shown, whether timed by commits). A run that saw fewer than
        :data:`MIN_COMMIT_STEPS` different committed totals (a few seconds: the daemon
        commits about once a second) is not timed by commits but by the forecast records'
        CreateTime span (an upper bound: it leaves out the first batch's work before its
        first record), and not judged against a target."""
        rate = run.points_per_s
        if rate is not None and run.rate.distinct >= MIN_COMMIT_STEPS:
            return rate, fmt(rate), True
        alt = run.forecasts / run.forecast_span_s if run.forecast_span_s > 0 else None
        print(
            f"  (only {run.rate.distinct} distinct commit observation(s): the commit-based"
            f" rate is coarse or missing; forecast CreateTime rate {fmt(alt)} points/s, an"
            f" upper bound; use a larger {flag})"
        )
        return alt, f"<= {fmt(alt)} (CreateTime)", False

    def daemon_throughput(
        self,
        kind: str,
        topic: str,
        points: int,
        points_of: Any,
        messages: int | None = None,
        timeout_s: float | None = None,
        forecasts: bool = True,
    ) -> DaemonRun:
        if not forecasts:
            kind += "-alerts-only"
        names = self.names(kind, topic, forecasts=forecasts)
        daemon = self.start(self.config(kind, names, forecasts=forecasts), kind)
        try:
            wait_for_event(daemon, "partitions assigned", STARTUP_TIMEOUT_S)
            probe = CommitProbe(self.bootstrap, names.group, topic, PARTITIONS)
            try:
                rate = watch_commits(probe, points_of, points, daemon, timeout_s or self.timeout_s)
            finally:
                probe.close()
        finally:
            code = self.stop(daemon)
        done, total = group_progress({"bootstrap.servers": self.bootstrap}, names.group, [topic])
        stopped = last_event(daemon, "stopped")
        started = last_event(daemon, "started") or {}
        records, span = (
            create_time_span(self.bootstrap, names.forecasts or "") if forecasts else (0, 0.0)
        )
        label = "single points" if messages is None else "64-point windows"
        label += ", a forecast record per point" if forecasts else ", alerts only (the default)"
        print(
            f"daemon ({label}): {fmt(rate.points_per_s)} points/s"
            + (
                f", {rate.points_per_s * (messages or points) / points:,.0f} messages/s"
                if rate.points_per_s
                else ""
            )
            + f" — {rate.observations[-1][1] - rate.observations[0][1]:,} points committed"
            f" over {rate.seconds:.2f} s ({rate.distinct} distinct commit observations);"
            f" exit code {code}; committed {done:,}/{total:,} messages;"
            f" model {started.get('model_versions')}"
        )
        if span > 0:
            print(
                f"  cross-check: {records:,} forecast records produced over {span:.2f} s"
                f" (CreateTime span) = {records / span:,.0f} records/s"
            )
        if stopped:
            rejected = stopped.get("rejected") or {}
            batch_ms = (stopped.get("batch_ms") or {}).get("idle")
            print(
                f"  stopped line: {stopped.get('points', 0):,} points,"
                f" {stopped.get('messages', 0):,} messages, {stopped.get('batches', 0):,}"
                f" batches, alerts {stopped.get('alerts')}, rejected {rejected or 'none'},"
                f" batch_ms {batch_ms}"
            )
            print_profile(stopped.get("profile_s"))
            if rejected:
                print(f"  WARNING: the daemon rejected input ({rejected}): the stream is bad")
        else:
            print("  (no 'stopped' log line)")
        if code != 0:
            print(f"  WARNING: exit code {code}: {tail(daemon.log_path, 1500)}")
        return DaemonRun(rate, stopped or {}, code, records, span)

    def part3_latency(self, max_rate: float | None) -> None:
        args = self.args
        print("\n== 3. end-to-end latency", flush=True)
        rate = args.latency_rate or (None if max_rate is None else max_rate / 2)
        if rate is None:
            print("no daemon maximum measured: skipped")
            self.rows.append(Row("latency p99", f"< {TARGET_P99_MS:.0f} ms", "n/a", None))
            return
        settle_machine()
        topic = self.topics("lat-in")[0]
        names = self.names("lat", topic)
        config = self.config("lat", names)
        clients = LatencyClients(
            self.bootstrap, self.consumer_conf, topic, names.forecasts or "", self.work
        )
        daemon = self.start(config, "latency")
        try:
            if not clients.wait_assigned(30):
                raise BenchError("the forecast subscriber did not start")
            wait_for_event(daemon, "partitions assigned", STARTUP_TIMEOUT_S)
            print(
                f"offering {rate:,.0f} points/s over {args.series:,} series for"
                f" {args.latency_warmup_seconds:.0f} s of warm-up and"
                f" {args.latency_seconds:.0f} s measured (load and subscriber in processes of"
                " their own) ...",
                flush=True,
            )
            cpu_before: tuple[float, float | None, float] = (0.0, None, 0.0)

            def load_started() -> None:
                nonlocal cpu_before
                cpu_before = (machine_cpu_s(), process_cpu_s(daemon.proc.pid), time.monotonic())

            try:
                sent = clients.offer(
                    args.series,
                    rate,
                    args.latency_warmup_seconds + args.latency_seconds,
                    daemon.alive,
                    load_started,
                )
            except RuntimeError as exc:
                raise BenchError(str(exc)) from exc
            cpu_after = (machine_cpu_s(), process_cpu_s(daemon.proc.pid), time.monotonic())
            clients.wait_received(len(sent.at), 60.0)
        finally:
            try:
                received = clients.stop()
            except RuntimeError as exc:
                raise BenchError(str(exc)) from exc
            finally:
                code = self.stop(daemon)
        stopped = last_event(daemon, "stopped") or {}
        sent_at = sent.by_point()
        if len(received.at) < len(sent_at):
            print(f"  WARNING: {len(received.at):,} forecast records for {len(sent_at):,} points")
        start = float(sent.at.min())
        seen: set[tuple[int, float]] = set()
        warmup_s = args.latency_warmup_seconds
        offered_at = []  # the input's produce() time, seconds since the load began
        latencies = []  # the subscriber had it − the input's produce()
        in_daemon = []  # the daemon's produce() of the forecast (CreateTime) − the input's
        for at, series, ts, created in zip(
            received.at.tolist(),
            received.series.tolist(),
            received.ts.tolist(),
            received.created.tolist(),
            strict=True,
        ):
            key = (series, round(ts, 3))
            produced_at = sent_at.get(key)
            if produced_at is None or key in seen:
                continue
            seen.add(key)
            offered_at.append(produced_at - start)
            latencies.append(at - produced_at)
            in_daemon.append(created - produced_at)
        offered = len(sent_at) / max(1e-9, float(sent.at.max()) - start)
        offered_s = np.array(offered_at)
        all_ms = np.array(latencies) * 1000.0  # warm-up included, for each second's p99
        measured = offered_s >= warmup_s
        if not measured.any():
            print("no forecast records measured")
            self.rows.append(Row("latency p99", f"< {TARGET_P99_MS:.0f} ms", "n/a", False))
            return
        ms = all_ms[measured]
        p50, p99, p999 = (float(x) for x in np.percentile(ms, [50, 99, 99.9]))
        poll_timeout = load_settings(str(config)).consume.poll_timeout_s
        print(
            f"latency over {len(ms):,} records (after {warmup_s:.0f} s warm-up; produced"
            f" {len(sent_at):,} at {offered:,.0f}/s): p50 {p50:.1f} ms, p99 {p99:.1f} ms,"
            f" p99.9 {p999:.1f} ms, max {float(ms.max()):.1f} ms (daemon exit code {code};"
            f" consume.poll_timeout_s {poll_timeout})"
        )
        in_daemon_ms = np.array(in_daemon) * 1000.0
        d50, d99 = (float(x) for x in np.percentile(in_daemon_ms[measured], [50, 99]))
        print(
            f"  of which up to the daemon's produce() of the forecast (its CreateTime):"
            f" p50 {d50:.1f} ms, p99 {d99:.1f} ms; the rest is the output linger, the broker"
            " and the subscriber"
        )
        print_tail_by_second(offered_s, all_ms, in_daemon_ms, start, warmup_s)
        batch_ms = (stopped.get("batch_ms") or {}).get("idle")
        print(
            f"  the daemon's batches during the load: {stopped.get('batches', 0):,} batches"
            f" ({stopped.get('messages', 0):,} messages), handling time {batch_ms}"
        )
        print(f"  the daemon's garbage-collector pauses (its whole life): {stopped.get('gc')}")
        wall = cpu_after[2] - cpu_before[2]
        daemon_cpu = (
            None
            if cpu_before[1] is None or cpu_after[1] is None
            else (cpu_after[1] - cpu_before[1]) / wall
        )
        machine = (cpu_after[0] - cpu_before[0]) / wall
        print(
            f"  CPU during the load, in cores of {os.cpu_count()}: the machine {machine:.2f},"
            f" the daemon {fmt(daemon_cpu, 2)}, the load producer {sent.cpu_s / wall:.2f},"
            f" the subscriber {received.cpu_s / wall:.2f} (its CPU up to its stop, over the"
            " load's seconds); the rest is the broker and the system"
        )
        print(
            "  the longest garbage-collector pause of the load producer"
            f" {sent.gc_max_ms:.1f} ms, of the subscriber {received.gc_max_ms:.1f} ms"
        )
        print_profile(stopped.get("profile_s"))
        self.rows.append(
            Row(
                f"latency p99 at {rate:,.0f} points/s",
                f"< {TARGET_P99_MS:.0f} ms",
                f"{p99:.1f} ms",
                p99 < TARGET_P99_MS,
            )
        )

    def part4_memory_restore(self) -> None:
        print("\n== 4. memory and restore", flush=True)
        topic = self.topics("mem-in")[0]
        names = self.names("mem", topic, forecasts=False)
        config = self.config(
            "mem", names, forecasts=False, series={"max_series": max(120_000, MEMORY_SERIES)}
        )
        daemon = self.start(config, "memory")
        try:
            wait_for_event(daemon, "partitions assigned", STARTUP_TIMEOUT_S)
            time.sleep(1.0)
            before = proc_status_kib(daemon.proc.pid, "VmRSS")
            keys, values = memory_messages(MEMORY_SERIES)
            produce_bulk(self.bootstrap, topic, keys, values)
            probe = CommitProbe(self.bootstrap, names.group, topic, PARTITIONS)
            try:
                watch = watch_commits(
                    probe,
                    lambda o: sum(o.values()),
                    2 * MEMORY_SERIES,
                    daemon,
                    max(120.0, 2 * MEMORY_SERIES / 5000),
                )
            finally:
                probe.close()
            # Steady state: the daemon hands freed heap back to the OS after a checkpoint
            # at most every HEAP_TRIM_INTERVAL_S, so wait for one after the load.
            time.sleep(HEAP_TRIM_INTERVAL_S + 1.5)
            after = proc_status_kib(daemon.proc.pid, "VmRSS")
            live = metric_value(daemon, "streamrnn_live_series")
        finally:
            code = self.stop(daemon)
        if before is None or after is None:
            raise BenchError("could not read the daemon's VmRSS")
        per_series = (after - before) * 1024 / MEMORY_SERIES
        print(
            f"{2 * MEMORY_SERIES:,} points over {MEMORY_SERIES:,} series at"
            f" {fmt(watch.points_per_s)} points/s; VmRSS {before / 1024:,.0f} MiB ready →"
            f" {after / 1024:,.0f} MiB with all live: {per_series:,.0f} bytes per live series"
            f" (streamrnn_live_series {fmt(live)}); exit code {code}"
        )
        self.rows.append(
            Row(
                "RSS per live series",
                f"<= {TARGET_BYTES_PER_SERIES:,.0f} B",
                f"{per_series:,.0f} B",
                per_series <= TARGET_BYTES_PER_SERIES,
            )
        )
        if code != 0:
            print(f"  WARNING: exit code {code} (expected 0): {tail(daemon.log_path, 1500)}")

        restorer = self.start(config, "restore")  # same group, no state directory
        try:
            deadline = time.monotonic() + STARTUP_TIMEOUT_S + 120.0
            while True:
                lines = events(restorer, "state restored")
                restored = {p for line in lines for p in line.get("partitions", [])}
                if len(restored) >= PARTITIONS:
                    break
                if not restorer.alive():
                    raise BenchError(f"the restoring daemon exited: {tail(restorer.log_path)}")
                if time.monotonic() > deadline:
                    raise BenchError(
                        f"timed out waiting for the state of {PARTITIONS} partitions to be"
                        f" restored (got {sorted(restored)}): {tail(restorer.log_path)}"
                    )
                time.sleep(0.2)
        finally:
            rcode = self.stop(restorer)
        series = sum(int(line.get("series", 0)) for line in lines)
        seconds = sum(float(line.get("seconds", 0.0)) for line in lines)
        stored = max((int(line.get("stored_series", 0)) for line in lines), default=0)
        per_s = series / seconds if seconds > 0 else None
        distinct_per_s = stored / seconds if seconds > 0 else None
        print(
            f"restore from the changelog: 'series' {series:,} in {seconds:.3f} s"
            f" ({len(lines)} 'state restored' line(s)) = {fmt(per_s)} series/s;"
            f" stored_series {stored:,} = {fmt(distinct_per_s)} distinct series/s;"
            f" exit code {rcode}"
        )
        if series != MEMORY_SERIES:
            print(
                f"  NOTE: the 'series' fields sum to {series:,} for {MEMORY_SERIES:,} series"
                " (they count distinct series restored: some series were not restored, or a"
                " restore larger than the fold's memory budget counted a series twice)"
            )
        self.rows.append(
            Row(
                "restore rate ('series' field)",
                f">= {TARGET_RESTORE_S:,.0f} series/s",
                f"{fmt(per_s)} series/s",
                None if per_s is None else per_s >= TARGET_RESTORE_S,
            )
        )
        self.rows.append(
            Row(
                "restore rate (distinct series)",
                f">= {TARGET_RESTORE_S:,.0f} series/s",
                f"{fmt(distinct_per_s)} series/s",
                None if distinct_per_s is None else distinct_per_s >= TARGET_RESTORE_S,
            )
        )


def memory_messages(series: int) -> tuple[list[bytes], list[bytes]]:
    """Two points per series: first every series' first point, then every second point."""
    rng = np.random.default_rng(2)
    base = time.time() - 3600.0
    level = rng.uniform(10.0, 1000.0, series).round(4).tolist()
    names = [f"mem.{s:06d}" for s in range(series)]
    keys = [n.encode() for n in names]
    values = []
    for k in range(2):
        for s in range(series):
            doc = {"series": names[s], "ts": round(base + 30.0 * k + s * 1e-3, 3)}
            doc["value"] = level[s] * (1.0 + 0.01 * k)
            values.append(orjson.dumps(doc))
    return keys + keys, values


def metric_value(daemon: Daemon, metric: str) -> float | None:
    """An unlabelled metric from the daemon's /metrics (its port from the log); None if
    unavailable."""
    line = last_event(daemon, "http endpoints")
    if line is None or not line.get("port"):
        return None
    try:
        url = f"http://127.0.0.1:{line['port']}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            text = response.read().decode()
    except OSError:
        return None
    for row in text.splitlines():
        if row.startswith(metric + " "):
            return float(row.split()[1])
    return None


def last_event(daemon: Daemon, name: str) -> dict[str, Any] | None:
    found = events(daemon, name)
    return found[-1] if found else None


def settle_machine(quiet_cores: float = 0.25, longest_s: float = 90.0) -> None:
    """Write dirty pages out and wait until the machine is quiet (at most ``longest_s``).

    Part 2 leaves gigabytes of fresh log segments that the kernel writes back, and broker
    work behind them; a latency load started right after it had a p99 of 176-749 ms in its
    first ten seconds and tens of ms after (probably that write-back). Since this wait, the
    machine has been quiet within about a second: a guard, not the cure of the spikes."""
    started = time.monotonic()
    os.sync()
    busy = float("inf")
    while time.monotonic() - started < longest_s:
        before, at = machine_cpu_s(), time.monotonic()
        time.sleep(1.0)
        busy = (machine_cpu_s() - before) / (time.monotonic() - at)
        if busy < quiet_cores:
            break
    print(
        f"machine settled for {time.monotonic() - started:.1f} s (sync, then busy"
        f" {busy:.2f} cores over the last second)",
        flush=True,
    )


def print_tail_by_second(
    offered_s: np.ndarray, ms: np.ndarray, in_daemon_ms: np.ndarray, start: float, warmup_s: float
) -> None:
    """Each second of the load's p99 latency (ms), by the second its input was produced, as
    ``second:total/daemon``: the whole path, and the part up to the daemon's produce() of
    the forecast. It tells a few spikes (a stall somewhere) from a level raised throughout
    (a backlog), and a stall in the daemon (both high) from one after it (only the total:
    the output linger, the broker or the subscriber). ``start`` (epoch seconds) is second
    0, printed as UTC time to match against the logs of the broker (its GC log) and the
    daemon; a ``|`` ends the ``warmup_s`` seconds."""
    second = offered_s.astype(np.int64)
    cells = []
    for s in np.unique(second).tolist():
        if 0 < warmup_s <= s and "|" not in cells:
            cells.append("|")
        of_second = second == s
        total, daemon = (float(np.percentile(x[of_second], 99)) for x in (ms, in_daemon_ms))
        cells.append(f"{s}:{total:.0f}/{daemon:.0f}")
    zero = datetime.fromtimestamp(start, tz=UTC).strftime("%H:%M:%S.%f")[:-3]
    print(
        f"  p99 (ms) per second of the load, total/up to the daemon's produce() (second 0 ="
        f" {zero} UTC): " + " ".join(cells)
    )


def print_profile(profile: Any) -> None:
    """The daemon's ``profile_s`` (stage → seconds) as a table with each stage's share."""
    if not isinstance(profile, dict) or not profile:
        print("  no profile in this build")
        return
    numbers = {k: float(v) for k, v in profile.items() if isinstance(v, int | float)}
    total = numbers.get("total", sum(v for k, v in numbers.items() if k != "total"))
    print(f"  {'profile_s stage':<28}{'seconds':>10}{'%':>8}")
    for stage, seconds in sorted(numbers.items(), key=lambda kv: -kv[1]):
        share = f"{100 * seconds / total:.1f}" if total > 0 else "-"
        print(f"  {stage:<28}{seconds:>10.3f}{share:>8}")
    others = {k: v for k, v in profile.items() if k not in numbers}
    if others:
        print(f"  (non-numeric entries: {others})")


def ratio_row(label: str, ratio: float | None, exact: bool) -> Row:
    """A daemon / bare passthrough row, judged only on a commit-timed (exact) rate."""
    return Row(
        label,
        f">= {TARGET_RATIO}",
        fmt(ratio, 2) + ("" if exact else " (CreateTime)"),
        None if ratio is None or not exact else ratio >= TARGET_RATIO,
    )


def fmt(value: float | None, digits: int = 0) -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}"


def summary(rows: list[Row]) -> None:
    print("\n== summary")
    if not rows:
        print("(nothing measured)")
        return
    widths = [
        max(len("measure"), *(len(r.name) for r in rows)) + 2,
        max(len("target"), *(len(r.target) for r in rows)) + 2,
        max(len("measured"), *(len(r.value) for r in rows)) + 2,
    ]
    print(f"{'measure':<{widths[0]}}{'target':>{widths[1]}}{'measured':>{widths[2]}}  result")
    for r in rows:
        verdict = "-" if r.passed is None else ("PASS" if r.passed else "FAIL")
        if r.passed is None and r.target != "-":
            verdict = "skipped" if r.value == "skipped" else "n/a"
        print(f"{r.name:<{widths[0]}}{r.target:>{widths[1]}}{r.value:>{widths[2]}}  {verdict}")


if __name__ == "__main__":
    main()
