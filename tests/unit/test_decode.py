"""Decoding metric-point messages: accepted forms, and the reason for every rejection."""

from __future__ import annotations

import math
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


# --- bounds that hold whatever the configuration (issue 19) -----------------------------

from streamrnn.decode import MAX_TS_S, MIN_TS_S, DecodeRules, decode_messages  # noqa: E402


def _forms(ts: Any = TS, value: Any = 1.0, **extra: Any) -> dict[str, bytes]:
    """One point in each form a decode path takes: the single-point fast path, the general
    walk (an ignored extra key), a window on the fast path, a window on the general walk
    (an ISO timestamp in another point)."""
    return {
        "single": orjson.dumps({"series": "s", "ts": ts, "value": value, **extra}),
        "single-general": orjson.dumps({"series": "s", "ts": ts, "value": value, "x": 1, **extra}),
        "window": orjson.dumps({"series": "s", "points": [[ts, value]], **extra}),
        "window-general": orjson.dumps(
            {"series": "s", "points": [["1970-01-01T00:00:00Z", 0], [ts, value]], **extra}
        ),
    }


FORMS = ["single", "single-general", "window", "window-general"]


def _on_every_path(raw: bytes, rules: DecodeRules) -> DecodedMessage | Rejection:
    """Decode ``raw`` alone and in a batch of plain points (the bulk path); both must agree."""
    alone = decode_message(raw, rules)
    plain = orjson.dumps({"series": "p", "ts": TS, "value": 1})
    assert decode_messages([plain, raw, plain], rules)[1] == alone
    return alone


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize(
    "ts",
    [
        pytest.param(MIN_TS_S, id="epoch-0"),
        pytest.param(0, id="epoch-int-0"),
        pytest.param(MAX_TS_S, id="9999-12-31T23:59:59Z"),
        pytest.param("1970-01-01T00:00:00Z", id="iso-min"),
        pytest.param("9999-12-31T23:59:59Z", id="iso-max"),
        pytest.param("1970-01-01T01:00:00+01:00", id="iso-min-with-offset"),
    ],
)
def test_timestamps_at_the_representable_bounds_are_accepted(form: str, ts: Any) -> None:
    result = _on_every_path(_forms(ts)[form], DecodeRules(MAX))
    assert isinstance(result, DecodedMessage), result
    assert MIN_TS_S <= result.ts[-1] <= MAX_TS_S


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize(
    "ts",
    [
        pytest.param(-1e11, id="year-minus-1199"),
        pytest.param(-0.001, id="just-before-1970"),
        pytest.param(-1, id="epoch-int-minus-1"),
        pytest.param(MAX_TS_S + 0.001, id="just-after-9999"),
        pytest.param(1e300, id="huge"),
        pytest.param(-(2**63), id="int64-min"),
        pytest.param("1969-12-31T23:59:59Z", id="iso-1969"),
        pytest.param("0001-01-01T00:00:00+14:00", id="iso-year-0-after-conversion"),
        pytest.param("9999-12-31T23:59:59-14:00", id="iso-year-10000-after-conversion"),
    ],
)
def test_timestamps_outside_the_representable_range_are_bad_whatever_the_rules(
    form: str, ts: Any
) -> None:
    """No max_age_s (a replay) and no future bound: the range still holds."""
    raw = _forms(ts)[form]
    for rules in (DecodeRules(MAX), DecodeRules(MAX, earliest=-1e20, latest=1e20)):
        rejection = _on_every_path(raw, rules)
        assert isinstance(rejection, Rejection), rejection
        assert rejection.reason == "bad_timestamp"
        assert "'ts'" in rejection.detail and "representable" in rejection.detail
        assert "1970-01-01T00:00:00Z .. 9999-12-31T23:59:59Z" in rejection.detail
        assert rejection.series == "s"
        if form.startswith("window"):
            assert rejection.detail.startswith(f"points[{1 if 'general' in form else 0}]: ")


def test_a_timestamp_in_milliseconds_is_bad_not_in_the_future_and_says_so() -> None:
    rules = DecodeRules(MAX, latest=TS + 86_400)
    rejection = decode_message(orjson.dumps({"series": "s", "ts": TS * 1000, "value": 1}), rules)
    assert isinstance(rejection, Rejection) and rejection.reason == "bad_timestamp"
    assert "milliseconds?" in rejection.detail


