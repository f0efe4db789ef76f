"""``streamrnn run``: the consume → decode → engine → alert → produce → checkpoint loop.

One iteration:

1. poll a batch of messages from the input topics (rebalance callbacks run in here:
   assigned partitions get their state restored first, revoked ones are checkpointed);
2. decode each message; a bad one is logged, counted and dead-lettered with its reason;
3. bring the batch's series into memory (from the local store, evicting idle series);
4. step every series in the batch through the engine (forecast, score, learn);
5. produce the batch's alerts (and forecasts) keyed by series;
6. every ``delivery.commit_interval_s``: a checkpoint (changelog → flush → commit offsets →
   snapshot; see :mod:`streamrnn.checkpoint` for why in that order).

A crash can only cause the batches since the last checkpoint to be processed again from the
state of that checkpoint, never an alert to be lost; alert ids are deterministic so
subscribers can drop such repeats (or use ``delivery.mode: exactly_once``).

On SIGTERM/SIGINT the loop finishes the batch in hand, checkpoints, leaves the group (its
series go to the local store) and returns 0.

This module wires the Kafka layer to the engine; it does not touch torch itself.
"""

from __future__ import annotations

import tempfile
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from confluent_kafka import KafkaError, Message

from streamrnn.checkpoint import Checkpointer
from streamrnn.config import Settings
from streamrnn.decode import DecodedMessage, DecodeRules, Rejection, decode_message
from streamrnn.engine.build import build_engine
from streamrnn.engine.engine import Engine, EngineBatchResult
from streamrnn.kafka.clients import (
    client_config,
    make_admin,
    make_consumer,
    make_producer,
    transactional_id,
)
from streamrnn.kafka.model_topic import ModelTopic
from streamrnn.kafka.sink import AckedSink
from streamrnn.kafka.source import BatchSource, position_of
from streamrnn.kafka.topics import TopicLayoutError, ensure_topics
from streamrnn.logs import get_logger
from streamrnn.records import (
    Z95,
    AlertRecord,
    ForecastRecord,
    HorizonPoint,
    SourcePosition,
    alert_id,
    finite_or_none,
    iso_time,
)
from streamrnn.retrain.controller import RetrainController
from streamrnn.retrain.registry import ModelRegistry
from streamrnn.retrain.worker import BackgroundTrainer
from streamrnn.scoring.alert_rule import SEVERITY_NAMES
from streamrnn.state.manager import GroupInfo, SeriesStateManager
from streamrnn.state.store import LocalStateStore, StoreLockedError

__all__ = ["DaemonStats", "run_daemon"]

log = get_logger("daemon")

#: Seconds between the periodic "progress" log lines.
STATS_INTERVAL_S = 10.0
#: Seconds the shutdown may wait for outstanding acknowledgements before giving up.
SHUTDOWN_ACK_TIMEOUT_S = 20.0
#: Seconds between checks of the model topic and of which instance trains.
MODEL_CHECK_INTERVAL_S = 1.0


#: Batch latencies kept for the percentiles in the log (the most recent ones).
LATENCY_WINDOW = 100_000


@dataclass
class DaemonStats:
    """Running totals since start, logged periodically and at exit."""

    messages: int = 0
    points: int = 0
    alerts: Counter[str] = field(default_factory=Counter)
    rejected: Counter[str] = field(default_factory=Counter)
    batches: int = 0
    #: Seconds to handle each recent batch (decode → engine → produce → buffer), split by
    #: whether a retrain was running meanwhile.
    latency_idle: deque[float] = field(default_factory=lambda: deque(maxlen=LATENCY_WINDOW))
    latency_training: deque[float] = field(default_factory=lambda: deque(maxlen=LATENCY_WINDOW))

    def as_log_fields(self) -> dict[str, object]:
        """Flat fields for a log line."""
        return {
            "messages": self.messages,
            "points": self.points,
            "alerts": dict(self.alerts),
            "rejected": dict(self.rejected),
            "batches": self.batches,
            "batch_ms": {
                "idle": _percentiles_ms(self.latency_idle),
                "training": _percentiles_ms(self.latency_training),
            },
        }


