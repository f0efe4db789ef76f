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
import multiprocessing
import multiprocessing.synchronize
import os
import resource
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from confluent_kafka import Consumer, Producer, TopicPartition

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
    #: CPU seconds the load process used.
    cpu_s: float

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
        self, series: int, rate: float, seconds: float, alive: Any, grace_s: float = 60.0
    ) -> Sent:
        """Produce ``rate`` single-point messages/s round-robin over ``series`` series for
        ``seconds`` (in :data:`SLICE_S` slices) from a process of its own; raises
        RuntimeError if ``alive()`` turns false meanwhile or the producer fails."""
        path = self._work / "latency-sent.npz"
        producer = _SPAWN.Process(
            target=_offer,
            args=(self._bootstrap, self._topic, self._prefix, series, rate, seconds, str(path)),
            name="paced-load",
            daemon=True,
        )
        producer.start()
        deadline = time.monotonic() + seconds + grace_s
        while producer.is_alive():
            if not alive():
                producer.terminate()
                raise RuntimeError("the daemon exited during the latency load")
            if time.monotonic() > deadline:
                producer.terminate()
                raise RuntimeError("the paced load did not finish")
            producer.join(0.2)
        if producer.exitcode != 0 or not path.exists():
            raise RuntimeError(f"the paced load failed (exit code {producer.exitcode})")
        with np.load(path) as data:
            return Sent(data["series"], data["ts"], data["at"], float(data["cpu_s"]))

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
                data["at"], data["series"], data["ts"], data["created"], float(data["cpu_s"])
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
    is already queued, without waiting)."""
    consumer = Consumer(
        {
            **consumer_conf,
            "bootstrap.servers": bootstrap,
            "group.id": f"bench-subscriber-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
            "enable.partition.eof": False,
        }
    )
    # Columns of plain numbers (array.array): no Python object per record survives, so the
    # garbage collector's full passes do not grow with the run (with millions of retained
    # records they paused the subscriber for hundreds of milliseconds, measured as latency).
    at = array.array("d")
    series = array.array("q")
    ts = array.array("d")
    created = array.array("d")
    skip = len(prefix) + 1
    try:
        meta = consumer.list_topics(topic, timeout=30)
        parts = meta.topics[topic].partitions
        consumer.assign([TopicPartition(topic, p, 0) for p in parts])
        assigned.set()
        poll, consume, now, loads = consumer.poll, consumer.consume, time.time, orjson.loads
        while not stop.is_set():
            first = poll(0.1)
            if first is None:
                continue
            got = now()
            batch = [first, *consume(DRAIN_MESSAGES, 0)]
            for msg in batch:
                if msg.error() is not None:
                    continue
                at.append(got)
                series.append(int((msg.key() or b"")[skip:]))
                ts.append(loads(msg.value() or b"null")["ts"])
                created.append(msg.timestamp()[1] / 1000.0)
            count.value += len(batch)
    finally:
        consumer.close()
    cpu_s = _own_cpu_s()
    np.savez(
        out,
        at=np.frombuffer(at, dtype=np.float64),
        series=np.frombuffer(series, dtype=np.int64),
        ts=np.frombuffer(ts, dtype=np.float64),
        created=np.frombuffer(created, dtype=np.float64),
        cpu_s=np.array(cpu_s),
    )


def _offer(
    bootstrap: str,
    topic: str,
    prefix: str,
    series: int,
    rate: float,
    seconds: float,
    out: str,
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
    keys = [n.encode() for n in names]
    rng = np.random.default_rng(1)
    level = rng.uniform(10.0, 1000.0, series)
    phase = rng.uniform(0.0, 2 * np.pi, series)
    step = max(series / rate, 0.001)  # seconds between two points of a series
    t0 = round(time.time() - seconds - 60.0, 3)
    total = int(rate * seconds) + 1
    sent_series = np.empty(total, dtype=np.int64)
    sent_ts = np.empty(total, dtype=np.float64)
    sent_at = np.empty(total, dtype=np.float64)
    dumps, now, produce = orjson.dumps, time.time, producer.produce
    start = time.monotonic()
    sent = 0
    while (elapsed := time.monotonic() - start) < seconds:
        due = min(total, int(elapsed * rate))
        index = np.arange(sent, due)
        s_of, i_of = index % series, index // series
        ts_of = np.round(t0 + i_of * step, 3)
        value_of = np.round(level[s_of] * (1 + 0.2 * np.sin(phase[s_of] + i_of / 20)), 4)
        for n, s, ts, value in zip(
            index.tolist(), s_of.tolist(), ts_of.tolist(), value_of.tolist(), strict=True
        ):
            doc = dumps({"series": names[s], "ts": ts, "value": value})
            while True:
                try:
                    sent_at[n] = now()
                    produce(topic, doc, keys[s])
                    break
                except BufferError:
                    producer.poll(0.005)
        sent_series[sent:due] = s_of
        sent_ts[sent:due] = ts_of
        sent = due
        producer.poll(0)
        next_slice = start + (int(elapsed / SLICE_S) + 1) * SLICE_S
        time.sleep(max(0.0, next_slice - time.monotonic()))
    if producer.flush(30.0):
        raise RuntimeError("latency load: messages unacknowledged after 30 s")
    np.savez(
        out,
        series=sent_series[:sent],
        ts=sent_ts[:sent],
        at=sent_at[:sent],
        cpu_s=np.array(_own_cpu_s()),
    )


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
