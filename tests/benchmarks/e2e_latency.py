"""The two clients of the end-to-end latency test (part 3 of ``tests.benchmarks.e2e``): a
paced load producer and a forecast subscriber, each in a process of its own.

Why processes: both handle ~70,000 messages/s in Python. In one process they contend for
one interpreter lock, and each one's pauses (the other's bursts) were measured as the
daemon's latency. A subscriber of the alert topic is a process of its own in production
too. Both processes are started with ``spawn`` (no librdkafka threads are forked) and hand
their measurements back as ``.npz`` files (wall-clock times from ``time.time()``, which
every process on the machine shares).
"""

from __future__ import annotations

import array
import gc
import multiprocessing
import multiprocessing.synchronize
import os
import resource
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from confluent_kafka import Consumer, Producer, TopicPartition

from streamrnn.gc_pauses import GcPauses
from tests.benchmarks.e2e_load import Stream, encode_points

__all__ = ["LatencyClients", "Received", "Sent", "machine_cpu_s", "process_cpu_s"]

#: Seconds of each slice of the paced load (its points are produced at the slice's start).
SLICE_S = 0.01
#: Most messages the subscriber takes from its client's queue at once.
DRAIN_MESSAGES = 1000

_SPAWN = multiprocessing.get_context("spawn")


@dataclass(frozen=True)
class Sent:
    """The paced load: per point, its series number, its timestamp (epoch seconds, 3
    decimals) and the wall-clock time of its ``produce()`` call (epoch seconds)."""

    series: np.ndarray[Any, np.dtype[np.int64]]
    ts: np.ndarray[Any, np.dtype[np.float64]]
    at: np.ndarray[Any, np.dtype[np.float64]]
    #: CPU seconds the load process used while producing (its encoding beforehand aside).
    cpu_s: float
    #: Its longest garbage-collector pause during the load (ms).
    gc_max_ms: float = 0.0

    def by_point(self) -> dict[tuple[int, float], float]:
        """``produce()`` time by (series number, timestamp)."""
        keys = zip(self.series.tolist(), self.ts.tolist(), strict=True)
        return dict(zip(keys, self.at.tolist(), strict=True))


@dataclass(frozen=True)
class Received:
    """The forecast records read: per record, the wall-clock time the subscriber had it
    (epoch seconds), its series number and timestamp, and its CreateTime (the daemon's
    ``produce()``, epoch seconds)."""

    at: np.ndarray[Any, np.dtype[np.float64]]
    series: np.ndarray[Any, np.dtype[np.int64]]
    ts: np.ndarray[Any, np.dtype[np.float64]]
    created: np.ndarray[Any, np.dtype[np.float64]]
    #: CPU seconds the subscriber process used.
    cpu_s: float
    #: Its longest garbage-collector pause while it read (ms).
    gc_max_ms: float = 0.0


