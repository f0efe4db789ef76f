"""The daemon's forecast records, built from arrays for speed, carry exactly the fields of
:class:`streamrnn.records.ForecastRecord` in its order, with its values."""

from __future__ import annotations

import msgspec
import numpy as np
import orjson

from streamrnn.config import load_settings
from streamrnn.decode import DecodedMessage
from streamrnn.engine.build import build_engine
from streamrnn.metrics import DaemonMetrics
from streamrnn.publisher import Publisher
from streamrnn.records import ForecastRecord
from streamrnn.stages.interval import LEVELS


class Recorder:
    """Collects what would be produced (the encoding is under test, not delivery)."""

    def __init__(self) -> None:
        self.records: list[tuple[str, bytes, bytes]] = []

    def send_many(self, topic: str, keys: list[bytes], values: list[bytes]) -> None:
        self.records += [(topic, k, v) for k, v in zip(keys, values, strict=True)]


AT_95 = LEVELS.index(0.95)


def test_forecast_records_match_the_documented_record() -> None:
    engine = build_engine(load_settings(None, model={"horizon_points": 2}))
    messages = [
        DecodedMessage(f"s{i % 3}", [1_700_000_000.0 + 60 * (i // 3)], [float(i % 5)], None)
        for i in range(30)
    ]
    batch = engine.process(messages)
    sink = Recorder()
    publisher = Publisher(
        sink,  # type: ignore[arg-type]
        engine,
        None,  # type: ignore[arg-type]  (counts: no alert or rejection here)
        DaemonMetrics(),
        "a",
        "f",
        None,
        0,
    )
    publisher.forecasts(batch, messages, [])
    assert len(sink.records) == len(batch) == 30
    names = [f.name for f in msgspec.structs.fields(ForecastRecord)]
    horizons = 0
    for i, (topic, key, value) in enumerate(sink.records):
        doc = orjson.loads(value)
        assert topic == "f" and key == doc["series"].encode()
        assert list(doc) == names
        forecast = float(batch.forecast[i])
        expected = ForecastRecord(
            series=messages[int(batch.message_index[i])].series,
            ts=float(batch.ts[i]),
            value=float(batch.value[i]),
            forecast=forecast if np.isfinite(forecast) else None,
            lower=forecast - float(batch.half_width[i, AT_95]) if np.isfinite(forecast) else None,
            upper=forecast + float(batch.half_width[i, AT_95]) if np.isfinite(forecast) else None,
            score=float(batch.score[i]),
            model_version=engine.groups[int(batch.group[i])].version,
            horizon=None,
        )
        got = {**doc, "horizon": None}
        assert got == orjson.loads(expected.encode())
        if doc["horizon"] is not None:
            horizons += 1
            assert [list(h) for h in doc["horizon"]] == [["ts", "forecast", "lower", "upper"]] * 2
    assert horizons == 3  # on each series' last point of the batch
    # A series' first point has no forecast: null forecast and bounds (orjson's NaN).
    assert sum(orjson.loads(v)["lower"] is None for _, _, v in sink.records) == 3
