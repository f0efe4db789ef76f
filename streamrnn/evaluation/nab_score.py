"""Score per-row anomaly scores of labelled series by the rules of the Numenta Anomaly Benchmark.

NAB (Lavin & Ahmad, "Evaluating Real-time Anomaly Detection Algorithms — the Numenta Anomaly
Benchmark", ICMLA 2015) scores a detector that gives every row of every file a score in
[0, 1]. The rules implemented here, and checked against the reference scorer in
``tests/unit/test_nab_score.py``:

* **Probation.** The first ``min(floor(0.15 * rows), 750)`` rows of each file are the
  detector's learning period: they are not scored at all, and a window with no row after
  them is neither a hit nor a miss.
* **Detections.** One threshold for the whole corpus; a row is a detection when its score is
  ``>= threshold``. With no threshold given, the threshold that maximises the corpus' raw
  score is chosen (among equal maxima, the highest).
* **Windows.** A row at index ``i`` inside the window ``[left, right]`` (``width`` rows) is
  worth ``tp_weight * σ(-(right - i + 1) / width) / σ(-1)``, with the scaled sigmoid
  ``σ(x) = 2 / (1 + exp(5x)) - 1``: 1 at the window's first row, falling to almost 0 at its
  last. A window counts the best (i.e. earliest) of its detections, and ``-fn_weight`` when
  it has none.
* **False positives.** Every detected row outside every window costs
  ``fp_weight * σ(|i - right_prev| / (width_prev - 1))`` relative to the preceding window
  (almost nothing just after it, the full ``-fp_weight`` from three widths on), and the full
  ``-fp_weight`` when no window precedes it.
* **Normalisation.** ``100 * (raw - null) / (perfect - null)`` where ``null`` is the score of
  detecting nothing (``-fn_weight`` per scorable window) and ``perfect`` is ``tp_weight`` per
  *labelled* window (a window lost to probation still counts there, so such a corpus cannot
  reach 100).

Pure numpy/pandas: knows nothing of Kafka, torch or the engine that produced the scores.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pandas as pd

from streamrnn.arrays import FloatArray, IntArray

__all__ = [
    "COLUMN_FORMATS",
    "PROFILES",
    "CorpusScore",
    "Detections",
    "FileScore",
    "Profile",
    "Window",
    "category_frame",
    "format_score_lines",
    "load_profiles",
    "load_windows",
    "probationary_rows",
    "read_results_dir",
    "scaled_sigmoid",
    "score_corpus",
    "score_frame",
    "score_table",
]

TimestampArray = npt.NDArray[np.datetime64]

Window = tuple[pd.Timestamp, pd.Timestamp]
"""An anomaly window: its first and last timestamp, both inclusive."""

Detections = Mapping[str, tuple[TimestampArray, FloatArray]]
"""Per file (relative path ``<category>/<file>.csv``): row timestamps and anomaly scores."""

PROBATION_FRACTION = 0.15
"""Share of each file's rows that form the unscored learning period..."""
PROBATION_MAX_ROWS = PROBATION_FRACTION * 5000
"""... capped at this many rows (750): NAB caps probation as if files had 5000 rows."""
NO_DETECTION_THRESHOLD = 1.1
"""The threshold NAB reports when detecting nothing scores best (above any score in [0, 1])."""


@dataclass(frozen=True, slots=True)
class Profile:
    """The weights of one NAB application profile (NAB's cost matrix; ``tnWeight`` is unused)."""

    name: str
    tp_weight: float
    fp_weight: float
    fn_weight: float


PROFILES: tuple[Profile, ...] = (
    Profile("standard", tp_weight=1.0, fp_weight=0.11, fn_weight=1.0),
    Profile("reward_low_FP_rate", tp_weight=1.0, fp_weight=0.22, fn_weight=1.0),
    Profile("reward_low_FN_rate", tp_weight=1.0, fp_weight=0.11, fn_weight=2.0),
)
"""NAB's three profiles, as in NAB's ``config/profiles.json``."""


