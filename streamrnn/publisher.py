"""Turn a processed batch into the records the daemon publishes: alerts, forecasts and dead
letters, each sent through the :class:`~streamrnn.kafka.sink.AckedSink`.

Nothing a message holds can make this module raise. Building or encoding the alert of one
point, or the forecast records of a batch, is caught at that scope: the point's source
message is dead-lettered with reason ``unencodable_record`` (and the exception in the
detail) and the batch goes on. A record the producer or broker refuses as too large is not
retried (that would block every later commit): an alert or forecast turns into a dead letter
of its source message, and a dead letter itself shrinks, in this order:

1. *a truncated copy*: the value cut to what fits under the smaller of the producer's
   ``message.max.bytes`` and the dead-letter topic's ``max.message.bytes`` (known at
   start-up), with header ``streamrnn.truncated: "true"``;
2. *headers only* (no key, no value), with ``streamrnn.truncated: "headers_only"``, when even
   the truncated copy is refused.

Every dead letter carries ``streamrnn.reason``, ``streamrnn.detail``, the source topic,
partition and offset, and ``streamrnn.original_bytes`` (the size of the original value).
A message a previous run of the daemon died on, and that fails again when handled alone
(see :mod:`streamrnn.poison`), is dead-lettered as ``poison_pill`` by :meth:`poison_pill`.
Knows nothing of torch; the engine's results are plain arrays.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import orjson
from confluent_kafka import KafkaError, Message, Producer

from streamrnn.config import TopicsConfig
from streamrnn.decode import DecodedMessage, Rejection
from streamrnn.engine.engine import Engine, EngineBatchResult
from streamrnn.kafka.limits import SizeLimits
from streamrnn.kafka.sink import AckedSink, Headers, Record
from streamrnn.kafka.source import position_of
from streamrnn.logs import get_logger
from streamrnn.metrics import DaemonMetrics
from streamrnn.records import (
    AlertRecord,
    ForecastRecord,
    HorizonPoint,
    SourcePosition,
    alert_id,
    encode_forecasts,
    iso_time,
)
from streamrnn.stages.alert_rule import RULE_NAME, SEVERITY_NAMES
from streamrnn.stages.interval import AT_95

__all__ = ["DEAD_LETTER_HEADROOM_BYTES", "Counts", "Publisher"]

log = get_logger("publisher")

#: Bytes left under the size limit for the record's own overhead (lengths, timestamps,
#: batch header) when a dead letter is truncated to fit.
DEAD_LETTER_HEADROOM_BYTES = 1024

#: The header that says a dead letter's value is not the original message's.
TRUNCATED_HEADER = "streamrnn.truncated"
#: Characters of a poison pill's exception kept in its ``streamrnn.detail`` header.
POISON_DETAIL_CHARS = 1000


class Counts(Protocol):
    """Where the publisher counts what it sent (the daemon's Prometheus counters, see
    :class:`streamrnn.telemetry.Telemetry`)."""

    def count_alert(self, severity: str) -> None:
        """An alert produced."""

    def count_rejection(self, reason: str) -> None:
        """A message (or a point of one) rejected."""


@dataclass(frozen=True)
class _Origin:
    """Where a record came from, kept with records that may be refused."""

    key: bytes | None
    value: bytes | None
    topic: str
    partition: int
    offset: int


class Publisher:
    """Builds and sends the daemon's output records; see the module docstring."""

    def __init__(
        self,
        sink: AckedSink,
        engine: Engine,
        counts: Counts,
        metrics: DaemonMetrics,
        alert_topic: str,
        forecast_topic: str | None,
        dead_letter_topic: str | None,
        dead_letter_max_bytes: int,
    ) -> None:
        """``dead_letter_max_bytes``: the largest record the dead-letter topic takes (the
        smaller of the producer's and the topic's limit)."""
        self._sink = sink
        self._engine = engine
        self._counts = counts
        self._metrics = metrics
        self.alert_topic = alert_topic
        self.forecast_topic = forecast_topic
        self.dead_letter_topic = dead_letter_topic
        self.dead_letter_max_bytes = dead_letter_max_bytes

    @classmethod
    def over(
        cls,
        producer: Producer,
        engine: Engine,
        counts: Counts,
        metrics: DaemonMetrics,
        topics: TopicsConfig,
        limits: SizeLimits,
    ) -> Publisher:
        """The daemon's publisher: its own sink over ``producer`` (a failed delivery is
        logged and sent again, a refused record goes to :meth:`on_refused`), dead letters
        sized to what the dead-letter topic takes (``limits``, read at start-up)."""

        def on_refused(record: Record, err: KafkaError) -> Record | None:
            return publisher.on_refused(record, err)

        sink = AckedSink(producer, _delivery_failed, on_refused)
        dead_letter = topics.dead_letter
        publisher = cls(
            sink,
            engine,
            counts,
            metrics,
            topics.alerts,
            topics.forecasts,
            dead_letter,
            limits.writable_bytes(dead_letter) if dead_letter else 0,
        )
        return publisher

    @property
    def sink(self) -> AckedSink:
        """The sink every record goes through (the checkpointer waits on it)."""
        return self._sink

    def serve_reports(self) -> None:
        """Run the delivery callbacks of what was acknowledged so far (see the sink)."""
        self._sink.serve_reports()

    # -- dead letters -------------------------------------------------------------------

    def reject(self, rejection: Rejection, msg: Message, dead_letter: bool = True) -> None:
        """Count and log a rejected message and (``dead_letter``, and a topic configured)
        dead-letter it: original key and bytes, headers saying why and where from. It is
        acknowledged before the offsets are committed, like an alert."""
        self._counts.count_rejection(rejection.reason)
        topic, partition, offset = position_of(msg)
        if dead_letter and self.dead_letter_topic is not None:
            origin = _Origin(msg.key(), msg.value(), topic, partition, offset)
            self._send_dead_letter(rejection, origin)
        log.warning(
            "message rejected",
            reason=rejection.reason,
            detail=rejection.detail,
            series=rejection.series,
            topic=topic,
            partition=partition,
            offset=offset,
        )

    def poison_pill(self, msg: Message, series: str | None, exc: Exception) -> None:
        """Dead-letter ``msg`` as ``poison_pill``: the daemon died handling it, and handled
        alone it raised ``exc`` again."""
        self._metrics.poison_pills.inc()
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
        self.reject(Rejection("poison_pill", detail[:POISON_DETAIL_CHARS], series), msg)

    def _send_dead_letter(self, rejection: Rejection, origin: _Origin) -> None:
        assert self.dead_letter_topic is not None
        headers = _dead_letter_headers(rejection, origin)
        key, value = origin.key, origin.value
        size = len(key or b"") + len(value or b"") + _headers_bytes(headers)
        if size > self.dead_letter_max_bytes - DEAD_LETTER_HEADROOM_BYTES:
            key, value, headers = self._shrunk(key, value, headers)
        self._sink.send(self.dead_letter_topic, key, value, headers)

    def _shrunk(
        self, key: bytes | None, value: bytes | None, headers: Headers
    ) -> tuple[bytes | None, bytes | None, Headers]:
        """The truncated copy of a dead letter too large to send whole (headers only when
        not even the key fits)."""
        room = (
            self.dead_letter_max_bytes
            - DEAD_LETTER_HEADROOM_BYTES
            - _headers_bytes(headers)
            - len(key or b"")
            - len(TRUNCATED_HEADER)
            - len("headers_only")
        )
        if room <= 0:
            return self._headers_only(headers)
        self._metrics.dead_letters_shrunk.labels("truncated").inc()
        return key, (value or b"")[:room], [*headers, (TRUNCATED_HEADER, b"true")]

    def _headers_only(self, headers: Headers) -> tuple[None, None, Headers]:
        self._metrics.dead_letters_shrunk.labels("headers_only").inc()
        kept = [(name, raw) for name, raw in headers if name != TRUNCATED_HEADER]
        return None, None, [*kept, (TRUNCATED_HEADER, b"headers_only")]

    def on_refused(self, record: Record, err: KafkaError) -> Record | None:
        """The sink's callback for a record that will never be taken as it is: what to send
        instead (see the module docstring), or None (logged)."""
        topic, key, value, headers, _partition = record
        size = len(key or b"") + len(value or b"") + _headers_bytes(headers or [])
        if topic == self.dead_letter_topic:
            if value is None:
                log.error("dead letter refused even as headers only", error=str(err))
                return None
            log.warning("dead letter refused; sending it as headers only", bytes=size)
            _key, _value, only = self._headers_only(headers or [])
            return (topic, None, None, only, -1)
        kind = {self.alert_topic: "alert", self.forecast_topic: "forecast"}.get(topic, "state")
        self._metrics.records_refused.labels(kind).inc()
        log.error("record refused as too large", topic=topic, bytes=size, error=str(err))
        if kind == "state" or self.dead_letter_topic is None:
            return None  # a state record is bounded by construction (labels are bounded)
        # The source message is not at hand any more: the dead letter names it (an alert
        # holds its source position) and carries no value, like a headers-only one.
        series = (key or b"").decode(errors="replace")
        rejection = Rejection(
            "unencodable_record",
            f"the {kind} record of series {series!r} ({size} bytes) was refused: {err.str()}",
            series,
        )
        self._counts.count_rejection(rejection.reason)
        origin = _Origin(None, None, *_source_of(value if kind == "alert" else None))
        _key, _value, only = self._headers_only(_dead_letter_headers(rejection, origin))
        return (self.dead_letter_topic, key, None, only, -1)

    # -- alerts and forecasts -----------------------------------------------------------

    def alerts(
        self,
        batch: EngineBatchResult,
        decoded: Sequence[DecodedMessage],
        origins: Sequence[Message],
    ) -> None:
        """An alert record for every point of ``batch`` with a severity; one that cannot be
        built or encoded dead-letters its source message instead."""
        for i in np.flatnonzero(batch.severity > 0).tolist():
            message_index = int(batch.message_index[i])
            msg = origins[message_index]
            try:
                alert = self._alert(batch, i, decoded[message_index].series, msg)
                encoded = alert.encode()
            except Exception as exc:  # a bug in record building must not stop the loop
                self._unencodable(msg, decoded[message_index].series, "alert", exc)
                continue
            topic, partition, offset = position_of(msg)
            self._sink.send(self.alert_topic, alert.series.encode(), encoded)
            self._counts.count_alert(alert.severity)
            log.info(
                "alert",
                series=alert.series,
                topic=topic,
                partition=partition,
                offset=offset,
                ts=alert.ts,
                value=alert.value,
                forecast=alert.forecast,
                score=alert.score,
                severity=alert.severity,
                alert_id=alert.alert_id,
            )

    def _alert(self, batch: EngineBatchResult, i: int, series: str, msg: Message) -> AlertRecord:
        engine = self._engine
        rule = engine.rule
        severity = int(batch.severity[i])
        ts, value, forecast = float(batch.ts[i]), float(batch.value[i]), float(batch.forecast[i])
        return AlertRecord(
            alert_id=alert_id(series, ts, RULE_NAME),
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
            rule=RULE_NAME,
            model_version=engine.groups[int(batch.group[i])].version,
            source=SourcePosition(*position_of(msg)),
        )

    def forecasts(
        self,
        batch: EngineBatchResult,
        decoded: Sequence[DecodedMessage],
        origins: Sequence[Message],
    ) -> None:
        """One forecast record per point (when a forecast topic is configured), built from
        whole arrays and encoded in one call: this runs for every point. Should that fail,
        each record is encoded alone, and the messages of those that still fail are
        dead-lettered. The encoder writes NaN and infinities as null, so a point without a
        forecast gets null bounds with no test per point."""
        if self.forecast_topic is None or len(batch) == 0:
            return
        series = [decoded[m].series for m in batch.message_index.tolist()]
        try:
            records = self._forecast_records(batch, series)
            values = encode_forecasts(records)
            keys = [name.encode() for name in series]
        except Exception as exc:
            self._forecasts_one_by_one(batch, series, origins, exc)
            return
        self._sink.send_many(self.forecast_topic, keys, values)

    def _forecasts_one_by_one(
        self,
        batch: EngineBatchResult,
        series: list[str],
        origins: Sequence[Message],
        bulk_error: Exception,
    ) -> None:
        """The slow path of :meth:`forecasts`: record by record, so one bad record costs
        only its own message (every message of the batch if the records cannot be built)."""
        assert self.forecast_topic is not None
        message_index = batch.message_index.tolist()
        try:
            records = self._forecast_records(batch, series)
        except Exception:
            for m in dict.fromkeys(message_index):
                self._unencodable(
                    origins[m], series[message_index.index(m)], "forecast", bulk_error
                )
            return
        failed: set[int] = set()
        for i, record in enumerate(records):
            m = message_index[i]
            if m in failed:
                continue
            try:
                value, key = record.encode(), series[i].encode()
            except Exception as exc:
                failed.add(m)
                self._unencodable(origins[m], series[i], "forecast", exc)
                continue
            self._sink.send(self.forecast_topic, key, value)

    def _forecast_records(
        self, batch: EngineBatchResult, series: list[str]
    ) -> list[ForecastRecord]:
        n = len(batch)
        forecast = batch.forecast
        half_width = batch.half_width[:, AT_95]
        versions = [g.version for g in self._engine.groups]
        version_of = (
            [versions[g] for g in batch.group.tolist()] if len(versions) > 1 else [versions[0]] * n
        )
        # The k-step forecast rides on the record of each series' last point in the batch.
        horizon_of: list[list[HorizonPoint] | None] = [None] * n
        horizons = _horizon_by_slot(batch)
        if horizons:
            last_of_slot = {int(slot): i for i, slot in enumerate(batch.slot.tolist())}
            for slot, points in horizons.items():
                if slot in last_of_slot:
                    horizon_of[last_of_slot[slot]] = points
        return list(
            map(
                ForecastRecord,
                series,
                batch.ts.tolist(),
                batch.value.tolist(),
                forecast.tolist(),
                (forecast - half_width).tolist(),
                (forecast + half_width).tolist(),
                batch.score.tolist(),
                version_of,
                horizon_of,
            )
        )

    def _unencodable(self, msg: Message, series: str, kind: str, exc: Exception) -> None:
        log.exception("could not build a record; its message is dead-lettered", kind=kind)
        self.reject(
            Rejection(
                "unencodable_record",
                f"its {kind} record could not be built: {type(exc).__name__}: {exc}",
                series,
            ),
            msg,
        )


