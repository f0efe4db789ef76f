"""One-step forecast benchmark of the baselines on the synthetic and NAB-dev corpora.

Run from the repo root: ``.venv/bin/python -m tests.benchmarks.run_baselines`` (about a
minute on 2 cores). Each series: the first 20 % is history, the rest is scored. Prints per
corpus and baseline: mean MAE over series (value units, scale-dependent), mean and median
MASE (scale: in-sample naive MAE of the history), the geometric mean over series of MAE
relative to naive_last, and the runtime.

Other scripts (the GRU rows) reuse :func:`load_corpora`, :func:`run_forecaster`,
:func:`print_results`, or call ``main(extra={"name": forecaster})``.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from tests.benchmarks.baselines import BASELINES, Baseline, BaselineUnavailable, river_holt_winters
from tests.benchmarks.forecast_data import (
    NAB_DEV_ROOT,
    Corpus,
    nab_dev_corpus,
    synthetic_corpus,
)
from tests.benchmarks.metrics import (
    CorpusScore,
    evaluate_corpus,
    history_points_for,
    relative_mae_geomean,
)

__all__ = ["Result", "load_corpora", "main", "print_results", "run_forecaster"]

#: Benchmark defaults: 40 synthetic series of 3000 points (120k points), seed 0.
SYNTHETIC_SERIES = 40
SYNTHETIC_POINTS = 3000
SYNTHETIC_SEED = 0
#: Optional rows (``--extra``): the river model that was not chosen.
EXTRA_BASELINES: dict[str, Baseline] = {"river_holtwinters": river_holt_winters}
REFERENCE = "naive_last"


@dataclass(frozen=True, slots=True)
class Result:
    """One forecaster on one corpus: its scores, or why it did not run."""

    corpus: str
    forecaster: str
    score: CorpusScore | None
    seconds: float
    points: int
    unavailable: str = ""


def load_corpora(
    series: int = SYNTHETIC_SERIES,
    points: int = SYNTHETIC_POINTS,
    seed: int = SYNTHETIC_SEED,
    nab_root: Path = NAB_DEV_ROOT,
) -> dict[str, Corpus]:
    """The two benchmark corpora, ``{"synthetic": ..., "nab-dev": ...}``."""
    return {
        "synthetic": synthetic_corpus(series, points, seed),
        "nab-dev": nab_dev_corpus(nab_root),
    }


def run_forecaster(
    corpus_name: str, corpus: Corpus, name: str, forecaster: Baseline
) -> tuple[Result, dict[str, np.ndarray]]:
    """Forecast every series of ``corpus`` (history = 20 %), time it (wall s), and score it."""
    points = sum(len(values) for _, values in corpus.values())
    start = time.perf_counter()
    try:
        forecasts = {
            series: forecaster(ts, values, history_points_for(len(values)))
            for series, (ts, values) in corpus.items()
        }
    except BaselineUnavailable as exc:
        return Result(corpus_name, name, None, 0.0, points, unavailable=str(exc)), {}
    seconds = time.perf_counter() - start
    return Result(corpus_name, name, evaluate_corpus(forecasts, corpus), seconds, points), forecasts


def _fmt(x: float, digits: int = 3) -> str:
    if not math.isfinite(x):
        return "-"
    if x != 0 and (abs(x) >= 1e5 or abs(x) < 1e-3):
        return f"{x:.{digits}g}"
    return f"{x:,.{digits}f}"


def print_results(results: Sequence[Result], console: Console | None = None) -> None:
    """A table with a block of rows per corpus; relMAE is against ``naive_last`` if present."""
    console = console or Console(width=140)
    table = Table(title="One-step forecast, test part = points after the first 20 % of each series")
    for column in ("corpus", "forecaster", "series"):
        table.add_column(column)
    for column in ("mean MAE", "mean MASE", "median MASE", "relMAE gm", "runtime s", "µs/point"):
        table.add_column(column, justify="right")
    references = {
        r.corpus: r.score for r in results if r.forecaster == REFERENCE and r.score is not None
    }
    previous = None
    for r in results:
        if previous is not None and r.corpus != previous:
            table.add_section()
        previous = r.corpus
        if r.score is None:
            table.add_row(r.corpus, r.forecaster, "-", f"unavailable: {r.unavailable}")
            continue
        s = r.score
        ref = references.get(r.corpus)
        rel = relative_mae_geomean(s, ref) if ref is not None else math.nan
        series = f"{s.n_series}" + (f" ({s.n_mase} MASE)" if s.n_mase != s.n_series else "")
        if s.min_coverage < 1:
            series += f" cov≥{s.min_coverage:.2f}"
        table.add_row(
            r.corpus,
            r.forecaster,
            series,
            _fmt(s.mean_mae),
            _fmt(s.mean_mase),
            _fmt(s.median_mase),
            _fmt(rel),
            f"{r.seconds:.1f}",
            f"{1e6 * r.seconds / r.points:.1f}",
        )
    console.print(table)
    console.print(
        "MAE: value units, mean over series (scale-dependent). MASE: test MAE / in-sample naive "
        "MAE of the history, per series, then mean / median over series (series with a "
        "constant history have no MASE). relMAE gm: geometric mean over series of MAE / "
        f"{REFERENCE} MAE."
    )


def _nab_categories(results: Sequence[Result], console: Console) -> None:
    """Mean MASE per NAB category (the category is the part of the name before '/')."""
    nab = [r for r in results if r.corpus == "nab-dev" and r.score is not None]
    if not nab:
        return
    categories = sorted({s.name.split("/")[0] for r in nab for s in r.score.series})  # type: ignore[union-attr]
    table = Table(title="nab-dev: mean MASE per category")
    table.add_column("forecaster")
    for category in categories:
        table.add_column(category, justify="right")
    for r in nab:
        assert r.score is not None
        cells = []
        for category in categories:
            mases = [
                s.mase
                for s in r.score.series
                if s.name.startswith(category + "/") and math.isfinite(s.mase)
            ]
            cells.append(_fmt(float(np.mean(mases))) if mases else "-")
        table.add_row(r.forecaster, *cells)
    console.print(table)


def _preload_optional_modules() -> None:
    """Import river / statsforecast up front so their import time is not billed to a row."""
    for module in ("river.time_series", "statsforecast.models"):
        with contextlib.suppress(ImportError):
            importlib.import_module(module)


def main(argv: Sequence[str] | None = None, extra: Mapping[str, Baseline] | None = None) -> None:
    """Run the baselines (plus ``extra`` forecasters) on both corpora and print the tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", type=int, default=SYNTHETIC_SERIES)
    parser.add_argument("--points", type=int, default=SYNTHETIC_POINTS)
    parser.add_argument("--seed", type=int, default=SYNTHETIC_SEED)
    parser.add_argument("--nab-root", type=Path, default=NAB_DEV_ROOT)
    parser.add_argument("--only", nargs="+", metavar="NAME", help=f"subset of {sorted(BASELINES)}")
    parser.add_argument("--extra", action="store_true", help=f"also run {sorted(EXTRA_BASELINES)}")
    args = parser.parse_args(argv)

    forecasters: dict[str, Baseline] = dict(BASELINES)
    if args.only:
        unknown = set(args.only) - set(forecasters)
        if unknown:
            parser.error(f"unknown baseline(s) {sorted(unknown)}")
        forecasters = {name: fn for name, fn in forecasters.items() if name in args.only}
    if args.extra:
        forecasters.update(EXTRA_BASELINES)
    forecasters.update(extra or {})

    console = Console(width=140)
    _preload_optional_modules()
    corpora = load_corpora(args.series, args.points, args.seed, args.nab_root)
    for name, corpus in corpora.items():
        n_points = sum(len(v) for _, v in corpus.values())
        console.print(f"[bold]{name}[/]: {len(corpus)} series, {n_points:,} points")
    results: list[Result] = []
    for corpus_name, corpus in corpora.items():
        for name, forecaster in forecasters.items():
            result, _ = run_forecaster(corpus_name, corpus, name, forecaster)
            console.print(
                f"  {corpus_name:10s} {name:18s} "
                + (f"{result.seconds:6.1f} s" if result.score else "unavailable")
            )
            results.append(result)
    print_results(results, console)
    _nab_categories(results, console)


if __name__ == "__main__":
    main()
