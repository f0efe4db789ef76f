"""The forecast benchmark: baselines vs our GRU variants, and batched-step throughput.

Run from the repo root::

    .venv/bin/python -m tests.benchmarks.forecast            # about 15 minutes on 2 cores
    .venv/bin/python -m tests.benchmarks.forecast --quick    # smaller corpora, fewer epochs
    # one shipped model, no training (a few minutes):
    .venv/bin/python -m tests.benchmarks.forecast --quick --skip-variants \
        --model streamrnn/models/default.pt

Corpora (see :mod:`tests.benchmarks.forecast_data`): (a) seeded synthetic irregular series
(seasonal + trend + noise, gaps 1x–20x the base interval, regime changes), (b) the 27
series of ``../shared/data/nab-dev``. On every series the first 20 % is history (baselines
warm up or fit on it) and the rest is scored. Every forecaster gives a mean and a spread
(Gaussian sd) per point; the tables (:mod:`tests.benchmarks.run_baselines`) show per corpus
the one-step MASE (mean, median), geometric-mean MAE relative to naive, coverage of the
50/80/95 % intervals, CRPS and the rank by mean MASE; mean MASE per nab-dev category; and
MASE, CRPS and coverage of k-step forecasts at horizons 1, 6, 12, 24 points from every 6th
test point (``--stride``). Metrics: :mod:`tests.benchmarks.metrics`.

Our GRU variants are trained once, offline, with ``streamrnn``'s own trainer on data that is
never scored: a *separate* synthetic corpus (another seed) plus the 20 % history part of
every NAB-dev series. They then forecast every series through the daemon's engine
(:func:`tests.benchmarks.gru_eval.engine_one_step`, and the k-step rollout by
:func:`tests.benchmarks.gru_eval.engine_paths`), one configuration for all series.
``--model PATH`` adds a row for a saved artifact (e.g. ``streamrnn/models/default.pt``), run
with the normaliser constant stored in it; ``--skip-variants`` skips the training.

Then it prints the batched-step throughput (points/s, T = 1 point per series per call,
hidden 64, one layer, one torch thread) for 1, 100, 1,000 and 10,000 series per call,
beside a bare ``torch.nn.GRUCell`` step.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from streamrnn.forecast import artifact
from streamrnn.forecast.gru import ModelSpec, RecurrentForecaster
from streamrnn.forecast.train import TrainConfig
from tests.benchmarks.baselines import PROBABILISTIC_BASELINES
from tests.benchmarks.forecast_data import Corpus, synthetic_corpus
from tests.benchmarks.gru_eval import (
    VARIANTS,
    bare_gru_cell_throughput,
    engine_one_step,
    engine_paths,
    step_throughput,
    train_variant,
)
from tests.benchmarks.metrics import HORIZONS, history_points_for, path_origins
from tests.benchmarks.run_baselines import (
    Result,
    _nab_categories,
    _preload_optional_modules,
    load_corpora,
    print_corpus_tables,
    print_horizons,
    run_probabilistic,
    scored_result,
)

#: Seed of the synthetic *training* corpus (the scored one uses the benchmark's seed 0).
TRAIN_SEED = 1000
SERIES_PER_CALL = (1, 100, 1_000, 10_000)
#: Steps of the k-step paths (the longest horizon scored).
HORIZON_POINTS = max(HORIZONS)
#: Multi-horizon forecast origins: every 6th point of each series' test part.
ORIGIN_STRIDE = 6


def training_corpus(corpora: dict[str, Corpus], series: int, points: int) -> Corpus:
    """Synthetic series of another seed, plus the history part of every NAB-dev series."""
    train = dict(synthetic_corpus(series, points, TRAIN_SEED))
    for name, (ts, values) in corpora["nab-dev"].items():
        h = history_points_for(len(values))
        train[f"nab-history/{name}"] = (ts[:h], values[:h])
    return train


def evaluate_gru(
    corpus_name: str,
    corpus: Corpus,
    name: str,
    model: RecurrentForecaster,
    stride: int,
    normaliser_alpha: float | None = None,
) -> Result:
    """One GRU on one corpus through the engine: one-step forecasts and spreads of every
    point, and :data:`HORIZON_POINTS`-step rollouts from every ``stride``-th test point."""
    started = time.perf_counter()
    one_step = engine_one_step(model, corpus, normaliser_alpha)
    origins = {
        series: path_origins(len(values), history_points_for(len(values)), stride, HORIZON_POINTS)
        for series, (_, values) in corpus.items()
    }
    paths = engine_paths(model, corpus, origins, HORIZON_POINTS, normaliser_alpha)
    seconds = time.perf_counter() - started
    forecasts = {series: s.forecast for series, s in one_step.items()}
    spreads = {series: s.spread for series, s in one_step.items()}
    widths = {series: s.half_width for series, s in one_step.items()}
    return scored_result(
        corpus_name, corpus, name, forecasts, spreads, paths, seconds, ours=True, half_widths=widths
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller corpora, fewer epochs")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--threads", type=int, default=2, help="torch threads for training")
    parser.add_argument(
        "--throughput-only", action="store_true", help="only the batched-step throughput table"
    )
    parser.add_argument(
        "--model",
        type=Path,
        action="append",
        default=[],
        metavar="PATH",
        help="also evaluate this model artifact (a row named after the file; repeatable)",
    )
    parser.add_argument(
        "--skip-variants", action="store_true", help="do not train and evaluate the GRU variants"
    )
    parser.add_argument(
        "--skip-throughput", action="store_true", help="do not print the throughput table"
    )
    parser.add_argument(
        "--stride",
        type=int,
        default=ORIGIN_STRIDE,
        help="multi-horizon forecast origins: every STRIDE-th point of the test part",
    )
    args = parser.parse_args(argv)
    console = Console(width=160)
    if args.throughput_only:
        throughput(console)
        return
    _preload_optional_modules()
    started = time.perf_counter()
    models = [(path.name, artifact.load(path)) for path in args.model]

    points = 1500 if args.quick else 3000
    epochs = args.epochs or (12 if args.quick else 60)
    corpora = load_corpora(points=points)
    train = training_corpus(corpora, series=40 if args.quick else 80, points=points)
    shown = dict(corpora) if args.skip_variants else {**corpora, "training (never scored)": train}
    for name, corpus in shown.items():
        n = sum(len(v) for _, v in corpus.values())
        console.print(f"[bold]{name}[/]: {len(corpus)} series, {n:,} points")

    results: list[Result] = []
    for corpus_name, corpus in corpora.items():
        for name, forecaster in PROBABILISTIC_BASELINES.items():
            result = run_probabilistic(corpus_name, corpus, name, forecaster, args.stride)
            console.print(f"  {corpus_name:10s} {name:16s} {result.seconds:6.1f} s")
            results.append(result)
        for name, loaded in models:
            result = evaluate_gru(
                corpus_name, corpus, name, loaded.model, args.stride, loaded.normaliser_alpha
            )
            console.print(f"  {corpus_name:10s} {name:16s} {result.seconds:6.1f} s")
            results.append(result)

    training_rows = []
    if not args.skip_variants:
        torch.set_num_threads(args.threads)
        config = TrainConfig(epochs=epochs, patience=4)
        for variant in VARIANTS:
            trained = train_variant(variant, train, config)
            r = trained.report
            training_rows.append(
                (variant, r.best_epoch, r.epochs_run, r.val_nll[r.best_epoch - 1], r.seconds)
            )
            console.print(f"  trained {variant}: {r.epochs_run} epochs, {r.seconds:.0f} s")
            for corpus_name, corpus in corpora.items():
                results.append(
                    evaluate_gru(corpus_name, corpus, variant, trained.model, args.stride)
                )
    print_corpus_tables(results, console, args.stride)
    _nab_categories(results, console)
    print_horizons(results, console, args.stride)

    if training_rows:
        table = Table(title="Training (streamrnn's trainer; validation = last 20 % of each series)")
        for column in ("variant", "best epoch", "epochs run", "val NLL", "train s"):
            table.add_column(column, justify="right" if column != "variant" else "left")
        for variant, best, run, val_nll, seconds in training_rows:
            table.add_row(variant, str(best), str(run), f"{val_nll:.4f}", f"{seconds:.0f}")
        console.print(table)
    console.print(f"accuracy part: {time.perf_counter() - started:.0f} s wall")

    if not args.skip_throughput:
        throughput(console)


def throughput(console: Console) -> None:
    """Print batched-step points/s per series-per-call, one torch thread."""
    torch.set_num_threads(1)
    table = Table(title="Batched step throughput, points/s (T = 1, hidden 64, 1 layer, 1 thread)")
    table.add_column("step")
    for k in SERIES_PER_CALL:
        table.add_column(f"{k:,} series/call", justify="right")
    bare = [bare_gru_cell_throughput(64, k) for k in SERIES_PER_CALL]
    table.add_row("bare torch.nn.GRUCell", *(f"{x:,.0f}" for x in bare))
    for variant, spec in VARIANTS.items():
        spec = ModelSpec(**{**spec.as_dict(), "hidden_size": 64, "num_layers": 1})
        ours = [step_throughput(spec, k) for k in SERIES_PER_CALL]
        table.add_row(
            variant, *(f"{x:,.0f} ({b / x:.2f}x slower)" for x, b in zip(ours, bare, strict=True))
        )
    console.print(table)


if __name__ == "__main__":
    main()