def _delivery_failed(topic: str, err: KafkaError) -> None:
    log.warning("delivery failed, will retry", topic=topic, error=str(err))


def _dead_letter_headers(rejection: Rejection, origin: _Origin) -> Headers:
    return [
        ("streamrnn.reason", rejection.reason.encode()),
        ("streamrnn.detail", rejection.detail.encode(errors="replace")),
        ("streamrnn.source.topic", origin.topic.encode()),
        ("streamrnn.source.partition", str(origin.partition).encode()),
        ("streamrnn.source.offset", str(origin.offset).encode()),
        ("streamrnn.original_bytes", str(len(origin.value or b"")).encode()),
    ]


def _source_of(alert: bytes | None) -> tuple[str, int, int]:
    """The source position an encoded alert names (("", -1, -1) when there is none)."""
    try:
        source = orjson.loads(alert or b"")["source"]
        return str(source["topic"]), int(source["partition"]), int(source["offset"])
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return "", -1, -1


def _headers_bytes(headers: Headers) -> int:
    return sum(
        len(name) + len(raw.encode() if isinstance(raw, str) else raw or b"")
        for name, raw in headers
    )


def _horizon_by_slot(batch: EngineBatchResult) -> dict[int, list[HorizonPoint]]:
    if batch.horizon is None or batch.horizon_slots is None:
        return {}
    h = batch.horizon
    widths = batch.horizon_half_width
    assert widths is not None
    out = {}
    for row, slot in enumerate(batch.horizon_slots):
        if not np.isfinite(h.mean[row, 0]):
            continue
        out[int(slot)] = [
            HorizonPoint(
                ts=float(h.ts[row, j]),
                forecast=float(h.mean[row, j]),
                lower=float(h.mean[row, j] - widths[row, j]),
                upper=float(h.mean[row, j] + widths[row, j]),
            )
            for j in range(h.ts.shape[1])
        ]
    return out
