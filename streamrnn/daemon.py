"""``streamrnn run``: the consume → decode → engine → alert → produce → checkpoint loop.

One iteration:

1. poll a batch of messages from the input topics (rebalance callbacks run in here:
   assigned partitions get their state restored first, revoked ones are checkpointed);
2. decode each message; a bad one is logged, counted and dead-lettered with its reason;
3. bring the batch's series into memory (from the local store, evicting idle series);
4. step every series in the batch through the engine (forecast, score, learn);
5. produce the batch's alerts (and forecasts) keyed by series, serve delivery reports and
   commit the offsets of an earlier checkpoint once all its records are acknowledged;
6. every ``delivery.commit_interval_s``: a checkpoint (changelog → flush → commit offsets →
   snapshot; see :mod:`streamrnn.checkpoint` for why in that order, and why the flush and
   commit of the periodic ones happen in the background of later iterations).

A crash can only cause the batches since the last checkpoint to be processed again from the
state of that checkpoint, never an alert to be lost; alert ids are deterministic so
subscribers can drop such repeats (or use ``delivery.mode: exactly_once``).

On SIGTERM/SIGINT the loop finishes the batch in hand, checkpoints, leaves the group (its
series go to the local store) and returns 0.

This module wires the Kafka layer to the engine; it does not touch torch itself.
"""

from __future__ import annotations

import gc
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from confluent_kafka import KafkaError, KafkaException, Message, TopicPartition
from confluent_kafka.admin import AdminClient

from streamrnn.checkpoint import Checkpointer
from streamrnn.config import Settings
from streamrnn.decode import (
    DecodedMessage,
    DecodeRules,
    Rejection,
    decode_message,
    decode_messages,
)
from streamrnn.engine.build import build_engine
from streamrnn.engine.engine import Engine, EngineBatchResult
from streamrnn.fault_injection import FaultInjector, from_environment
from streamrnn.heap_trim import HeapTrimmer
from streamrnn.http_endpoints import Health, HttpEndpoints
from streamrnn.kafka.clients import (
    client_config,
    make_admin,
    make_consumer,
    make_producer,
    transactional_id,
)
from streamrnn.kafka.limits import SizeLimits, log_mismatches, read_limits
from streamrnn.kafka.model_topic import ModelTopic
from streamrnn.kafka.sink import AckedSink
from streamrnn.kafka.source import BatchSource, position_of
from streamrnn.kafka.topics import TopicLayoutError, ensure_topics
from streamrnn.logs import get_logger
from streamrnn.metrics import DaemonMetrics
from streamrnn.model_sync import ModelSync
from streamrnn.poison import PoisonGuard, RowBackup
from streamrnn.publisher import Publisher
from streamrnn.retrain.controller import RetrainController
from streamrnn.retrain.registry import ModelRegistry
from streamrnn.retrain.worker import BackgroundTrainer
from streamrnn.service_notify import ServiceNotifier
from streamrnn.state.manager import GroupInfo, SeriesStateManager
from streamrnn.state.store import LocalStateStore, StoreLockedError
from streamrnn.telemetry import StateGauges, Telemetry

__all__ = ["run_daemon"]

log = get_logger("daemon")

#: Seconds between the periodic "progress" log lines.
STATS_INTERVAL_S = 10.0
#: Seconds the shutdown may wait for outstanding acknowledgements before giving up.
SHUTDOWN_ACK_TIMEOUT_S = 20.0
#: Allocations between two collections of the youngest GC generation (CPython: 700).
GC_GEN0_THRESHOLD = 50_000
#: Seconds between returns of freed heap memory to the OS (after a checkpoint).
HEAP_TRIM_INTERVAL_S = 5.0


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
    admin = make_admin(settings)
    telemetry = Telemetry(
        DaemonMetrics(),
        Health(settings.http.liveness_stall_s, lambda: _broker_answers(admin)),
        ServiceNotifier(),
    )
    endpoints = None
    if settings.http.port is not None:
        try:
            endpoints = HttpEndpoints(
                settings.http.host, settings.http.port, telemetry.metrics.registry, telemetry.health
            )
        except OSError as exc:
            log.error("cannot start", error=f"HTTP endpoints on port {settings.http.port}: {exc}")
            return 2
        endpoints.start()
        log.info("http endpoints", host=settings.http.host, port=endpoints.port)
    started = time.perf_counter()
    engine.warm_up()
    log.info(
        "engine ready", fused_kernel=engine.fused, seconds=round(time.perf_counter() - started, 3)
    )
    try:
        return _run_serving(settings, stop, engine, store, admin, telemetry)
    finally:
        if endpoints is not None:
            endpoints.stop()


