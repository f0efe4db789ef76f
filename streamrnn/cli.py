"""The ``streamrnn`` command line: ``run``, ``train``, ``evaluate``, ``demo``, ``models``,
``broker``.

Exit codes: 0 success (including a stop by SIGTERM/SIGINT), 1 runtime failure, 2 invalid
usage or configuration (the message names the field and what is wrong).
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from streamrnn.config import ConfigError, Settings, load_settings

__all__ = ["main"]

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2
DEFAULT_BROKER_DIR = Path("deploy/local-kafka/run/default")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``streamrnn`` console script."""
    parser = _parser()
    args = parser.parse_args(argv)
    handler = {
        "run": _cmd_run,
        "train": _cmd_train,
        "evaluate": _cmd_evaluate,
        "demo": _cmd_demo,
        "models": _cmd_models,
        "broker": _cmd_broker,
    }[args.command]
    code: int = handler(args)
    return code


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="streamrnn",
        description="Forecast metric streams from Kafka with stateful GRUs and alert on anomalies.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the daemon (consume, forecast, score, alert)")
    _add_config_arg(run)

    train = sub.add_parser(
        "train", help="train a forecaster offline on CSV/Parquet series and write an artifact"
    )
    _add_config_arg(train)
    source = train.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--data",
        type=Path,
        help="a CSV/Parquet file or a folder of them: long format (series,ts,value) or one"
        " file per series (ts or timestamp, value)",
    )
    source.add_argument(
        "--synthetic",
        type=int,
        metavar="SERIES",
        help="train on SERIES series of the built-in synthetic metrics corpus instead"
        " (how the shipped default model is made)",
    )
    train.add_argument(
        "--synthetic-points", type=int, default=4000, help="points per synthetic series"
    )
    train.add_argument(
        "--out", type=Path, default=Path("streamrnn-model.pt"), help="artifact file to write"
    )
    train.add_argument("--epochs", type=int, default=30, help="most passes over the data")
    train.add_argument("--chunk-points", type=int, default=64, help="truncated-BPTT chunk length")
    train.add_argument(
        "--val-fraction", type=float, default=0.2, help="last fraction of each series held out"
    )
    train.add_argument("--learning-rate", type=float, default=3e-3)
    train.add_argument("--patience", type=int, default=4, help="early-stopping patience, epochs")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--threads", type=int, default=2, help="torch threads")
    train.add_argument(
        "--warm-start",
        type=Path,
        help="start from this artifact's weights (its architecture is used)",
    )

    evaluate = sub.add_parser(
        "evaluate",
        help="replay labelled series (NAB layout) through the engine; NAB scores and a report",
    )
    _add_config_arg(evaluate)
    evaluate.add_argument(
        "--data", type=Path, required=True, help="folder of <category>/<file>.csv (timestamp,value)"
    )
    evaluate.add_argument("--labels", type=Path, required=True, help="NAB combined_windows.json")
    evaluate.add_argument("--out", type=Path, required=True, help="output folder")
    evaluate.add_argument(
        "--profiles", type=Path, help="NAB profiles.json (default: NAB's three profiles)"
    )
    evaluate.add_argument("--no-report", action="store_true", help="skip the HTML report")

    demo = sub.add_parser("demo", help="run the daemon on a synthetic stream and summarise alerts")
    _add_config_arg(demo)
    demo.add_argument(
        "--bootstrap-servers",
        help="use this broker instead of starting the local one",
    )
    demo.add_argument("--series", type=int, default=40, help="synthetic series (default 40)")
    demo.add_argument("--points", type=int, default=1600, help="points per series (default 1600)")
    demo.add_argument(
        "--timeout", type=float, default=180.0, help="longest run of the daemon, seconds"
    )
    demo.add_argument("--seed", type=int, default=7, help="seed of the synthetic stream")

    models = sub.add_parser("models", help="list the model registry, or roll back a model group")
    models_sub = models.add_subparsers(dest="action", required=True)
    listing = models_sub.add_parser("list", help="the stored model versions and their metadata")
    _add_config_arg(listing)
    listing.add_argument("--group", help="only this model group")
    rollback = models_sub.add_parser(
        "rollback", help="serve a stored version again, on every instance (via the model topic)"
    )
    _add_config_arg(rollback)
    rollback.add_argument("version", help="a version from `streamrnn models list`")
    rollback.add_argument("--group", help="the model group (needed only if ambiguous)")

    broker = sub.add_parser("broker", help="manage the local Apache Kafka broker (KRaft)")
    broker.add_argument("action", choices=["start", "stop", "status"])
    broker.add_argument(
        "--dir",
        type=Path,
        default=DEFAULT_BROKER_DIR,
        help=f"work directory of the broker (data, logs, PID); default {DEFAULT_BROKER_DIR}",
    )
    return parser


