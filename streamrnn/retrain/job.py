"""One retrain: warm-start from the serving model, train on recent data, gate, package.

:func:`run_retrain` is what the background trainer process executes. Its input and output
are plain picklable values (artifact bytes, numpy arrays), so it can run in another process
and knows nothing of the daemon.

The data is the training buffer's snapshot of the group's series. Each series is split in
time: its last ``holdout_fraction`` is the *gate slice*, never trained on; the rest is the
training data (whose own last ``early_stop_fraction`` drives early stopping, as in
``streamrnn train``). The candidate and the serving model are then scored on the gate
slice in exactly the same way (:func:`streamrnn.forecast.train.evaluate_holdout`: state
carried from each series' start, Laplace NLL per point), and the candidate is promoted
only if its NLL is lower by at least ``min_improvement``.

Pure torch/numpy; knows nothing of Kafka.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import numpy as np
import torch

from streamrnn.arrays import FloatArray
from streamrnn.config import RetrainConfig
from streamrnn.forecast import artifact
from streamrnn.forecast.train import HoldoutScore, TrainConfig, evaluate_holdout, train_model

__all__ = [
    "LINEAGE_LIMIT",
    "RetrainJob",
    "RetrainResult",
    "Trigger",
    "configure_worker",
    "run_retrain",
]

#: Ancestor versions remembered in an artifact's metadata (newest last).
LINEAGE_LIMIT = 50

Trigger = Literal["schedule", "drift", "manual"]


@dataclass(frozen=True, slots=True)
class RetrainJob:
    """Everything one retrain needs; picklable."""

    group: str
    trigger: Trigger
    #: The serving model's artifact (warm start, and the gate's reference).
    current: bytes
    #: Series name -> (ts epoch s, values), time order.
    data: dict[str, tuple[FloatArray, FloatArray]]
    config: RetrainConfig
    seed: int = 0
    #: Training data, when it is not simply each series' part before the gate slice
    #: (e.g. a curated set); the gate always scores on the gate slices of ``data``.
    train_data: dict[str, tuple[FloatArray, FloatArray]] | None = None


@dataclass(frozen=True, slots=True)
class RetrainResult:
    """What a retrain produced; ``artifact`` is set only when the candidate was promoted."""

    group: str
    trigger: Trigger
    promoted: bool
    current_version: str
    candidate_version: str
    current_score: HoldoutScore
    candidate_score: HoldoutScore
    seconds: float
    #: Data window: first and last timestamp (epoch s), series and points used.
    data_window: dict[str, float | int]
    artifact: bytes | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def improvement(self) -> float:
        """Serving NLL minus candidate NLL (nats per point; positive: candidate better)."""
        return self.current_score.nll - self.candidate_score.nll


def run_retrain(job: RetrainJob) -> RetrainResult:
    """Train, gate and (if promoted) package a candidate; see the module docstring."""
    started = time.perf_counter()
    current = artifact.from_bytes(job.current, f"serving model of group {job.group}")
    cfg = job.config
    alpha = current.normaliser_alpha
    train_part = job.train_data
    if train_part is None:
        train_part = {}
        for name, (ts, values) in job.data.items():
            cut = int(np.floor(len(ts) * (1.0 - cfg.holdout_fraction)))
            if cut >= 4:
                train_part[name] = (ts[:cut], values[:cut])
    train_config = TrainConfig(
        chunk_points=cfg.chunk_points,
        epochs=cfg.epochs,
        learning_rate=cfg.learning_rate,
        grad_clip=cfg.grad_clip,
        val_fraction=cfg.early_stop_fraction,
        patience=cfg.patience,
        normaliser_alpha=alpha,
        seed=job.seed,
    )
    candidate, report = train_model(
        train_part, current.model.spec, train_config, initial=current.model
    )
    current_score = evaluate_holdout(current.model, job.data, cfg.holdout_fraction, alpha)
    candidate_score = evaluate_holdout(candidate, job.data, cfg.holdout_fraction, alpha)
    promoted = bool(candidate_score.nll < current_score.nll - cfg.min_improvement)
    first = min(float(ts[0]) for ts, _ in job.data.values())
    last = max(float(ts[-1]) for ts, _ in job.data.values())
    window: dict[str, float | int] = {
        "start_ts": first,
        "end_ts": last,
        "series": len(job.data),
        "points": sum(len(ts) for ts, _ in job.data.values()),
    }
    lineage = [*current.metadata.get("lineage", []), current.version][-LINEAGE_LIMIT:]
    metadata: dict[str, Any] = {
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "group": job.group,
        "trigger": job.trigger,
        "parent_version": current.version,
        "lineage": lineage,
        "data": window,
        "gate": {
            "metric": "holdout_nll",
            "holdout_fraction": cfg.holdout_fraction,
            "min_improvement": cfg.min_improvement,
            "candidate_nll": candidate_score.nll,
            "parent_nll": current_score.nll,
            "candidate_mase": candidate_score.mase,
            "parent_mase": current_score.mase,
            "points": candidate_score.points,
        },
        "report": report.as_dict(),
    }
    blob, version = artifact.to_bytes(candidate, alpha, metadata)
    return RetrainResult(
        group=job.group,
        trigger=job.trigger,
        promoted=promoted,
        current_version=current.version,
        candidate_version=version,
        current_score=current_score,
        candidate_score=candidate_score,
        seconds=time.perf_counter() - started,
        data_window=window,
        artifact=blob if promoted else None,
        metadata=metadata,
    )


def configure_worker(threads: int, nice: int) -> None:
    """Run in the trainer process at start: cap torch threads, lower the priority."""
    import os

    torch.set_num_threads(threads)
    torch.set_num_interop_threads(1)
    if nice:
        os.nice(nice)
