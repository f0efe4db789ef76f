"""``streamrnn run``: the application object that wires the daemon's parts and runs its loop.

:meth:`Daemon.run` starts the parts in order (HTTP endpoints, engine warm-up, topics, the
model topic and retrain controller, then producer, publisher, consumer and checkpointer),
runs the consume loop until asked to stop, and undoes the start in reverse order. One
iteration of the loop:

1. poll a batch of messages from the input topics (rebalance callbacks run in here:
   assigned partitions get their state restored first, revoked ones are checkpointed);
2. handle it (:mod:`streamrnn.batch_handler`): decode each message (a bad one is logged,
   counted and dead-lettered with its reason), bring the batch's series into memory (from
   the local store, evicting idle series), step every series through the engine (forecast,
   score, learn), queue the batch's alerts and forecasts keyed by series
   (:mod:`streamrnn.publisher`);
3. commit the offsets of an earlier checkpoint once all its records are acknowledged and,
   every ``delivery.commit_interval_s``, take a checkpoint (changelog → flush → commit
   offsets → snapshot; see :mod:`streamrnn.checkpoint` for why in that order, and why the
   flush and commit of the periodic ones happen in the background of later iterations);
4. about once a second: the state gauges (:mod:`streamrnn.telemetry`), newly published
   models and the trainer role (:mod:`streamrnn.model_sync`); then the probes and, every
   :data:`STATS_INTERVAL_S` seconds, a ``progress`` log line.

A crash can only cause the batches since the last checkpoint to be processed again from the
state of that checkpoint, never an alert to be lost; alert ids are deterministic so
subscribers can drop such repeats (or use ``delivery.mode: exactly_once``). The messages of
the batch a crash happened in are remembered (:mod:`streamrnn.poison`).

On SIGTERM/SIGINT the loop finishes the batch in hand, checkpoints, leaves the group (its
series go to the local store) and returns 0. This module does not touch torch itself.
"""

from __future__ import annotations

import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path

from confluent_kafka import KafkaError, KafkaException, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from streamrnn.batch_handler import BatchHandler
from streamrnn.checkpoint import Checkpointer
from streamrnn.config import Settings
from streamrnn.engine.build import build_engine
from streamrnn.engine.engine import Engine
from streamrnn.fault_injection import from_environment
from streamrnn.gc_pauses import tune_for_loop
from streamrnn.heap_trim import HeapTrimmer
from streamrnn.http_endpoints import Health, HttpEndpoints
from streamrnn.kafka.clients import (
    client_config,
    make_admin,
    make_consumer,
    make_producer,
    transactional_id,
)
from streamrnn.kafka.limits import log_mismatches, read_limits
from streamrnn.kafka.model_topic import ModelTopic
from streamrnn.kafka.source import BatchSource
from streamrnn.kafka.topics import TopicLayoutError, ensure_topics
from streamrnn.logs import get_logger
from streamrnn.metrics import DaemonMetrics
from streamrnn.model_sync import ModelSync
from streamrnn.poison import PoisonGuard
from streamrnn.publisher import Publisher
from streamrnn.retrain.controller import RetrainController
from streamrnn.retrain.registry import ModelRegistry
from streamrnn.retrain.worker import BackgroundTrainer
from streamrnn.service_notify import ServiceNotifier
from streamrnn.state.manager import GroupInfo, SeriesStateManager
from streamrnn.state.store import LocalStateStore, StoreLockedError
from streamrnn.telemetry import StateGauges, Telemetry

__all__ = ["Daemon", "run_daemon"]

log = get_logger("daemon")

#: Seconds between the periodic "progress" log lines.
STATS_INTERVAL_S = 10.0
#: Seconds the shutdown may wait for outstanding acknowledgements before giving up.
SHUTDOWN_ACK_TIMEOUT_S = 20.0
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
            return Daemon(settings, stop, engine, store).run()
        finally:
            store.close()


class _CannotStartError(Exception):
    """The daemon cannot start (logged as "cannot start"; exit code 2)."""