def test_an_iso_timestamp_out_of_range_shows_the_string_and_its_epoch_seconds() -> None:
    rejection = _rejected(
        orjson.dumps({"series": "s", "ts": "0001-01-01T00:00:00+14:00", "value": 1})
    )
    assert "'0001-01-01T00:00:00+14:00' (-62135647200.0)" in rejection.detail


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("value", [1e15, -1e15, 10**15, 0.0, -0.0, 123.5])
def test_values_up_to_max_abs_value_are_accepted(form: str, value: float) -> None:
    result = _on_every_path(_forms(value=value)[form], DecodeRules(MAX))
    assert isinstance(result, DecodedMessage), result
    assert result.values[-1] == value


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize(
    "value", [math.nextafter(1e15, math.inf), -math.nextafter(1e15, math.inf), 10**15 + 1, 1e300]
)
def test_values_beyond_max_abs_value_are_out_of_range(form: str, value: float) -> None:
    rejection = _on_every_path(_forms(value=value)[form], DecodeRules(MAX))
    assert isinstance(rejection, Rejection), rejection
    assert rejection.reason == "value_out_of_range"
    assert "'value'" in rejection.detail and "consume.max_abs_value" in rejection.detail
    assert rejection.series == "s"
    if form.startswith("window"):
        assert rejection.detail.startswith(f"points[{1 if 'general' in form else 0}]: ")


@pytest.mark.parametrize("form", FORMS)
def test_max_abs_value_is_configurable_and_none_accepts_any_finite_value(form: str) -> None:
    small = DecodeRules(MAX, max_abs_value=10.0)
    assert isinstance(_on_every_path(_forms(value=10)[form], small), DecodedMessage)
    over = _on_every_path(_forms(value=10.5)[form], small)
    assert isinstance(over, Rejection) and over.reason == "value_out_of_range"
    unbounded = DecodeRules(MAX, max_abs_value=None)
    assert isinstance(_on_every_path(_forms(value=-1.7e308)[form], unbounded), DecodedMessage)


