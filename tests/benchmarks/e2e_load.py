"""Helpers of the end-to-end benchmark (``tests.benchmarks.e2e``): the synthetic stream, a
fast bulk producer, the group-progress probe, the bare passthrough, and a daemon wrapper
that can pass ``STREAMRNN_*`` variables. The latency test's clients are in
``tests.benchmarks.e2e_latency``.
"""

from __future__ import annotations

import itertools
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from tests.integration.harness import Daemon

#: Points per window message.
WINDOW_POINTS = 64

#: Producer settings for pre-producing the stream (throughput, not latency). Idempotence
#: keeps each partition in order across retries (without it, a request retried while the
#: leader of a just-created topic settles can land after later ones: out-of-order points).
FAST_PRODUCER: dict[str, Any] = {
    "enable.idempotence": True,
    "linger.ms": 50,
    "batch.num.messages": 10_000,
    "compression.type": "lz4",
    "queue.buffering.max.messages": 2_000_000,
    "queue.buffering.max.kbytes": 2_097_151,
}


class BenchError(RuntimeError):
    """A bounded wait ran out, or a run went wrong (the message says which and why)."""


# -- the stream ------------------------------------------------------------------------


@dataclass
class Stream:
    """Points of ``len(names)`` series in global time order (each series in time order)."""

    names: list[str]
    sid: np.ndarray  # series index of each point
    ts: np.ndarray  # epoch seconds (ms resolution)
    value: np.ndarray

    def __len__(self) -> int:
        return len(self.ts)


