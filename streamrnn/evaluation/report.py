"""Write the evaluation report: a summary page and one plot per replayed series.

``write_report`` produces ``<out>/report/index.html`` (NAB score table, per-category
breakdown, run notes, links to the plots) and ``<out>/report/plots/<category>__<file>.png``:
value with the one-step forecast and its band, labelled windows and NAB's unscored probation
shaded and alerts marked on top; the anomaly score and the threshold below.

Draws with matplotlib's object API on the Agg canvas — no pyplot, no global backend switch —
so it needs no display and leaves the caller's matplotlib state alone. Knows nothing of
Kafka, torch or the engine: it is handed plain arrays.
"""

from __future__ import annotations

import html
import math
import re
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from streamrnn.arrays import FloatArray, Int8Array
from streamrnn.evaluation.nab_score import (
    COLUMN_FORMATS,
    CorpusScore,
    Window,
    category_frame,
    probationary_rows,
    score_frame,
)

__all__ = ["SeriesReport", "plot_series", "write_report"]

TimestampArray = npt.NDArray[np.datetime64]

PLOT_SIZE_IN = (14.0, 5.0)
"""Plot size in inches; at :data:`PLOT_DPI` a 1400 x 500 px PNG."""
PLOT_DPI = 100

_SEVERITY_STYLE = {1: ("warning", "#f0a30a"), 2: ("critical", "#d62728")}
_WINDOW_COLOUR = "#b39ddb"
_PROBATION_COLOUR = "#bdbdbd"


@dataclass(frozen=True, slots=True)
class SeriesReport:
    """Everything the report shows of one replayed series, one entry per input row."""

    name: str
    """Relative path of the input file, e.g. ``"realTweets/Twitter_volume_AAPL.csv"``."""
    timestamps: TimestampArray
    value: FloatArray
    forecast: FloatArray
    """One-step forecast of each row (NaN where the model had none yet)."""
    lower: FloatArray
    upper: FloatArray
    score: FloatArray
    alert_severity: Int8Array
    """0 none, 1 warning, 2 critical."""
    windows: Sequence[Window]
    threshold: float
    """The detection threshold drawn on the score panel (e.g. NAB's standard-profile one)."""

    @property
    def plot_file(self) -> str:
        """File name of the plot: ``<category>__<file>.png``, safe on any filesystem."""
        stem = self.name.removesuffix(".csv").replace("/", "__")
        return re.sub(r"[^A-Za-z0-9._-]", "_", stem) + ".png"


def write_report(
    out_dir: Path,
    series: Sequence[SeriesReport],
    scores: Sequence[CorpusScore],
    notes: Mapping[str, str],
) -> Path:
    """Write the plots and the summary page under ``out_dir/report``; return the page's path.

    ``notes`` are shown as a two-column table at the top (model version, config, runtime,
    ...); multi-line values keep their line breaks.
    """
    report_dir = out_dir / "report"
    plots_dir = report_dir / "plots"
    plots_dir.mkdir(parents=True, exist_ok=True)
    for one in series:
        plot_series(one, plots_dir / one.plot_file)
    index = report_dir / "index.html"
    index.write_text(_render_index(series, scores, notes), encoding="utf-8")
    return index


def plot_series(series: SeriesReport, path: Path) -> None:
    """Draw one series to a PNG at ``path``.

    Nothing is downsampled: lines are simplified by matplotlib only below pixel resolution,
    and alerts are drawn as markers, so every alert stays visible however long the series.
    """
    t = np.asarray(series.timestamps, dtype="datetime64[ns]")
    fig = Figure(figsize=PLOT_SIZE_IN, dpi=PLOT_DPI)
    FigureCanvasAgg(fig)
    top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    fig.subplots_adjust(left=0.05, right=0.99, top=0.93, bottom=0.08, hspace=0.08)

    probation = probationary_rows(len(t))
    for ax in (top, bottom):
        if probation:
            ax.axvspan(
                t[0],
                t[probation - 1],
                color=_PROBATION_COLOUR,
                alpha=0.25,
                linewidth=0,
                label="probation (not scored)" if ax is top else None,
            )
        for k, (start, end) in enumerate(series.windows):
            ax.axvspan(
                start.to_datetime64(),
                end.to_datetime64(),
                color=_WINDOW_COLOUR,
                alpha=0.3,
                linewidth=0,
                label="labelled window" if k == 0 and ax is top else None,
            )

    top.fill_between(
        t, series.lower, series.upper, color="C0", alpha=0.2, linewidth=0, label="forecast band"
    )
    top.plot(t, series.value, color="black", linewidth=0.6, label="value")
    top.plot(t, series.forecast, color="C0", linewidth=0.6, label="forecast")
    for severity, (label, colour) in _SEVERITY_STYLE.items():
        rows = np.flatnonzero(series.alert_severity == severity)
        if rows.size:
            top.scatter(
                t[rows],
                series.value[rows],
                s=16,
                color=colour,
                zorder=5,
                label=f"{label} ({rows.size})",
            )
    top.set_title(series.name, fontsize=10, loc="left")
    top.legend(loc="upper left", fontsize=8, ncol=7, frameon=False)
    top.margins(x=0.005)

    bottom.plot(t, series.score, color="C2", linewidth=0.6, label="anomaly score")
    bottom.axhline(
        series.threshold,
        color=_SEVERITY_STYLE[2][1],
        linestyle="--",
        linewidth=0.8,
        label=f"threshold {series.threshold:.4f}",
    )
    bottom.set_ylim(-0.02, 1.05)
    bottom.legend(loc="upper left", fontsize=8, ncol=2, frameon=False)
    for ax in (top, bottom):
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3, linewidth=0.5)
    fig.savefig(path, format="png", dpi=PLOT_DPI)


