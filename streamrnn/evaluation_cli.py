"""``streamrnn evaluate``: replay labelled series through the engine, score, and report.

Writes, under ``--out``: one CSV per input file in NAB layout
(``<category>/<file>.csv`` with ``timestamp,value,anomaly_score``), ``scores.txt`` (the
NAB score table for the three profiles and a per-category breakdown) and the HTML report
(``report/index.html``). The ``anomaly_score`` written is the score of every point at
which the alert rule fired an alert, else 0: the file *is* the alert stream the daemon
would have produced, and NAB's threshold sweep over it can only keep or drop alerts (as
raising ``scoring.alert.warning_threshold`` would), never add any.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)

from streamrnn.config import Settings
from streamrnn.engine.build import build_engine
from streamrnn.evaluation import nab_score
from streamrnn.evaluation.replay import ReplayedSeries, discover_files, replay_files
from streamrnn.evaluation.report import SeriesReport, write_report
from streamrnn.forecast.artifact import ArtifactError

__all__ = ["run_evaluation"]


def run_evaluation(settings: Settings, args: argparse.Namespace) -> int:
    """Evaluate as ``args`` ask; returns the exit code."""
    console = Console(stderr=True)
    data_dir: Path = args.data
    out_dir: Path = args.out
    files = discover_files(data_dir)
    if not files:
        print(f"streamrnn evaluate: no <category>/<file>.csv under {data_dir}", file=sys.stderr)
        return 2
    try:
        windows = nab_score.load_windows(args.labels)
        profiles = nab_score.load_profiles(args.profiles)
        engine = build_engine(settings)
    except (OSError, ValueError, ArtifactError) as exc:
        print(f"streamrnn evaluate: {exc}", file=sys.stderr)
        return 2
    engine.warm_up()  # compile the kernel before the replay is timed
    unlabelled = [f for f in files if f not in windows]
    if unlabelled:
        console.print(f"[yellow]{len(unlabelled)} file(s) have no labels and are not scored[/]")
    started = time.perf_counter()
    with Progress(
        TextColumn("[bold]replaying[/]"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("points"),
        TimeElapsedColumn(),
        console=console,
    ) as bar:
        task = bar.add_task("replay", total=None)
        replayed = replay_files(
            engine,
            data_dir,
            files,
            lambda done, total: bar.update(task, completed=done, total=total),
        )
    seconds = time.perf_counter() - started
    _write_results(out_dir, replayed)
    detections = {s.name: (s.timestamps, s.alert_score) for s in replayed if s.name in windows}
    scores = nab_score.score_table(detections, windows, profiles)
    lines = nab_score.format_score_lines(scores)
    points = sum(len(s.value) for s in replayed)
    lines.append(
        f"{len(replayed)} files, {points:,} points replayed in {seconds:.1f} s"
        f" ({points / max(seconds, 1e-9):,.0f} points/s); model {engine.model_version}"
    )
    (out_dir / "scores.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))
    if not args.no_report:
        standard = next((s for s in scores if s.profile == "standard"), scores[0])
        index = write_report(
            out_dir,
            [_series_report(s, windows.get(s.name, []), standard.threshold) for s in replayed],
            scores,
            _notes(settings, engine.model_version, seconds, points),
        )
        console.print(f"Report: {index}")
    return 0


def _write_results(out_dir: Path, replayed: list[ReplayedSeries]) -> None:
    for s in replayed:
        path = out_dir / s.name
        path.parent.mkdir(parents=True, exist_ok=True)
        pd.DataFrame(
            {"timestamp": s.timestamp_text, "value": s.value, "anomaly_score": s.alert_score}
        ).to_csv(path, index=False)


def _series_report(
    s: ReplayedSeries, windows: list[nab_score.Window], threshold: float
) -> SeriesReport:
    return SeriesReport(
        name=s.name,
        timestamps=s.timestamps,
        value=s.value,
        forecast=s.forecast,
        lower=s.forecast - s.half_width95,
        upper=s.forecast + s.half_width95,
        score=s.score,
        alert_severity=s.severity,
        windows=windows,
        threshold=threshold,
    )


def _notes(settings: Settings, version: str, seconds: float, points: int) -> dict[str, str]:
    artifact = settings.model.artifact
    return {
        "model": version,
        "model origin": (
            f"artifact {artifact} (trained offline on data other than the evaluated files)"
            if artifact is not None
            else "untrained (seeded weights); normaliser and calibration learn online"
        ),
        "scoring": settings.scoring.model_dump_json(indent=2),
        "anomaly_score": "the score where the alert rule fired an alert, else 0",
        "runtime": f"{seconds:.1f} s for {points:,} points",
        "python": sys.version.split()[0],
        "numpy": np.__version__,
    }
