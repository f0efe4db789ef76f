"""The traffic a service sees over time: daily and weekly cycles, holidays and a trend.

Most operational metrics are driven by the same thing — how many users are active — so
request rates, latencies, utilisation, queue arrivals and counter rates all take their
shape from one :class:`TrafficLoad`:

* a **daily cycle** in the service's local time zone (UTC-11 to UTC+12): one or two
  von-Mises bumps (a business-hours peak, sometimes an evening peak), from a trough of
  5–80 % of the peak up to 1;
* a **weekly cycle**: weekends at 30–90 % of weekday traffic (85 % of services) or busier
  than weekdays, 110–140 % (15 %: consumer traffic);
* **holidays**: whole local weekdays (about one per 40 days, sometimes a run of two to
  five) at the weekend level or lower (50–100 % of it, and never above the weekday level);
* a **trend**: log-linear growth or decline over the series (log change N(0, 0.3)), in
  30 % of services a slow random-walk drift on top, in 15 % a level shift (traffic moved
  between regions, x0.5–x2) at a random time.

Time of day and weekday follow the epoch like the model's own time features
(:data:`streamrnn.stages.features.DAY_S`). Pure numpy.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from streamrnn.arrays import BoolArray, FloatArray
from streamrnn.corpus.noise import ar1
from streamrnn.stages.features import DAY_S

__all__ = [
    "HOUR_S",
    "TrafficLoad",
    "draw_utc_offset_s",
    "local_days",
    "local_hours",
    "traffic_load",
]

HOUR_S = 3600.0
#: Days between holidays, on average (about nine a year).
_DAYS_PER_HOLIDAY = 40.0


class TrafficLoad(NamedTuple):
    """One service's traffic at each sample, and the parts it is the product of."""

    #: Daily cycle factor in [trough, 1], 1 at the daily peak (local time).
    daily: FloatArray
    #: 1 on ordinary weekdays, the weekend factor on weekends, the holiday factor on
    #: holidays.
    weekly: FloatArray
    #: Slow multiplicative trend (growth, drift, level shift), 1 at the first sample.
    trend: FloatArray
    #: True on the samples of a holiday (a whole local weekday).
    holiday: BoolArray
    #: True on the samples of a local Saturday or Sunday.
    weekend: BoolArray
    #: ``daily · weekly · trend`` scaled to mean 1: multiply by a family's typical level.
    relative: FloatArray


def draw_utc_offset_s(rng: np.random.Generator) -> float:
    """A whole-hour time zone offset (s) from UTC-11 to UTC+12, uniformly."""
    return float(rng.integers(-11, 13)) * HOUR_S


def local_hours(ts: FloatArray, utc_offset_s: float) -> FloatArray:
    """Local hour of day, in [0, 24), of each sample."""
    return np.asarray(np.mod(ts + utc_offset_s, DAY_S) / HOUR_S, dtype=np.float64)


def local_days(ts: FloatArray, utc_offset_s: float) -> tuple[FloatArray, FloatArray]:
    """Local day number (days since the epoch) and weekday (0 = Monday) of each sample."""
    day = np.floor((ts + utc_offset_s) / DAY_S)
    weekday = np.mod(day + 3.0, 7.0)  # 1970-01-01 was a Thursday
    return day, weekday


def traffic_load(rng: np.random.Generator, ts: FloatArray) -> TrafficLoad:
    """Draw one service's traffic pattern and evaluate it at the timestamps ``ts``."""
    utc_offset_s = draw_utc_offset_s(rng)
    daily = _daily_cycle(rng, local_hours(ts, utc_offset_s))
    day, weekday = local_days(ts, utc_offset_s)
    weekend = weekday >= 5.0
    holiday = _holidays(rng, day, weekday)
    # Quieter weekends (most services) or busier ones (consumer traffic).
    weekend_factor = rng.uniform(0.3, 0.9) if rng.random() < 0.85 else rng.uniform(1.1, 1.4)
    holiday_factor = min(weekend_factor, 1.0) * rng.uniform(0.5, 1.0)
    weekly = np.where(weekend, weekend_factor, 1.0)
    weekly[holiday] = holiday_factor
    trend = _trend(rng, ts)
    load = daily * weekly * trend
    return TrafficLoad(daily, weekly, trend, holiday, weekend, load / np.mean(load))


def _daily_cycle(rng: np.random.Generator, hour: FloatArray) -> FloatArray:
    """A daily factor in [trough, 1] from one or two von-Mises bumps over the local hour."""
    peak_h = rng.uniform(9.0, 21.0)
    shape = _bump(hour, peak_h, rng.uniform(0.5, 4.0))
    if rng.random() < 0.4:  # a second, smaller peak some hours earlier
        weight = rng.uniform(0.3, 0.9)
        second = _bump(hour, peak_h - rng.uniform(3.0, 8.0), rng.uniform(0.5, 4.0))
        shape = (shape + weight * second) / (1.0 + weight)
    trough = rng.uniform(0.05, 0.8)
    return trough + (1.0 - trough) * shape


def _bump(hour: FloatArray, peak_h: float, concentration: float) -> FloatArray:
    """A von-Mises bump over the hour of day: 1 at ``peak_h``, exp(-2·concentration) opposite."""
    angle = 2.0 * np.pi * (hour - peak_h) / 24.0
    return np.asarray(np.exp(concentration * (np.cos(angle) - 1.0)), dtype=np.float64)


def _holidays(rng: np.random.Generator, day: FloatArray, weekday: FloatArray) -> BoolArray:
    """Mark whole local weekdays as holidays: about one per 40 days, some in runs."""
    weekdays = np.unique(day[weekday < 5.0])
    n_holidays = min(int(rng.poisson((day[-1] - day[0] + 1.0) / _DAYS_PER_HOLIDAY)), weekdays.size)
    first = rng.choice(weekdays, size=n_holidays, replace=False)
    runs = np.where(rng.random(n_holidays) < 0.3, rng.integers(2, 6, n_holidays), 1)
    chosen = [np.arange(d, d + r) for d, r in zip(first, runs, strict=True)]
    return np.isin(day, np.concatenate([np.empty(0), *chosen])) & (weekday < 5.0)


def _trend(rng: np.random.Generator, ts: FloatArray) -> FloatArray:
    """A slow multiplicative trend, 1 at the first sample."""
    progress = (ts - ts[0]) / max(float(ts[-1] - ts[0]), 1.0)
    log_trend = rng.normal(0.0, 0.3) * progress
    if rng.random() < 0.3:  # slow random-walk drift
        drift = ar1(rng, ts.size, 0.999) * rng.uniform(0.02, 0.15)
        log_trend += drift - drift[0]
    if rng.random() < 0.15:  # a level shift: traffic moved between regions
        shift_at = rng.uniform(0.2, 1.0)
        log_trend += np.where(progress >= shift_at, rng.uniform(np.log(0.5), np.log(2.0)), 0.0)
    return np.asarray(np.exp(log_trend), dtype=np.float64)
