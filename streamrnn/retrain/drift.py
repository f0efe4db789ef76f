"""Drift detection on a model group's one-step forecast error (river.drift).

The error fed to the detector is the scaled absolute error ``|value - forecast| / scale``,
where ``scale`` is the series' typical step size: the per-point term of MASE, so series of
any unit mix in one detector. It is clipped at :data:`ERROR_CLIP` so one wild point (an
anomaly, which the scorer handles) cannot stand for a change of regime.

Each batch contributes a uniform sample of at most ``sample_points`` errors per group, so
the detector's cost per batch is bounded however large the batch. Only a rise of the error
by a factor of at least ``min_ratio`` counts: the detectors report any change (ADWIN) or
may fire on noise (Page-Hinkley), so at a detection the mean of the last
:data:`RECENT_ERRORS` errors is compared with the mean of the errors before them since the
last change. (The window ADWIN keeps at its first cut still holds mostly old errors, so its
mean would understate a rise.)

Pure numpy and river; knows nothing of Kafka or torch.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Literal

import numpy as np
from river import drift

from streamrnn.arrays import FloatArray

__all__ = ["ERROR_CLIP", "RECENT_ERRORS", "DriftEvent", "ErrorDriftMonitor"]

#: Scaled absolute errors above this are clipped before they reach the detector.
ERROR_CLIP = 10.0
#: Page-Hinkley's tolerated drift (scaled-error units; errors are about 0.3 to 1): river's
#: default of 0.005 raises false alarms on stationary errors within a few thousand points.
PAGE_HINKLEY_DELTA = 0.05
#: Errors that stand for "now" when a detection is judged (ADWIN checks every 32).
RECENT_ERRORS = 32


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
        errors = errors[~np.isnan(errors)]  # inf (a zero scale) is clipped below
        if len(errors) == 0:
            return None
        if len(errors) > self.sample_points:
            errors = self._rng.choice(errors, self.sample_points, replace=False)
        errors = np.minimum(errors, ERROR_CLIP)
        detector = self._detectors[group]
        since_change = self._means[group]
        event = None
        for e in errors.tolist():
            detector.update(e)  # type: ignore[no-untyped-call]
            self._seen[group] += 1
            since_change.add(e)
            if not detector.drift_detected:
                continue
            before, after = since_change.split()
            if after > before * self.min_ratio:
                event = DriftEvent(group, before, after, self._seen[group])
            # Either way the regime changed: "before" is measured from here on.
            since_change = self._means[group] = since_change.recent_only()
        return event

    def _new(self) -> drift.ADWIN | drift.PageHinkley:
        if self.method == "adwin":
            return drift.ADWIN(delta=self.delta)  # type: ignore[no-untyped-call]
        return drift.PageHinkley(mode="up", delta=PAGE_HINKLEY_DELTA)


class _RunningMean:
    """Errors since the last change: their sum and count, and the most recent ones."""

    __slots__ = ("n", "recent", "total")

    def __init__(self) -> None:
        self.n = 0
        self.total = 0.0
        self.recent: deque[float] = deque(maxlen=RECENT_ERRORS)

    def add(self, value: float) -> None:
        self.n += 1
        self.total += value
        self.recent.append(value)

    def split(self) -> tuple[float, float]:
        """(mean of the older errors, mean of the recent ones); the older mean is that of
        all of them while there are no older ones."""
        recent_sum = sum(self.recent)
        older = self.n - len(self.recent)
        after = recent_sum / len(self.recent) if self.recent else 0.0
        before = (self.total - recent_sum) / older if older > 0 else after
        return before, after

    def recent_only(self) -> _RunningMean:
        """A fresh record holding only the recent errors (the new regime's first ones)."""
        fresh = _RunningMean()
        for value in self.recent:
            fresh.add(value)
        return fresh
