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

from tests.benchmarks.baselines import (
    BASELINES,
    Baseline,
    BaselineUnavailable,
    ProbabilisticBaseline,
    river_holt_winters,
)
from tests.benchmarks.forecast_data import (
    NAB_DEV_ROOT,
    Corpus,
    nab_dev_corpus,
    synthetic_corpus,
)
from tests.benchmarks.metrics import (
    HORIZONS,
    CorpusScore,
    HorizonScore,
    Paths,
    evaluate_corpus,
    evaluate_paths,
    history_points_for,
    path_origins,
    relative_mae_geomean,
)

__all__ = [
    "Result",
    "load_corpora",
    "main",
    "print_corpus_tables",
    "print_horizons",
    "print_results",
    "run_forecaster",
    "run_probabilistic",
    "scored_result",
]

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
    #: Multi-horizon scores (one per horizon of :data:`~tests.benchmarks.metrics.HORIZONS`).
    horizons: tuple[HorizonScore, ...] | None = None
    #: One of our GRU models (ranked in the tables), not a baseline.
    ours: bool = False


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


def run_probabilistic(
    corpus_name: str,
    corpus: Corpus,
    name: str,
    forecaster: ProbabilisticBaseline,
    stride: int,
    steps: int = max(HORIZONS),
) -> Result:
    """Like :func:`run_forecaster`, with spreads and ``steps``-step paths from every
    ``stride``-th point of the test part (and, as a warm-up of the error spreads, from the
    same grid over the history; only test origins are scored). Wall time covers it all."""
    points = sum(len(values) for _, values in corpus.values())
    start = time.perf_counter()
    forecasts, spreads, paths = {}, {}, {}
    try:
        for series, (ts, values) in corpus.items():
            history = history_points_for(len(values))
            origins = path_origins(len(values), history, stride, steps, warm=True)
            run = forecaster(ts, values, history, origins, steps)
            forecasts[series], spreads[series], paths[series] = run.forecast, run.spread, run.paths
    except BaselineUnavailable as exc:
        return Result(corpus_name, name, None, 0.0, points, unavailable=str(exc))
    seconds = time.perf_counter() - start
    return scored_result(corpus_name, corpus, name, forecasts, spreads, paths, seconds)


def scored_result(
    corpus_name: str,
    corpus: Corpus,
    name: str,
    forecasts: Mapping[str, np.ndarray],
    spreads: Mapping[str, np.ndarray],
    paths: Mapping[str, Paths],
    seconds: float,
    ours: bool = False,
    half_widths: Mapping[str, np.ndarray] | None = None,
) -> Result:
    """A :class:`Result` with one-step, interval and multi-horizon scores (``half_widths``:
    the forecaster's own one-step intervals, see :func:`~.metrics.evaluate_series`)."""
    points = sum(len(values) for _, values in corpus.values())
    return Result(
        corpus_name,
        name,
        evaluate_corpus(forecasts, corpus, spreads=spreads, half_widths=half_widths),
        seconds,
        points,
        horizons=evaluate_paths(paths, corpus),
        ours=ours,
    )


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


def _ranks(results: Sequence[Result]) -> dict[str, int]:
    """Rank (1 = lowest mean MASE) of every scored row of one corpus, by forecaster name."""
    scored = sorted(
        (r for r in results if r.score is not None and math.isfinite(r.score.mean_mase)),
        key=lambda r: r.score.mean_mase,  # type: ignore[union-attr]
    )
    return {r.forecaster: i + 1 for i, r in enumerate(scored)}


