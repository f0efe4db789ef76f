"""The scoring chain: raw score → calibration → alert rule, plus warm-up and learning policy.

* **Warm-up**: a series' points score 0 (and never alert) until the series has
  ``warmup_points`` points; its model state, normaliser and calibration still learn from
  them.
* **Do not learn from anomalies**: a point that is a hit (score at or above the warning
  threshold) is, unless ``learn_from_anomalies``, *not learned* — the engine treats it as
  if it had not arrived for the normaliser, the model state and the score history — so an
  incident does not teach the model that the incident is normal. After
  ``max_skipped_points`` consecutive skipped points of a series, its points are learned
  again: a lasting change becomes the new normal instead of alerting forever.
* **Level novelty** (optional, ``min_novelty`` > 0): an alert may open only at a point whose
  value is far enough outside the range the series has recently visited
  (:mod:`streamrnn.scoring.novelty`); scores, hits and learning are unchanged. During the
  cooldown, a point ``novelty_cooldown_factor`` times as far out as the last alert may
  still open one.
* **Values beyond the representable range** (|value| > 1e30 in the series' units,
  ``VALUE_LIMIT`` of :mod:`streamrnn.forecast.features`; the decoder rejects far smaller
  ones by default, but ``streamrnn evaluate`` and tests feed the engine directly): the
  point is forecast and scored as if its value were ±1e30, so after warm-up it alerts, and
  it is *held out of learning* as a hit is (whether or not ``learn_from_anomalies``), up to
  ``max_skipped_points`` in a row; after that the series learns the clamped values, so a
  series that lives out there still gets forecasts. Level novelty and the seasonal profile
  never learn such a point (novelty's envelopes would otherwise make every later excursion
  look ordinary for months). Together with the clamp in :mod:`streamrnn.forecast.features`
  this keeps every per-series statistic finite for a value of any finite magnitude, and a
  single absurd value during warm-up (say 1e308 at a series' 10th point) leaves the series
  as if it had not arrived; after warm-up it raises one alert (the alert rule's state
  records it) and the next point is forecast and scored as before it.

Pure numpy; knows nothing of Kafka or torch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from streamrnn.arrays import BoolArray, FloatArray, Int8Array, IntArray
from streamrnn.config import ScoringConfig
from streamrnn.engine.series_table import SeriesTable
from streamrnn.forecast.features import VALUE_LIMIT, clamp_values
from streamrnn.scoring.alert_rule import AlertRule
from streamrnn.scoring.base import Calibrator
from streamrnn.scoring.evt import EVTCalibrator
from streamrnn.scoring.likelihood import LikelihoodCalibrator
from streamrnn.scoring.novelty import LevelNovelty
from streamrnn.scoring.seasonal import SeasonalDeflation
from streamrnn.scoring.tail import TailCalibrator

__all__ = ["ChainStep", "ScoringChain", "build_chain"]


@dataclass(frozen=True, slots=True)
class ChainStep:
    """One point per series: reported score, alert severity, the armed score (the score if
    the rule could have fired, else 0), and whether the point may be learned."""

    score: FloatArray
    severity: Int8Array
    armed_score: FloatArray
    learn: BoolArray


class ScoringChain:
    """Calibrator and alert rule with the warm-up and learning policy; see the module doc."""

    def __init__(
        self,
        calibrator: Calibrator,
        rule: AlertRule,
        warmup_points: int,
        learn_from_anomalies: bool,
        max_skipped_points: int,
        seasonal: SeasonalDeflation | None = None,
        novelty: LevelNovelty | None = None,
    ) -> None:
        self.calibrator = calibrator
        self.rule = rule
        self.warmup_points = warmup_points
        self.learn_from_anomalies = learn_from_anomalies
        self.max_skipped_points = max_skipped_points
        self.seasonal = seasonal
        self.novelty = novelty
        self._table: SeriesTable | None = None

    def bind(self, table: SeriesTable) -> None:
        """Declare the columns of every step, and the skipped-points counter."""
        self.calibrator.bind(table)
        self.rule.bind(table)
        if self.seasonal is not None:
            self.seasonal.bind(table)
        if self.novelty is not None:
            self.novelty.bind(table)
        table.add_column("skipped_run")
        self._table = table

    def step(
        self,
        slots: IntArray,
        raw: FloatArray,
        seen_before: FloatArray,
        ts: FloatArray | None = None,
        value: FloatArray | None = None,
    ) -> ChainStep:
        """Score one point per slot (distinct slots), decide alerts, and learn the scores of
        the points that may be learned. ``seen_before``: points the series had seen;
        ``value``: the points' values as they arrived, not clamped (needed for level novelty
        and to hold values beyond ``VALUE_LIMIT`` out of learning, else ignored)."""
        assert self._table is not None, "bind() first"
        beyond = np.zeros(len(slots), dtype=bool)
        if value is not None:
            beyond = np.abs(value) > VALUE_LIMIT
            value = clamp_values(value)
        warm = seen_before >= self.warmup_points
        if self.seasonal is not None and ts is not None:
            original = raw
            raw = self.seasonal.deflate(slots, raw, ts)
            self.seasonal.learn(slots, np.where(beyond, np.nan, original), ts)
        score = np.where(warm, self.calibrator.score(slots, raw), 0.0)
        if self.novelty is not None and value is not None and ts is not None:
            # Every point widens the envelopes, anomalous or not: a repeat is not novel.
            # ... except values beyond the representable range (see the module docstring).
            judged = self.novelty.step(slots, value, ts, learn=~beyond)
            decision = self.rule.step(slots, score, ts, judged.eligible, judged.skip_cooldown)
            opened = (decision.severity > 0) & decision.armed
            self.novelty.note_alerts(slots, judged.deviation, opened)
        else:
            decision = self.rule.step(slots, score, ts)
        skipped_col = self._table.column("skipped_run")
        skipped = skipped_col[slots]
        held = beyond if self.learn_from_anomalies else beyond | decision.hit
        skip = held & (skipped < self.max_skipped_points)
        # The run of hits continues through learned hits; only a non-hit ends it, so a lasting
        # change keeps being learned once max_skipped_points have been skipped.
        run = decision.hit | beyond
        skipped_col[slots] = np.where(skip, skipped + 1, np.where(run, skipped, 0))
        learn: BoolArray = ~skip
        self.calibrator.learn(slots[learn], raw[learn])
        return ChainStep(
            score=score,
            severity=decision.severity,
            armed_score=np.where(decision.armed, score, 0.0),
            learn=learn,
        )


def build_chain(config: ScoringConfig) -> ScoringChain:
    """The chain the configuration describes."""
    calibrator: Calibrator
    if config.calibration == "evt":
        calibrator = EVTCalibrator(config.evt_quantile, config.evt_rate_alpha)
    elif config.calibration == "likelihood":
        calibrator = LikelihoodCalibrator(
            config.likelihood_short_alpha, config.likelihood_long_alpha
        )
    else:
        calibrator = TailCalibrator(config.tail_alpha)
    a = config.alert
    rule = AlertRule(
        warning_threshold=a.warning_threshold,
        critical_threshold=a.critical_threshold,
        clear_threshold=a.clear_threshold,
        min_hits=a.min_hits,
        window_points=a.window_points,
        cooldown_points=a.cooldown_points,
        cooldown_s=a.cooldown_s,
    )
    return ScoringChain(
        calibrator,
        rule,
        config.warmup_points,
        config.learn_from_anomalies,
        config.max_skipped_points,
        seasonal=SeasonalDeflation() if config.seasonal_deflation else None,
        novelty=(
            LevelNovelty(
                config.min_novelty, config.novelty_half_life_s, config.novelty_cooldown_factor
            )
            if config.min_novelty > 0 or config.novelty_cooldown_factor > 0
            else None
        ),
    )
