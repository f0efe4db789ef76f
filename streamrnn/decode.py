"""Decode metric-point messages into plain Python values, or say exactly why not.

Two message forms are accepted (see README, "Input schema"):

* a single point: ``{"series": "web-1.cpu", "ts": 1700000000.5, "value": 0.42, "labels": {...}}``
* a window of points of one series:
  ``{"series": "...", "points": [[ts, value], ...], "labels": {...}}``

``ts`` is epoch seconds (int or float) or an ISO-8601 string (``Z`` or an offset; a naive
time is taken as UTC), between :data:`MIN_TS_S` and :data:`MAX_TS_S` (1970-01-01T00:00:00Z
to 9999-12-31T23:59:59Z), whatever the rules. ``value`` is a finite number, at most
``consume.max_abs_value`` in magnitude. ``labels`` is optional: a flat mapping of strings,
passed through to alerts, bounded in count, key and value length and encoded size
(``consume.max_labels*``). Extra top-level keys are ignored, or rejected with
``consume.reject_unknown_fields``; timestamps outside the window :class:`DecodeRules` gives
(wall clock minus ``consume.max_age_s``, plus ``consume.max_future_s``) are rejected.

A message that cannot be used whole is rejected whole, with a :class:`Rejection` that names a
machine-readable ``reason`` and a human ``detail``; nothing here raises on bad input. This
module knows nothing of Kafka or torch.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any, NamedTuple, cast

import msgspec
import orjson

if TYPE_CHECKING:
    from streamrnn.config import ConsumeConfig

__all__ = [
    "MAX_TS_S",
    "MIN_TS_S",
    "DecodeRules",
    "DecodedMessage",
    "Rejection",
    "decode_message",
    "decode_messages",
    "encode_labels",
    "parse_timestamp",
    "tight_bytes",
]

#: Earliest timestamp accepted, whatever the rules: 1970-01-01T00:00:00Z in epoch seconds.
#: Nothing monitored predates the epoch, a negative epoch is nearly always a bug upstream,
#: and the seasonal profile counts days from the epoch (clipped at day 0).
MIN_TS_S = 0.0
#: Latest timestamp accepted, whatever the rules: 9999-12-31T23:59:59Z in epoch seconds,
#: the last whole second ``datetime`` can represent (alert times are formatted with it).
#: A timestamp in milliseconds (1.7e12 today) is beyond it, so it is rejected, not taken
#: for the year 55,800.
MAX_TS_S = 253_402_300_799.0


class DecodedMessage(NamedTuple):
    """The points of one message: one series, timestamps in epoch seconds, float values.

    A named tuple, not a frozen dataclass: one is built per input message, and a frozen
    dataclass costs three times as much to build (0.7 µs)."""

    series: str
    ts: list[float]
    values: list[float]
    labels: dict[str, str] | None


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why a message (or a point) was not used.

    ``reason`` is one of a fixed set of codes (``oversized``, ``not_json``, ``not_object``,
    ``missing_field``, ``bad_series``, ``bad_timestamp``, ``non_numeric_value``,
    ``non_finite_value``, ``value_out_of_range``, ``bad_labels``, ``bad_points``,
    ``unknown_field``, ``ts_in_future``, ``ts_too_old``, ``out_of_order``,
    ``duplicate_timestamp``, ``series_limit``, ``unencodable_record``, ``poison_pill``)
    so it can be counted and routed; ``detail`` says what exactly was wrong.

    ``bad_timestamp`` covers a timestamp outside :data:`MIN_TS_S` .. :data:`MAX_TS_S`;
    ``value_out_of_range`` a value beyond ``consume.max_abs_value``; ``bad_labels`` labels
    that are not a mapping of strings or exceed a ``consume.max_label*`` limit (the detail
    names which). The last two come from after decoding: ``unencodable_record`` a message
    whose alert or forecast record could not be built or was refused as too large
    (:mod:`streamrnn.publisher`), ``poison_pill`` one the daemon died on and that fails
    again when handled alone (:mod:`streamrnn.poison`).
    """

    reason: str
    detail: str
    series: str | None = None


#: Longest series name accepted, in characters.
MAX_SERIES_CHARS = 512