class LatencyClients:
    """Starts the subscriber (it reads ``forecasts`` from the start), then on
    :meth:`offer` the paced load on ``topic``; series are named ``{prefix}.{n:05d}``."""

    def __init__(
        self,
        bootstrap: str,
        consumer_conf: dict[str, Any],
        topic: str,
        forecasts: str,
        work: Path,
        prefix: str = "lat",
    ) -> None:
        self._bootstrap = bootstrap
        self._topic = topic
        self._prefix = prefix
        self._work = work
        self._assigned = _SPAWN.Event()
        self._stop = _SPAWN.Event()
        self._count = _SPAWN.Value("q", 0, lock=False)  # records read so far
        self._load_started = _SPAWN.Event()  # the paced load has begun producing
        self._received_path = work / "latency-received.npz"
        self._subscriber = _SPAWN.Process(
            target=_subscribe,
            args=(
                bootstrap,
                consumer_conf,
                forecasts,
                prefix,
                str(self._received_path),
                self._assigned,
                self._stop,
                self._count,
            ),
            name="forecast-subscriber",
            daemon=True,
        )
        self._subscriber.start()

    def wait_assigned(self, timeout_s: float) -> bool:
        """Whether the subscriber has its partitions (and is still running)."""
        return self._assigned.wait(timeout_s) and self._subscriber.is_alive()

    def offer(
        self,
        series: int,
        rate: float,
        seconds: float,
        alive: Callable[[], bool],
        on_start: Callable[[], None] = lambda: None,
        grace_s: float = 60.0,
    ) -> Sent:
        """Produce ``rate`` single-point messages/s round-robin over ``series`` series for
        ``seconds`` (in :data:`SLICE_S` slices) from a process of its own; ``on_start()``
        is called when its first message is due (after it has encoded them all). Raises
        RuntimeError if ``alive()`` turns false meanwhile or the producer fails."""
        path = self._work / "latency-sent.npz"
        producer = _SPAWN.Process(
            target=_offer,
            args=(
                self._bootstrap,
                self._topic,
                self._prefix,
                series,
                rate,
                seconds,
                str(path),
                self._load_started,
            ),
            name="paced-load",
            daemon=True,
        )
        self._load_started.clear()
        producer.start()
        deadline = time.monotonic() + seconds + grace_s
        started = False
        while producer.is_alive():
            if not started and self._load_started.wait(0.05):
                started = True
                on_start()
            if not alive():
                producer.terminate()
                raise RuntimeError("the daemon exited during the latency load")
            if time.monotonic() > deadline:
                producer.terminate()
                raise RuntimeError("the paced load did not finish")
            producer.join(0.2 if started else 0.0)
        if producer.exitcode != 0 or not path.exists():
            raise RuntimeError(f"the paced load failed (exit code {producer.exitcode})")
        with np.load(path) as data:
            return Sent(
                data["series"],
                data["ts"],
                data["at"],
                float(data["cpu_s"]),
                float(data["gc_max_ms"]),
            )

    def wait_received(self, count: int, timeout_s: float) -> int:
        """Wait until the subscriber has read ``count`` records (at most ``timeout_s``
        seconds); returns how many it has read."""
        deadline = time.monotonic() + timeout_s
        while self._count.value < count and time.monotonic() < deadline:
            if not self._subscriber.is_alive():
                break
            time.sleep(0.2)
        return int(self._count.value)

    def stop(self, timeout_s: float = 60.0) -> Received:
        """Stop the subscriber and return what it read."""
        self._stop.set()
        self._subscriber.join(timeout_s)
        if self._subscriber.is_alive():
            self._subscriber.terminate()
            raise RuntimeError("the forecast subscriber did not stop")
        if self._subscriber.exitcode != 0 or not self._received_path.exists():
            raise RuntimeError(f"the forecast subscriber failed (exit {self._subscriber.exitcode})")
        with np.load(self._received_path) as data:
            return Received(
                data["at"],
                data["series"],
                data["ts"],
                data["created"],
                float(data["cpu_s"]),
                float(data["gc_max_ms"]),
            )


def _subscribe(
    bootstrap: str,
    consumer_conf: dict[str, Any],
    topic: str,
    prefix: str,
    out: str,
    assigned: multiprocessing.synchronize.Event,
    stop: multiprocessing.synchronize.Event,
    count: Any,
) -> None:
    """Read ``topic`` from the beginning until ``stop``; every record's receive time is
    taken when the client hands it over (a wait for the first record, then whatever else
    is already queued, without waiting).

    The records are kept as they came (their values end to end in one buffer) and decoded
    after ``stop``: the subscriber shares the machine's cores with the daemon, so each
    microsecond it spends per record during the load is taken from what it measures.
    """
    consumer = Consumer(
        {
            **consumer_conf,
            "bootstrap.servers": bootstrap,
            "group.id": f"bench-subscriber-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
            "enable.partition.eof": False,
        }
    )
    # Plain buffers (bytearray, array.array): no Python object per record survives, so the
    # garbage collector's full passes do not grow with the run (with millions of retained
    # records they paused the subscriber for hundreds of milliseconds, measured as latency).
    values = bytearray()
    ends = array.array("q")  # end of each record's value in ``values``
    created = array.array("q")  # CreateTime, epoch milliseconds
    drained_at = array.array("d")  # receive time of each drain...
    drained = array.array("q")  # ...and how many records it brought
    try:
        meta = consumer.list_topics(topic, timeout=30)
        parts = meta.topics[topic].partitions
        consumer.assign([TopicPartition(topic, p, 0) for p in parts])
        gc_pauses = _frozen_gc_pauses()
        assigned.set()
        poll, consume, now = consumer.poll, consumer.consume, time.time
        keep, end, stamp = values.extend, ends.append, created.append
        while not stop.is_set():
            first = poll(0.1)
            if first is None:
                continue
            got = now()
            kept = 0
            for msg in (first, *consume(DRAIN_MESSAGES, 0)):
                if msg.error() is None:
                    keep(msg.value() or b"")
                    end(len(values))
                    stamp(msg.timestamp()[1])
                    kept += 1
            drained_at.append(got)
            drained.append(kept)
            count.value += kept
    finally:
        consumer.close()
    cpu_s = _own_cpu_s()
    gc_max_ms = _longest_ms(gc_pauses)
    series, ts = _decode_forecasts(values, ends, len(prefix) + 1)
    np.savez(
        out,
        at=np.repeat(np.frombuffer(drained_at, dtype=np.float64), np.frombuffer(drained, "q")),
        series=series,
        ts=ts,
        created=np.frombuffer(created, dtype=np.int64) / 1000.0,
        cpu_s=np.array(cpu_s),
        gc_max_ms=np.array(gc_max_ms),
    )


