"""Offline training data: read metric series from CSV or Parquet files with pandas.

Accepted layouts (``streamrnn train --data PATH``, PATH a file or a folder searched
recursively for ``*.csv`` and ``*.parquet``):

* **long format**: columns ``series``, ``ts``, ``value`` (one file, many series);
* **one file per series**: a time column (``ts`` or ``timestamp``) and ``value``; the series
  is named after the file's path relative to PATH, without suffix.

Timestamps are epoch seconds (numbers) or date-time strings (naive = UTC). Each series is
sorted by time; points with a duplicate timestamp (the first is kept), a missing or
non-finite value are dropped and counted, as the daemon would drop them.

Pure pandas/numpy; knows nothing of Kafka or torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from streamrnn.arrays import FloatArray

__all__ = ["DataError", "SeriesData", "load_series"]


class DataError(ValueError):
    """The training data cannot be read; the message names the file and the problem."""


@dataclass(frozen=True, slots=True)
class SeriesData:
    """Series by name, each (ts epoch s strictly increasing, values), plus what was dropped."""

    series: dict[str, tuple[FloatArray, FloatArray]]
    dropped: dict[str, int] = field(default_factory=dict)

    @property
    def points(self) -> int:
        """Total points over all series."""
        return sum(len(ts) for ts, _ in self.series.values())


def load_series(path: Path) -> SeriesData:
    """Read every series under ``path``; see the module docstring for the layouts."""
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.suffix.lower() in (".csv", ".parquet"))
        if not files:
            raise DataError(f"no .csv or .parquet files under {path}")
        root = path
    elif path.is_file():
        files, root = [path], path.parent
    else:
        raise DataError(f"{path} does not exist")
    frames: list[pd.DataFrame] = []
    for file in files:
        frame = _read(file)
        if "series" not in frame.columns:
            frame["series"] = str(file.relative_to(root).with_suffix(""))
        frame["series"] = frame["series"].astype(str)
        frame["ts"] = _epoch_seconds(frame["ts"], file)
        frames.append(frame[["series", "ts", "value"]])
    # A series may span several files (e.g. one long-format file per day): concatenate first.
    everything = pd.concat(frames, ignore_index=True)
    series: dict[str, tuple[FloatArray, FloatArray]] = {}
    dropped = {"duplicate_timestamp": 0, "missing_or_non_finite": 0}
    for name, part in everything.groupby("series", sort=True):
        ts, values, n_dup, n_bad = _clean(part)
        dropped["duplicate_timestamp"] += n_dup
        dropped["missing_or_non_finite"] += n_bad
        if len(ts) >= 2:
            series[str(name)] = (ts, values)
    if not series:
        raise DataError(f"no series with at least two points under {path}")
    return SeriesData(series, dropped)


def _read(file: Path) -> pd.DataFrame:
    try:
        frame = pd.read_parquet(file) if file.suffix.lower() == ".parquet" else pd.read_csv(file)
    except Exception as exc:
        raise DataError(f"{file}: cannot be read: {exc}") from exc
    frame.columns = [str(c).strip().lower() for c in frame.columns]
    if "timestamp" in frame.columns and "ts" not in frame.columns:
        frame = frame.rename(columns={"timestamp": "ts"})
    missing = {"ts", "value"} - set(frame.columns)
    if missing:
        raise DataError(f"{file}: missing column(s) {sorted(missing)}; have {list(frame.columns)}")
    return frame


def _epoch_seconds(column: pd.Series, file: Path) -> pd.Series:
    """Epoch seconds (float) from numbers or date-time strings (naive = UTC)."""
    if pd.api.types.is_numeric_dtype(column):
        return column.astype(np.float64)
    try:
        parsed = pd.to_datetime(column, utc=True, format="mixed")
    except (ValueError, TypeError) as exc:
        raise DataError(f"{file}: 'ts' is neither epoch seconds nor dates: {exc}") from exc
    return (parsed - pd.Timestamp(0, tz="UTC")).dt.total_seconds()


def _clean(frame: pd.DataFrame) -> tuple[FloatArray, FloatArray, int, int]:
    """Sorted, finite, strictly increasing (ts, values) and the (duplicates, bad) counts."""
    ts = frame["ts"].to_numpy(dtype=np.float64)
    values = pd.to_numeric(frame["value"], errors="coerce").to_numpy(dtype=np.float64)
    good = np.isfinite(ts) & np.isfinite(values)
    n_bad = int((~good).sum())
    ts, values = ts[good], values[good]
    order = np.argsort(ts, kind="stable")
    ts, values = ts[order], values[order]
    keep = np.ones(len(ts), dtype=bool)
    keep[1:] = ts[1:] > ts[:-1]
    return ts[keep], values[keep], int((~keep).sum()), n_bad