def _broker_answers(admin: AdminClient) -> bool:
    """Whether the broker answers a metadata request within 2 s (for /readyz)."""
    try:
        admin.list_topics(timeout=2.0)
    except KafkaException:
        return False
    return True


def _run_serving(
    settings: Settings,
    stop: threading.Event,
    engine: Engine,
    store: LocalStateStore,
    admin: AdminClient,
    telemetry: Telemetry,
) -> int:
    manager = SeriesStateManager(
        engine.table,
        store,
        [GroupInfo(g.version, f"state.{g.name}", frozenset(g.lineage)) for g in engine.groups],
        route=engine.group_index_of,
    )

    def stopped_while_waiting() -> bool:
        telemetry.health.progressed()  # waiting for the input topics is not a stuck loop
        return stop.is_set()

    try:
        partitions = ensure_topics(settings, admin, stopped_while_waiting)
    except TopicLayoutError as exc:
        log.error("cannot start", error=str(exc))
        return 2
    if not partitions:
        return 0  # stopped while waiting for the input topics
    topics = settings.topics
    limits = read_limits(
        admin,
        client_config(settings, "producer"),
        [*topics.input, *(t for t in (topics.alerts, topics.forecasts, topics.dead_letter) if t)],
    )
    log_mismatches(limits, topics.input, topics.dead_letter, settings.consume.max_message_bytes)
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
        metrics=telemetry.metrics,
    )
    sync = ModelSync(models, controller, (topics.input[0], 0), retrain.enabled)
    try:
        sync.adopt_published()
        return _loop(settings, stop, engine, store, manager, controller, sync, telemetry, limits)
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
    sync: ModelSync,
    telemetry: Telemetry,
    limits: SizeLimits,
) -> int:
    metrics = telemetry.metrics
    producer = make_producer(settings)

    def on_produce_error(topic: str, err: KafkaError) -> None:
        log.warning("delivery failed, will retry", topic=topic, error=str(err))

    sink = AckedSink(producer, on_produce_error, lambda r, e: publisher.on_refused(r, e))
    topics = settings.topics
    publisher = Publisher(
        sink,
        engine,
        telemetry,
        metrics,
        topics.alerts,
        topics.forecasts,
        topics.dead_letter,
        limits.writable_bytes(topics.dead_letter) if topics.dead_letter else 0,
    )

    def on_commit(err: KafkaError | None, parts: list[TopicPartition]) -> None:
        # runs inside the consumer's polls, all after the checkpointer below exists
        checkpointer.on_commit(err, parts)

    source = BatchSource(
        make_consumer(settings, on_commit),
        settings.topics.input,
        on_error=lambda err: log.warning("consumer error", error=str(err), code=err.code()),
    )

    checkpointer = Checkpointer(
        settings, source, producer, sink, manager, client_config(settings, "admin"), telemetry.alive
    )
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
    gauges = StateGauges(
        metrics,
        lambda: len(engine.table),
        lambda: manager.evicted_series,
        lambda: checkpointer.restored_series,
        source.lag,
        lambda: len(source.assignment()),
        lambda: controller.training,
    )
    shutdown_deadline: float | None = None

    def give_up() -> bool:
        nonlocal shutdown_deadline
        if not stop.is_set():
            return False
        if shutdown_deadline is None:
            shutdown_deadline = time.monotonic() + SHUTDOWN_ACK_TIMEOUT_S
        return time.monotonic() > shutdown_deadline

    exit_code = 0
    _tune_garbage_collector()
    telemetry.gc_pauses.install()
    checkpointer.start()
    heap = HeapTrimmer(HEAP_TRIM_INTERVAL_S)

    def on_assign(parts: list[TopicPartition]) -> None:
        checkpointer.on_assign(parts)  # restores the partitions' state first
        telemetry.serving(len(source.assignment()))

    guard = PoisonGuard(store)
    handler = _BatchHandler(
        settings,
        engine,
        checkpointer,
        publisher,
        controller,
        telemetry,
        give_up,
        guard,
        from_environment(),
    )
    in_flight: Sequence[Message] = ()
    source.subscribe(on_assign, checkpointer.on_revoke, checkpointer.on_lost)
    try:
        while not stop.is_set():
            with telemetry.timer.stage("poll"):
                messages = source.poll_batch(
                    settings.consume.batch_max_messages, settings.consume.poll_timeout_s
                )
            if messages:
                started = time.perf_counter()
                in_flight = messages
                handler.handle(messages)
                in_flight = ()
                telemetry.count_latency(time.perf_counter() - started, controller.training)
            else:
                sink.serve_reports()
            checkpointer.settle()  # commits what the broker has acknowledged meanwhile
            if guard.active:
                guard.passed(checkpointer.committed())
            if checkpointer.due():
                started = time.perf_counter()
                committed = checkpointer.checkpoint(give_up, wait=False)
                telemetry.count_checkpoint(time.perf_counter() - started, committed)
                with telemetry.timer.stage("heap_trim"):
                    heap.maybe_trim()
            gauges.export_if_due()
            sync.step(source.assignment)
            telemetry.progressed()
            now = time.monotonic()
            if now >= next_stats:
                log.info(
                    "progress",
                    live_series=len(engine.table),
                    **telemetry.log_fields(),
                    **controller.status(),
                )
                next_stats = now + STATS_INTERVAL_S
        telemetry.stopping()
        if not checkpointer.close(give_up):
            log.error("shutting down with unacknowledged records; offsets not committed")
            exit_code = 1
    except BaseException as exc:
        # Whatever failed, the batch in hand may be half done: commit nothing more (the
        # revocation that closing the consumer triggers included), and remember where it
        # died so that the next start sets the message aside if it fails again.
        log.exception("the consume loop failed", error=f"{type(exc).__name__}: {exc}")
        checkpointer.abandon()
        if in_flight:
            guard.died_in(in_flight, exc)
        raise
    finally:
        # Leaving the group revokes the partitions: their series are saved to the store.
        source.close()
        producer.flush(5.0)
        log.info(
            "stopped",
            live_series=len(engine.table),
            stored_series=store.count(),
            **telemetry.log_fields(),
            profile_s=telemetry.timer.rounded(),
        )
        telemetry.gc_pauses.uninstall()
    return exit_code