def load_profiles(path: Path | None = None) -> tuple[Profile, ...]:
    """The profiles of a NAB ``profiles.json`` (NAB's order first), or :data:`PROFILES`."""
    if path is None:
        return PROFILES
    raw = json.loads(path.read_text())
    known = [p.name for p in PROFILES]
    names = [n for n in known if n in raw] + sorted(n for n in raw if n not in known)
    return tuple(
        Profile(
            name,
            tp_weight=float(raw[name]["CostMatrix"]["tpWeight"]),
            fp_weight=float(raw[name]["CostMatrix"]["fpWeight"]),
            fn_weight=float(raw[name]["CostMatrix"]["fnWeight"]),
        )
        for name in names
    )


def load_windows(labels_path: Path) -> dict[str, list[Window]]:
    """Anomaly windows per file from NAB's ``labels/combined_windows.json``.

    Keys are the relative paths of the label file (``"realTweets/Twitter_volume_AAPL.csv"``);
    a file without anomalies maps to an empty list.
    """
    raw = json.loads(labels_path.read_text())
    return {
        name: [(pd.Timestamp(start), pd.Timestamp(end)) for start, end in spans]
        for name, spans in raw.items()
    }


def probationary_rows(n_rows: int) -> int:
    """How many leading rows of an ``n_rows`` file are NAB's unscored learning period."""
    # Same float expression as NAB, so that rounding agrees at every length.
    return int(min(math.floor(PROBATION_FRACTION * n_rows), PROBATION_MAX_ROWS))


def scaled_sigmoid(x: FloatArray) -> FloatArray:
    """NAB's ``σ(x) = 2 / (1 + exp(5x)) - 1``, and exactly -1 beyond ``x > 3``.

    Positive for ``x < 0`` (inside a window), 0 at 0, negative after; ``σ(-1) ≈ 0.987``.
    """
    clipped = np.minimum(x, 3.0)  # also keeps exp() from overflowing for far-away rows
    return np.where(x > 3.0, -1.0, 2.0 / (1.0 + np.exp(5.0 * clipped)) - 1.0)


_MAX_TP = float(scaled_sigmoid(np.array([-1.0]))[0])


@dataclass(frozen=True, slots=True)
class FileScore:
    """One file's part of a corpus score, at the corpus threshold."""

    file: str
    windows_labelled: int
    """Windows in the label file, including those lost to probation."""
    windows: int
    """Windows with at least one scored row: the ones that can be detected or missed."""
    windows_detected: int
    fp_rows: int
    """Detected rows outside every window (after probation)."""
    raw: float
    """This file's contribution to the corpus' raw score."""
    null: float
    """This file's raw score when detecting nothing (``-fn_weight`` per scorable window)."""
    perfect: float
    """This file's raw score for a perfect detector (``tp_weight`` per labelled window)."""

    @property
    def category(self) -> str:
        """The NAB category: the first component of the relative path."""
        return self.file.split("/", 1)[0] if "/" in self.file else ""


@dataclass(frozen=True, slots=True)
class CorpusScore:
    """A detector's NAB score under one profile, over all files scored together."""

    profile: str
    threshold: float
    """Rows scoring at least this are detections (NAB's 1.1 when detecting nothing is best)."""
    score: float
    """Normalised score: 0 = detect nothing, 100 = perfect; NaN when no file has a window."""
    raw: float
    """Sum of every window's best detection (or miss penalty) and every FP row's cost."""
    null: float
    """Raw score of detecting nothing."""
    perfect: float
    """Raw score of a perfect detector."""
    windows: int
    """Windows that can be detected or missed (at least one row after probation)."""
    windows_detected: int
    fp_rows: int
    files: tuple[FileScore, ...]
    """Per-file parts, sorted by relative path: they add up to the corpus numbers."""


@dataclass(frozen=True, slots=True)
class _ScoredRows:
    """One file's rows after probation, reduced to what every profile needs."""

    file: str
    scores: FloatArray
    window: IntArray
    """Index of the window holding each row; -1 outside every window."""
    shape: FloatArray
    """σ value of each row before profile weights: in (0, 1) inside a window, [-1, 0] outside."""
    windows_labelled: int
    windows: int


def score_corpus(
    detections: Detections,
    windows: Mapping[str, Sequence[Window]],
    profile: Profile,
    threshold: float | None = None,
) -> CorpusScore:
    """NAB score of ``detections`` under ``profile``, at ``threshold`` or at the best one.

    Every file in ``detections`` is scored and must have an entry in ``windows`` (an empty
    list when it has no anomaly); files only in ``windows`` are ignored. Timestamps must be
    in time order and every window's start and end must be timestamps of the file, as NAB's
    labels are.
    """
    return _score_rows(_prepare(detections, windows), profile, threshold)


