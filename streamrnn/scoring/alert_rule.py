"""Turn calibrated scores into alert decisions: thresholds, hysteresis, m-of-n, cooldown.

Per series, stepped one point at a time (vectorised over series):

* a point is a **hit** when its score is at or above ``warning_threshold``;
* an alert **fires** when at least ``min_hits`` of the last ``window_points`` points were
  hits, the series is not already in an alert episode, its cooldown has run out, and the
  point is *eligible* (the caller may veto points, e.g. by level novelty; by default every
  point is);
* firing opens an **episode**; it stays open until the score falls below
  ``clear_threshold`` (hysteresis: a score hovering around the threshold raises one alert,
  not a flapping series of them). Within an open episode, a score reaching
  ``critical_threshold`` after a warning fires once more, as an escalation to critical;
* after an alert, no new episode may fire for ``cooldown_points`` points, nor for
  ``cooldown_s`` seconds (both must have passed), except at points the caller exempts
  from the cooldown (e.g. a much larger excursion than the one alerted);
* the **severity** is ``critical`` when the score is at or above ``critical_threshold``,
  else ``warning``.

The rule also reports, per point, whether it was **armed** (it could have fired: no open
episode, no cooldown): ``evaluate`` writes the score of armed points only, so a sweep of the
threshold over its output sees what the alert stream would have been.

Pure numpy; knows nothing of Kafka or torch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from streamrnn.arrays import BoolArray, FloatArray, Int8Array, IntArray
from streamrnn.engine.series_table import SeriesTable

__all__ = ["SEVERITY_NAMES", "AlertRule", "RuleStep"]


SEVERITY_NAMES = {1: "warning", 2: "critical"}


@dataclass(frozen=True, slots=True)
class RuleStep:
    """Decisions for one point of each series: severity (0 none, 1 warning, 2 critical) of
    the alert fired at this point, whether the rule was armed, whether the point was a hit."""

    severity: Int8Array
    armed: BoolArray
    hit: BoolArray


class AlertRule:
    """The stateful alert rule; see the module docstring."""

    name = "residual"

    def __init__(
        self,
        warning_threshold: float,
        critical_threshold: float,
        clear_threshold: float,
        min_hits: int = 1,
        window_points: int = 1,
        cooldown_points: int = 0,
        cooldown_s: float = 0.0,
    ) -> None:
        if not 1 <= min_hits <= window_points <= 62:
            raise ValueError("need 1 <= min_hits <= window_points <= 62")
        self.warning_threshold = warning_threshold
        self.critical_threshold = critical_threshold
        self.clear_threshold = clear_threshold
        self.min_hits = min_hits
        self.window_points = window_points
        self.cooldown_points = cooldown_points
        self.cooldown_s = cooldown_s
        self._window_mask = (1 << window_points) - 1
        self._table: SeriesTable | None = None

    def bind(self, table: SeriesTable) -> None:
        """Declare the per-series rule state: hit bits, open episode severity, cooldown."""
        table.add_column("rule_hits", dtype=np.int64)
        table.add_column("rule_episode", dtype=np.int8)
        table.add_column("rule_cooldown")
        table.add_column("rule_last_alert_ts", fill=-np.inf)
        self._table = table

    def threshold_of(self, severity: int) -> float:
        """The threshold a point crossed to get ``severity``."""
        return self.critical_threshold if severity == 2 else self.warning_threshold

    def step(
        self,
        slots: IntArray,
        score: FloatArray,
        ts: FloatArray | None = None,
        eligible: BoolArray | None = None,
        skip_cooldown: BoolArray | None = None,
    ) -> RuleStep:
        """Decide one point per slot (distinct slots) and advance the rule's state.

        ``ts`` (epoch s) of the points is needed for ``cooldown_s``. ``eligible``: points
        that may open an episode (None: all); an ineligible point is still a hit.
        ``skip_cooldown``: points that may open an episode although the cooldown has not run
        out (None: none). A point opened an episode iff its severity is > 0 and it was armed.
        """
        assert self._table is not None, "bind() first"
        hits_col = self._table.column("rule_hits")
        episode_col = self._table.column("rule_episode")
        cooldown_col = self._table.column("rule_cooldown")
        hit = score >= self.warning_threshold
        hits = ((hits_col[slots] << 1) | hit.astype(np.int64)) & self._window_mask
        episode = episode_col[slots]
        cooldown = cooldown_col[slots]
        # Hysteresis: an open episode closes once the score drops below the clear threshold.
        episode = np.where(score < self.clear_threshold, 0, episode).astype(np.int8)
        cooled = cooldown <= 0
        last_alert_ts = self._table.column("rule_last_alert_ts")[slots]
        if self.cooldown_s > 0 and ts is not None:
            cooled &= ts - last_alert_ts >= self.cooldown_s
        if skip_cooldown is not None:
            cooled |= skip_cooldown
        armed = (episode == 0) & cooled
        if eligible is not None:
            armed &= eligible
        enough = _popcount(hits) >= self.min_hits
        critical = score >= self.critical_threshold
        # A point fires only if it is itself a hit (old hits still in the window must not
        # reopen an episode on the point that closed the last one).
        fire = armed & enough & hit
        escalate = (episode == 1) & critical
        severity = np.where(fire | escalate, np.where(critical, 2, 1), 0).astype(np.int8)
        episode = np.where(severity > 0, severity, episode).astype(np.int8)
        cooldown = np.where(fire, self.cooldown_points, np.maximum(cooldown - 1, 0))
        hits_col[slots], episode_col[slots], cooldown_col[slots] = hits, episode, cooldown
        if ts is not None:
            self._table.column("rule_last_alert_ts")[slots] = np.where(fire, ts, last_alert_ts)
        return RuleStep(severity=severity, armed=armed, hit=hit)


def _popcount(bits: IntArray) -> IntArray:
    """Set bits per entry of a non-negative int64 array."""
    count = np.zeros_like(bits)
    work = bits.copy()
    while work.any():
        count += work & 1
        work >>= 1
    return count