def make_stream(points: int, series: int, seed: int = 0, prefix: str = "e2e") -> Stream:
    """``points`` points over ``series`` series with irregular intervals, ending before now.

    Per series: a base interval uniform in 10–60 s, each gap that times a log-normal jitter
    (sigma 0.35), one gap in 200 a long one (20–200 times the base); values a noisy sine
    (level 10–1000, ±20 %, period 1–24 h, noise 2 % of the level). Each series' last point
    is 1–6 minutes before now.
    """
    if points < series:
        raise ValueError(f"--points ({points}) must be at least --series ({series})")
    rng = np.random.default_rng(seed)
    counts = np.full(series, points // series, dtype=np.int64)
    counts[: points % series] += 1
    sid = np.repeat(np.arange(series, dtype=np.int64), counts)
    base = rng.uniform(10.0, 60.0, series)
    gaps = base[sid] * rng.lognormal(0.0, 0.35, points)
    long_gap = rng.random(points) < 0.005
    gaps[long_gap] *= rng.uniform(20.0, 200.0, int(long_gap.sum()))
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    ends = starts + counts - 1
    cumulative = np.cumsum(gaps)
    rel = cumulative - np.repeat(cumulative[starts] - gaps[starts], counts)  # per series
    last = rel[ends]
    end_at = time.time() - rng.uniform(60.0, 360.0, series)
    ts = np.round(end_at[sid] - (last[sid] - rel), 3)
    level = rng.uniform(10.0, 1000.0, series)
    period = rng.uniform(3600.0, 86400.0, series)
    phase = rng.uniform(0.0, 2 * np.pi, series)
    value = level[sid] * (1.0 + 0.2 * np.sin(2 * np.pi * ts / period[sid] + phase[sid]))
    value = np.round(value + rng.normal(0.0, 1.0, points) * 0.02 * level[sid], 4)
    order = np.argsort(ts, kind="stable")
    names = [f"{prefix}.{s:05d}" for s in range(series)]
    return Stream(names, sid[order], ts[order], value[order])


def encode_points(stream: Stream) -> tuple[list[bytes], list[bytes]]:
    """(keys, values) of one single-point message per point, in stream order.

    Encoded end to end into one buffer, then cut into messages: millions of ``dumps()``
    results kept in a list each took a fresh page of memory (a minor page fault per
    message, ~6 µs of system time each here: 17 s for 1.65 million messages), while
    slices of one buffer are small objects from Python's own pools.
    """
    names = [n.encode() for n in stream.names]
    sids = stream.sid.tolist()
    keys = [names[s] for s in sids]
    buffer, ends, dumps = bytearray(), [0], orjson.dumps
    for s, t, v in zip(sids, stream.ts.tolist(), stream.value.tolist(), strict=True):
        buffer += dumps({"series": stream.names[s], "ts": t, "value": v})
        ends.append(len(buffer))
    whole = bytes(buffer)
    del buffer
    return keys, [whole[a:b] for a, b in itertools.pairwise(ends)]


def encode_windows(stream: Stream) -> tuple[list[bytes], list[bytes], list[int]]:
    """(keys, values, points per message) of window messages: each series' points in
    consecutive windows of :data:`WINDOW_POINTS` (its last one shorter), the windows
    ordered by their last timestamp (a window is sent once complete)."""
    by_series = np.argsort(stream.sid, kind="stable")  # each series' points, in time order
    sid = stream.sid[by_series]
    ts = stream.ts[by_series]
    value = stream.value[by_series]
    bounds = np.flatnonzero(np.diff(sid)) + 1
    starts = np.concatenate([[0], bounds])
    stops = np.concatenate([bounds, [len(sid)]])
    windows: list[tuple[float, int, int, int]] = []  # (last ts, series, lo, hi)
    for lo_s, hi_s in zip(starts.tolist(), stops.tolist(), strict=True):
        for lo in range(lo_s, hi_s, WINDOW_POINTS):
            hi = min(lo + WINDOW_POINTS, hi_s)
            windows.append((float(ts[hi - 1]), int(sid[lo]), lo, hi))
    windows.sort()
    keys, values, sizes = [], [], []
    pairs = np.column_stack([ts, value])
    for _, s, lo, hi in windows:
        name = stream.names[s]
        keys.append(name.encode())
        values.append(orjson.dumps({"series": name, "points": pairs[lo:hi].tolist()}))
        sizes.append(hi - lo)
    return keys, values, sizes


# -- producing -------------------------------------------------------------------------


@dataclass
class Produced:
    """Where the messages of a bulk produce landed (only if tracked)."""

    messages: int
    seconds: float
    #: partition → cumulative points before each offset (``cum[o]`` = points in offsets < o)
    cumulative_points: dict[int, np.ndarray] = field(default_factory=dict)

    def points_before(self, offsets: dict[int, int]) -> int:
        """Points in the messages before ``offsets`` (partition → next offset)."""
        total = 0
        for p, off in offsets.items():
            cum = self.cumulative_points.get(p)
            if cum is not None and off > 0:
                total += int(cum[min(off, len(cum) - 1)])
        return total


def produce_bulk(
    bootstrap: str,
    topic: str,
    keys: Sequence[bytes],
    values: Sequence[bytes],
    sizes: Sequence[int] | None = None,
    timeout_s: float = 300.0,
) -> Produced:
    """Produce pre-encoded messages as fast as the client goes and wait for every
    acknowledgement. With ``sizes`` (points per message), record where each landed so
    committed offsets can be turned into points."""
    errors: list[str] = []
    landed: dict[int, list[tuple[int, int, int]]] = {}  # partition → (offset, index, points)

    def failed(err: Any, _msg: Any) -> None:
        if err is not None:
            errors.append(str(err))

    def track(index: int, n: int) -> Callable[[Any, Any], None]:
        def callback(err: Any, msg: Any) -> None:
            if err is not None:
                errors.append(str(err))
            else:
                landed.setdefault(msg.partition(), []).append((msg.offset(), index, n))

        return callback

    conf: dict[str, Any] = {"bootstrap.servers": bootstrap, **FAST_PRODUCER}
    if sizes is None:
        conf["delivery.report.only.error"] = True
        conf["on_delivery"] = failed
    producer = Producer(conf)
    started = time.perf_counter()
    deadline = time.monotonic() + timeout_s
    for i, (key, value) in enumerate(zip(keys, values, strict=True)):
        while True:
            try:
                if sizes is None:
                    producer.produce(topic, value, key)
                else:
                    producer.produce(topic, value, key, on_delivery=track(i, sizes[i]))
                break
            except BufferError:
                producer.poll(0.05)
                if time.monotonic() > deadline:
                    raise BenchError(f"producing to {topic}: timed out") from None
        if i % 20_000 == 0:
            producer.poll(0)
    remaining = producer.flush(max(1.0, deadline - time.monotonic()))
    seconds = time.perf_counter() - started
    if remaining:
        raise BenchError(f"producing to {topic}: {remaining} messages unacknowledged")
    if errors:
        raise BenchError(f"producing to {topic}: {len(errors)} failed, e.g. {errors[:3]}")
    produced = Produced(len(values), seconds)
    for p, rows in landed.items():
        rows.sort()
        offsets = np.array([o for o, _, _ in rows])
        if not np.array_equal(offsets, np.arange(len(rows))):
            raise BenchError(f"{topic}[{p}]: expected offsets 0..n-1 (a fresh topic)")
        if any(b[1] < a[1] for a, b in itertools.pairwise(rows)):
            raise BenchError(f"{topic}[{p}]: messages landed out of produce order")
        counts = np.array([n for _, _, n in rows], dtype=np.int64)
        produced.cumulative_points[p] = np.concatenate([[0], np.cumsum(counts)])
    return produced


# -- watching a group ------------------------------------------------------------------

_TRANSIENT = frozenset(
    {
        KafkaError.NOT_COORDINATOR,
        KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
        KafkaError.COORDINATOR_NOT_AVAILABLE,
        KafkaError._TIMED_OUT,
    }
)


class CommitProbe:
    """The committed offsets of a group on one topic, through one long-lived consumer that
    never subscribes (so it does not join the group). Cheaper to call every 0.2 s than
    :func:`streamrnn.kafka.topic_reader.group_progress`, which builds a client per call."""

    def __init__(self, bootstrap: str, group: str, topic: str, partitions: int) -> None:
        self._consumer = Consumer(
            {"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False}
        )
        self._parts = [TopicPartition(topic, p) for p in range(partitions)]

    def committed(self, timeout_s: float = 10.0) -> dict[int, int]:
        """Partition → committed next offset (0 where nothing is committed yet)."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                parts = self._consumer.committed(self._parts, timeout=timeout_s)
                return {tp.partition: max(tp.offset, 0) for tp in parts}
            except KafkaException as exc:
                err = exc.args[0]
                if not (err.retriable() or err.code() in _TRANSIENT):
                    raise
                if time.monotonic() > deadline:
                    raise BenchError(f"fetching committed offsets: {err}") from exc
                time.sleep(0.2)

    def close(self) -> None:
        self._consumer.close()


@dataclass
class CommitRate:
    """Points committed over time, observed from the outside."""

    observations: list[tuple[float, int]]  # (monotonic time, points committed) with points > 0

    @property
    def distinct(self) -> int:
        """How many different committed totals were seen (the rate is coarse below ~5)."""
        return len({n for _, n in self.observations})

    @property
    def points_per_s(self) -> float | None:
        if len(self.observations) < 2:
            return None
        (t0, n0), (t1, n1) = self.observations[0], self.observations[-1]
        return (n1 - n0) / (t1 - t0) if t1 > t0 and n1 > n0 else None

    @property
    def seconds(self) -> float:
        return self.observations[-1][0] - self.observations[0][0] if self.observations else 0.0


def watch_commits(
    probe: CommitProbe,
    points_of: Callable[[dict[int, int]], int],
    total_points: int,
    daemon: Daemon,
    timeout_s: float,
    interval_s: float = 0.2,
) -> CommitRate:
    """Poll the committed offsets every ``interval_s`` until ``total_points`` are committed;
    keep the observations from the first with progress > 0 on."""
    observations: list[tuple[float, int]] = []
    deadline = time.monotonic() + timeout_s
    while True:
        if not daemon.alive():
            raise BenchError(f"the daemon exited: {tail(daemon.log_path)}")
        before = time.monotonic()
        done = points_of(probe.committed())
        at = (before + time.monotonic()) / 2
        if done > 0:
            observations.append((at, done))
        if done >= total_points:
            return CommitRate(observations)
        if time.monotonic() > deadline:
            raise BenchError(
                f"timed out after {timeout_s:.0f} s waiting for the daemon to commit"
                f" {total_points:,} points ({done:,} committed)"
            )
        time.sleep(max(0.0, interval_s - (time.monotonic() - before)))


def create_time_span(bootstrap: str, topic: str, timeout_s: float = 30.0) -> tuple[int, float]:
    """(records in ``topic``, seconds between its first and last record's CreateTime): the
    span over which the daemon produced them (the first and last record of each partition
    are read, nothing else)."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"span-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
        }
    )
    try:
        metadata = consumer.list_topics(topic, timeout=timeout_s)
        count = 0
        first: list[int] = []
        last: list[int] = []
        for p in metadata.topics[topic].partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout_s)
            if high <= low:
                continue
            count += high - low
            for offset, into in ((low, first), (high - 1, last)):
                consumer.assign([TopicPartition(topic, p, offset)])
                deadline = time.monotonic() + timeout_s
                while True:
                    msg = consumer.poll(0.5)
                    if msg is not None and msg.error() is None:
                        into.append(msg.timestamp()[1])
                        break
                    if time.monotonic() > deadline:
                        raise BenchError(f"reading {topic}[{p}]@{offset}: timed out")
        if not first:
            return 0, 0.0
        return count, (max(last) - min(first)) / 1000.0
    finally:
        consumer.close()