def score_table(
    detections: Detections,
    windows: Mapping[str, Sequence[Window]],
    profiles: Sequence[Profile] = PROFILES,
) -> list[CorpusScore]:
    """The corpus score under each profile, each at its own optimised threshold."""
    rows = _prepare(detections, windows)
    return [_score_rows(rows, profile, None) for profile in profiles]


def read_results_dir(
    out_dir: Path, files: Iterable[str] | None = None
) -> dict[str, tuple[TimestampArray, FloatArray]]:
    """Read detector output in NAB layout: ``<out_dir>/<category>/<file>.csv``.

    Each CSV has at least the columns ``timestamp`` and ``anomaly_score``. ``files`` names
    the relative paths to read (e.g. the keys of the label file); by default every
    ``*/*.csv`` under ``out_dir``.
    """
    names = (
        sorted(p.relative_to(out_dir).as_posix() for p in out_dir.glob("*/*.csv"))
        if files is None
        else list(files)
    )
    detections: dict[str, tuple[TimestampArray, FloatArray]] = {}
    for name in names:
        frame = pd.read_csv(out_dir / name, usecols=["timestamp", "anomaly_score"])
        timestamps = pd.to_datetime(frame["timestamp"], format="ISO8601").to_numpy(
            dtype="datetime64[ns]"
        )
        scores = frame["anomaly_score"].to_numpy(dtype=np.float64)
        detections[name] = (timestamps, scores)
    return detections


def score_frame(scores: Sequence[CorpusScore]) -> pd.DataFrame:
    """One row per profile: normalised score, threshold, windows detected, FP rows, raw."""
    return pd.DataFrame(
        {
            "profile": [s.profile for s in scores],
            "score": [s.score for s in scores],
            "threshold": [s.threshold for s in scores],
            "windows_detected": [s.windows_detected for s in scores],
            "windows": [s.windows for s in scores],
            "fp_rows": [s.fp_rows for s in scores],
            "raw": [s.raw for s in scores],
        }
    )


def category_frame(scores: Sequence[CorpusScore]) -> pd.DataFrame:
    """One row per profile and category, at each profile's corpus threshold.

    ``score`` is the category's own normalised score at that threshold (NaN for a category
    without windows, where only the FP rows tell).
    """
    records: list[dict[str, object]] = []
    for corpus in scores:
        categories = sorted({f.category for f in corpus.files})
        for category in categories:
            files = [f for f in corpus.files if f.category == category]
            raw = sum(f.raw for f in files)
            null = sum(f.null for f in files)
            perfect = sum(f.perfect for f in files)
            records.append(
                {
                    "profile": corpus.profile,
                    "category": category,
                    "files": len(files),
                    "score": _normalise(raw, null, perfect),
                    "windows_detected": sum(f.windows_detected for f in files),
                    "windows": sum(f.windows for f in files),
                    "fp_rows": sum(f.fp_rows for f in files),
                    "raw": raw,
                }
            )
    return pd.DataFrame.from_records(
        records,
        columns=[
            "profile",
            "category",
            "files",
            "score",
            "windows_detected",
            "windows",
            "fp_rows",
            "raw",
        ],
    )


COLUMN_FORMATS: Mapping[str, str] = {"score": "{:.2f}", "threshold": "{:.6f}", "raw": "{:.3f}"}
"""How the score tables print their float columns, in the CLI and in the report alike."""


def format_score_lines(scores: Sequence[CorpusScore]) -> list[str]:
    """The score table and the per-category breakdown as plain-text lines (for the CLI)."""
    table = score_frame(scores)
    table["windows"] = [
        f"{d}/{n}" for d, n in zip(table.pop("windows_detected"), table["windows"], strict=True)
    ]
    breakdown = category_frame(scores)
    breakdown["windows"] = [
        f"{d}/{n}"
        for d, n in zip(breakdown.pop("windows_detected"), breakdown["windows"], strict=True)
    ]
    formatters = {column: fmt.format for column, fmt in COLUMN_FORMATS.items()}
    lines = table.to_string(index=False, formatters=formatters).splitlines()
    lines += ["", "per category, at each profile's corpus threshold:"]
    lines += breakdown.to_string(index=False, formatters=formatters).splitlines()
    return lines