@dataclass(frozen=True, slots=True)
class DecodeRules:
    """What a message must satisfy beyond being well formed.

    ``earliest`` and ``latest`` bound the timestamps (epoch seconds; None: unbounded), e.g.
    the wall clock minus ``consume.max_age_s`` and plus ``consume.max_future_s``; the range
    :data:`MIN_TS_S` .. :data:`MAX_TS_S` applies whatever they are.
    ``reject_unknown_fields`` rejects top-level keys other than the schema's.
    ``max_abs_value`` bounds the magnitude of values (None: any finite value).
    ``max_labels``, ``max_label_key_chars``, ``max_label_value_chars`` and
    ``max_labels_bytes`` bound a message's labels: their number, the characters of a key and
    of a value, and the bytes of their compact JSON encoding (:func:`encode_labels`, the form
    a series' labels are kept in and copied into its alerts and changelog records).

    The defaults of the limits are those of ``consume`` (:class:`ConsumeConfig`);
    :meth:`of` builds the rules of a batch from the configuration.
    """

    max_bytes: int
    earliest: float | None = None
    latest: float | None = None
    reject_unknown_fields: bool = False
    max_abs_value: float | None = 1e15
    max_labels: int = 32
    max_label_key_chars: int = 128
    max_label_value_chars: int = 1024
    max_labels_bytes: int = 4096
    #: The typed decoders of these limits (built once per distinct limits, then cached).
    decoders: _Decoders = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        decoders = _decoders(
            self.max_abs_value,
            self.max_labels,
            self.max_label_key_chars,
            self.max_label_value_chars,
        )
        object.__setattr__(self, "decoders", decoders)

    @classmethod
    def of(cls, consume: ConsumeConfig, now: float) -> DecodeRules:
        """The rules of ``consume`` for a batch polled at ``now`` (epoch seconds)."""
        return cls(
            max_bytes=consume.max_message_bytes,
            earliest=now - consume.max_age_s if consume.max_age_s is not None else None,
            latest=now + consume.max_future_s,
            reject_unknown_fields=consume.reject_unknown_fields,
            max_abs_value=consume.max_abs_value,
            max_labels=consume.max_labels,
            max_label_key_chars=consume.max_label_key_chars,
            max_label_value_chars=consume.max_label_value_chars,
            max_labels_bytes=consume.max_labels_bytes,
        )


_Series = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_SERIES_CHARS)]
_Timestamp = Annotated[float, msgspec.Meta(ge=MIN_TS_S, le=MAX_TS_S)]


class _Decoders(NamedTuple):
    """msgspec decoders of the common forms (validated in C), for one set of limits."""

    point: msgspec.json.Decoder[Any]
    window: msgspec.json.Decoder[Any]
    points: msgspec.json.Decoder[Any]


@functools.lru_cache(maxsize=8)
def _decoders(
    max_abs_value: float | None, max_labels: int, key_chars: int, value_chars: int
) -> _Decoders:
    """The typed fast paths: the common single point and window of plain numbers, with every
    limit but the labels' encoded size checked by msgspec in C. A message they refuse takes
    the general walk, which says exactly what is wrong."""
    value: Any = (
        float
        if max_abs_value is None
        else Annotated[float, msgspec.Meta(ge=-max_abs_value, le=max_abs_value)]
    )
    labels: Any = Annotated[
        dict[
            Annotated[str, msgspec.Meta(max_length=key_chars)],
            Annotated[str, msgspec.Meta(max_length=value_chars)],
        ],
        msgspec.Meta(max_length=max_labels),
    ]
    point = msgspec.defstruct(
        "FlatPoint",
        [
            ("series", _Series),
            ("ts", _Timestamp),
            ("value", value),
            ("labels", labels | None, None),
        ],
        forbid_unknown_fields=True,
    )
    pairs = Annotated[list[tuple[_Timestamp, value]], msgspec.Meta(min_length=1)]
    window = msgspec.defstruct(
        "FlatWindow",
        [("series", _Series), ("points", pairs), ("labels", labels | None, None)],
        forbid_unknown_fields=True,
    )
    return _Decoders(
        msgspec.json.Decoder(point),
        msgspec.json.Decoder(window),
        msgspec.json.Decoder(list[point]),  # type: ignore[valid-type]
    )


