"""Turn anomaly scores into alert decisions: warm-up, thresholds and severity.

A point alerts when its series has seen at least ``warmup_points`` points and its score is at
or above the warning threshold; it is ``critical`` at or above the critical threshold.
During warm-up a point's score is reported as 0 and never alerts: the model and the
calibration have not seen enough of the series to judge it.

Pure numpy; knows nothing of Kafka or torch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

__all__ = ["SEVERITY_NAMES", "SEVERITY_NONE", "ThresholdRule"]

FloatArray = npt.NDArray[np.float64]
Int8Array = npt.NDArray[np.int8]

SEVERITY_NONE = 0
SEVERITY_NAMES = {1: "warning", 2: "critical"}


@dataclass(frozen=True, slots=True)
class ThresholdRule:
    """Severity per point: 0 none, 1 warning, 2 critical."""

    warmup_points: int
    warning_threshold: float
    critical_threshold: float
    name: str = "residual_tail"

    def apply(self, scores: FloatArray, seen_before: FloatArray) -> tuple[FloatArray, Int8Array]:
        """(reported scores, severities) for points whose series had ``seen_before`` points."""
        warm = seen_before >= self.warmup_points
        reported = np.where(warm, scores, 0.0)
        severity = (reported >= self.warning_threshold).astype(np.int8)
        severity += reported >= self.critical_threshold
        return reported, severity

    def threshold_of(self, severity: int) -> float:
        """The threshold a point crossed to get ``severity``."""
        return self.critical_threshold if severity == 2 else self.warning_threshold