# --- internals -------------------------------------------------------------------------------


def _normalise(raw: float, null: float, perfect: float) -> float:
    """``100 * (raw - null) / (perfect - null)``; NaN when there is nothing to detect."""
    if perfect == null:
        return math.nan
    return 100.0 * (raw - null) / (perfect - null)


def _prepare(detections: Detections, windows: Mapping[str, Sequence[Window]]) -> list[_ScoredRows]:
    """Validate every file and reduce it to its scored rows, in a stable file order."""
    prepared = []
    for name in sorted(detections):
        timestamps_in, scores_in = detections[name]
        if name not in windows:
            raise ValueError(
                f"{name}: no entry in the labels (use [] for a file without anomalies)"
            )
        timestamps = np.asarray(timestamps_in, dtype="datetime64[ns]")
        scores = np.asarray(scores_in, dtype=np.float64)
        if timestamps.shape != scores.shape or timestamps.ndim != 1:
            raise ValueError(f"{name}: {timestamps.shape} timestamps but {scores.shape} scores")
        if np.isnan(scores).any():
            raise ValueError(f"{name}: NaN anomaly scores")
        window, shape = _row_shape(name, timestamps, windows[name])
        first = probationary_rows(len(scores))
        window = window[first:]
        prepared.append(
            _ScoredRows(
                file=name,
                scores=scores[first:],
                window=window,
                shape=shape[first:],
                windows_labelled=len(windows[name]),
                windows=len(np.unique(window[window >= 0])),
            )
        )
    return prepared


def _row_shape(
    name: str, timestamps: TimestampArray, windows: Sequence[Window]
) -> tuple[IntArray, FloatArray]:
    """Per row of one file: the window holding it (-1 if none) and its unweighted σ value."""
    if len(timestamps) > 1 and bool((timestamps[1:] < timestamps[:-1]).any()):
        raise ValueError(f"{name}: timestamps are not in time order")
    lefts = np.empty(len(windows), dtype=np.int64)
    rights = np.empty(len(windows), dtype=np.int64)
    for k, (start, end) in enumerate(windows):
        # The first row at each boundary, as NAB does when a timestamp repeats.
        lefts[k] = _row_of(name, timestamps, start)
        rights[k] = _row_of(name, timestamps, end)
    if (rights < lefts).any() or (lefts[1:] <= rights[:-1]).any():
        raise ValueError(f"{name}: windows must be ordered, non-empty and not overlap")
    widths = (rights - lefts + 1).astype(np.float64)

    rows = np.arange(len(timestamps))
    # The last window starting at or before each row, and whether the row is inside it.
    k_in = np.searchsorted(lefts, rows, side="right") - 1
    k_in_safe = np.maximum(k_in, 0)
    inside = (k_in >= 0) & (rows <= rights[k_in_safe]) if len(windows) else rows < 0
    # The last window ending before each row, for the weight of a false positive.
    k_prev = np.searchsorted(rights, rows, side="left") - 1
    k_prev_safe = np.maximum(k_prev, 0)

    shape = np.full(len(rows), -1.0)
    if len(windows):
        position = -(rights[k_in_safe] - rows + 1) / widths[k_in_safe]
        with np.errstate(divide="ignore"):  # a one-row window: any later FP is "far" (σ = -1)
            distance = np.abs(rows - rights[k_prev_safe]) / (widths[k_prev_safe] - 1.0)
        shape = np.where(
            inside,
            scaled_sigmoid(position),
            np.where(k_prev >= 0, scaled_sigmoid(distance), -1.0),
        )
    window = np.where(inside, k_in, -1).astype(np.int64)
    return window, shape


def _row_of(name: str, timestamps: TimestampArray, moment: pd.Timestamp) -> int:
    """Index of the first row at ``moment``; a window boundary must be one of the rows."""
    target = moment.to_datetime64().astype("datetime64[ns]")
    row = int(np.searchsorted(timestamps, target, side="left"))
    if row == len(timestamps) or timestamps[row] != target:
        raise ValueError(f"{name}: window boundary {moment} is not a row timestamp")
    return row