def _tune_garbage_collector() -> None:
    """Make the cyclic garbage collector cheap for a loop that allocates many short-lived
    objects per message: everything alive after start-up (torch, the model, the clients) is
    frozen out of collection, and the youngest generation is collected every
    :data:`GC_GEN0_THRESHOLD` allocations instead of 700. The loop creates few reference
    cycles (its objects are freed by reference counting), so this costs little memory and
    halves the time spent decoding messages."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_GEN0_THRESHOLD, *gc.get_threshold()[1:])


@contextmanager
def _state_directory(settings: Settings) -> Iterator[Path]:
    """``state.directory``, or a temporary one removed at exit."""
    if settings.state.directory is not None:
        yield settings.state.directory
        return
    with tempfile.TemporaryDirectory(prefix="streamrnn-state-") as tmp:
        yield Path(tmp)


@dataclass
class _BatchHandler:
    """Decode → state → engine → publish for one batch (not yet acknowledged), and the
    isolation of the messages a previous run died on (see :mod:`streamrnn.poison`)."""

    settings: Settings
    engine: Engine
    checkpointer: Checkpointer
    publisher: Publisher
    controller: RetrainController
    telemetry: Telemetry
    give_up: Callable[[], bool]
    guard: PoisonGuard
    faults: FaultInjector | None = None

    def handle(self, messages: Sequence[Message]) -> None:
        """Handle a polled batch; messages in a remembered range are handled one by one."""
        if not self.guard.active:
            self._handle(messages)
            return
        for suspect, run in self.guard.segments(messages):
            if not suspect:
                self._handle(run)
                continue
            for msg in run:
                self._isolated(msg)

    def _handle(self, messages: Sequence[Message], isolated: bool = False) -> None:
        batch = self._batch(messages, isolated)
        with self.telemetry.timer.stage("retrain.observe"):
            self.controller.observe(batch)

    def _isolated(self, msg: Message) -> None:
        """Handle a message the previous run may have died on, alone; should it raise
        again, put its series' state back and dead-letter it as a poison pill."""
        decoded = decode_message(msg.value(), DecodeRules.of(self.settings.consume, time.time()))
        series = decoded.series if isinstance(decoded, DecodedMessage) else None
        backup = RowBackup.take(self.engine.table, series) if series is not None else None
        try:
            self._handle([msg], isolated=True)
        except Exception as exc:
            if backup is not None:
                backup.restore(self.engine.table)
            self.checkpointer.handled([msg], [], np.empty(0, dtype=np.int64))
            self.telemetry.metrics.poison_pills.inc()
            topic, partition, offset = position_of(msg)
            log.error(
                "poison pill: a message the daemon died on fails again alone; dead-lettered",
                topic=topic,
                partition=partition,
                offset=offset,
                series=series,
                error=f"{type(exc).__name__}: {exc}",
            )
            detail = f"the daemon died handling it, and alone it fails again: {exc!r}"
            self.publisher.reject(Rejection("poison_pill", detail[:1000], series), msg)

    def _fault(self, where: str, messages: Sequence[Message], isolated: bool) -> None:
        if self.faults is not None:
            self.faults.point(where, messages, isolated)

    def _batch(self, messages: Sequence[Message], isolated: bool) -> EngineBatchResult:
        """Decode, process and produce the records of one batch (not yet acknowledged)."""
        decoded: list[DecodedMessage] = []
        origins: list[Message] = []
        telemetry, publisher, engine = self.telemetry, self.publisher, self.engine
        timer = telemetry.timer
        started = time.perf_counter()
        results = decode_messages(
            [msg.value() for msg in messages], DecodeRules.of(self.settings.consume, time.time())
        )
        for msg, result in zip(messages, results, strict=True):
            if isinstance(result, Rejection):
                publisher.reject(result, msg)
            else:
                decoded.append(result)
                origins.append(msg)
        telemetry.count_batch(len(messages))
        timer.add("decode", time.perf_counter() - started)
        self._fault("decoded", messages, isolated)
        with timer.stage("state.load"):
            self.checkpointer.make_room([d.series for d in decoded], self.give_up)
        self._fault("state.load", messages, isolated)
        batch = engine.process(decoded, timer)
        self._fault("engine", messages, isolated)
        with timer.stage("state.bookkeeping"):
            self.checkpointer.handled(messages, origins, batch.message_slot)
        self._fault("handled", messages, isolated)
        sent: set[tuple[int, str]] = set()
        for index, rejection in batch.rejections:
            # A window message with several bad points is dead-lettered once per reason.
            first = (index, rejection.reason) not in sent
            sent.add((index, rejection.reason))
            publisher.reject(rejection, origins[index], dead_letter=first)
        telemetry.count_points(len(batch))
        with timer.stage("produce.alerts"):
            publisher.alerts(batch, decoded, origins)
        self._fault("alerts", messages, isolated)
        if publisher.forecast_topic is not None:
            with timer.stage("produce.forecasts"):
                publisher.forecasts(batch, decoded, origins)
            self._fault("forecasts", messages, isolated)
        with timer.stage("produce.reports"):
            publisher.serve_reports()
        return batch
