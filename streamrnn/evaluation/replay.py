"""Replay labelled CSV series through the daemon's own engine, as if they came from Kafka.

Each file is one series (named by its path relative to the data folder, e.g.
``realTweets/Twitter_volume_AAPL.csv``), streamed in time order as window messages of
:data:`WINDOW_POINTS` points, all series side by side: every batch goes through
:meth:`streamrnn.engine.engine.Engine.process` — the same state, model step, scoring chain
and alert rule as ``streamrnn run``. The engine's results do not depend on how points are
batched (a series fed one point per batch gets the same forecasts and scores).

A row the engine rejects (e.g. a duplicate timestamp) gets score 0 and no forecast, so the
output keeps one row per input row, as NAB requires.

Knows nothing of Kafka.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pandas as pd

from streamrnn.arrays import FloatArray, Int8Array
from streamrnn.decode import DecodedMessage
from streamrnn.engine.engine import Engine
from streamrnn.stages.interval import AT_95

__all__ = ["ReplayedSeries", "discover_files", "replay_files"]


#: Points per window message in the replay.
WINDOW_POINTS = 256


@dataclass(frozen=True, slots=True)
class ReplayedSeries:
    """One input file after the replay, one entry per input row (in file order)."""

    name: str
    timestamp_text: list[str]
    """The timestamps exactly as in the input file (written back unchanged)."""
    timestamps: npt.NDArray[np.datetime64]
    value: FloatArray
    forecast: FloatArray
    spread: FloatArray
    #: Half-width of the series' calibrated central 95 % interval (value units).
    half_width95: FloatArray
    score: FloatArray
    armed_score: FloatArray
    severity: Int8Array
    rejected: int

    @property
    def alert_score(self) -> FloatArray:
        """The score where an alert fired, else 0: the alert stream as a score column."""
        fired: FloatArray = np.where(self.severity > 0, self.score, 0.0)
        return fired


def discover_files(data_dir: Path) -> list[str]:
    """Relative paths of the ``<category>/<file>.csv`` files under ``data_dir``, sorted."""
    return sorted(p.relative_to(data_dir).as_posix() for p in data_dir.glob("*/*.csv"))


def replay_files(
    engine: Engine,
    data_dir: Path,
    files: Sequence[str],
    progress: Callable[[int, int], None] | None = None,
) -> list[ReplayedSeries]:
    """Stream every file through ``engine``; ``progress(points_done, points_total)``."""
    frames = {name: pd.read_csv(data_dir / name) for name in files}
    parsed = {}
    for name, frame in frames.items():
        stamps = pd.to_datetime(frame["timestamp"], utc=True)
        ts = (stamps - pd.Timestamp(0, tz="UTC")).dt.total_seconds().to_numpy(np.float64)
        parsed[name] = (ts, frame["value"].to_numpy(np.float64))
    total = sum(len(ts) for ts, _ in parsed.values())
    n_rows = {name: len(ts) for name, (ts, _) in parsed.items()}
    out = {name: _empty(n) for name, n in n_rows.items()}
    rejected = dict.fromkeys(files, 0)
    longest = max(n_rows.values(), default=0)
    done = 0
    for start in range(0, longest, WINDOW_POINTS):
        names = [name for name in files if start < n_rows[name]]
        rows = {name: np.arange(start, min(start + WINDOW_POINTS, n_rows[name])) for name in names}
        messages = [
            DecodedMessage(
                name,
                parsed[name][0][rows[name]].tolist(),
                parsed[name][1][rows[name]].tolist(),
                None,
            )
            for name in names
        ]
        result = engine.process(messages)
        for index, _ in result.rejections:
            rejected[names[index]] += 1
        # Map each accepted point back to its row: points of a message keep their order.
        for i, name in enumerate(names):
            mine = result.message_index == i
            ts_in = parsed[name][0][rows[name]]
            position = rows[name][np.searchsorted(ts_in, result.ts[mine])]
            # Duplicate timestamps: the first occurrence is the accepted one.
            arrays = out[name]
            arrays["forecast"][position] = result.forecast[mine]
            arrays["spread"][position] = result.spread[mine]
            arrays["half_width95"][position] = result.half_width[mine, AT_95]
            arrays["score"][position] = result.score[mine]
            arrays["armed_score"][position] = result.armed_score[mine]
            arrays["severity"][position] = result.severity[mine]
        done += sum(len(r) for r in rows.values())
        if progress is not None:
            progress(done, total)
    replayed = []
    for name in files:
        frame = frames[name]
        arrays = out[name]
        replayed.append(
            ReplayedSeries(
                name=name,
                timestamp_text=frame["timestamp"].astype(str).tolist(),
                timestamps=pd.to_datetime(frame["timestamp"]).to_numpy(dtype="datetime64[ns]"),
                value=parsed[name][1],
                forecast=arrays["forecast"],
                spread=arrays["spread"],
                half_width95=arrays["half_width95"],
                score=arrays["score"],
                armed_score=arrays["armed_score"],
                severity=arrays["severity"].astype(np.int8),
                rejected=rejected[name],
            )
        )
    return replayed


def _empty(n: int) -> dict[str, FloatArray]:
    return {
        "forecast": np.full(n, np.nan),
        "spread": np.full(n, np.nan),
        "half_width95": np.full(n, np.nan),
        "score": np.zeros(n),
        "armed_score": np.zeros(n),
        "severity": np.zeros(n),
    }