def _labels_of_size(size: int, count: int = 1, fill: str = "v") -> dict[str, str]:
    """``count`` labels whose compact JSON is exactly ``size`` bytes, their values made of
    ``fill`` (padded with ``v``)."""
    keys = [f"k{j:02d}" for j in range(count)]
    room = size - (2 + (count - 1) + 5 * count + sum(map(len, keys)))
    unit = len(orjson.dumps(fill)) - 2
    shares = [room // count + (1 if j < room % count else 0) for j in range(count)]
    labels = {
        key: fill * (share // unit) + "v" * (share % unit)
        for key, share in zip(keys, shares, strict=True)
    }
    assert len(orjson.dumps(labels)) == size
    return labels


def _label_cases() -> list[Any]:
    return [
        pytest.param({f"k{j}": "v" for j in range(32)}, "consume.max_labels", id="32-entries"),
        pytest.param({"k" * 128: "v"}, "consume.max_label_key_chars", id="key-128-chars"),
        pytest.param({"é" * 128: "v"}, "consume.max_label_key_chars", id="key-128-non-ascii"),
        pytest.param({"k": "v" * 1024}, "consume.max_label_value_chars", id="value-1024"),
        pytest.param({"k": "😀" * 1022}, "consume.max_labels_bytes", id="value-4-byte-chars"),
        pytest.param(_labels_of_size(4096, 4), "consume.max_labels_bytes", id="4096-bytes"),
        pytest.param(_labels_of_size(4096, 32), "consume.max_labels_bytes", id="4096-bytes-32"),
        pytest.param(
            _labels_of_size(4096, 4, fill="\\"), "consume.max_labels_bytes", id="4096-escaped"
        ),
    ]


def _one_over(labels: dict[str, str], limit: str) -> dict[str, str]:
    """``labels`` made one over the ``limit`` they are at."""
    key, value = next(iter(labels.items()))
    if limit == "consume.max_labels":
        return {**labels, "extra": "v"}
    if limit == "consume.max_label_key_chars":
        return {key + key[0]: value}
    if limit == "consume.max_label_value_chars":
        return {key: value + "v"}
    return {**labels, key: value + "v"}  # one more byte


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize(("labels", "limit"), _label_cases())
def test_labels_exactly_at_each_limit_are_accepted(
    form: str, labels: dict[str, str], limit: str
) -> None:
    result = _on_every_path(_forms(labels=labels)[form], DecodeRules(MAX))
    assert isinstance(result, DecodedMessage), result
    assert result.labels == labels


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize(("labels", "limit"), _label_cases())
def test_labels_one_over_a_limit_are_rejected_naming_it(
    form: str, labels: dict[str, str], limit: str
) -> None:
    over = _one_over(labels, limit)
    rejection = _on_every_path(_forms(labels=over)[form], DecodeRules(MAX))
    assert isinstance(rejection, Rejection), rejection
    assert rejection.reason == "bad_labels"
    assert "'labels'" in rejection.detail
    assert limit in rejection.detail, rejection.detail
    assert rejection.series == "s"


@pytest.mark.parametrize("form", FORMS)
def test_label_limits_are_configurable(form: str) -> None:
    rules = DecodeRules(
        MAX, max_labels=2, max_label_key_chars=3, max_label_value_chars=4, max_labels_bytes=22
    )
    fits = {"abc": "wxyz", "d": "v"}  # {"abc":"wxyz","d":"v"}: 22 bytes
    assert isinstance(_on_every_path(_forms(labels=fits)[form], rules), DecodedMessage)
    for over, limit in [
        ({"a": "1", "b": "2", "c": "3"}, "consume.max_labels"),
        ({"abcd": "v"}, "consume.max_label_key_chars"),
        ({"a": "vwxyz"}, "consume.max_label_value_chars"),
        ({"abc": "wxyz", "d": "vw"}, "consume.max_labels_bytes"),  # 23 bytes
    ]:
        rejection = _on_every_path(_forms(labels=over)[form], rules)
        assert isinstance(rejection, Rejection) and rejection.reason == "bad_labels", over
        assert limit in rejection.detail


def test_bad_labels_are_reported_before_a_bad_value_or_timestamp_on_every_path() -> None:
    """The fast paths give up on the value or timestamp; the general walk, which says
    why, checks the labels first: the same reason either way."""
    big = {"k": "v" * 1025}
    for doc in (
        {"series": "s", "ts": TS, "value": 1e16, "labels": big},
        {"series": "s", "ts": -1, "value": 1, "labels": big},
    ):
        rejection = _on_every_path(orjson.dumps(doc), DecodeRules(MAX))
        assert isinstance(rejection, Rejection) and rejection.reason == "bad_labels"


def test_empty_labels_are_within_every_limit() -> None:
    rules = DecodeRules(MAX, max_labels=0)
    assert _on_every_path(_forms(labels={})["single"], rules) == DecodedMessage(
        "s", [float(TS)], [1.0], {}
    )


# --- the labels a series keeps: what decoding let through, as compact JSON ------------------


def test_a_series_keeps_its_latest_labels_as_the_bounded_json_and_they_survive_eviction(
    tmp_path: Any,
) -> None:
    import numpy as np

    from streamrnn.decode import encode_labels
    from streamrnn.state.manager import GroupInfo, SeriesStateManager
    from streamrnn.state.series_table import SeriesTable
    from streamrnn.state.store import LocalStateStore

    largest = _labels_of_size(4096, 32, fill="é")
    decoded = decode_message(
        orjson.dumps({"series": "a", "ts": TS, "value": 1, "labels": largest}), MAX
    )
    assert isinstance(decoded, DecodedMessage) and decoded.labels == largest

    table = SeriesTable(4)
    table.add_column("group", dtype=np.int64)
    table.add_column("state.global", shape=(1, 2), dtype=np.float32)
    manager = SeriesStateManager(
        table,
        LocalStateStore(tmp_path / "s.sqlite"),
        [GroupInfo("v1", "state.global")],
        lambda _: 0,
    )
    slots = table.resolve(["a", "b", "c"], [decoded.labels, {"h": "x"}, {}])
    a, b, c = slots.tolist()
    assert table.labels_json_of(a) == encode_labels(largest) == orjson.dumps(largest)
    assert len(table.labels_json_of(a) or b"") == 4096
    assert table.labels_of(a) == largest and table.labels_of(b) == {"h": "x"}
    assert table.labels_of(c) is None  # empty labels are kept as none
    table.resolve(["b", "c"], [None, {"new": "y"}])  # None keeps, a mapping replaces
    assert table.labels_of(b) == {"h": "x"} and table.labels_of(c) == {"new": "y"}

    manager.note_processed(slots, np.full(3, manager.partition_id("in", 0)))
    states = {s.name: s for _, s in manager.take_dirty({("in", 0): 9})}
    assert orjson.loads(states["a"].labels or "null") == largest
    assert manager.evict_least_recent(3) == 3 and len(table) == 0
    assert manager.load(["a", "b", "c"]) == 3
    for name, labels in [("a", largest), ("b", {"h": "x"}), ("c", {"new": "y"})]:
        slot = table.slot_of(name)
        assert slot is not None and table.labels_of(slot) == labels
