"""``streamrnn train``: read the data, train with a progress display, write the artifact."""

from __future__ import annotations

import argparse
import sys
from dataclasses import asdict

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from streamrnn.config import Settings
from streamrnn.engine.build import untrained_model
from streamrnn.forecast import artifact
from streamrnn.forecast.dataset import DataError, SeriesData, load_series
from streamrnn.forecast.train import TrainConfig, TrainProgress, train_model
from streamrnn.pretrain_corpus import pretrain_corpus

__all__ = ["run_training"]


def run_training(settings: Settings, args: argparse.Namespace) -> int:
    """Train one global model as ``args`` ask; returns the exit code."""
    console = Console(stderr=True)
    torch.set_num_threads(args.threads)
    if args.synthetic is not None:
        data = SeriesData(pretrain_corpus(args.synthetic, args.synthetic_points, args.seed))
        data_origin = (
            f"synthetic pretrain corpus: {args.synthetic} series x {args.synthetic_points}"
            f" points, seed {args.seed}"
        )
    else:
        try:
            data = load_series(args.data)
        except DataError as exc:
            print(f"streamrnn train: {exc}", file=sys.stderr)
            return 2
        data_origin = str(args.data)
    initial = None
    if args.warm_start is not None:
        try:
            initial = artifact.load(args.warm_start).model
        except artifact.ArtifactError as exc:
            print(f"streamrnn train: {exc}", file=sys.stderr)
            return 2
    spec = initial.spec if initial is not None else untrained_model(settings.model).spec
    config = TrainConfig(
        chunk_points=args.chunk_points,
        epochs=args.epochs,
        learning_rate=args.learning_rate,
        val_fraction=args.val_fraction,
        patience=args.patience,
        normaliser_alpha=settings.series.normaliser_alpha,
        seed=args.seed,
    )
    console.print(
        f"Training a {spec.cell.upper()} (hidden {spec.hidden_size}, {spec.num_layers} layer(s),"
        f" decay {'on' if spec.decay else 'off'}, time-delta features"
        f" {'on' if spec.time_delta_features else 'off'}) on {len(data.series)} series,"
        f" {data.points:,} points (dropped: {data.dropped})"
    )
    with Progress(
        TextColumn("epoch {task.fields[epoch]}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("train NLL {task.fields[train]:.4f}  val NLL {task.fields[val]}"),
        TimeElapsedColumn(),
        console=console,
    ) as bar:
        task = bar.add_task("train", total=None, epoch=0, train=float("nan"), val="-")
        last_val = "-"

        def show(p: TrainProgress) -> None:
            nonlocal last_val
            if p.val_nll is not None:
                last_val = f"{p.val_nll:.4f}"
            bar.update(
                task,
                completed=p.chunk,
                total=p.chunks,
                epoch=p.epoch,
                train=p.train_nll,
                val=last_val,
            )

        model, report = train_model(data.series, spec, config, show, initial)
    metadata = {
        "data": data_origin,
        "train_config": asdict(config),
        "report": report.as_dict(),
        "parent_version": None if args.warm_start is None else str(args.warm_start),
    }
    version = artifact.save(args.out, model, config.normaliser_alpha, metadata)
    ratio = report.val_mae / report.val_naive_mae if report.val_naive_mae else float("nan")
    console.print(
        f"Best epoch {report.best_epoch} of {report.epochs_run}: validation NLL"
        f" {report.val_nll[report.best_epoch - 1]:.4f}, one-step MAE {report.val_mae:.4g}"
        f" vs naive {report.val_naive_mae:.4g} ({ratio:.3f}x), {report.seconds:.0f} s."
    )
    console.print(f"Wrote {args.out} (version {version}); use it with model.artifact: {args.out}")
    return 0
