"""Background retraining, as the consume loop sees it: observe, schedule, swap.

Between batches the daemon calls, on its own thread:

* :meth:`RetrainController.observe` with each batch's results: every accepted point goes to
  the training buffer, and a sample of each model group's one-step errors to its drift
  detector;
* :meth:`RetrainController.tick`: collects a finished retrain (promotion or rejection,
  logged and counted with both scores), and, on the training instance only, starts the next
  one when a group is due (``retrain.interval_s``) or drifted (and its buffer holds
  ``retrain.min_train_points``);
* :meth:`RetrainController.adopt` with each model read from the model topic (promoted by
  the training instance, or a rollback).

A model takes over in :meth:`_serve`, between two batches, so every point of a batch is
forecast by one model version. The group's live series that are in the training buffer get
their hidden state *re-warmed*: their last :data:`REWARM_POINTS` buffered points are
replayed through the new model from its initial state (as the gate scored it, which
replayed all of them: the state forgets its start long before). Series without buffered history
carry their state on: a retrained model is a fine-tuned descendant of the one that built
the state, with the same architecture (``tests/unit/test_retrain_rewarm.py`` measures what
that costs). The version goes out on every alert and forecast record.

Training itself runs in a child process (:class:`streamrnn.retrain.worker.BackgroundTrainer`):
this module only moves data and models. Knows nothing of Kafka (publishing is a callback).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from streamrnn.config import RetrainConfig
from streamrnn.engine.engine import Engine, EngineBatchResult
from streamrnn.forecast import artifact
from streamrnn.forecast.rewarm import rewarm_states
from streamrnn.logs import get_logger
from streamrnn.metrics import DaemonMetrics
from streamrnn.retrain.buffer import TrainingBuffer
from streamrnn.retrain.drift import DriftEvent, ErrorDriftMonitor
from streamrnn.retrain.job import RetrainJob, RetrainResult, Trigger
from streamrnn.retrain.registry import ModelRegistry
from streamrnn.state.manager import GroupInfo, SeriesStateManager

__all__ = ["Publisher", "RetrainController", "RetrainCounters", "Trainer"]

log = get_logger("retrain")

#: publish(group, version, artifact bytes, reason); raises when not acknowledged.
Publisher = Callable[[str, str, bytes, str], None]

#: Buffered points a series needs to be trained on (it is split into train and gate parts).
MIN_SERIES_POINTS = 32
#: After a drift, a retrain waits until this fraction of the group's buffered points
#: arrived after the drift: training on the old regime alone would teach nothing new, and
#: the gate's held-out slice must show the new regime.
DRIFT_DATA_FRACTION = 0.5
#: Points of each buffered series replayed through a new model to re-warm its state (the
#: state forgets its start within ~20 points; see tests/unit/test_retrain_rewarm.py).
REWARM_POINTS = 64
#: ...with features (normaliser, typical interval) computed over this many points before:
#: enough for them to settle, and it bounds the swap's pause (~0.2 s for 2,000 series).
REWARM_FEATURE_POINTS = 4 * REWARM_POINTS
#: Seconds between checks of a due group whose buffer is still too small.
_DATA_CHECK_INTERVAL_S = 10.0


class Trainer(Protocol):
    """Runs one retrain job at a time without blocking the caller (see
    :class:`streamrnn.retrain.worker.BackgroundTrainer`)."""

    @property
    def busy(self) -> bool: ...

    def submit(self, job: RetrainJob) -> None: ...

    def collect(self) -> tuple[RetrainJob, RetrainResult | BaseException] | None: ...

    def close(self) -> None: ...


@dataclass
class RetrainCounters:
    """Totals since start, for logs and metrics."""

    started: int = 0
    promotions: int = 0
    rejections: int = 0
    failures: int = 0
    discarded: int = 0
    drift_events: int = 0
    swaps: int = 0


class RetrainController:
    """See the module docstring."""

    def __init__(
        self,
        config: RetrainConfig,
        engine: Engine,
        manager: SeriesStateManager,
        registry: ModelRegistry,
        trainer: Trainer | None,
        publish: Publisher | None,
        clock: Callable[[], float] = time.monotonic,
        metrics: DaemonMetrics | None = None,
    ) -> None:
        self.config = config
        self.engine = engine
        self.manager = manager
        self.registry = registry
        self.trainer = trainer
        self._publish = publish
        self._clock = clock
        self._metrics = metrics if metrics is not None else DaemonMetrics()
        # No trainer here (retrain.enabled false): nothing to buffer for.
        buffer_series = config.buffer_series if trainer is not None else 0
        self.buffer = TrainingBuffer(buffer_series, config.buffer_points)
        groups = len(engine.groups)
        self.drift = (
            ErrorDriftMonitor(
                groups,
                config.drift,
                config.drift_delta,
                config.drift_sample_points,
                config.drift_min_ratio,
            )
            if config.drift != "off"
            else None
        )
        now = clock()
        interval = config.interval_s
        self._next_scheduled = [now + interval if interval else float("inf")] * groups
        self._last_retrain = [now] * groups
        self._drifted: list[DriftEvent | None] = [None] * groups
        #: Points each group received since it last drifted.
        self._since_drift = [0] * groups
        self._next_data_check = [0.0] * groups
        self._unpublished: list[tuple[str, str, bytes, str]] = []
        self._round_robin = 0
        self.counters = RetrainCounters()
        for g, group in enumerate(engine.groups):
            self._register_serving(g)
            self._metrics.model_info.labels(group.name, group.version).set(1)

    # -- the loop's calls ---------------------------------------------------------------

    def observe(self, batch: EngineBatchResult) -> None:
        """Buffer a batch's accepted points and feed its errors to the drift detectors."""
        n = len(batch)
        if n == 0:
            return
        if self.trainer is not None:  # else the buffer holds no series: skip the names
            slot = batch.slot
            starts = np.flatnonzero(np.r_[True, slot[1:] != slot[:-1]])
            table = self.engine.table
            names = [table.name_of(int(s)) for s in slot[starts]]
            self.buffer.append(names, batch.group[starts], starts, batch.ts, batch.value)
        counts = np.bincount(batch.group, minlength=len(self._since_drift))
        for g, count in enumerate(counts.tolist()):
            self._since_drift[g] += count
        if self.drift is None:
            return
        with np.errstate(divide="ignore", invalid="ignore"):
            errors = np.abs(batch.value - batch.forecast) / batch.error_scale
        for g in np.unique(batch.group).tolist():
            event = self.drift.update(g, errors[batch.group == g])
            if event is not None:
                self._on_drift(event)

    def tick(self, may_train: bool) -> None:
        """Collect a finished retrain, retry unpublished models, and (``may_train``: this
        instance is the trainer) start the next retrain that is due."""
        if self.trainer is not None:
            outcome = self.trainer.collect()
            if outcome is not None:
                self._finish(*outcome, may_train=may_train)
        if self._unpublished:
            self._retry_publish()
        if not may_train or self.trainer is None or self.trainer.busy:
            return
        now = self._clock()
        groups = len(self.engine.groups)
        for k in range(groups):
            g = (self._round_robin + k) % groups
            trigger = self._due(g, now)
            if trigger is None or now < self._next_data_check[g]:
                continue
            if self.buffer.points(g) < self.config.min_train_points:
                self._next_data_check[g] = now + _DATA_CHECK_INTERVAL_S
                log.debug("retrain due but too little data", group=self.engine.groups[g].name)
                continue
            self._start(g, trigger)
            self._round_robin = g + 1
            return

    def adopt(self, group: str, version: str, data: bytes, reason: str) -> bool:
        """Serve a model read from the model topic; returns whether it took over."""
        names = [g.name for g in self.engine.groups]
        if group not in names:
            log.warning("model for an unknown model group ignored", group=group, version=version)
            return False
        g = names.index(group)
        if self.engine.groups[g].version == version:
            return False
        try:
            loaded = artifact.from_bytes(data, f"model topic record {group}/{version}")
            self._serve(g, loaded, data, reason)
        except (artifact.ArtifactError, ValueError) as exc:
            log.error("published model not loaded", group=group, version=version, error=str(exc))
            return False
        return True

    @property
    def training(self) -> bool:
        """Whether a retrain is running on this instance."""
        return self.trainer is not None and self.trainer.busy

    def status(self) -> dict[str, Any]:
        """Flat fields for the progress log line."""
        c = self.counters
        return {
            "training": self.training,
            "retrains": c.started,
            "promotions": c.promotions,
            "rejections": c.rejections,
            "discarded": c.discarded,
            "drift_events": c.drift_events,
            "buffered_series": len(self.buffer),
            "model_versions": {g.name: g.version for g in self.engine.groups},
        }

    def close(self) -> None:
        """Stop the trainer process."""
        if self.trainer is not None:
            self.trainer.close()

    # -- internals ----------------------------------------------------------------------

    def _due(self, g: int, now: float) -> Trigger | None:
        if (
            self._drifted[g] is not None
            and now - self._last_retrain[g] >= self.config.drift_min_interval_s
            and self._since_drift[g] >= DRIFT_DATA_FRACTION * self.buffer.points(g)
        ):
            return "drift"
        if now >= self._next_scheduled[g]:
            return "schedule"
        return None

    def _on_drift(self, event: DriftEvent) -> None:
        self.counters.drift_events += 1
        name = self.engine.groups[event.group].name
        self._metrics.drift_events.labels(name).inc()
        log.info(
            "forecast error drift",
            group=name,
            error_before=round(event.error_before, 4),
            error_after=round(event.error_after, 4),
            observations=event.observations,
        )
        self._drifted[event.group] = event
        self._since_drift[event.group] = 0

    def _start(self, g: int, trigger: Trigger) -> None:
        assert self.trainer is not None
        group = self.engine.groups[g]
        data = {
            s.name: (s.ts, s.values)
            for s in self.buffer.series(group=g, min_points=MIN_SERIES_POINTS)
        }
        job = RetrainJob(group.name, trigger, self._serving_artifact(g), data, self.config)
        self.trainer.submit(job)
        self.counters.started += 1
        self._metrics.retrains.labels(group.name, trigger).inc()
        self._drifted[g] = None
        log.info(
            "retrain started",
            group=group.name,
            trigger=trigger,
            serving=group.version,
            series=len(data),
            points=sum(len(ts) for ts, _ in data.values()),
        )

    def _finish(
        self, job: RetrainJob, result: RetrainResult | BaseException, may_train: bool
    ) -> None:
        g = self._index(job.group)
        now = self._clock()
        self._last_retrain[g] = now
        if self.config.interval_s:
            self._next_scheduled[g] = now + self.config.interval_s
        if isinstance(result, BaseException):
            self.counters.failures += 1
            self._metrics.retrain_failures.labels(job.group).inc()
            log.error("retrain failed", group=job.group, error=f"{type(result).__name__}: {result}")
            return
        serving = self.engine.groups[g].version
        fields = {
            "group": job.group,
            "trigger": job.trigger,
            "candidate": result.candidate_version,
            "serving": result.current_version,
            "candidate_nll": round(result.candidate_score.nll, 5),
            "serving_nll": round(result.current_score.nll, 5),
            "candidate_mase": round(result.candidate_score.mase, 4),
            "serving_mase": round(result.current_score.mase, 4),
            "min_improvement": self.config.min_improvement,
            "holdout_points": result.candidate_score.points,
            "seconds": round(result.seconds, 1),
        }
        if serving != result.current_version or not may_train:
            self.counters.discarded += 1
            why = "the serving model changed meanwhile" if may_train else "no longer the trainer"
            log.info("retrain result discarded", reason=why, **fields)
            return
        if not result.promoted or result.artifact is None:
            self.counters.rejections += 1
            self._metrics.rejections.labels(job.group).inc()
            log.info("candidate rejected", **fields)
            return
        self.counters.promotions += 1
        self._metrics.promotions.labels(job.group).inc()
        log.info("candidate promoted", **fields)
        loaded = artifact.from_bytes(result.artifact, f"candidate {result.candidate_version}")
        self._serve(g, loaded, result.artifact, "promotion")
        if self._publish is not None:
            self._unpublished.append(
                (job.group, result.candidate_version, result.artifact, "promotion")
            )
            self._retry_publish()

    def _serve(self, g: int, loaded: artifact.LoadedModel, data: bytes, reason: str) -> None:
        """Swap group ``g`` to ``loaded`` and re-warm its buffered live series."""
        started = time.perf_counter()
        group = self.engine.groups[g]
        lineage = tuple(loaded.metadata.get("lineage", ()))
        self.engine.swap_model(g, loaded.model, loaded.version, lineage)
        table = self.engine.table
        slots, history = [], []
        for s in self.buffer.series(group=g, min_points=2):
            slot = table.slot_of(s.name)
            if slot is not None:
                slots.append(slot)
                history.append((s.ts[-REWARM_FEATURE_POINTS:], s.values[-REWARM_FEATURE_POINTS:]))
        rewarmed = np.array(slots, dtype=np.int64)
        if history:
            states = rewarm_states(
                loaded.model, history, self.engine.normaliser_alpha, REWARM_POINTS
            )
            self.engine.set_states(g, rewarmed, states)
        column = f"state.{group.name}"
        self.manager.model_changed(
            g, GroupInfo(loaded.version, column, frozenset(lineage)), rewarmed
        )
        if self.drift is not None:
            self.drift.reset(g)
        self._drifted[g] = None
        live = int((table.column("group")[: len(table)] == g).sum())
        self.registry.add(group.name, loaded.version, data, {**loaded.metadata, "reason": reason})
        self.registry.set_current(group.name, loaded.version)
        self.counters.swaps += 1
        with contextlib.suppress(KeyError):  # never exported if it was replaced at start
            self._metrics.model_info.remove(group.name, group.version)
        self._metrics.model_info.labels(group.name, loaded.version).set(1)
        seconds = time.perf_counter() - started
        log.info(
            "model swapped",
            group=group.name,
            version=loaded.version,
            previous=group.version,
            reason=reason,
            rewarmed_series=len(rewarmed),
            carried_series=live - len(rewarmed),
            seconds=round(seconds, 3),
        )

    def _retry_publish(self) -> None:
        assert self._publish is not None
        while self._unpublished:
            group, version, data, reason = self._unpublished[0]
            try:
                self._publish(group, version, data, reason)
            except Exception as exc:  # broker down: keep it and retry at the next tick
                log.warning("model not published yet", group=group, version=version, error=str(exc))
                return
            self._unpublished.pop(0)
            log.info("model published", group=group, version=version, reason=reason)

    def _register_serving(self, g: int) -> None:
        """Keep the model group ``g`` starts with in the registry (so it can be rolled back
        to)."""
        group = self.engine.groups[g]
        info = {"reason": "start", "lineage": list(group.lineage)}
        self.registry.add(group.name, group.version, self._serving_artifact(g), info)
        self.registry.set_current(group.name, group.version)

    def _serving_artifact(self, g: int) -> bytes:
        """The artifact of the model group ``g`` serves (same version, its lineage)."""
        group = self.engine.groups[g]
        data, _ = artifact.to_bytes(
            group.model,
            self.engine.normaliser_alpha,
            {"lineage": list(group.lineage)},
            version=group.version,
        )
        return data

    def _index(self, group: str) -> int:
        for index, g in enumerate(self.engine.groups):
            if g.name == group:
                return index
        raise KeyError(group)
