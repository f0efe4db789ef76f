"""The forecast benchmark: baselines vs our GRU variants, and batched-step throughput.

Run from the repo root::

    .venv/bin/python -m tests.benchmarks.forecast            # about 10 minutes on 2 cores
    .venv/bin/python -m tests.benchmarks.forecast --quick    # smaller, a few minutes

Corpora (see :mod:`tests.benchmarks.forecast_data`): (a) seeded synthetic irregular series
(seasonal + trend + noise, gaps 1x–20x the base interval, regime changes), (b) the 27
series of ``../shared/data/nab-dev``. On every series the first 20 % is history (baselines
warm up or fit on it) and the rest is scored: one-step MAE and MASE.

Our GRU variants are trained once, offline, with ``streamrnn``'s own trainer on data that is
never scored: a *separate* synthetic corpus (another seed) plus the 20 % history part of
every NAB-dev series. They then forecast every series through the daemon's engine
(:func:`tests.benchmarks.gru_eval.engine_forecasts`), one configuration for all series.

Then it prints the batched-step throughput (points/s, T = 1 point per series per call,
hidden 64, one layer, one torch thread) for 1, 100, 1,000 and 10,000 series per call,
beside a bare ``torch.nn.GRUCell`` step.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence

import torch
from rich.console import Console
from rich.table import Table

from streamrnn.forecast.gru import ModelSpec
from streamrnn.forecast.train import TrainConfig
from tests.benchmarks.baselines import BASELINES
from tests.benchmarks.forecast_data import Corpus, synthetic_corpus
from tests.benchmarks.gru_eval import (
    VARIANTS,
    bare_gru_cell_throughput,
    engine_forecasts,
    step_throughput,
    train_variant,
)
from tests.benchmarks.metrics import evaluate_corpus, history_points_for
from tests.benchmarks.run_baselines import (
    Result,
    _nab_categories,
    _preload_optional_modules,
    load_corpora,
    print_results,
    run_forecaster,
)

#: Seed of the synthetic *training* corpus (the scored one uses the benchmark's seed 0).
TRAIN_SEED = 1000
SERIES_PER_CALL = (1, 100, 1_000, 10_000)


def training_corpus(corpora: dict[str, Corpus], series: int, points: int) -> Corpus:
    """Synthetic series of another seed, plus the history part of every NAB-dev series."""
    train = dict(synthetic_corpus(series, points, TRAIN_SEED))
    for name, (ts, values) in corpora["nab-dev"].items():
        h = history_points_for(len(values))
        train[f"nab-history/{name}"] = (ts[:h], values[:h])
    return train


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller corpora, fewer epochs")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--threads", type=int, default=2, help="torch threads for training")
    parser.add_argument(
        "--throughput-only", action="store_true", help="only the batched-step throughput table"
    )
    args = parser.parse_args(argv)
    console = Console(width=140)
    if args.throughput_only:
        throughput(console)
        return
    _preload_optional_modules()

    points = 1500 if args.quick else 3000
    epochs = args.epochs or (12 if args.quick else 60)
    corpora = load_corpora(points=points)
    train = training_corpus(corpora, series=40 if args.quick else 80, points=points)
    for name, corpus in {**corpora, "training (never scored)": train}.items():
        n = sum(len(v) for _, v in corpus.values())
        console.print(f"[bold]{name}[/]: {len(corpus)} series, {n:,} points")

    results: list[Result] = []
    for corpus_name, corpus in corpora.items():
        for name, forecaster in BASELINES.items():
            result, _ = run_forecaster(corpus_name, corpus, name, forecaster)
            results.append(result)

    torch.set_num_threads(args.threads)
    config = TrainConfig(epochs=epochs, patience=4)
    training_rows = []
    for variant in VARIANTS:
        trained = train_variant(variant, train, config)
        r = trained.report
        training_rows.append(
            (variant, r.best_epoch, r.epochs_run, r.val_nll[r.best_epoch - 1], r.seconds)
        )
        console.print(f"  trained {variant}: {r.epochs_run} epochs, {r.seconds:.0f} s")
        for corpus_name, corpus in corpora.items():
            started = time.perf_counter()
            forecasts = engine_forecasts(trained.model, corpus)
            seconds = time.perf_counter() - started
            n = sum(len(v) for _, v in corpus.values())
            results.append(
                Result(corpus_name, variant, evaluate_corpus(forecasts, corpus), seconds, n)
            )
    results.sort(key=lambda r: r.corpus != "synthetic")
    print_results(results, console)
    _nab_categories(results, console)

    table = Table(title="Training (streamrnn's trainer; validation = last 20 % of each series)")
    for column in ("variant", "best epoch", "epochs run", "val NLL", "train s"):
        table.add_column(column, justify="right" if column != "variant" else "left")
    for variant, best, run, val_nll, seconds in training_rows:
        table.add_row(variant, str(best), str(run), f"{val_nll:.4f}", f"{seconds:.0f}")
    console.print(table)

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
