"""The records the daemon publishes: alerts and forecasts (schemas documented in README).

Each has an ``encode`` to JSON bytes. Alerts are rare: plain dataclasses, encoded by orjson.
A forecast record is published for every point, so forecasts are msgspec structs (built
three times as fast as a frozen dataclass) and a batch of them is encoded in one call
(:func:`encode_forecasts`). Both encoders write NaN and infinities as null. Knows nothing of
Kafka or torch.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import msgspec
import orjson

__all__ = [
    "Z95",
    "AlertRecord",
    "ForecastRecord",
    "HorizonPoint",
    "SourcePosition",
    "alert_id",
    "encode_forecasts",
    "iso_time",
]


#: Half-width of a central 95 % interval, in spreads (forecast records, report bands).
Z95 = 1.959964


@dataclass(frozen=True, slots=True)
class SourcePosition:
    """Where the point came from: input topic, partition and offset."""

    topic: str
    partition: int
    offset: int


@dataclass(frozen=True, slots=True)
class AlertRecord:
    """One anomalous point. ``alert_id`` is the same for the same series, ts and rule, so a
    subscriber can drop a duplicate delivered after a crash or rebalance."""

    alert_id: str
    series: str
    labels: dict[str, str]
    ts: float
    #: ``ts`` as ISO-8601 UTC; null where it is not representable (outside years 1-9999,
    #: which decoding rejects as bad_timestamp).
    time: str | None
    value: float
    forecast: float
    residual: float
    spread: float
    score: float
    threshold: float
    severity: str
    rule: str
    model_version: str
    source: SourcePosition

    def encode(self) -> bytes:
        """The JSON value of the alert message."""
        return orjson.dumps(self)  # orjson serialises dataclasses natively (and fast)


class HorizonPoint(msgspec.Struct, frozen=True, gc=False):
    """One step of a k-step forecast: expected time, mean and central 95 % interval."""

    ts: float
    forecast: float
    lower: float
    upper: float


class ForecastRecord(msgspec.Struct, frozen=True, gc=False):
    """The one-step-ahead forecast the model made for a point, and the point's score.

    ``lower``/``upper`` bound a central 95 % interval of the forecast, its width learned per
    series from the series' own errors so that it covers 95 % of its points
    (:mod:`streamrnn.stages.interval`; ± 1.96 spreads until it has learned).
    ``forecast``, ``lower`` and ``upper`` are null for a series' first point.
    """

    series: str
    ts: float
    value: float
    forecast: float | None
    lower: float | None
    upper: float | None
    score: float
    model_version: str
    #: k-step forecast from this point on (``model.horizon_points``), on a series' last point
    #: of a batch; None otherwise.
    horizon: list[HorizonPoint] | None = None

    def encode(self) -> bytes:
        """The JSON value of the forecast message."""
        return _FORECAST_ENCODER.encode(self)


_FORECAST_ENCODER = msgspec.json.Encoder()


def encode_forecasts(records: Sequence[ForecastRecord]) -> list[bytes]:
    """``[r.encode() for r in records]`` in one encoder call. The records are written as
    newline-delimited JSON and split at the newlines: JSON never holds a raw newline (a
    string escapes it as ``\\n``), so each line is exactly one record.

    The daemon's whole forecast path (records built from a batch's arrays, then encoded; no
    broker) took 0.6 us a record in batches of 520 points and 0.8 in batches of 5,000,
    against 0.7 and 3.3 with a dict and an ``orjson.dumps`` per record."""
    if not records:
        return []
    return _FORECAST_ENCODER.encode_lines(records).split(b"\n")[:-1]


def alert_id(series: str, ts: float, rule: str) -> str:
    """A deterministic id for the alert of ``series`` at ``ts`` (epoch s) under ``rule``."""
    digest = hashlib.blake2b(f"{series}\x1f{ts!r}\x1f{rule}".encode(), digest_size=16)
    return digest.hexdigest()


def iso_time(ts: float) -> str | None:
    """ISO-8601 UTC time of epoch seconds ``ts``, millisecond precision; None where
    ``datetime`` cannot represent it (outside years 1-9999, or not finite), so building an
    alert never fails on its timestamp."""
    try:
        return datetime.fromtimestamp(ts, tz=UTC).isoformat(timespec="milliseconds")
    except (ValueError, OverflowError, OSError):
        return None