def _row_values(rows: _ScoredRows, profile: Profile) -> FloatArray:
    """What detecting each row is worth under ``profile`` (before taking window maxima)."""
    in_window = rows.window >= 0
    return np.where(
        in_window,
        rows.shape * (profile.tp_weight / _MAX_TP),
        rows.shape * profile.fp_weight,
    )


def _best_threshold(prepared: Sequence[_ScoredRows], profile: Profile) -> float:
    """The threshold with the highest raw corpus score (the highest one among equals).

    Sweeps every distinct score from the top down: lowering the threshold past a score adds
    that score's rows as detections. An FP row adds its (negative) value; a row inside a
    window adds how much it raises that window's best detection so far (the first raises it
    from the miss penalty). The raw score after each group of tied scores is a candidate,
    as is "no detection" (NAB's 1.1).
    """
    scores_parts, values_parts, window_parts = [], [], []
    offset = 0
    for rows in prepared:
        scores_parts.append(rows.scores)
        values_parts.append(_row_values(rows, profile))
        # Windows numbered across the corpus so that each is its own group.
        window_parts.append(np.where(rows.window >= 0, rows.window + offset, -1))
        offset += rows.windows_labelled
    scores = np.concatenate(scores_parts) if scores_parts else np.empty(0)
    null = -profile.fn_weight * sum(rows.windows for rows in prepared)
    no_detection = max(NO_DETECTION_THRESHOLD, float(np.nextafter(scores.max(initial=1.0), 2.0)))
    if scores.size == 0:
        return no_detection

    order = np.argsort(-scores, kind="stable")
    sorted_scores = scores[order]
    values = np.concatenate(values_parts)[order]
    window = np.concatenate(window_parts)[order]

    gain = np.where(window < 0, values, 0.0)
    in_window = window >= 0
    groups = window[in_window]
    best_so_far = pd.Series(values[in_window]).groupby(groups).cummax()
    best_before = best_so_far.groupby(groups).shift(1, fill_value=-profile.fn_weight)
    gain[in_window] = (best_so_far - best_before).to_numpy()

    raw_after = null + np.cumsum(gain)
    group_ends = np.flatnonzero(np.append(sorted_scores[1:] != sorted_scores[:-1], True))
    candidates = np.concatenate([[no_detection], sorted_scores[group_ends]])
    raw = np.concatenate([[null], raw_after[group_ends]])
    return float(candidates[int(np.argmax(raw))])


def _score_file(rows: _ScoredRows, profile: Profile, threshold: float) -> FileScore:
    """One file's windows detected, FP rows and raw score at ``threshold``."""
    detected = rows.scores >= threshold
    values = _row_values(rows, profile)
    in_window = rows.window >= 0
    fp = detected & ~in_window
    hits = detected & in_window
    best = np.full(rows.windows_labelled, -np.inf)
    np.maximum.at(best, rows.window[hits], values[hits])
    windows_detected = int(np.isfinite(best).sum())
    misses = rows.windows - windows_detected
    raw = float(values[fp].sum() + best[np.isfinite(best)].sum()) - profile.fn_weight * misses
    return FileScore(
        file=rows.file,
        windows_labelled=rows.windows_labelled,
        windows=rows.windows,
        windows_detected=windows_detected,
        fp_rows=int(fp.sum()),
        raw=raw,
        null=-profile.fn_weight * rows.windows,
        perfect=profile.tp_weight * rows.windows_labelled,
    )


def _score_rows(
    prepared: Sequence[_ScoredRows], profile: Profile, threshold: float | None
) -> CorpusScore:
    """Corpus score of prepared files under one profile (optimising the threshold if None)."""
    chosen = _best_threshold(prepared, profile) if threshold is None else float(threshold)
    files = tuple(_score_file(rows, profile, chosen) for rows in prepared)
    raw = sum(f.raw for f in files)
    null = sum(f.null for f in files)
    perfect = sum(f.perfect for f in files)
    return CorpusScore(
        profile=profile.name,
        threshold=chosen,
        score=_normalise(raw, null, perfect),
        raw=raw,
        null=null,
        perfect=perfect,
        windows=sum(f.windows for f in files),
        windows_detected=sum(f.windows_detected for f in files),
        fp_rows=sum(f.fp_rows for f in files),
        files=files,
    )
