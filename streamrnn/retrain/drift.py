"""Drift detection on a model group's one-step forecast error (river.drift).

The error fed to the detector is the scaled absolute error ``|value - forecast| / scale``,
where ``scale`` is the series' typical step size: the per-point term of MASE, so series of
any unit mix in one detector. It is clipped at :data:`ERROR_CLIP` so one wild point (an
anomaly, which the scorer handles) cannot stand for a change of regime.

Each batch contributes a uniform sample of at most ``sample_points`` errors per group, so
the detector's cost per batch is bounded however large the batch. Only a rise of the error
by a factor of at least ``min_ratio`` counts: ADWIN reports any change of mean, so a
detection is kept only when the mean of the window ADWIN keeps (the recent data) is that
far above the mean before the cut; Page-Hinkley runs in ``mode="up"``.

Pure numpy and river; knows nothing of Kafka or torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from river import drift

from streamrnn.arrays import FloatArray

__all__ = ["ERROR_CLIP", "DriftEvent", "ErrorDriftMonitor"]

#: Scaled absolute errors above this are clipped before they reach the detector.
ERROR_CLIP = 10.0


@dataclass(frozen=True, slots=True)
class DriftEvent:
    """A detected rise in a group's forecast error: the mean before and after the change."""

    group: int
    error_before: float
    error_after: float
    observations: int


class ErrorDriftMonitor:
    """One drift detector per model group; see the module docstring."""

    def __init__(
        self,
        groups: int,
        method: Literal["adwin", "page_hinkley"],
        delta: float = 0.002,
        sample_points: int = 64,
        min_ratio: float = 1.0,
        seed: int = 0,
    ) -> None:
        self.method = method
        self.min_ratio = min_ratio
        self.delta = delta
        self.sample_points = sample_points
        self._rng = np.random.default_rng(seed)
        self._detectors = [self._new() for _ in range(groups)]
        self._seen = [0] * groups
        self._means = [_RunningMean() for _ in range(groups)]

    def reset(self, group: int) -> None:
        """Forget the group's history (after its model changed: a new error regime)."""
        self._detectors[group] = self._new()
        self._seen[group] = 0
        self._means[group] = _RunningMean()

    def update(self, group: int, errors: FloatArray) -> DriftEvent | None:
        """Feed one batch's errors of ``group`` (NaN = no forecast, ignored); returns the
        rise in error if the detector saw one."""
        errors = errors[np.isfinite(errors)]
        if len(errors) == 0:
            return None
        if len(errors) > self.sample_points:
            errors = self._rng.choice(errors, self.sample_points, replace=False)
        errors = np.minimum(errors, ERROR_CLIP)
        detector = self._detectors[group]
        event = None
        for e in errors.tolist():
            before = self._means[group].mean
            detector.update(e)  # type: ignore[no-untyped-call]
            self._seen[group] += 1
            self._means[group].add(e)
            if not detector.drift_detected:
                continue
            if isinstance(detector, drift.ADWIN):
                after = float(detector.estimation)  # mean of the window ADWIN kept
            else:
                after = float(errors.mean())  # mode="up": only rises are detected
            if after > before * self.min_ratio:
                event = DriftEvent(group, before, after, self._seen[group])
            # Either way the regime changed: measure "before" from here on.
            self._means[group] = _RunningMean()
            self._means[group].add(after)
        return event

    def _new(self) -> drift.ADWIN | drift.PageHinkley:
        if self.method == "adwin":
            return drift.ADWIN(delta=self.delta)  # type: ignore[no-untyped-call]
        return drift.PageHinkley(mode="up")


class _RunningMean:
    """Mean of the values added since the last change."""

    __slots__ = ("n", "total")

    def __init__(self) -> None:
        self.n = 0
        self.total = 0.0

    @property
    def mean(self) -> float:
        return self.total / self.n if self.n else 0.0

    def add(self, value: float) -> None:
        self.n += 1
        self.total += value