def print_corpus_tables(
    results: Sequence[Result], console: Console | None = None, stride: int | None = None
) -> None:
    """One table per corpus, a row per forecaster: MASE mean and median, geometric-mean MAE
    relative to ``naive_last``, coverage of the 50/80/95 % intervals, scaled CRPS, rank.

    Ranks are by mean MASE among all rows of the corpus (the GRU rows are marked ``*``).
    """
    console = console or Console(width=140)
    for corpus in dict.fromkeys(r.corpus for r in results):
        rows = [r for r in results if r.corpus == corpus]
        ranks = _ranks(rows)
        ref = next(
            (r.score for r in rows if r.forecaster == REFERENCE and r.score is not None), None
        )
        table = Table(
            title=f"{corpus}: one-step forecasts of the test part (points after the first 20 %"
            " of each series); every series weighs 1"
        )
        table.add_column("forecaster")
        table.add_column("series", justify="right")
        for column in (
            "MASE mean",
            "MASE median",
            "relMAE gm",
            "cov 50 %",
            "cov 80 %",
            "cov 95 %",
            "CRPS/scale",
            "rank",
            "runtime s",
        ):
            table.add_column(column, justify="right")
        for r in rows:
            label = ("* " if r.ours else "") + r.forecaster
            if r.score is None:
                table.add_row(label, "-", f"unavailable: {r.unavailable}")
                continue
            s = r.score
            rel = relative_mae_geomean(s, ref) if ref is not None else math.nan
            series = f"{s.n_series}" + (f" ({s.n_mase} MASE)" if s.n_mase != s.n_series else "")
            rank = ranks.get(r.forecaster)
            table.add_row(
                label,
                series,
                _fmt(s.mean_mase),
                _fmt(s.median_mase),
                _fmt(rel),
                _fmt(s.coverage_50),
                _fmt(s.coverage_80),
                _fmt(s.coverage_95),
                _fmt(s.crps_scaled),
                f"{rank} of {len(ranks)}" if rank else "-",
                f"{r.seconds:.1f}",
            )
        console.print(table)
    console.print(
        "MASE: test MAE / in-sample naive MAE of the history, per series; mean and median over "
        f"series. relMAE gm: geometric mean over series of MAE / {REFERENCE} MAE. cov: "
        "fraction of test points inside the central interval (mean over series; nominal "
        "0.50 / 0.80 / 0.95): the GRU's own learned intervals, else Gaussian mean ± z·spread. "
        "CRPS/scale: Gaussian CRPS / the MASE scale (= MASE for a point forecast; lower is "
        "better). Spreads: the GRU's calibrated 95 % half-width / 1.96; "
        "AutoETS its own model sd; the other baselines the EW RMS (α = 0.01) of their own "
        "past one-step errors. * = our GRU; rank by mean MASE. runtime includes the "
        "multi-horizon paths."
        + (f" Multi-horizon origins: every {stride}th test point." if stride else "")
    )


def print_horizons(
    results: Sequence[Result], console: Console | None = None, stride: int | None = None
) -> None:
    """Multi-horizon tables: mean MASE, scaled CRPS and 50 / 80 / 95 % coverage at each
    horizon, per corpus (columns) and forecaster (rows)."""
    console = console or Console(width=140)
    scored = [r for r in results if r.horizons is not None]
    if not scored:
        return
    corpora = list(dict.fromkeys(r.corpus for r in scored))
    forecasters = list(dict.fromkeys(("* " if r.ours else "") + r.forecaster for r in scored))
    by_key = {(r.corpus, ("* " if r.ours else "") + r.forecaster): r for r in scored}
    origins = f"origins every {stride}th point of the test part" if stride else "test origins"
    for what, title in (
        ("mase", f"k-step forecasts, mean MASE at horizon h points ({origins})"),
        ("crps", f"k-step forecasts, mean CRPS/scale at horizon h points ({origins})"),
        (
            "coverage",
            f"k-step forecasts, coverage of the 50 % / 80 % / 95 % intervals ({origins})",
        ),
    ):
        table = Table(title=title)
        table.add_column("forecaster")
        for corpus in corpora:
            for h in HORIZONS:
                table.add_column(f"{corpus} h={h}", justify="right")
        for name in forecasters:
            cells = []
            for corpus in corpora:
                r = by_key.get((corpus, name))
                for i in range(len(HORIZONS)):
                    if r is None or r.horizons is None:
                        cells.append("-")
                        continue
                    hs = r.horizons[i]
                    if what == "mase":
                        cells.append(_fmt(hs.mean_mase))
                    elif what == "crps":
                        cells.append(_fmt(hs.crps_scaled))
                    else:
                        cells.append(
                            "/".join(
                                _fmt(c, 2) for c in (hs.coverage_50, hs.coverage_80, hs.coverage_95)
                            )
                        )
            table.add_row(name, *cells)
        console.print(table)
    console.print(
        "Origin o: the first o points observed; horizon h predicts point o + h - 1, the h-th next"
        " point whatever its timestamp (irregular series: in points, not seconds; the GRU's "
        "rollout steps at the series' typical interval). MASE at every h uses the one-step "
        "naive scale of the history. Baselines forecast h steps their own way (naive: last "
        "value; seasonal naive: the value a whole number of seasons before the target; "
        "SNARIMAX: recursive; ETS: closed form); their spreads are the EW RMS of their own "
        "past h-step errors whose targets were observed (ETS: its model variance). The GRU "
        "rows use the engine's k-step rollout (spread: summed one-step variances, times each "
        "series' learned 95 % interval ratio)."
    )


def _nab_categories(results: Sequence[Result], console: Console) -> None:
    """Mean MASE per NAB category (the category is the part of the name before '/')."""
    nab = [r for r in results if r.corpus == "nab-dev" and r.score is not None]
    if not nab:
        return
    categories = sorted({s.name.split("/")[0] for r in nab for s in r.score.series})  # type: ignore[union-attr]
    table = Table(title="nab-dev: mean MASE per category (one-step)")
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
        table.add_row(("* " if r.ours else "") + r.forecaster, *cells)
    console.print(table)


def _preload_optional_modules() -> None:
    """Import river / statsmodels up front so their import time is not billed to a row."""
    for module in ("river.time_series", "statsmodels.tsa.exponential_smoothing.ets"):
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