def _percentiles_ms(seconds: deque[float]) -> dict[str, float | int]:
    """Count, p50, p99 and max of batch latencies, in milliseconds."""
    if not seconds:
        return {"n": 0}
    ms = np.fromiter(seconds, dtype=np.float64, count=len(seconds)) * 1000.0
    p50, p99 = (float(p) for p in np.percentile(ms, [50, 99]))
    return {
        "n": len(ms),
        "p50": round(p50, 2),
        "p99": round(p99, 2),
        "max": round(float(ms.max()), 2),
    }


def run_daemon(settings: Settings, stop: threading.Event) -> int:
    """Run until ``stop`` is set; returns the process exit code (0 after a clean stop)."""
    engine = build_engine(settings)
    with _state_directory(settings) as directory:
        try:
            store = LocalStateStore(directory / f"{settings.kafka.group_id}.sqlite")
        except StoreLockedError as exc:
            log.error("cannot start", error=str(exc))
            return 2
        try:
            return _run(settings, stop, engine, store)
        finally:
            store.close()


def _run(settings: Settings, stop: threading.Event, engine: Engine, store: LocalStateStore) -> int:
    manager = SeriesStateManager(
        engine.table,
        store,
        [GroupInfo(g.version, f"state.{g.name}", frozenset(g.lineage)) for g in engine.groups],
        route=engine.group_index_of,
    )
    try:
        partitions = ensure_topics(settings, make_admin(settings), stop.is_set)
    except TopicLayoutError as exc:
        log.error("cannot start", error=str(exc))
        return 2
    if not partitions:
        return 0  # stopped while waiting for the input topics
    models = ModelTopic(
        client_config(settings, "admin"),
        settings.topics.models_of(settings.kafka.group_id),
        publisher=transactional_id(settings),
    )
    retrain = settings.retrain
    controller = RetrainController(
        retrain,
        engine,
        manager,
        ModelRegistry(retrain.registry_dir or store.path.parent / "models", retrain.keep_versions),
        BackgroundTrainer(retrain.threads, retrain.nice) if retrain.enabled else None,
        models.publish,
    )
    try:
        # Every instance serves the newest published model of each group, from the start.
        for record in models.read_latest().values():
            controller.adopt(record.group, record.version, record.artifact, record.reason)
        return _loop(settings, stop, engine, store, manager, controller, models)
    finally:
        controller.close()
        models.close()


def _loop(
    settings: Settings,
    stop: threading.Event,
    engine: Engine,
    store: LocalStateStore,
    manager: SeriesStateManager,
    controller: RetrainController,
    models: ModelTopic,
) -> int:
    producer = make_producer(settings)

    def on_produce_error(topic: str, err: KafkaError) -> None:
        log.warning("delivery failed, will retry", topic=topic, error=str(err))

    sink = AckedSink(producer, on_produce_error)
    source = BatchSource(
        make_consumer(settings),
        settings.topics.input,
        on_error=lambda err: log.warning("consumer error", error=str(err), code=err.code()),
    )
    checkpointer = Checkpointer(
        settings, source, producer, sink, manager, client_config(settings, "admin")
    )
    stats = DaemonStats()
    log.info(
        "started",
        input_topics=settings.topics.input,
        alert_topic=settings.topics.alerts,
        forecast_topic=settings.topics.forecasts,
        dead_letter_topic=settings.topics.dead_letter,
        group_id=settings.kafka.group_id,
        bootstrap_servers=settings.kafka.bootstrap_servers,
        delivery=settings.delivery.mode,
        state_store=str(store.path),
        model_versions={g.name: g.version for g in engine.groups},
        retrain=settings.retrain.enabled,
        training_buffer_mib=round(controller.buffer.nbytes / 2**20, 1),
    )
    next_stats = time.monotonic() + STATS_INTERVAL_S
    next_model_check = 0.0
    trainer = False
    trainer_partition = (settings.topics.input[0], 0)
    shutdown_deadline: float | None = None

    def give_up() -> bool:
        nonlocal shutdown_deadline
        if not stop.is_set():
            return False
        if shutdown_deadline is None:
            shutdown_deadline = time.monotonic() + SHUTDOWN_ACK_TIMEOUT_S
        return time.monotonic() > shutdown_deadline

    exit_code = 0
    checkpointer.start()
    source.subscribe(checkpointer.on_assign, checkpointer.on_revoke, checkpointer.on_lost)
    try:
        while not stop.is_set():
            messages = source.poll_batch(
                settings.consume.batch_max_messages, settings.consume.poll_timeout_s
            )
            if messages:
                started = time.perf_counter()
                batch = _handle_batch(
                    settings, engine, checkpointer, sink, messages, stats, give_up
                )
                controller.observe(batch)
                latency = time.perf_counter() - started
                training = controller.trainer is not None and controller.trainer.busy
                (stats.latency_training if training else stats.latency_idle).append(latency)
            if checkpointer.due():
                checkpointer.checkpoint(give_up)
            now = time.monotonic()
            if now >= next_model_check:
                next_model_check = now + MODEL_CHECK_INTERVAL_S
                for record in models.poll():
                    controller.adopt(record.group, record.version, record.artifact, record.reason)
                owns = trainer_partition in source.assignment()
                if owns != trainer:
                    trainer = owns
                    log.info("training role", trainer=trainer and settings.retrain.enabled)
            controller.tick(trainer)
            if now >= next_stats:
                log.info(
                    "progress",
                    live_series=len(engine.table),
                    **stats.as_log_fields(),
                    **controller.status(),
                )
                next_stats = now + STATS_INTERVAL_S
        if not checkpointer.close(give_up):
            log.error("shutting down with unacknowledged records; offsets not committed")
            exit_code = 1
    finally:
        # Leaving the group revokes the partitions: their series are saved to the store.
        source.close()
        producer.flush(5.0)
        log.info(
            "stopped",
            live_series=len(engine.table),
            stored_series=store.count(),
            **stats.as_log_fields(),
        )
    return exit_code