def _decode_forecasts(
    values: bytearray, ends: array.array[int], skip: int
) -> tuple[np.ndarray[Any, np.dtype[np.int64]], np.ndarray[Any, np.dtype[np.float64]]]:
    """Series number (the name after its ``skip``-character prefix) and timestamp of each
    forecast record kept end to end in ``values``."""
    series = np.empty(len(ends), dtype=np.int64)
    ts = np.empty(len(ends), dtype=np.float64)
    view, loads, start = memoryview(values), orjson.loads, 0
    for i, stop in enumerate(ends):
        record = loads(view[start:stop])
        series[i] = int(record["series"][skip:])
        ts[i] = record["ts"]
        start = stop
    return series, ts


def _offer(
    bootstrap: str,
    topic: str,
    prefix: str,
    series: int,
    rate: float,
    seconds: float,
    out: str,
    load_started: multiprocessing.synchronize.Event,
) -> None:
    """The paced load (see :meth:`LatencyClients.offer`); values follow a sine per series
    around a level, timestamps step by ``series / rate`` seconds per series."""
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "linger.ms": 5,
            "compression.type": "lz4",
            "enable.idempotence": True,
        }
    )
    names = [f"{prefix}.{s:05d}" for s in range(series)]
    rng = np.random.default_rng(1)
    level = rng.uniform(10.0, 1000.0, series)
    phase = rng.uniform(0.0, 2 * np.pi, series)
    step = max(series / rate, 0.001)  # seconds between two points of a series
    t0 = round(time.time() - seconds - 60.0, 3)
    total = int(rate * seconds) + 1
    sent_at = np.empty(total, dtype=np.float64)
    # Every message is encoded before the load starts, so the load's own work during it
    # is one produce() per point (it shares the cores with the daemon it measures).
    index = np.arange(total)
    s_of, i_of = index % series, index // series
    ts_of = np.round(t0 + i_of * step, 3)
    value_of = np.round(level[s_of] * (1 + 0.2 * np.sin(phase[s_of] + i_of / 20)), 4)
    doc_keys, docs = encode_points(Stream(names, s_of, ts_of, value_of))
    now, produce = time.time, producer.produce
    gc_pauses = _frozen_gc_pauses()
    cpu_at_start = _own_cpu_s()
    load_started.set()
    start = time.monotonic()
    sent = 0
    while (elapsed := time.monotonic() - start) < seconds:
        due = min(total, int(elapsed * rate))
        for n in range(sent, due):
            while True:
                try:
                    sent_at[n] = now()
                    produce(topic, docs[n], doc_keys[n])
                    break
                except BufferError:
                    producer.poll(0.005)
        sent = due
        producer.poll(0)
        next_slice = start + (int(elapsed / SLICE_S) + 1) * SLICE_S
        time.sleep(max(0.0, next_slice - time.monotonic()))
    if producer.flush(30.0):
        raise RuntimeError("latency load: messages unacknowledged after 30 s")
    np.savez(
        out,
        series=s_of[:sent],
        ts=ts_of[:sent],
        at=sent_at[:sent],
        cpu_s=np.array(_own_cpu_s() - cpu_at_start),
        gc_max_ms=np.array(_longest_ms(gc_pauses)),
    )


def _frozen_gc_pauses() -> GcPauses:
    """Collect and freeze every object alive now (the imports, the clients, the encoded
    load) out of the collector's reach, as the daemon does at start, then time every
    collection from here on. Before, the subscriber's full collections walked all of them:
    208-245 ms every ~21 s of load, which the benchmark measured as the daemon's latency
    (the subscriber took no record meanwhile). The longest pause is printed, so such a
    stall in the measuring clients shows."""
    gc.collect()
    gc.freeze()
    pauses = GcPauses()
    pauses.install()
    return pauses


def _longest_ms(pauses: GcPauses) -> float:
    """Stop timing; the longest pause of any generation (ms)."""
    pauses.uninstall()
    return max(pauses.longest_s) * 1000.0


def _own_cpu_s() -> float:
    """CPU seconds this process has used (all its threads, user + system)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def process_cpu_s(pid: int) -> float | None:
    """CPU seconds process ``pid`` has used so far (all threads); None once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_cpu_s() -> float:
    """CPU seconds the whole machine has been busy (all cores, /proc/stat), for the share
    of the cores a run used."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return (sum(values[:8]) - idle) / os.sysconf("SC_CLK_TCK")
