"""Batch latency of the consume loop with and without a retrain running.

``python -m tests.benchmarks.retrain_latency`` starts the local broker (or uses
``--bootstrap-servers``), runs ``streamrnn run`` as a subprocess, and offers it a steady load
(``--rate`` points/s over ``--series`` series, single-point messages) for ``--seconds``. The
daemon's first scheduled retrain starts ``--retrain-after`` seconds in, in its own process
at nice 10 with one torch thread; every batch's handling time (decode → engine → produce →
training buffer) is recorded by the daemon, split by whether a retrain was running, and
printed here from its final log line, with the retrain's own duration and the pause of the
hot swap (re-warm) that followed it.

Target (issue 6): p99 with a retrain running <= 2x p99 without.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import yaml
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient

from streamrnn.kafka.clients import create_topics
from streamrnn.local_broker import start_broker, stop_broker
from tests.integration.harness import Daemon, wait_until


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap-servers", help="an existing broker (default: start one)")
    parser.add_argument("--series", type=int, default=2000)
    parser.add_argument("--rate", type=float, default=5000.0, help="points per second")
    parser.add_argument("--seconds", type=float, default=150.0, help="length of the load")
    parser.add_argument("--retrain-after", type=float, default=45.0, help="seconds")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="streamrnn-bench-") as tmp:
        work = Path(tmp)
        bootstrap = args.bootstrap_servers
        if bootstrap is None:
            bootstrap = start_broker(work / "broker").bootstrap_servers
        try:
            run(bootstrap, work, args)
        finally:
            if args.bootstrap_servers is None:
                stop_broker(work / "broker")


def run(bootstrap: str, work: Path, args: argparse.Namespace) -> None:
    tag = uuid.uuid4().hex[:8]
    topic, group = f"bench-in-{tag}", f"bench-{tag}"
    create_topics(AdminClient({"bootstrap.servers": bootstrap}), [topic], partitions=2)
    config = work / "config.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "kafka": {"bootstrap_servers": bootstrap, "group_id": group},
                "topics": {"input": [topic], "alerts": f"bench-alerts-{tag}"},
                "retrain": {
                    "interval_s": args.retrain_after,
                    "drift": "off",
                    "min_train_points": 10_000,
                },
                "logging": {"format": "json"},
                "http": {"port": 0},
            }
        )
    )
    daemon = Daemon(config, work / "daemon.log")
    try:
        wait_until(
            lambda: any(x.get("event") == "partitions assigned" for x in daemon.log_lines()),
            60,
            "the daemon to start",
        )
        offer_load(bootstrap, topic, args.series, args.rate, args.seconds, daemon)
        time.sleep(3.0)
    finally:
        code = daemon.stop()
    lines = daemon.log_lines()
    stopped = next(x for x in lines if x.get("event") == "stopped")
    events = {e: [x for x in lines if x.get("event") == e] for e in _EVENTS}
    report(stopped, events, args, code)


_EVENTS = ("retrain started", "candidate promoted", "candidate rejected", "model swapped")


def offer_load(
    bootstrap: str, topic: str, series: int, rate: float, seconds: float, daemon: Daemon
) -> None:
    """Produce ``rate`` points/s, round-robin over the series, in 20 ms slices."""
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    rng = np.random.default_rng(0)
    phase = rng.uniform(0, 2 * np.pi, series)
    level = rng.uniform(10, 1000, series)
    start = time.monotonic()
    sent = 0
    base_ts = time.time() - seconds - 60
    while (elapsed := time.monotonic() - start) < seconds:
        assert daemon.alive(), daemon.log_path.read_text()[-3000:]
        due = int(elapsed * rate)
        for n in range(sent, due):
            s = n % series
            i = n // series
            ts = base_ts + i * series / rate * 1.0
            value = level[s] * (1 + 0.2 * np.sin(phase[s] + i / 20)) + rng.normal(0, 1)
            doc = {"series": f"bench.{s:05d}", "ts": float(ts), "value": float(value)}
            while True:
                try:
                    producer.produce(topic, key=doc["series"].encode(), value=orjson.dumps(doc))
                    break
                except BufferError:
                    producer.poll(0.01)
        sent = due
        producer.poll(0)
        time.sleep(0.02)
    producer.flush(30)


def report(
    stopped: dict[str, Any], events: dict[str, list[dict[str, Any]]], args: Any, code: int
) -> None:
    idle = stopped["batch_ms"]["idle"]
    training = stopped["batch_ms"]["training"]
    print(
        f"\nload: {args.rate:,.0f} points/s over {args.series:,} series for {args.seconds:.0f} s;"
        f" {stopped['points']:,} points in {stopped['batches']:,} batches; exit code {code}"
    )
    print(f"{'':28}{'batches':>9}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}")
    for name, row in (("no retrain running", idle), ("retrain running", training)):
        if row["n"]:
            print(f"{name:28}{row['n']:>9}{row['p50']:>9.2f}{row['p99']:>9.2f}{row['max']:>9.2f}")
        else:
            print(f"{name:28}{0:>9}")
    for e in events["retrain started"]:
        print(f"retrain started: {e['series']} series, {e['points']:,} points")
    for e in events["candidate promoted"] + events["candidate rejected"]:
        print(
            f"{e['event']}: {e['seconds']} s in the trainer; held-out NLL"
            f" {e['candidate_nll']} vs serving {e['serving_nll']}"
        )
    for e in events["model swapped"]:
        print(f"hot swap pause: {e['seconds'] * 1000:.0f} ms ({e['rewarmed_series']} re-warmed)")
    if idle["n"] and training["n"]:
        ratio = training["p99"] / idle["p99"]
        verdict = "PASS" if ratio <= 2.0 else "FAIL"
        print(f"p99 with / without a retrain running: {ratio:.2f} (target <= 2.00): {verdict}")
    else:
        print("no retrain overlapped the load: rerun with a longer --seconds")


if __name__ == "__main__":
    main()
