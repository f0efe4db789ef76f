"""The records the daemon publishes: alerts and forecasts (schemas documented in README).

Plain dataclasses with an ``encode`` to JSON bytes. Knows nothing of Kafka or torch.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime

import orjson

__all__ = [
    "Z95",
    "AlertRecord",
    "ForecastRecord",
    "HorizonPoint",
    "SourcePosition",
    "alert_id",
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
    time: str
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


@dataclass(frozen=True, slots=True)
class HorizonPoint:
    """One step of a k-step forecast: expected time, mean and central 95 % interval."""

    ts: float
    forecast: float
    lower: float
    upper: float


@dataclass(frozen=True, slots=True)
class ForecastRecord:
    """The one-step-ahead forecast the model made for a point, and the point's score.

    ``lower``/``upper`` bound a central 95 % interval of the forecast (± 1.96 spreads).
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
        return orjson.dumps(self)  # orjson serialises dataclasses natively (and fast)


def alert_id(series: str, ts: float, rule: str) -> str:
    """A deterministic id for the alert of ``series`` at ``ts`` (epoch s) under ``rule``."""
    digest = hashlib.blake2b(f"{series}\x1f{ts!r}\x1f{rule}".encode(), digest_size=16)
    return digest.hexdigest()


def iso_time(ts: float) -> str:
    """ISO-8601 UTC time of epoch seconds ``ts``, millisecond precision."""
    return datetime.fromtimestamp(ts, tz=UTC).isoformat(timespec="milliseconds")