# -- the bare passthrough --------------------------------------------------------------


@dataclass
class Passthrough:
    messages: int
    points: int
    seconds: float

    @property
    def points_per_s(self) -> float:
        return self.points / self.seconds

    @property
    def messages_per_s(self) -> float:
        return self.messages / self.seconds


def passthrough(
    consumer_conf: dict[str, Any],
    producer_conf: dict[str, Any],
    topic: str,
    out_topic: str,
    total_messages: int,
    timeout_s: float,
) -> Passthrough:
    """Consume ``topic`` in batches of up to 5,000, decode each message and read its fields,
    produce one small message per input message to ``out_topic``, wait for their
    acknowledgements, commit the batch's offsets; timed from the first message consumed to
    the last batch committed."""
    errors: list[str] = []

    def delivered(err: Any, _msg: Any) -> None:
        if err is not None:
            errors.append(str(err))

    consumer = Consumer(consumer_conf)
    producer = Producer({**producer_conf, "on_delivery": delivered})
    consumer.subscribe([topic])
    loads, dumps = orjson.loads, orjson.dumps
    messages = points = 0
    first: float | None = None
    deadline = time.monotonic() + timeout_s
    try:
        while messages < total_messages:
            if time.monotonic() > deadline:
                raise BenchError(
                    f"passthrough: timed out after {timeout_s:.0f} s"
                    f" ({messages:,} of {total_messages:,} messages)"
                )
            batch = consumer.consume(num_messages=5000, timeout=0.5)
            if not batch:
                continue
            if first is None:
                first = time.perf_counter()
            offsets: dict[int, int] = {}
            for msg in batch:
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        continue
                    raise BenchError(f"passthrough: consumer error {err}")
                doc = loads(msg.value() or b"null")
                series = doc["series"]
                pts = doc.get("points")
                if pts is None:
                    ts, _value = doc["ts"], doc["value"]
                    points += 1
                else:
                    ts, _value = pts[-1]
                    points += len(pts)
                out = dumps({"series": series, "ts": ts})
                while True:
                    try:
                        producer.produce(out_topic, out, msg.key())
                        break
                    except BufferError:
                        producer.poll(0.01)
                offsets[msg.partition() or 0] = (msg.offset() or 0) + 1
                messages += 1
            remaining = producer.flush(30.0)
            if remaining or errors:
                raise BenchError(f"passthrough: {remaining} unacknowledged, errors {errors[:3]}")
            consumer.commit(
                offsets=[TopicPartition(topic, p, o) for p, o in offsets.items()],
                asynchronous=False,
            )
        assert first is not None
        return Passthrough(messages, points, time.perf_counter() - first)
    finally:
        consumer.close()


# -- the latency test ------------------------------------------------------------------


# -- the daemon ------------------------------------------------------------------------


def tail(path: Path, chars: int = 3000) -> str:
    """The end of a log file, for error messages."""
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return "(no log)"


def events(daemon: Daemon, name: str) -> list[dict[str, Any]]:
    """The daemon's log lines whose event is ``name``."""
    return [line for line in daemon.log_lines() if line.get("event") == name]


def wait_for_event(daemon: Daemon, name: str, timeout_s: float) -> dict[str, Any]:
    """The first ``name`` log line, waiting for it at most ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = events(daemon, name)
        if found:
            return found[0]
        if not daemon.alive():
            raise BenchError(f"the daemon exited before {name!r}: {tail(daemon.log_path)}")
        time.sleep(0.2)
    raise BenchError(
        f"timed out after {timeout_s:.0f} s waiting for the daemon's {name!r} log line:"
        f" {tail(daemon.log_path)}"
    )
