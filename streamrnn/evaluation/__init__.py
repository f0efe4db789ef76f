"""Offline evaluation: NAB scoring of replayed series and the HTML report.

``nab_score`` turns per-row anomaly scores of labelled files into NAB's score table;
``report`` draws one plot per series and writes the summary page. Both are pure (numpy,
pandas, matplotlib) and know nothing of Kafka, torch or the engine that made the scores.
"""

from __future__ import annotations

from streamrnn.evaluation.nab_score import (
    PROFILES,
    CorpusScore,
    Detections,
    FileScore,
    Profile,
    Window,
    category_frame,
    format_score_lines,
    load_profiles,
    load_windows,
    read_results_dir,
    score_corpus,
    score_frame,
    score_table,
)
from streamrnn.evaluation.report import SeriesReport, write_report

__all__ = [
    "PROFILES",
    "CorpusScore",
    "Detections",
    "FileScore",
    "Profile",
    "SeriesReport",
    "Window",
    "category_frame",
    "format_score_lines",
    "load_profiles",
    "load_windows",
    "read_results_dir",
    "score_corpus",
    "score_frame",
    "score_table",
    "write_report",
]