# --- HTML ------------------------------------------------------------------------------------

_STYLE = """
body { font-family: sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; margin-bottom: 1.5em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
pre { margin: 0; }
img { max-width: 100%; }
"""


def _render_index(
    series: Sequence[SeriesReport], scores: Sequence[CorpusScore], notes: Mapping[str, str]
) -> str:
    """The summary page. Every piece of text from the caller goes through ``html.escape``."""
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        "<title>streamrnn evaluation</title>",
        f"<style>{_STYLE}</style></head><body>",
        "<h1>streamrnn evaluation</h1>",
    ]
    if notes:
        parts.append("<h2>Run</h2><table>")
        for key, value in notes.items():
            cell = f"<pre>{_esc(value)}</pre>" if "\n" in value else _esc(value)
            parts.append(f"<tr><th>{_esc(key)}</th><td>{cell}</td></tr>")
        parts.append("</table>")
    parts += ["<h2>NAB score</h2>", _html_table(score_frame(scores))]
    parts += [
        "<h2>Per category</h2>",
        "<p>At each profile's corpus threshold; a category without windows has no score of "
        "its own (only its false-positive rows count).</p>",
        _html_table(category_frame(scores)),
    ]
    parts.append("<h2>Series</h2><table>")
    parts.append(
        "<tr><th>series</th><th>rows</th><th>windows</th><th>warnings</th><th>criticals</th></tr>"
    )
    for one in series:
        href = _esc("plots/" + urllib.parse.quote(one.plot_file))
        parts.append(
            f'<tr><td><a href="{href}">{_esc(one.name)}</a></td>'
            f'<td class="num">{len(one.value)}</td>'
            f'<td class="num">{len(one.windows)}</td>'
            f'<td class="num">{int((one.alert_severity == 1).sum())}</td>'
            f'<td class="num">{int((one.alert_severity == 2).sum())}</td></tr>'
        )
    parts.append("</table>")
    for one in series:
        src = _esc("plots/" + urllib.parse.quote(one.plot_file))
        parts.append(
            f'<figure><img src="{src}" alt="{_esc(one.name)}" loading="lazy">'
            f"<figcaption>{_esc(one.name)}</figcaption></figure>"
        )
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _html_table(frame: pd.DataFrame) -> str:
    """A DataFrame as an HTML table, numbers formatted as in the CLI and right-aligned."""
    head = "".join(f"<th>{_esc(str(c))}</th>" for c in frame.columns)
    rows = [f"<table><tr>{head}</tr>"]
    for record in frame.itertuples(index=False):
        cells = []
        for column, value in zip(frame.columns, record, strict=True):
            numeric = isinstance(value, int | float | np.number)
            cls = ' class="num"' if numeric else ""
            cells.append(f"<td{cls}>{_esc(_format_cell(str(column), value))}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    rows.append("</table>")
    return "\n".join(rows)


def _format_cell(column: str, value: object) -> str:
    """A table cell as text: NaN as "n/a", known numeric columns with the CLI's precision."""
    if isinstance(value, float | np.floating) and math.isnan(value):
        return "n/a"
    fmt = COLUMN_FORMATS.get(column)
    return fmt.format(value) if fmt is not None else str(value)


def _esc(text: str) -> str:
    """Escape text for HTML element content and quoted attributes."""
    return html.escape(text, quote=True)
