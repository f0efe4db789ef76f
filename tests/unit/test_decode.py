"""Decoding metric-point messages: accepted forms, and the reason for every rejection."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from streamrnn.decode import DecodedMessage, Rejection, decode_message

MAX = 1 << 20
TS = 1_700_000_000  # 2023-11-14T22:13:20Z


def _decode(doc: Any, max_bytes: int = MAX) -> DecodedMessage | Rejection:
    return decode_message(orjson.dumps(doc), max_bytes)


def _accepted(doc: Any) -> DecodedMessage:
    result = _decode(doc)
    assert isinstance(result, DecodedMessage), result
    return result


def _rejected(raw: bytes | None, max_bytes: int = MAX) -> Rejection:
    result = decode_message(raw, max_bytes)
    assert isinstance(result, Rejection), result
    assert result.detail, "a rejection must say what was wrong"
    return result


# --- accepted ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ts", "expected"),
    [
        pytest.param(TS, float(TS), id="epoch-int"),
        pytest.param(TS + 0.5, TS + 0.5, id="epoch-float"),
        pytest.param("2023-11-14T22:13:20Z", float(TS), id="iso-z"),
        pytest.param("2023-11-14T22:13:20.250Z", TS + 0.25, id="iso-z-fraction"),
        pytest.param("2023-11-14T23:13:20+01:00", float(TS), id="iso-offset"),
        pytest.param("2023-11-14T17:13:20-05:00", float(TS), id="iso-negative-offset"),
        pytest.param("2023-11-14T22:13:20", float(TS), id="iso-naive-is-utc"),
    ],
)
def test_single_point_timestamp_forms_become_epoch_seconds(ts: Any, expected: float) -> None:
    msg = _accepted({"series": "web-1.cpu", "ts": ts, "value": 0.42})
    assert msg == DecodedMessage("web-1.cpu", [expected], [0.42], None)
    assert all(type(t) is float for t in msg.ts)


def test_integer_value_becomes_float() -> None:
    msg = _accepted({"series": "s", "ts": TS, "value": 3})
    assert msg.values == [3.0]
    assert type(msg.values[0]) is float


def test_labels_are_passed_through() -> None:
    labels = {"host": "web-1", "dc": "eu"}
    assert _accepted({"series": "s", "ts": TS, "value": 1, "labels": labels}).labels == labels


def test_extra_top_level_keys_are_ignored() -> None:
    msg = _accepted({"series": "s", "ts": TS, "value": 1, "unit": "percent", "v": 2})
    assert msg == DecodedMessage("s", [float(TS)], [1.0], None)


def test_window_form_keeps_every_point_in_order() -> None:
    doc = {
        "series": "s",
        "points": [[TS, 1], [TS + 10.5, 2.5], ["2023-11-14T22:13:40Z", -3]],
        "labels": {"a": "b"},
    }
    assert _accepted(doc) == DecodedMessage(
        "s", [float(TS), TS + 10.5, TS + 20.0], [1.0, 2.5, -3.0], {"a": "b"}
    )


def test_naive_iso_time_is_taken_as_utc_whatever_the_local_zone() -> None:
    naive = _accepted({"series": "s", "ts": "2024-06-01T12:00:00", "value": 1}).ts[0]
    assert naive == datetime(2024, 6, 1, 12, tzinfo=UTC).timestamp()


# --- rejected ------------------------------------------------------------------------------


def test_oversized_message_is_rejected_unparsed() -> None:
    raw = orjson.dumps({"series": "s", "ts": TS, "value": 1, "pad": "x" * 200})
    rejection = _rejected(raw, max_bytes=100)
    assert rejection.reason == "oversized"
    assert str(len(raw)) in rejection.detail
    assert "100" in rejection.detail


def test_message_exactly_at_the_limit_is_accepted() -> None:
    raw = orjson.dumps({"series": "s", "ts": TS, "value": 1})
    assert isinstance(decode_message(raw, len(raw)), DecodedMessage)


@pytest.mark.parametrize(
    ("raw", "detail"),
    [
        pytest.param(b"\x00\xff garbage", "JSON", id="garbage-bytes"),
        pytest.param(b'{"series": "s", "ts": 1, "value": NaN}', "JSON", id="nan-literal"),
        pytest.param(b'{"series": "s", "ts": 1, "value": Infinity}', "JSON", id="inf-literal"),
        pytest.param(b'{"series": "s", "ts": 1, "value": 1e400}', "JSON", id="overflowing-number"),
        pytest.param(b'{"series": "s", "ts": 1,', "JSON", id="truncated"),
        pytest.param(b"", "JSON", id="empty"),
        pytest.param(None, "tombstone", id="tombstone"),
    ],
)
def test_not_json_is_rejected(raw: bytes | None, detail: str) -> None:
    rejection = _rejected(raw)
    assert rejection.reason == "not_json"
    assert detail in rejection.detail


@pytest.mark.parametrize(
    ("raw", "type_name"),
    [(b"[1, 2]", "list"), (b"42", "int"), (b'"text"', "str"), (b"null", "NoneType")],
)
def test_json_that_is_not_an_object_is_rejected(raw: bytes, type_name: str) -> None:
    rejection = _rejected(raw)
    assert rejection.reason == "not_object"
    assert type_name in rejection.detail


@pytest.mark.parametrize(
    ("doc", "field"),
    [
        ({"ts": TS, "value": 1}, "series"),
        ({"series": None, "ts": TS, "value": 1}, "series"),
        ({"series": "s", "value": 1}, "ts"),
        ({"series": "s", "ts": TS}, "value"),
    ],
)
def test_missing_field_is_named(doc: dict[str, Any], field: str) -> None:
    rejection = _rejected(orjson.dumps(doc))
    assert rejection.reason == "missing_field"
    assert f"'{field}'" in rejection.detail


@pytest.mark.parametrize("series", ["", 42, ["a"], {"a": "b"}, True, "x" * 513])
def test_bad_series_is_rejected(series: Any) -> None:
    rejection = _rejected(orjson.dumps({"series": series, "ts": TS, "value": 1}))
    assert rejection.reason == "bad_series"
    assert "'series'" in rejection.detail
    assert rejection.series is None


@pytest.mark.parametrize(
    ("ts", "shown"),
    [
        (True, "True"),
        ("yesterday", "'yesterday'"),
        ("2023-13-45T99:00:00Z", "2023-13-45"),
        ({"epoch": TS}, "epoch"),
        ([TS], str(TS)),
        (None, "None"),
    ],
)
def test_bad_timestamp_is_rejected_and_shown(ts: Any, shown: str) -> None:
    rejection = _rejected(orjson.dumps({"series": "s", "ts": ts, "value": 1}))
    assert rejection.reason == "bad_timestamp"
    assert "'ts'" in rejection.detail
    assert shown in rejection.detail
    assert rejection.series == "s"


@pytest.mark.parametrize(
    ("value", "shown"),
    [("0.4", "'0.4'"), (True, "True"), (None, "None"), ([1], "[1]"), ({"v": 1}, "'v'")],
)
def test_non_numeric_value_is_rejected(value: Any, shown: str) -> None:
    rejection = _rejected(orjson.dumps({"series": "s", "ts": TS, "value": value}))
    assert rejection.reason == "non_numeric_value"
    assert "'value'" in rejection.detail
    assert shown in rejection.detail
    assert rejection.series == "s"


@pytest.mark.parametrize(
    "labels",
    [{"host": 1}, {"host": None}, {"host": {"nested": "x"}}, ["host"], "host=web-1"],
)
def test_bad_labels_are_rejected(labels: Any) -> None:
    rejection = _rejected(orjson.dumps({"series": "s", "ts": TS, "value": 1, "labels": labels}))
    assert rejection.reason == "bad_labels"
    assert "'labels'" in rejection.detail
    assert rejection.series == "s"


@pytest.mark.parametrize(
    ("points", "detail"),
    [
        pytest.param([], "non-empty list", id="empty"),
        pytest.param({"0": [TS, 1]}, "non-empty list", id="not-a-list"),
        pytest.param([[TS, 1], [TS + 1]], "points[1]", id="short-pair"),
        pytest.param([[TS, 1], [TS + 1, 2, 3]], "points[1]", id="long-triple"),
        pytest.param([[TS, 1], {"ts": TS + 1, "value": 2}], "points[1]", id="object-point"),
        pytest.param([TS, 1], "points[0]", id="flat-pair"),
    ],
)
def test_bad_points_are_rejected(points: Any, detail: str) -> None:
    rejection = _rejected(orjson.dumps({"series": "s", "points": points}))
    assert rejection.reason == "bad_points"
    assert detail in rejection.detail
    assert rejection.series == "s"


@pytest.mark.parametrize(
    ("bad_point", "reason"),
    [
        ([True, 1], "bad_timestamp"),
        (["soon", 1], "bad_timestamp"),
        ([TS + 2, "1"], "non_numeric_value"),
    ],
)
def test_one_bad_point_rejects_the_whole_window_naming_its_index(
    bad_point: list[Any], reason: str
) -> None:
    points = [[TS, 1], [TS + 1, 2], bad_point, [TS + 3, 4]]
    rejection = _rejected(orjson.dumps({"series": "s", "points": points}))
    assert rejection.reason == reason
    assert rejection.detail.startswith("points[2]: ")
    assert rejection.series == "s"


# --- never raises --------------------------------------------------------------------------


def test_random_bytes_never_raise() -> None:
    rng = random.Random(20240601)
    alphabet = b'{}[]":,0123456789.eE+-tfnrulsaNI \\\x00\xff'
    for _ in range(3000):
        n = rng.randint(0, 80)
        if rng.random() < 0.5:
            raw = bytes(rng.getrandbits(8) for _ in range(n))
        else:
            raw = bytes(rng.choice(alphabet) for _ in range(n))
        result = decode_message(raw, 64)
        assert isinstance(result, DecodedMessage | Rejection)


_ATOMS: list[Any] = [
    None, True, False, 0, -1, 2.5, 1e308, -(2**63), 2**64 - 1, "", "s", "0.4", "nan",
    "2023-11-14T22:13:20Z", "0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00",
    [], {}, [TS, 1], [[TS, 1]], [[TS, "x"]], {"k": "v"}, {"k": 1},
]  # fmt: skip


def _random_value(rng: random.Random, depth: int = 0) -> Any:
    roll = rng.random()
    if depth < 2 and roll < 0.15:
        return [_random_value(rng, depth + 1) for _ in range(rng.randint(0, 3))]
    if depth < 2 and roll < 0.25:
        keys = ["series", "ts", "value", "labels", "points", "k"]
        return {rng.choice(keys): _random_value(rng, depth + 1) for _ in range(rng.randint(0, 3))}
    return rng.choice(_ATOMS)


def test_random_json_documents_never_raise_and_accepted_ones_are_well_typed() -> None:
    rng = random.Random(7)
    for _ in range(3000):
        keys = rng.sample(["series", "ts", "value", "labels", "points", "extra"], rng.randint(0, 6))
        doc = {k: _random_value(rng) for k in keys}
        if rng.random() < 0.7:
            doc["series"] = rng.choice(["s", "t"])
        try:
            raw = orjson.dumps(doc)
        except orjson.JSONEncodeError:
            continue
        result = decode_message(raw, MAX)
        if isinstance(result, DecodedMessage):
            assert isinstance(result.series, str) and result.series
            assert len(result.ts) == len(result.values) >= 1
            assert all(type(x) is float for x in (*result.ts, *result.values))
        else:
            assert isinstance(result, Rejection)
            assert result.reason and result.detail


def test_timestamps_beyond_the_future_bound_are_rejected() -> None:
    from streamrnn.decode import DecodeRules

    rules = DecodeRules(max_bytes=4096, latest=2_000.0)
    ok = decode_message(orjson.dumps({"series": "a", "ts": 2_000.0, "value": 1}), rules)
    assert isinstance(ok, DecodedMessage)
    late = decode_message(orjson.dumps({"series": "a", "ts": 2_000.5, "value": 1}), rules)
    assert isinstance(late, Rejection) and late.reason == "ts_in_future"
    window = {"series": "a", "points": [[1_000, 1], [3_000, 2]]}
    rejected = decode_message(orjson.dumps(window), rules)
    assert isinstance(rejected, Rejection) and rejected.reason == "ts_in_future"
    assert rejected.series == "a"


def test_timestamps_before_the_age_bound_are_rejected() -> None:
    from streamrnn.decode import DecodeRules

    rules = DecodeRules(max_bytes=4096, earliest=1_000.0)
    old = decode_message(orjson.dumps({"series": "a", "ts": 999, "value": 1}), rules)
    assert isinstance(old, Rejection) and old.reason == "ts_too_old"
    assert isinstance(
        decode_message(orjson.dumps({"series": "a", "ts": 1_000, "value": 1}), rules),
        DecodedMessage,
    )


def test_unknown_fields_are_ignored_unless_configured_to_reject() -> None:
    from streamrnn.decode import DecodeRules

    raw = orjson.dumps({"series": "a", "ts": 1, "value": 1, "host": "web-1"})
    assert isinstance(decode_message(raw, DecodeRules(max_bytes=4096)), DecodedMessage)
    strict = decode_message(raw, DecodeRules(max_bytes=4096, reject_unknown_fields=True))
    assert isinstance(strict, Rejection) and strict.reason == "unknown_field"
    assert "host" in strict.detail and strict.series == "a"


@pytest.mark.parametrize(
    "doc",
    [
        {"series": "a", "ts": 1_700_000_000, "value": 3},
        {"series": "a", "ts": 1_700_000_000.5, "value": -0.25},
        {"series": "", "ts": 1.0, "value": 1.0},
        {"series": "a", "ts": True, "value": 1.0},
        {"series": "a", "ts": 1.0, "value": False},
        {"series": "a", "ts": "2023-11-14T22:13:20Z", "value": 1.0},
        {"series": "a", "ts": 1.0, "value": "1"},
        {"series": 5, "ts": 1.0, "value": 1.0},
        {"series": "x" * 513, "ts": 1.0, "value": 1.0},
    ],
)
def test_the_flat_point_fast_path_decodes_like_the_general_path(doc: dict[str, object]) -> None:
    """Three-key messages take a fast path; with an extra (ignored) key the same message
    takes the general one: both must give the same result."""
    fast = decode_message(orjson.dumps(doc), 1 << 20)
    general = decode_message(orjson.dumps({**doc, "extra": 1}), 1 << 20)
    assert fast == general
