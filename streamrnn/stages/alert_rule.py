"""Turn calibrated scores into alert decisions: thresholds, hysteresis, m-of-n, cooldown.

Per series, one point at a time:

* a point is a **hit** when its score is at or above ``warning_threshold``;
* an alert **fires** when at least ``min_hits`` of the last ``window_points`` points were
  hits, the point is itself a hit, the series is not already in an alert episode, its
  cooldown has run out, and the point is *eligible* (the caller may veto points, e.g. by
  level novelty);
* firing opens an **episode**; it stays open until the score falls below
  ``clear_threshold`` (hysteresis: a score hovering around the threshold raises one alert,
  not a flapping series of them). Within an open episode, a score reaching
  ``critical_threshold`` after a warning fires once more, as an escalation to critical;
* after an alert, no new episode may fire for ``cooldown_points`` points, nor for
  ``cooldown_s`` seconds (both must have passed), except at points the caller exempts
  from the cooldown (e.g. a much larger excursion than the one alerted);
* the **severity** is ``critical`` when the score is at or above ``critical_threshold``,
  else ``warning``.

The rule also reports whether it was **armed** at a point (it could have fired: no open
episode, no cooldown, eligible): ``evaluate`` keeps the score of armed points only, so a
sweep of the threshold over its output sees what the alert stream would have been.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from streamrnn.stages import schema
from streamrnn.stages.jit import stage

__all__ = ["COLUMNS", "RULE_NAME", "SEVERITY_NAMES", "RuleParams", "RuleState", "check", "decide"]

SEVERITY_NAMES = {1: "warning", 2: "critical"}
#: The rule's name in alert records (``rule``) and alert ids.
RULE_NAME = "residual"
#: Hit bits are kept in an int64: at most this many points of window.
MAX_WINDOW_POINTS = 62


class RuleParams(NamedTuple):
    """The rule's settings (``scoring.alert``); ``cooldown_s`` in seconds."""

    warning_threshold: float
    critical_threshold: float
    clear_threshold: float
    min_hits: int
    window_points: int
    cooldown_points: int
    cooldown_s: float

    def threshold_of(self, severity: int) -> float:
        """The threshold a point crossed to get ``severity``."""
        return self.critical_threshold if severity == 2 else self.warning_threshold


class RuleState(NamedTuple):
    """Per series: hit bits of the window (newest lowest), the open episode's severity (0:
    none), points of cooldown left, and the time of the last alert (epoch s)."""

    hits: np.ndarray
    episode: np.ndarray
    cooldown: np.ndarray
    last_alert_ts: np.ndarray


COLUMNS = (
    schema.Column("rule_hits", np.int64),
    schema.Column("rule_episode", np.int8),
    schema.Column("rule_cooldown"),
    schema.Column("rule_last_alert_ts", np.float64, (), -math.inf),
)


def check(p: RuleParams) -> None:
    """Raise ValueError for a window the hit bits cannot hold."""
    if not 1 <= p.min_hits <= p.window_points <= MAX_WINDOW_POINTS:
        raise ValueError(f"need 1 <= min_hits <= window_points <= {MAX_WINDOW_POINTS}")


@stage
def _popcount(bits: int) -> int:
    count = 0
    while bits:
        count += bits & 1
        bits >>= 1
    return count


@stage
def decide(
    st: RuleState,
    p: RuleParams,
    s: int,
    t: float,
    score: float,
    eligible: bool,
    skip_cooldown: bool,
) -> tuple[int, bool, bool]:
    """(severity 0/1/2 of the alert fired at this point, armed, hit) for the point of
    series ``s`` at ``t`` with ``score``; advances the rule's state. A point opened an
    episode iff its severity is > 0 and it was armed."""
    hit = score >= p.warning_threshold
    window_mask = (np.int64(1) << np.int64(p.window_points)) - np.int64(1)
    hits = ((st.hits[s] << 1) | (1 if hit else 0)) & window_mask
    # Hysteresis: an open episode closes once the score drops below the clear threshold.
    episode = 0 if score < p.clear_threshold else int(st.episode[s])
    cooldown = st.cooldown[s]
    cooled = cooldown <= 0
    if p.cooldown_s > 0:
        cooled = cooled and t - st.last_alert_ts[s] >= p.cooldown_s
    cooled = cooled or skip_cooldown
    armed = episode == 0 and cooled and eligible
    critical = score >= p.critical_threshold
    # A point fires only if it is itself a hit (old hits still in the window must not
    # reopen an episode on the point that closed the last one).
    fire = armed and _popcount(hits) >= p.min_hits and hit
    severity = 0
    if fire or (episode == 1 and critical):
        severity = 2 if critical else 1
        episode = severity
    st.hits[s] = hits
    st.episode[s] = episode
    st.cooldown[s] = p.cooldown_points if fire else max(cooldown - 1, 0.0)
    if fire:
        st.last_alert_ts[s] = t
    return severity, armed, hit