#: Encoded labels up to this size are kept as the encoder made them (the small-object
#: allocator's realloc keeps them within 25 % of their size); larger ones are copied into an
#: object of their exact size: shrinking the encoder's buffer in place left a hole of a
#: quarter to a half of it behind each one (5,430 bytes held per 4,096-byte labels).
_COPY_LABELS_OVER = 512

_LABELS_ENCODER = msgspec.json.Encoder()


def encode_labels(labels: dict[str, str]) -> bytes:
    """``labels`` as compact JSON (``{"host":"web-1"}``), the size ``max_labels_bytes``
    bounds, in a bytes object that holds no more memory than it needs."""
    return tight_bytes(_LABELS_ENCODER.encode(labels))


def tight_bytes(raw: bytes) -> bytes:
    """``raw``, copied into an object of its exact size when it is large enough for its
    allocation to have been left larger (see :func:`encode_labels`), to be kept long."""
    return raw if len(raw) <= _COPY_LABELS_OVER else bytes(memoryview(raw))


#: Between two messages when a batch is decoded as one JSON array. JSON strings cannot
#: hold a raw newline, so no string can run from one message into the next.
_JOIN = b",\n"

#: The top-level keys of the input schema.
KNOWN_FIELDS = frozenset({"series", "ts", "value", "points", "labels"})


def decode_message(raw: bytes | None, rules: DecodeRules | int) -> DecodedMessage | Rejection:
    """Decode one message value under ``rules`` (an int: just the size limit, in bytes, and
    the default limits); never raises on bad input."""
    if isinstance(rules, int):
        rules = DecodeRules(rules)
    decoded = _decode(raw, rules)
    if isinstance(decoded, Rejection):
        return decoded
    if len(decoded.ts) == 1:  # most messages: skip the bounds checks below when inside
        ts = decoded.ts[0]
        if (rules.latest is None or ts <= rules.latest) and (
            rules.earliest is None or ts >= rules.earliest
        ):
            return decoded
    if rules.latest is not None and max(decoded.ts) > rules.latest:
        return Rejection(
            "ts_in_future",
            f"timestamp {max(decoded.ts)!r} is after the accepted latest {rules.latest:.0f}"
            " (consume.max_future_s past the wall clock)",
            decoded.series,
        )
    if rules.earliest is not None and min(decoded.ts) < rules.earliest:
        return Rejection(
            "ts_too_old",
            f"timestamp {min(decoded.ts)!r} is before the accepted earliest"
            f" {rules.earliest:.0f} (consume.max_age_s before the wall clock)",
            decoded.series,
        )
    return decoded


def decode_messages(
    raws: Sequence[bytes | None], rules: DecodeRules
) -> list[DecodedMessage | Rejection]:
    """``[decode_message(raw, rules) for raw in raws]``, in one msgspec call when every
    message is a plain single point (the common batch), else message by message.

    The batch is decoded as the JSON array ``[m1,\\n m2, ...]``. Its elements are
    exactly the messages when each message starts with ``{`` and ends with ``}`` and there
    are as many elements as messages: no string spans a boundary (the raw newline), a
    ``{`` after the separator's comma can only start an element (a point has no field whose
    value is an array, and an object key must be a string), so each message starts one
    element, and equal counts leave no room for a message holding two or none. Anything
    else (a window, a timestamp out of bounds, any error) decodes message by message, which
    also says exactly what is wrong. Saves ~0.5 µs of ~2 µs a message.
    """
    if not raws:
        return []
    points = _decode_points(raws, rules)
    if points is None:
        return [decode_message(raw, rules) for raw in raws]
    return points


