"""The evaluation report: a summary page linking one valid PNG per series, with the scores."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from streamrnn.evaluation.nab_score import score_table
from streamrnn.evaluation.report import SeriesReport, write_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _series(name: str, n_rows: int, seed: int) -> SeriesReport:
    """A noisy sine with its forecast, a band, one labelled window and a few alerts."""
    rng = np.random.default_rng(seed)
    timestamps = (
        pd.Timestamp("2022-01-01") + pd.to_timedelta(np.arange(n_rows) * 5, "min")
    ).to_numpy(dtype="datetime64[ns]")
    value = np.sin(np.arange(n_rows) / 20.0) + rng.normal(0, 0.1, n_rows)
    forecast = np.sin(np.arange(n_rows) / 20.0)
    forecast[:10] = np.nan  # no forecast during warm-up
    score = np.clip(np.abs(value - forecast) / 0.5, 0.0, 1.0)
    score[:10] = 0.0
    severity = np.zeros(n_rows, dtype=np.int8)
    severity[[150, 160]] = 1
    severity[155] = 2
    window = (pd.Timestamp(timestamps[140]), pd.Timestamp(timestamps[170]))
    return SeriesReport(
        name=name,
        timestamps=timestamps,
        value=value,
        forecast=forecast,
        lower=forecast - 0.3,
        upper=forecast + 0.3,
        score=score,
        alert_severity=severity,
        windows=[window],
        threshold=0.8,
    )


def test_report_links_a_valid_png_per_series_and_shows_the_scores(tmp_path: Path) -> None:
    series = [
        _series("realTweets/Twitter_volume_AAPL.csv", 300, 1),
        _series("artificial<With>Anomaly/art_&_jumps.csv", 250, 2),  # needs escaping
    ]
    detections = {s.name: (s.timestamps, s.score) for s in series}
    windows = {s.name: list(s.windows) for s in series}
    scores = score_table(detections, windows)
    notes = {"model": "gru-v3 <test>", "config": "hidden: 64\nlayers: 1", "runtime": "12.3 s"}

    index = write_report(tmp_path, series, scores, notes)

    assert index == tmp_path / "report" / "index.html"
    page = index.read_text(encoding="utf-8")
    plots = sorted((tmp_path / "report" / "plots").glob("*.png"))
    assert [p.name for p in plots] == [
        "artificial_With_Anomaly__art___jumps.png",
        "realTweets__Twitter_volume_AAPL.png",
    ]
    links = set(re.findall(r'<a href="([^"]+)"', page))
    assert links == {f"plots/{p.name}" for p in plots}
    for plot in plots:
        data = plot.read_bytes()
        assert data.startswith(PNG_MAGIC)
        width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
        assert (width, height) == (1400, 500)

    for result in scores:
        assert result.profile in page
        assert f"{result.score:.2f}" in page
    assert "Per category" in page
    assert "realTweets" in page
    # Caller text is escaped, never injected as markup.
    assert "gru-v3 &lt;test&gt;" in page
    assert "artificial&lt;With&gt;Anomaly/art_&amp;_jumps.csv" in page
    assert "<With>" not in page
    assert "hidden: 64\nlayers: 1" in page


def test_report_without_series_or_notes_still_writes_the_score_page(tmp_path: Path) -> None:
    series = [_series("c/x.csv", 200, 3)]
    scores = score_table({"c/x.csv": (series[0].timestamps, series[0].score)}, {"c/x.csv": []})
    index = write_report(tmp_path, [], scores, {})
    page = index.read_text(encoding="utf-8")
    assert "standard" in page
    assert "n/a" in page  # no windows: no normalised score
    assert not list((tmp_path / "report" / "plots").glob("*.png"))
