"""Published records: deterministic alert ids and the JSON of alerts and forecasts."""

from __future__ import annotations

import dataclasses
import math

import orjson
import pytest

from streamrnn.records import (
    AlertRecord,
    ForecastRecord,
    HorizonPoint,
    SourcePosition,
    alert_id,
    encode_forecasts,
    iso_time,
)

TS = 1_700_000_000.25

ALERT_FIELDS = {
    "alert_id", "series", "labels", "ts", "time", "value", "forecast", "residual", "spread",
    "score", "threshold", "severity", "rule", "model_version", "source",
}  # fmt: skip


def test_alert_id_is_the_same_for_the_same_series_ts_and_rule() -> None:
    assert alert_id("web-1.cpu", TS, "residual_tail") == alert_id("web-1.cpu", TS, "residual_tail")


@pytest.mark.parametrize(
    "other",
    [
        ("web-2.cpu", TS, "residual_tail"),
        ("web-1.cpu", TS + 0.001, "residual_tail"),
        ("web-1.cpu", TS, "other_rule"),
        # No ambiguity from joining the parts.
        ("web-1.cpu\x1f1700000000.25", TS, "residual_tail"),
    ],
)
def test_alert_id_differs_when_series_ts_or_rule_differ(other: tuple[str, float, str]) -> None:
    assert alert_id(*other) != alert_id("web-1.cpu", TS, "residual_tail")


def test_alert_id_is_a_stable_hex_digest() -> None:
    first = alert_id("s", TS, "residual_tail")
    assert len(first) == 32
    int(first, 16)
    # Stable across processes and releases: subscribers de-duplicate on it.
    assert first == alert_id("s", float(TS), "residual_tail")


def test_iso_time_is_utc_with_milliseconds() -> None:
    assert iso_time(TS) == "2023-11-14T22:13:20.250+00:00"


def _alert() -> AlertRecord:
    return AlertRecord(
        alert_id=alert_id("web-1.cpu", TS, "residual_tail"),
        series="web-1.cpu",
        labels={"host": "web-1", "dc": "eu"},
        ts=TS,
        time=iso_time(TS),
        value=97.5,
        forecast=41.25,
        residual=56.25,
        spread=2.5,
        score=0.9999995,
        threshold=0.99999,
        severity="critical",
        rule="residual_tail",
        model_version="untrained-gru-h64-l1-seed0",
        source=SourcePosition(topic="metrics", partition=3, offset=123456789012),
    )


def test_alert_encodes_to_json_with_every_documented_field() -> None:
    alert = _alert()
    doc = orjson.loads(alert.encode())
    assert set(doc) == ALERT_FIELDS
    assert doc == {
        "alert_id": alert.alert_id,
        "series": "web-1.cpu",
        "labels": {"host": "web-1", "dc": "eu"},
        "ts": TS,
        "time": "2023-11-14T22:13:20.250+00:00",
        "value": 97.5,
        "forecast": 41.25,
        "residual": 56.25,
        "spread": 2.5,
        "score": 0.9999995,
        "threshold": 0.99999,
        "severity": "critical",
        "rule": "residual_tail",
        "model_version": "untrained-gru-h64-l1-seed0",
        "source": {"topic": "metrics", "partition": 3, "offset": 123456789012},
    }


def test_alert_round_trips_through_json() -> None:
    alert = _alert()
    doc = orjson.loads(alert.encode())
    rebuilt = AlertRecord(**{**doc, "source": SourcePosition(**doc["source"])})
    assert rebuilt == alert


def test_forecast_record_of_a_first_point_has_null_forecast_and_bounds() -> None:
    record = ForecastRecord(
        series="s", ts=TS, value=1.0, forecast=None, lower=None, upper=None, score=0.0,
        model_version="m",
    )  # fmt: skip
    assert orjson.loads(record.encode()) == {
        "series": "s", "ts": TS, "value": 1.0, "forecast": None, "lower": None, "upper": None,
        "score": 0.0, "model_version": "m", "horizon": None,
    }  # fmt: skip


def test_encoded_records_never_contain_nan_tokens() -> None:
    raw = dataclasses.replace(_alert(), spread=math.nan).encode()
    assert b"NaN" not in raw
    assert orjson.loads(raw)["spread"] is None


def test_encode_forecasts_equals_encoding_each_record() -> None:
    """One encoder call for a batch gives each record's own bytes, whatever its strings hold
    (a raw newline would split a record in two; JSON escapes it)."""
    horizon = [HorizonPoint(ts=TS + 60, forecast=1.5, lower=math.nan, upper=math.inf)]
    names = ["a", "line\nbreak", 'quote"}\n{"x', "back\\slash\n", "ünï\u2028code", "", "\r\n"]
    records = [
        ForecastRecord(
            series=name,
            ts=TS + i,
            value=float(i),
            forecast=math.nan if i % 2 else 0.5,
            lower=-math.inf,
            upper=None,
            score=0.25 * i,
            model_version=f"m\n{i}",
            horizon=horizon if i % 3 == 0 else None,
        )
        for i, name in enumerate(names)
    ]
    encoded = encode_forecasts(records)
    assert encoded == [record.encode() for record in records]
    assert [orjson.loads(raw)["series"] for raw in encoded] == names
    first = orjson.loads(encoded[1])
    assert first["forecast"] is None and first["lower"] is None  # NaN and -inf: null
    assert orjson.loads(encoded[0])["horizon"] == [
        {"ts": TS + 60, "forecast": 1.5, "lower": None, "upper": None}
    ]
    assert encode_forecasts([]) == []