def _decode_points(
    raws: Sequence[bytes | None], rules: DecodeRules
) -> list[DecodedMessage | Rejection] | None:
    """The bulk path of :func:`decode_messages`; None when the batch does not qualify."""
    if None in raws:
        return None
    messages = cast(Sequence[bytes], raws)  # no None: tested above
    longest = max(map(len, messages))
    if longest > rules.max_bytes:
        return None
    if not all(m[:1] == b"{" and m[-1:] == b"}" for m in messages):
        return None
    joined = _JOIN.join(messages)
    if b'"points"' in joined:
        return None
    try:
        points = rules.decoders.points.decode(b"[" + joined + b"]")
    except msgspec.DecodeError:
        return None
    if len(points) != len(messages):
        return None
    lo = -math.inf if rules.earliest is None else rules.earliest
    hi = math.inf if rules.latest is None else rules.latest
    if longest <= rules.max_labels_bytes:  # no message's labels can encode to more
        return [
            DecodedMessage(p.series, [p.ts], [p.value], p.labels)
            if lo <= p.ts <= hi
            else decode_message(raw, rules)  # says which bound, exactly
            for p, raw in zip(points, messages, strict=True)
        ]
    most = rules.max_labels_bytes
    return [
        DecodedMessage(p.series, [p.ts], [p.value], p.labels)
        if lo <= p.ts <= hi and (p.labels is None or len(raw) <= most)
        else decode_message(raw, rules)  # says which bound, or checks the labels' size
        for p, raw in zip(points, messages, strict=True)
    ]


def _decode(raw: bytes | None, rules: DecodeRules) -> DecodedMessage | Rejection:
    max_bytes = rules.max_bytes
    if raw is None:
        return Rejection("not_json", "message has no value (tombstone)")
    if len(raw) > max_bytes:
        return Rejection("oversized", f"message is {len(raw)} bytes, limit is {max_bytes}")
    # Fast path: a well-formed point or window of plain numbers, typed and validated by
    # msgspec in one C call (JSON numbers are finite or out of range, never NaN; timestamps,
    # values and labels within their limits). Anything else (ISO timestamps, unknown
    # fields, any error) takes the general walk below, which says exactly what is wrong.
    # The form is told by the "points" key, so neither decoder fails on the other's
    # messages (a label value "points" only sends a point to the general walk).
    try:
        if b'"points"' not in raw:
            point = rules.decoders.point.decode(raw)
            decoded = DecodedMessage(point.series, [point.ts], [point.value], point.labels)
        else:
            window = rules.decoders.window.decode(raw)
            pairs = window.points
            decoded = DecodedMessage(
                window.series, [p[0] for p in pairs], [p[1] for p in pairs], window.labels
            )
    except msgspec.DecodeError:
        pass
    else:
        # The labels' encoded size is all msgspec has not checked; it is at most the
        # message's (a string's JSON escapes are never longer than the input's).
        if decoded.labels is None or len(raw) <= rules.max_labels_bytes:
            return decoded
        problem = _labels_problem(decoded.labels, rules)
        if problem is None:
            return decoded
        return Rejection("bad_labels", problem, decoded.series)
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return Rejection("not_json", f"not valid JSON: {exc}")
    if not isinstance(doc, dict):
        return Rejection("not_object", f"expected a JSON object, got {type(doc).__name__}")
    if rules.reject_unknown_fields:
        unknown = sorted(set(doc) - KNOWN_FIELDS)
        if unknown:
            return Rejection(
                "unknown_field",
                f"unknown field(s) {_preview(unknown)}; the schema has {sorted(KNOWN_FIELDS)}",
                doc.get("series") if isinstance(doc.get("series"), str) else None,
            )

    series = doc.get("series")
    if series is None:
        return Rejection("missing_field", "missing field 'series'")
    if not isinstance(series, str) or not series or len(series) > MAX_SERIES_CHARS:
        return Rejection(
            "bad_series",
            f"'series' must be a non-empty string of at most {MAX_SERIES_CHARS}"
            f" characters, got {_preview(series)}",
        )

    labels = doc.get("labels")
    if labels is not None:
        problem = _labels_problem(labels, rules)
        if problem is not None:
            return Rejection("bad_labels", problem, series)

    if "points" in doc:
        return _decode_window(series, doc["points"], labels, rules.max_abs_value)

    for name in ("ts", "value"):
        if name not in doc:
            return Rejection("missing_field", f"missing field '{name}'", series)
    ts = parse_timestamp(doc["ts"])
    if isinstance(ts, str):
        return Rejection("bad_timestamp", ts, series)
    value = _parse_value(doc["value"], rules.max_abs_value)
    if isinstance(value, Rejection):
        return Rejection(value.reason, value.detail, series)
    return DecodedMessage(series, [ts], [value], labels)