class Daemon:
    """The daemon's parts and the order they start, run and stop in (module docstring)."""

    # Built by the steps of :meth:`run`.
    controller: RetrainController
    model_sync: ModelSync
    producer: Producer
    publisher: Publisher
    source: BatchSource
    checkpointer: Checkpointer
    guard: PoisonGuard
    handler: BatchHandler
    gauges: StateGauges

    def __init__(
        self, settings: Settings, stop: threading.Event, engine: Engine, store: LocalStateStore
    ) -> None:
        self.settings = settings
        self.stop = stop
        self.engine = engine
        self.store = store
        self.admin = make_admin(settings)
        self.telemetry = Telemetry(
            DaemonMetrics(),
            Health(settings.http.liveness_stall_s, lambda: _broker_answers(self.admin)),
            ServiceNotifier(),
        )
        self.manager = SeriesStateManager(
            engine.table,
            store,
            [GroupInfo(g.version, f"state.{g.name}", frozenset(g.lineage)) for g in engine.groups],
            route=engine.group_index_of,
        )
        self.heap = HeapTrimmer(HEAP_TRIM_INTERVAL_S)
        self._in_flight: Sequence[Message] = ()
        self._shutdown_deadline: float | None = None
        self._next_progress_log = 0.0

    def run(self) -> int:
        """Serve until ``stop`` is set. The exit code: 0 after a clean stop (or a stop while
        waiting for the input topics), 1 when records stayed unacknowledged, 2 when the
        daemon cannot start."""
        try:
            with ExitStack() as undo:
                self._serve_http(undo)
                self._warm_up()
                if not self._wait_for_topics():
                    return 0
                self._sync_models(undo)
                self._connect()
                return self._consume()
        except _CannotStartError as exc:
            log.error("cannot start", error=str(exc))
            return 2

    # -- starting -----------------------------------------------------------------------

    def _serve_http(self, undo: ExitStack) -> None:
        """``/healthz``, ``/readyz`` and ``/metrics`` (when ``http.port`` is set)."""
        http = self.settings.http
        if http.port is None:
            return
        try:
            endpoints = HttpEndpoints(
                http.host, http.port, self.telemetry.metrics.registry, self.telemetry.health
            )
        except OSError as exc:
            raise _CannotStartError(f"HTTP endpoints on port {http.port}: {exc}") from exc
        endpoints.start()
        undo.callback(endpoints.stop)
        log.info("http endpoints", host=http.host, port=endpoints.port)

    def _warm_up(self) -> None:
        started = time.perf_counter()
        self.engine.warm_up()
        log.info("engine ready", seconds=round(time.perf_counter() - started, 3))

    def _wait_for_topics(self) -> bool:
        """Create or check the topics, waiting for the input ones; False if stopped meanwhile."""

        def stopped_while_waiting() -> bool:
            self.telemetry.health.progressed()  # waiting is not a stuck loop
            return self.stop.is_set()

        try:
            return bool(ensure_topics(self.settings, self.admin, stopped_while_waiting))
        except TopicLayoutError as exc:
            raise _CannotStartError(str(exc)) from exc

    def _sync_models(self, undo: ExitStack) -> None:
        """The model topic and the retrain controller; serve the newest published models."""
        settings, retrain = self.settings, self.settings.retrain
        models = ModelTopic(
            client_config(settings, "admin"),
            settings.topics.models_of(settings.kafka.group_id),
            publisher=transactional_id(settings),
        )
        undo.callback(models.close)
        self.controller = RetrainController(
            retrain,
            self.engine,
            self.manager,
            ModelRegistry(
                retrain.registry_dir or self.store.path.parent / "models", retrain.keep_versions
            ),
            BackgroundTrainer(retrain.threads, retrain.nice) if retrain.enabled else None,
            models.publish,
            metrics=self.telemetry.metrics,
        )
        undo.callback(self.controller.close)
        trainer_partition = (settings.topics.input[0], 0)
        self.model_sync = ModelSync(models, self.controller, trainer_partition, retrain.enabled)
        self.model_sync.adopt_published()

    def _connect(self) -> None:
        """The producer and publisher, the consumer, and the checkpointer between them."""
        settings, topics, telemetry = self.settings, self.settings.topics, self.telemetry
        outputs = [t for t in (topics.alerts, topics.forecasts, topics.dead_letter) if t]
        limits = read_limits(
            self.admin, client_config(settings, "producer"), [*topics.input, *outputs]
        )
        log_mismatches(limits, topics.input, topics.dead_letter, settings.consume.max_message_bytes)
        self.producer = make_producer(settings)
        self.publisher = Publisher.over(
            self.producer, self.engine, telemetry, telemetry.metrics, topics, limits
        )
        self.source = BatchSource(
            make_consumer(settings, self._on_commit),
            topics.input,
            on_error=lambda err: log.warning("consumer error", error=str(err), code=err.code()),
        )
        self.checkpointer = Checkpointer(
            settings,
            self.source,
            self.producer,
            self.publisher.sink,
            self.manager,
            client_config(settings, "admin"),
            telemetry.alive,
        )
        self.guard = PoisonGuard(self.store)
        self.handler = BatchHandler(
            settings.consume,
            self.engine,
            self.checkpointer,
            self.publisher,
            self.controller,
            telemetry,
            self._give_up,
            self.guard,
            from_environment(),
        )
        self.gauges = StateGauges(
            telemetry.metrics,
            lambda: len(self.engine.table),
            lambda: self.manager.evicted_series,
            lambda: self.checkpointer.restored_series,
            self.source.lag,
            lambda: len(self.source.assignment()),
            lambda: self.controller.training,
        )

    # -- the consume loop ---------------------------------------------------------------

    def _consume(self) -> int:
        """Join the group, loop until stopped, leave; the exit code."""
        self._log_started()
        self._next_progress_log = time.monotonic() + STATS_INTERVAL_S
        tune_for_loop()
        self.telemetry.gc_pauses.install()
        self.checkpointer.start()
        self.source.subscribe(
            self._on_assign, self.checkpointer.on_revoke, self.checkpointer.on_lost
        )
        try:
            while not self.stop.is_set():
                self._iterate()
            return self._shut_down()
        except BaseException as exc:
            self._abandon(exc)
            raise
        finally:
            self._leave()

    def _iterate(self) -> None:
        """One iteration of the loop (module docstring)."""
        consume = self.settings.consume
        with self.telemetry.timer.stage("poll"):
            messages = self.source.poll_batch(consume.batch_max_messages, consume.poll_timeout_s)
        if messages:
            self._handle(messages)
        else:
            self.publisher.serve_reports()
        self._checkpoint()
        self.gauges.export_if_due()
        self.model_sync.step(self.source.assignment)
        self.telemetry.progressed()
        self._log_progress_if_due()

    def _handle(self, messages: Sequence[Message]) -> None:
        started = time.perf_counter()
        self._in_flight = messages
        self.handler.handle(messages)
        self._in_flight = ()
        self.telemetry.count_latency(time.perf_counter() - started, self.controller.training)

    def _checkpoint(self) -> None:
        """Commit what the broker has acknowledged meanwhile; checkpoint when one is due."""
        checkpointer = self.checkpointer
        checkpointer.settle()
        if self.guard.active:
            self.guard.passed(checkpointer.committed())
        if checkpointer.due():
            started = time.perf_counter()
            committed = checkpointer.checkpoint(self._give_up, wait=False)
            self.telemetry.count_checkpoint(time.perf_counter() - started, committed)
            with self.telemetry.timer.stage("heap_trim"):
                self.heap.maybe_trim()

    def _shut_down(self) -> int:
        """The last checkpoint; 1 if records stayed unacknowledged (offsets not committed)."""
        self.telemetry.stopping()
        if self.checkpointer.close(self._give_up):
            return 0
        log.error("shutting down with unacknowledged records; offsets not committed")
        return 1

    def _abandon(self, exc: BaseException) -> None:
        """Whatever failed, the batch in hand may be half done: commit nothing more (the
        revocation that closing the consumer triggers included), and remember where it died
        so that the next start sets the message aside if it fails again."""
        log.exception("the consume loop failed", error=f"{type(exc).__name__}: {exc}")
        self.checkpointer.abandon()
        if self._in_flight:
            self.guard.died_in(self._in_flight, exc)

    def _leave(self) -> None:
        """Leave the group (revoking the partitions saves their series to the store)."""
        self.source.close()
        self.producer.flush(5.0)
        log.info(
            "stopped",
            live_series=len(self.engine.table),
            stored_series=self.store.count(),
            **self.telemetry.log_fields(),
            profile_s=self.telemetry.timer.rounded(),
        )
        self.telemetry.gc_pauses.uninstall()

    # -- callbacks and log lines --------------------------------------------------------

    def _give_up(self) -> bool:
        """Whether a shutdown has waited :data:`SHUTDOWN_ACK_TIMEOUT_S` for acknowledgements
        (False while not stopping)."""
        if not self.stop.is_set():
            return False
        if self._shutdown_deadline is None:
            self._shutdown_deadline = time.monotonic() + SHUTDOWN_ACK_TIMEOUT_S
        return time.monotonic() > self._shutdown_deadline

    def _on_commit(self, err: KafkaError | None, parts: list[TopicPartition]) -> None:
        # runs inside the consumer's polls, all after the checkpointer exists
        self.checkpointer.on_commit(err, parts)

    def _on_assign(self, parts: list[TopicPartition]) -> None:
        self.checkpointer.on_assign(parts)  # restores the partitions' state first
        self.telemetry.serving(len(self.source.assignment()))

    def _log_started(self) -> None:
        settings = self.settings
        log.info(
            "started",
            input_topics=settings.topics.input,
            alert_topic=settings.topics.alerts,
            forecast_topic=settings.topics.forecasts,
            dead_letter_topic=settings.topics.dead_letter,
            group_id=settings.kafka.group_id,
            bootstrap_servers=settings.kafka.bootstrap_servers,
            delivery=settings.delivery.mode,
            state_store=str(self.store.path),
            model_versions={g.name: g.version for g in self.engine.groups},
            retrain=settings.retrain.enabled,
            training_buffer_mib=round(self.controller.buffer.nbytes / 2**20, 1),
        )

    def _log_progress_if_due(self) -> None:
        now = time.monotonic()
        if now >= self._next_progress_log:
            log.info(
                "progress",
                live_series=len(self.engine.table),
                **self.telemetry.log_fields(),
                **self.controller.status(),
            )
            self._next_progress_log = now + STATS_INTERVAL_S


def _broker_answers(admin: AdminClient) -> bool:
    """Whether the broker answers a metadata request within 2 s (for /readyz)."""
    try:
        admin.list_topics(timeout=2.0)
    except KafkaException:
        return False
    return True


@contextmanager
def _state_directory(settings: Settings) -> Iterator[Path]:
    """``state.directory``, or a temporary one removed at exit."""
    if settings.state.directory is not None:
        yield settings.state.directory
        return
    with tempfile.TemporaryDirectory(prefix="streamrnn-state-") as tmp:
        yield Path(tmp)
