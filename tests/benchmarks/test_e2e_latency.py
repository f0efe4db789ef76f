"""Fast checks of the latency test's message encoding and record decoding (no broker)."""

from __future__ import annotations

import array

import numpy as np
import orjson
import pytest

from streamrnn.records import ForecastRecord
from tests.benchmarks.e2e import print_tail_by_second
from tests.benchmarks.e2e_latency import _decode_forecasts
from tests.benchmarks.e2e_load import Stream, encode_points


def test_points_are_encoded_as_separate_json_messages() -> None:
    names = ["lat.00000", "lat.00001"]
    series, ts, values = (
        [0, 1, 0],
        [1_700_000_000.125, 1_700_000_000.5, 1_700_000_001.0],
        [
            12.5,
            -0.0001,
            1e6,
        ],
    )
    keys, docs = encode_points(Stream(names, np.array(series), np.array(ts), np.array(values)))
    assert keys == [names[s].encode() for s in series]
    assert docs == [
        orjson.dumps({"series": names[s], "ts": t, "value": v})
        for s, t, v in zip(series, ts, values, strict=True)
    ]
    assert all(type(doc) is bytes for doc in docs)  # what Producer.produce() accepts


def test_forecast_records_kept_end_to_end_decode_to_series_and_ts() -> None:
    records = [
        ForecastRecord("lat.00007", 1_700_000_000.123, 5.0, None, None, None, 0.0, "v1"),
        ForecastRecord("lat.00123", 1_700_000_001.5, 5.0, 4.9, 4.0, 5.8, 0.3, "v1"),
    ]
    values, ends = bytearray(), array.array("q")
    for record in records:
        values.extend(record.encode())
        ends.append(len(values))
    series, ts = _decode_forecasts(values, ends, len("lat."))
    assert series.tolist() == [7, 123]
    assert ts.tolist() == [1_700_000_000.123, 1_700_000_001.5]


def test_tail_by_second_prints_total_and_daemon_side_after_the_warmup_marker(
    capsys: pytest.CaptureFixture[str],
) -> None:
    offered_s = np.array([0.1, 0.5, 1.2, 1.9, 2.4])
    total_ms = np.array([10.0, 10.0, 300.0, 300.0, 40.0])
    daemon_ms = np.array([5.0, 5.0, 20.0, 20.0, 30.0])
    print_tail_by_second(offered_s, total_ms, daemon_ms, 1_700_000_000.0, warmup_s=2.0)
    line = capsys.readouterr().out
    # second 1 stalled after the daemon (only the total is high); '|' before second 2
    assert line.rstrip().endswith("0:10/5 1:300/20 | 2:40/30")
    assert "22:13:20.000 UTC" in line