def _labels_problem(labels: Any, rules: DecodeRules) -> str | None:
    """What is wrong with ``labels`` (not None) under ``rules``, or None."""
    if not isinstance(labels, dict) or not all(isinstance(v, str) for v in labels.values()):
        return "'labels' must be a mapping of strings"
    if len(labels) > rules.max_labels:
        return (
            f"'labels' has {len(labels)} entries, limit is {rules.max_labels} (consume.max_labels)"
        )
    for key, value in labels.items():
        if len(key) > rules.max_label_key_chars:
            return (
                f"'labels': key {_preview(key)} is {len(key)} characters, limit is"
                f" {rules.max_label_key_chars} (consume.max_label_key_chars)"
            )
        if len(value) > rules.max_label_value_chars:
            return (
                f"'labels': the value of {_preview(key)} is {len(value)} characters, limit is"
                f" {rules.max_label_value_chars} (consume.max_label_value_chars)"
            )
    size = len(_LABELS_ENCODER.encode(labels))
    if size > rules.max_labels_bytes:
        return (
            f"'labels' encode to {size} bytes of JSON, limit is {rules.max_labels_bytes}"
            " (consume.max_labels_bytes)"
        )
    return None


def _decode_window(
    series: str, points: Any, labels: dict[str, str] | None, max_abs_value: float | None
) -> DecodedMessage | Rejection:
    if not isinstance(points, list) or not points:
        return Rejection("bad_points", "'points' must be a non-empty list of [ts, value]", series)
    ts_out: list[float] = []
    values_out: list[float] = []
    for i, point in enumerate(points):
        if not isinstance(point, list) or len(point) != 2:
            return Rejection(
                "bad_points",
                f"points[{i}] must be a [ts, value] pair, got {_preview(point)}",
                series,
            )
        ts = parse_timestamp(point[0])
        if isinstance(ts, str):
            return Rejection("bad_timestamp", f"points[{i}]: {ts}", series)
        value = _parse_value(point[1], max_abs_value)
        if isinstance(value, Rejection):
            return Rejection(value.reason, f"points[{i}]: {value.detail}", series)
        ts_out.append(ts)
        values_out.append(value)
    return DecodedMessage(series, ts_out, values_out, labels)


def parse_timestamp(ts: Any) -> float | str:
    """Epoch seconds from a number or an ISO-8601 string, within :data:`MIN_TS_S` ..
    :data:`MAX_TS_S`; an error message (str) if neither or outside."""
    if isinstance(ts, bool):
        return f"'ts' must be epoch seconds or ISO-8601, got {_preview(ts)}"
    if isinstance(ts, int | float):
        seconds = float(ts)
    elif isinstance(ts, str):
        try:
            parsed = datetime.fromisoformat(ts)
        except ValueError:
            return f"'ts' is not epoch seconds or ISO-8601: {_preview(ts)}"
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        seconds = parsed.timestamp()
    else:
        return f"'ts' must be epoch seconds or ISO-8601, got {_preview(ts)}"
    if not math.isfinite(seconds):
        return f"'ts' is not finite: {_preview(ts)}"
    if not MIN_TS_S <= seconds <= MAX_TS_S:
        shown = _preview(ts) if not isinstance(ts, str) else f"{_preview(ts)} ({seconds!r})"
        hint = "; milliseconds? 'ts' is in seconds" if MAX_TS_S < seconds <= MAX_TS_S * 1000 else ""
        return (
            f"'ts' {shown} is outside the representable range {MIN_TS_S:.0f} .."
            f" {MAX_TS_S:.0f} epoch seconds (1970-01-01T00:00:00Z .. 9999-12-31T23:59:59Z)" + hint
        )
    return seconds


def _parse_value(value: Any, max_abs_value: float | None) -> float | Rejection:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return Rejection("non_numeric_value", f"'value' must be a number, got {_preview(value)}")
    number = float(value)
    if not math.isfinite(number):
        return Rejection("non_finite_value", f"'value' is not finite: {number}")
    if max_abs_value is not None and abs(number) > max_abs_value:
        return Rejection(
            "value_out_of_range",
            f"'value' {number!r} is beyond ±{max_abs_value:g} (consume.max_abs_value)",
        )
    return number


def _preview(obj: Any, limit: int = 60) -> str:
    text = repr(obj)
    return text if len(text) <= limit else text[: limit - 3] + "..."