@contextmanager
def _state_directory(settings: Settings) -> Iterator[Path]:
    """``state.directory``, or a temporary one removed at exit."""
    if settings.state.directory is not None:
        yield settings.state.directory
        return
    with tempfile.TemporaryDirectory(prefix="streamrnn-state-") as tmp:
        yield Path(tmp)


def _handle_batch(
    settings: Settings,
    engine: Engine,
    checkpointer: Checkpointer,
    sink: AckedSink,
    messages: Sequence[Message],
    stats: DaemonStats,
    give_up: Callable[[], bool],
) -> EngineBatchResult:
    """Decode, process and produce the records of one batch (not yet acknowledged)."""
    decoded: list[DecodedMessage] = []
    origins: list[Message] = []
    consume = settings.consume
    now = time.time()
    rules = DecodeRules(
        max_bytes=consume.max_message_bytes,
        earliest=now - consume.max_age_s if consume.max_age_s is not None else None,
        latest=now + consume.max_future_s,
        reject_unknown_fields=consume.reject_unknown_fields,
    )
    dead_letter = settings.topics.dead_letter
    for msg in messages:
        result = decode_message(msg.value(), rules)
        if isinstance(result, Rejection):
            _reject(result, msg, stats, sink, dead_letter)
        else:
            decoded.append(result)
            origins.append(msg)
    stats.messages += len(messages)
    stats.batches += 1
    names = [d.series for d in decoded]
    checkpointer.make_room(names, give_up)
    batch = engine.process(decoded)
    checkpointer.handled(messages, origins, batch.message_slot)
    sent: set[tuple[int, str]] = set()
    for index, rejection in batch.rejections:
        # A window message with several bad points is dead-lettered once per reason.
        first = (index, rejection.reason) not in sent
        sent.add((index, rejection.reason))
        _reject(rejection, origins[index], stats, sink, dead_letter if first else None)
    stats.points += len(batch)
    _produce_alerts(settings, engine, sink, batch, decoded, origins, stats)
    if settings.topics.forecasts:
        _produce_forecasts(settings.topics.forecasts, engine, sink, batch, decoded)
    return batch


