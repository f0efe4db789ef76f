"""Pick the river forecaster of the benchmark: a small grid of HoltWinters and SNARIMAX configs.

Run from the repo root: ``.venv/bin/python -m tests.benchmarks.select_river``.

Selection is by mean MASE on a synthetic corpus with a *different seed* (1) from the one
the benchmark reports (0), so the chosen configuration is not fitted to the reported corpus.
One configuration for all series, no per-series tuning. NAB numbers are printed for
information only and are not used to choose. The winners are written by hand into
``baselines.HOLT_WINTERS`` / ``baselines.SNARIMAX`` and ``baselines.river_forecaster``.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from dataclasses import asdict

import numpy as np

from tests.benchmarks.baselines import (
    HoltWintersConfig,
    SnarimaxConfig,
    river_holt_winters,
    river_snarimax,
)
from tests.benchmarks.forecast_data import Corpus, nab_dev_corpus, synthetic_corpus
from tests.benchmarks.metrics import CorpusScore, evaluate_corpus, history_points_for

TUNING_SEED = 1

HOLT_WINTERS_GRID = [
    HoltWintersConfig(alpha=a, beta=b, gamma=g)
    for a in (0.2, 0.5, 0.8)
    for b in (0.001, 0.01)
    for g in (0.05, 0.2)
] + [HoltWintersConfig(alpha=a, beta=0.001, seasonal=False) for a in (0.5, 0.8)]

SNARIMAX_GRID = [
    SnarimaxConfig(p=p, d=d, q=q, sp=1, lr=lr, clip_gradient=1.0)
    for (p, d, q) in ((3, 1, 1), (3, 1, 0), (6, 1, 1), (3, 0, 1))
    for lr in (0.002, 0.01)
]


def _score(
    forecaster: Callable[[np.ndarray, np.ndarray, int], np.ndarray], corpus: Corpus
) -> tuple[CorpusScore, float]:
    start = time.perf_counter()
    forecasts = {
        name: forecaster(ts, values, history_points_for(len(values)))
        for name, (ts, values) in corpus.items()
    }
    return evaluate_corpus(forecasts, corpus), time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    """Print mean MASE (synthetic tuning corpus, NAB) and runtime of every grid config."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", type=int, default=40)
    parser.add_argument("--points", type=int, default=3000)
    parser.add_argument("--no-nab", action="store_true", help="skip the NAB column")
    args = parser.parse_args(argv)

    synthetic = synthetic_corpus(args.series, args.points, TUNING_SEED)
    nab = None if args.no_nab else nab_dev_corpus()
    rows: list[tuple[float, str, str]] = []
    candidates: list[tuple[str, object, Callable[..., np.ndarray]]] = [
        ("HoltWinters", c, river_holt_winters) for c in HOLT_WINTERS_GRID
    ] + [("SNARIMAX", c, river_snarimax) for c in SNARIMAX_GRID]
    for model, config, fn in candidates:

        def forecaster(
            ts: np.ndarray,
            values: np.ndarray,
            history_points: int,
            fn: Callable[..., np.ndarray] = fn,
            config: object = config,
        ) -> np.ndarray:
            return fn(ts, values, history_points, config)

        syn_score, syn_s = _score(forecaster, synthetic)
        nab_text = ""
        if nab is not None:
            nab_score, nab_s = _score(forecaster, nab)
            nab_text = (
                f"nab MASE {nab_score.mean_mase:8.3f} "
                f"(median {nab_score.median_mase:.3f}) {nab_s:5.1f}s"
            )
        line = (
            f"{model:11s} {asdict(config)}  syn MASE {syn_score.mean_mase:8.3f} "  # type: ignore[call-overload]
            f"(median {syn_score.median_mase:.3f}) {syn_s:5.1f}s  {nab_text}"
        )
        print(line, flush=True)
        rows.append((syn_score.mean_mase, model, str(asdict(config))))  # type: ignore[call-overload]
    print(f"\nbest by synthetic mean MASE (seed {TUNING_SEED}):")
    for model in ("HoltWinters", "SNARIMAX"):
        best = min(r for r in rows if r[1] == model)
        print(f"  {model:11s} {best[0]:.3f} {best[2]}")


if __name__ == "__main__":
    main()
