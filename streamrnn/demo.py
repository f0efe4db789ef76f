"""``streamrnn demo``: the whole path on a synthetic stream, end to end, on a real broker.

1. start the local Apache Kafka broker (unless ``--bootstrap-servers`` names one);
2. create this run's input and alert topics;
3. produce a synthetic stream (irregular intervals, injected spikes and level shifts), some
   series as single-point messages and some as window messages;
4. run ``streamrnn run`` as a subprocess, showing its progress (committed offsets);
5. stop it with SIGTERM, read the alerts back from the alert topic and summarise them
   against the injected anomalies;
6. stop everything it started.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import orjson
import pandas as pd
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from streamrnn.config import Settings
from streamrnn.kafka.clients import client_config, create_topics, make_admin, make_producer
from streamrnn.kafka.topic_reader import group_progress, read_topic
from streamrnn.local_broker import default_home, start_broker, stop_broker
from streamrnn.synthetic import SyntheticSpec, synthetic_stream

__all__ = ["DemoOptions", "run_demo"]

#: Every this-many-th series is sent as window messages instead of single points.
WINDOW_SERIES_EVERY = 5
#: Points per window message.
WINDOW_POINTS = 16
#: An alert within this many of the series' points after an injected anomaly detects it.
DETECTION_POINTS = 3
#: Input partitions of the demo topic.
DEMO_PARTITIONS = 4
#: Alert cooldown of the demo's daemon, seconds (the default is a day; the stream spans one).
DEMO_COOLDOWN_S = 3600


@dataclass(frozen=True, slots=True)
class DemoOptions:
    """What ``streamrnn demo`` was asked for."""

    bootstrap_servers: str | None
    config_path: str | None
    series: int
    points: int
    timeout_s: float
    seed: int


def run_demo(settings: Settings, options: DemoOptions) -> int:
    """Run the demo; returns 0 when the daemon ran, stopped cleanly and alerts were read."""
    console = Console()
    run_id = uuid.uuid4().hex[:8]
    broker_dir = default_home() / "run" / "demo"
    started_broker = False
    bootstrap = options.bootstrap_servers
    try:
        if bootstrap is None:
            console.print("[bold]Starting the local Apache Kafka broker[/] (KRaft, 127.0.0.1)…")
            broker = start_broker(broker_dir)
            bootstrap, started_broker = broker.bootstrap_servers, True
            console.print(f"  broker up at [cyan]{bootstrap}[/] (pid {broker.pid})")
        settings = settings.model_copy(
            update={"kafka": settings.kafka.model_copy(update={"bootstrap_servers": bootstrap})}
        )
        return _demo_on(settings, options, run_id, console)
    finally:
        if started_broker:
            stop_broker(broker_dir)
            console.print("Local broker stopped.")


def _demo_on(settings: Settings, options: DemoOptions, run_id: str, console: Console) -> int:
    input_topic = f"streamrnn-demo-{run_id}-metrics"
    alert_topic = f"streamrnn-demo-{run_id}-alerts"
    group_id = f"streamrnn-demo-{run_id}"
    admin = make_admin(settings)
    create_topics(admin, [input_topic], partitions=DEMO_PARTITIONS)
    create_topics(admin, [alert_topic], partitions=1)
    console.print(f"Topics: input [cyan]{input_topic}[/], alerts [cyan]{alert_topic}[/]")

    stream = synthetic_stream(
        SyntheticSpec(series=options.series, points=options.points, seed=options.seed)
    )
    messages = _produce_stream(settings, input_topic, stream)
    console.print(
        f"Produced {len(stream):,} points of {options.series} series as {messages:,} messages"
        f" ({stream['anomaly'].ne('').sum()} injected anomalies); the daemon runs with an"
        f" alert cooldown of {DEMO_COOLDOWN_S} s instead of a day, as the stream spans a day."
    )

    workdir = Path(os.environ.get("TMPDIR", "/tmp")) / f"streamrnn-demo-{run_id}"
    workdir.mkdir(parents=True, exist_ok=True)
    log_path = workdir / "daemon.log"
    env = {
        **os.environ,
        "STREAMRNN_KAFKA__BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
        "STREAMRNN_HTTP__PORT": "0",  # never collide with a daemon already on the port
        "STREAMRNN_KAFKA__GROUP_ID": group_id,
        "STREAMRNN_TOPICS__INPUT": orjson.dumps([input_topic]).decode(),
        "STREAMRNN_TOPICS__ALERTS": alert_topic,
        "STREAMRNN_LOGGING__FORMAT": "json",
        # The synthetic stream spans about a day; the default one-day cooldown would allow
        # a single alert per series in it.
        "STREAMRNN_SCORING__ALERT__COOLDOWN_S": str(DEMO_COOLDOWN_S),
    }
    cmd = [sys.executable, "-m", "streamrnn", "run"]
    if options.config_path:
        cmd += ["--config", options.config_path]
    with log_path.open("wb") as log_file:
        daemon = subprocess.Popen(cmd, env=env, stdout=log_file, stderr=subprocess.STDOUT)
        finished = _show_progress(settings, group_id, input_topic, daemon, options, console)
        daemon.send_signal(signal.SIGTERM)
        try:
            code = daemon.wait(timeout=60)
        except subprocess.TimeoutExpired:
            daemon.kill()
            code = daemon.wait()
    console.print(f"Daemon stopped with exit code {code}; its log: {log_path}")

    alerts = [
        orjson.loads(m.value() or b"null")
        for m in read_topic(client_config(settings, "admin"), alert_topic)
    ]
    _summarise(stream, alerts, console)
    return 0 if finished and code == 0 else 1


def _produce_stream(settings: Settings, topic: str, stream: pd.DataFrame) -> int:
    """Produce the stream in time order; returns the number of messages."""
    producer = make_producer(settings)
    series_names = sorted(stream["series"].unique())
    windowed = set(series_names[::WINDOW_SERIES_EVERY])
    pending: dict[str, list[list[float]]] = {}
    count = 0
    for series, ts, value in stream[["series", "ts", "value"]].itertuples(index=False):
        labels = {"source": "demo", "shape": "window" if series in windowed else "point"}
        if series in windowed:
            buf = pending.setdefault(series, [])
            buf.append([ts, value])
            if len(buf) < WINDOW_POINTS:
                continue
            doc: dict[str, object] = {"series": series, "points": buf, "labels": labels}
            pending[series] = []
        else:
            doc = {"series": series, "ts": ts, "value": value, "labels": labels}
        _produce(producer, topic, series, orjson.dumps(doc))
        count += 1
    for series, buf in pending.items():
        if buf:
            _produce(producer, topic, series, orjson.dumps({"series": series, "points": buf}))
            count += 1
    producer.flush(60)
    return count


def _produce(producer: object, topic: str, key: str, value: bytes) -> None:
    while True:
        try:
            producer.produce(topic, value=value, key=key.encode())  # type: ignore[attr-defined]
            return
        except BufferError:
            producer.poll(0.1)  # type: ignore[attr-defined]


def _show_progress(
    settings: Settings,
    group_id: str,
    topic: str,
    daemon: subprocess.Popen[bytes],
    options: DemoOptions,
    console: Console,
) -> bool:
    """Show committed/total messages until all are committed; False on timeout or exit."""
    conf = client_config(settings, "admin")
    deadline = time.monotonic() + options.timeout_s
    with Progress(
        TextColumn("[bold]Daemon[/] consuming"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("messages committed"),
        TimeElapsedColumn(),
        console=console,
    ) as progress:
        task = progress.add_task("consume", total=None)
        while time.monotonic() < deadline:
            if daemon.poll() is not None:
                console.print(f"[red]The daemon exited early with code {daemon.returncode}[/]")
                return False
            done, total = group_progress(conf, group_id, [topic])
            progress.update(task, completed=done, total=total)
            if total and done >= total:
                return True
            time.sleep(0.5)
    console.print(f"[yellow]Timed out after {options.timeout_s:.0f} s[/]")
    return False


def _summarise(stream: pd.DataFrame, alerts: list[dict[str, object]], console: Console) -> None:
    severities = Counter(str(a["severity"]) for a in alerts)
    console.print(
        f"\n[bold]{len(alerts)} alerts[/] read back from the alert topic: "
        + ", ".join(f"{n} {s}" for s, n in sorted(severities.items()))
    )
    alert_frame = pd.DataFrame(alerts, columns=["series", "ts", "severity", "score"])
    injected = stream[stream["anomaly"] != ""]
    detected_alerts: set[int] = set()
    table = Table(title="Injected anomalies")
    table.add_column("kind")
    table.add_column("injected", justify="right")
    table.add_column("detected", justify="right")
    by_kind: dict[str, list[int]] = {}
    for row in injected.itertuples():
        series_points = stream.loc[stream["series"] == row.series, "ts"].to_numpy()
        position = int((series_points < row.ts).sum())
        until = series_points[min(position + DETECTION_POINTS, len(series_points) - 1)]
        hits = alert_frame[
            (alert_frame["series"] == row.series)
            & (alert_frame["ts"] >= row.ts)
            & (alert_frame["ts"] <= until)
        ]
        detected_alerts.update(int(i) for i in hits.index)
        counts = by_kind.setdefault(str(row.anomaly), [0, 0])
        counts[0] += 1
        counts[1] += int(not hits.empty)
    for kind, (n, hit) in sorted(by_kind.items()):
        table.add_row(kind, str(n), f"{hit} ({100 * hit / max(n, 1):.0f} %)")
    console.print(table)
    other = len(alerts) - len(detected_alerts)
    console.print(f"Alerts not near an injected anomaly: {other} (over {len(stream):,} points).")
    if alerts:
        top = alert_frame.groupby("series").size().sort_values(ascending=False).head(5)
        console.print("Series with most alerts: " + ", ".join(f"{s} ({n})" for s, n in top.items()))
