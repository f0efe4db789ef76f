"""One polled batch through the daemon: decode → state → engine → publish → retrain buffer.

For each batch :class:`BatchHandler` decodes the messages (a bad one is dead-lettered with
its reason), brings their series into memory (from the local store, evicting idle ones),
steps every point through the engine (forecast, score, learn), records the batch for the
next checkpoint, and queues its alerts and forecasts; nothing is acknowledged yet (the
checkpointer commits once the broker has taken every record). The points then feed the
retrain buffer and drift detectors.

A message a previous run died on (see :mod:`streamrnn.poison`) is handled alone; should it
fail again, its series' state is put back and it is dead-lettered as ``poison_pill``.
The fault injection points of :mod:`streamrnn.fault_injection` (``decoded``, ``state.load``,
``engine``, ``handled``, ``alerts``, ``forecasts``) sit between the stages. Knows nothing of
torch.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from confluent_kafka import Message

from streamrnn.checkpoint import Checkpointer
from streamrnn.config import ConsumeConfig
from streamrnn.decode import (
    DecodedMessage,
    DecodeRules,
    Rejection,
    decode_message,
    decode_messages,
)
from streamrnn.engine.engine import Engine, EngineBatchResult
from streamrnn.fault_injection import FaultInjector
from streamrnn.poison import PoisonGuard, RowBackup
from streamrnn.publisher import Publisher
from streamrnn.retrain.controller import RetrainController
from streamrnn.telemetry import Telemetry

__all__ = ["BatchHandler"]


@dataclass
class BatchHandler:
    """Handles the consume loop's batches; see the module docstring."""

    consume: ConsumeConfig
    engine: Engine
    checkpointer: Checkpointer
    publisher: Publisher
    controller: RetrainController
    telemetry: Telemetry
    #: Whether a shutdown has waited long enough (ends waits for room in memory).
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
        decoded = decode_message(msg.value(), DecodeRules.of(self.consume, time.time()))
        series = decoded.series if isinstance(decoded, DecodedMessage) else None
        backup = RowBackup.take(self.engine.table, series) if series is not None else None
        try:
            self._handle([msg], isolated=True)
        except Exception as exc:
            if backup is not None:
                backup.restore(self.engine.table)
            self.checkpointer.handled([msg], [], np.empty(0, dtype=np.int64))
            self.publisher.poison_pill(msg, series, exc)

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
            [msg.value() for msg in messages], DecodeRules.of(self.consume, time.time())
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