def _produce_alerts(
    settings: Settings,
    engine: Engine,
    sink: AckedSink,
    batch: EngineBatchResult,
    decoded: Sequence[DecodedMessage],
    origins: Sequence[Message],
    stats: DaemonStats,
) -> None:
    rule = engine.rule
    for i in np.flatnonzero(batch.severity > 0):
        message_index = int(batch.message_index[i])
        msg = origins[message_index]
        series = decoded[message_index].series
        severity = int(batch.severity[i])
        ts, value, forecast = float(batch.ts[i]), float(batch.value[i]), float(batch.forecast[i])
        alert = AlertRecord(
            alert_id=alert_id(series, ts, rule.name),
            series=series,
            labels=engine.table.labels_of(int(batch.slot[i])) or {},
            ts=ts,
            time=iso_time(ts),
            value=value,
            forecast=forecast,
            residual=value - forecast,
            spread=float(batch.spread[i]),
            score=float(batch.score[i]),
            threshold=rule.threshold_of(severity),
            severity=SEVERITY_NAMES[severity],
            rule=rule.name,
            model_version=engine.groups[int(batch.group[i])].version,
            source=SourcePosition(*position_of(msg)),
        )
        sink.send(settings.topics.alerts, series.encode(), alert.encode())
        stats.alerts[alert.severity] += 1
        log.info(
            "alert",
            series=series,
            topic=msg.topic(),
            partition=msg.partition(),
            offset=msg.offset(),
            ts=ts,
            value=value,
            forecast=forecast,
            score=alert.score,
            severity=alert.severity,
            alert_id=alert.alert_id,
        )


def _produce_forecasts(
    topic: str,
    engine: Engine,
    sink: AckedSink,
    batch: EngineBatchResult,
    decoded: Sequence[DecodedMessage],
) -> None:
    lower = batch.forecast - Z95 * batch.spread
    upper = batch.forecast + Z95 * batch.spread
    horizons = _horizon_by_slot(batch)
    # The k-step forecast rides on the record of each series' last point in the batch.
    last_of_slot = {int(slot): i for i, slot in enumerate(batch.slot)}
    for i in range(len(batch)):
        series = decoded[int(batch.message_index[i])].series
        slot = int(batch.slot[i])
        record = ForecastRecord(
            series=series,
            ts=float(batch.ts[i]),
            value=float(batch.value[i]),
            forecast=finite_or_none(float(batch.forecast[i])),
            lower=finite_or_none(float(lower[i])),
            upper=finite_or_none(float(upper[i])),
            score=float(batch.score[i]),
            model_version=engine.groups[int(batch.group[i])].version,
            horizon=horizons.get(slot) if last_of_slot[slot] == i else None,
        )
        sink.send(topic, series.encode(), record.encode())


def _horizon_by_slot(batch: EngineBatchResult) -> dict[int, list[HorizonPoint]]:
    if batch.horizon is None or batch.horizon_slots is None:
        return {}
    h = batch.horizon
    out = {}
    for row, slot in enumerate(batch.horizon_slots):
        if not np.isfinite(h.mean[row, 0]):
            continue
        out[int(slot)] = [
            HorizonPoint(
                ts=float(h.ts[row, j]),
                forecast=float(h.mean[row, j]),
                lower=float(h.mean[row, j] - Z95 * h.spread[row, j]),
                upper=float(h.mean[row, j] + Z95 * h.spread[row, j]),
            )
            for j in range(h.ts.shape[1])
        ]
    return out


def _reject(
    rejection: Rejection,
    msg: Message,
    stats: DaemonStats,
    sink: AckedSink,
    dead_letter: str | None,
) -> None:
    """Count and log a rejected message, and dead-letter it when a topic is configured.

    The dead-letter record keeps the original key and bytes; headers say why and where from.
    It is acknowledged before the offsets are committed, like an alert.
    """
    stats.rejected[rejection.reason] += 1
    if dead_letter is not None:
        topic, partition, offset = position_of(msg)
        sink.send(
            dead_letter,
            msg.key(),
            msg.value(),
            [
                ("streamrnn.reason", rejection.reason.encode()),
                ("streamrnn.detail", rejection.detail.encode()),
                ("streamrnn.source.topic", topic.encode()),
                ("streamrnn.source.partition", str(partition).encode()),
                ("streamrnn.source.offset", str(offset).encode()),
            ],
        )
    log.warning(
        "message rejected",
        reason=rejection.reason,
        detail=rejection.detail,
        series=rejection.series,
        topic=msg.topic(),
        partition=msg.partition(),
        offset=msg.offset(),
    )