def _add_config_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        metavar="PATH",
        help="YAML config file (default: $STREAMRNN_CONFIG, else ./config.yaml, else built-in"
        " defaults); STREAMRNN_* environment variables override it",
    )


def _load(args: argparse.Namespace) -> Settings | None:
    try:
        return load_settings(args.config)
    except ConfigError as exc:
        print(f"streamrnn: {exc}", file=sys.stderr)
        return None


def _stop_on_signals() -> threading.Event:
    stop = threading.Event()

    def handle(signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)
    return stop


def _cmd_run(args: argparse.Namespace) -> int:
    # Handle SIGTERM/SIGINT from the first moment: a stop requested while torch is still
    # importing must still end in a clean exit 0, not death by signal.
    stop = _stop_on_signals()
    settings = _load(args)
    if settings is None:
        return EXIT_USAGE
    from streamrnn.daemon import run_daemon
    from streamrnn.forecast.artifact import ArtifactError
    from streamrnn.logs import configure_logging

    configure_logging(settings.logging.level, settings.logging.format)
    try:
        return run_daemon(settings, stop)
    except ArtifactError as exc:
        print(f"streamrnn: invalid config: model artifact: {exc}", file=sys.stderr)
        return EXIT_USAGE


def _cmd_train(args: argparse.Namespace) -> int:
    settings = _load(args)
    if settings is None:
        return EXIT_USAGE
    from streamrnn.training_cli import run_training

    return run_training(settings, args)


def _cmd_evaluate(args: argparse.Namespace) -> int:
    settings = _load(args)
    if settings is None:
        return EXIT_USAGE
    from streamrnn.evaluation_cli import run_evaluation

    return run_evaluation(settings, args)


def _cmd_demo(args: argparse.Namespace) -> int:
    settings = _load(args)
    if settings is None:
        return EXIT_USAGE
    from streamrnn.demo import DemoOptions, run_demo

    options = DemoOptions(
        bootstrap_servers=args.bootstrap_servers,
        config_path=args.config,
        series=args.series,
        points=args.points,
        timeout_s=args.timeout,
        seed=args.seed,
    )
    return run_demo(settings, options)


def _cmd_models(args: argparse.Namespace) -> int:
    settings = _load(args)
    if settings is None:
        return EXIT_USAGE
    from streamrnn.models_cli import run_models

    return run_models(settings, args)


def _cmd_broker(args: argparse.Namespace) -> int:
    from streamrnn.local_broker import BrokerError, running_broker, start_broker, stop_broker

    workdir: Path = args.dir.resolve()
    try:
        if args.action == "start":
            broker = start_broker(workdir)
            print(broker.bootstrap_servers)
            return EXIT_OK
        if args.action == "stop":
            stopped = stop_broker(workdir)
            print("stopped" if stopped else "not running")
            return EXIT_OK
        running = running_broker(workdir)
        if running is None:
            print("not running")
            return EXIT_FAILURE
        print(f"running pid={running.pid} bootstrap={running.bootstrap_servers}")
        return EXIT_OK
    except BrokerError as exc:
        print(f"streamrnn broker: {exc}", file=sys.stderr)
        return EXIT_FAILURE


if __name__ == "__main__":
    raise SystemExit(main())
