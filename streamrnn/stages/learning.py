"""The learning policy: which points a series scores, and which it learns from.

* **Warm-up**: a series' points score 0 (and never alert) until the series has learned
  ``warmup_points`` points; its model state, normaliser and calibration still learn them.
* **Do not learn from anomalies**: a hit (score at or above the warning threshold) is,
  unless ``learn_from_anomalies``, *not learned* — the series' normaliser, model state and
  score history stay as if it had not arrived — so an incident does not teach the model
  that the incident is normal. After ``max_skipped_points`` consecutive skipped points, a
  series' points are learned again: a lasting change becomes the new normal instead of
  alerting forever. The run of hits continues through learned hits; only a non-hit ends it.
* **Values beyond the representable range** (``VALUE_LIMIT`` of :mod:`.features`) are held
  out of learning as a hit is (whether or not ``learn_from_anomalies``), up to
  ``max_skipped_points`` in a row.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from streamrnn.stages import schema
from streamrnn.stages.jit import stage

__all__ = ["COLUMNS", "LearningParams", "LearningState", "decide", "warm"]


class LearningParams(NamedTuple):
    """``scoring.warmup_points``, ``learn_from_anomalies`` and ``max_skipped_points``."""

    warmup_points: int
    learn_from_anomalies: bool
    max_skipped_points: int


class LearningState(NamedTuple):
    """Per series: consecutive points held out of learning."""

    skipped_run: np.ndarray


COLUMNS = (schema.Column("skipped_run"),)


@stage
def warm(p: LearningParams, seen: float) -> bool:
    """Whether a series that has learned ``seen`` points is scored."""
    return seen >= p.warmup_points


@stage
def decide(st: LearningState, p: LearningParams, s: int, hit: bool, beyond: bool) -> bool:
    """Whether the point (a ``hit``; ``beyond`` the value limit) is learned; advances the
    run of skipped points."""
    skipped = st.skipped_run[s]
    held = beyond or (hit and not p.learn_from_anomalies)
    skip = held and skipped < p.max_skipped_points
    if skip:
        st.skipped_run[s] = skipped + 1
    elif not (hit or beyond):
        st.skipped_run[s] = 0
    return not skip
