"""The pre-training corpus: seeded, well-formed, and every family has the shape it claims.

Family properties are checked on a family's own generator over a regular grid (so a
property is not blurred by the corpus's random sampling), over many seeds: a property a
family claims for "some series" is asserted for a share of them, not for each one.
"""

from __future__ import annotations

import re
import time
from collections import Counter

import numpy as np
import pytest

from streamrnn.arrays import FloatArray
from streamrnn.corpus.counters import counter_rate, counter_samples, prometheus_increase
from streamrnn.corpus.families import FAMILIES, FamilyGenerator
from streamrnn.corpus.gauges import flat_line, sensor, trending_gauge
from streamrnn.corpus.jobs import PERIOD_RANGE_S, scheduled_work
from streamrnn.corpus.load import local_days, traffic_load
from streamrnn.corpus.resources import (
    cpu_utilisation,
    lindley,
    memory_utilisation,
    queue_depth,
    utilisation,
)
from streamrnn.corpus.sampling import INTERVAL_MIX_S, sample_durations_s, sample_times
from streamrnn.corpus.traffic import event_counts, latency, request_rate
from streamrnn.pretrain_corpus import (
    CORPUS_DESCRIPTION,
    CORPUS_VERSION,
    corpus_record,
    family_names,
    pretrain_corpus,
)

DAY_S = 86_400.0
HOUR_S = 3600.0
START_TS = 1_600_000_000.0  # 2020-09-13 12:26:40 UTC, a Sunday
SEEDS = range(40)


def grid(interval_s: float, points: int) -> FloatArray:
    """Regular timestamps (epoch s) from START_TS."""
    return START_TS + interval_s * np.arange(points, dtype=np.float64)


def draws(generate: FamilyGenerator, ts: FloatArray) -> list[FloatArray]:
    """One series of ``generate`` over ``ts`` per seed in SEEDS."""
    return [generate(np.random.default_rng(seed), ts) for seed in SEEDS]


def fold_range(values: FloatArray, ts: FloatArray, period_s: float) -> float:
    """Range of the means of ``values`` over 24 equal phase bins of ``period_s``."""
    phase_bin = np.floor(np.mod(ts, period_s) / period_s * 24).astype(int)
    means = np.bincount(phase_bin, values, 24) / np.bincount(phase_bin, minlength=24)
    return float(np.max(means) - np.min(means))


def autocorrelation(values: FloatArray, lag: int) -> float:
    """Sample autocorrelation of ``values`` at ``lag`` samples."""
    x = values - np.mean(values)
    return float(np.dot(x[:-lag], x[lag:]) / np.dot(x, x))


def share(flags: list[bool]) -> float:
    """Fraction of True in ``flags``."""
    return float(np.mean(flags))


# --- the corpus as a whole ---------------------------------------------------------------


def test_the_same_seed_gives_the_same_corpus() -> None:
    first, second = pretrain_corpus(30, 300, seed=5), pretrain_corpus(30, 300, seed=5)
    assert list(first) == list(second)
    for name, (ts, values) in first.items():
        np.testing.assert_array_equal(ts, second[name][0])
        np.testing.assert_array_equal(values, second[name][1])


def test_different_seeds_give_different_corpora() -> None:
    first, second = pretrain_corpus(30, 300, seed=5), pretrain_corpus(30, 300, seed=6)
    pairs = zip(first.values(), second.values(), strict=True)
    same = [np.array_equal(a[1], b[1]) or np.array_equal(a[0], b[0]) for a, b in pairs]
    assert not any(same)


def test_a_series_does_not_depend_on_how_many_are_drawn() -> None:
    small, large = pretrain_corpus(5, 200, seed=9), pretrain_corpus(20, 200, seed=9)
    assert list(small) == list(large)[:5]
    for name, (ts, values) in small.items():
        np.testing.assert_array_equal(ts, large[name][0])
        np.testing.assert_array_equal(values, large[name][1])


def test_timestamps_strictly_increase_and_every_value_is_finite() -> None:
    corpus = pretrain_corpus(300, 500, seed=1)
    assert len(corpus) == 300
    for ts, values in corpus.values():
        assert ts.dtype == np.float64 and values.dtype == np.float64
        assert ts.shape == values.shape == (500,)
        assert np.all(np.isfinite(ts)) and np.all(np.diff(ts) > 0)
        assert np.all(np.isfinite(values))


@pytest.mark.parametrize("points", [1, 2, 3])
def test_every_family_copes_with_very_short_series(points: int) -> None:
    corpus = pretrain_corpus(300, points, seed=3)  # every family, several times over
    assert {name.split("-", 2)[2] for name in corpus} == set(family_names())
    for ts, values in corpus.values():
        assert ts.shape == values.shape == (points,)
        assert np.all(np.diff(ts) > 0) and np.all(np.isfinite(values))


def test_a_series_needs_a_point() -> None:
    with pytest.raises(ValueError, match="at least one point"):
        pretrain_corpus(3, 0, seed=3)


def test_names_show_the_family_and_families_appear_in_their_stated_mix() -> None:
    corpus = pretrain_corpus(3000, 10, seed=2)
    counts = Counter(name.split("-", 2)[2] for name in corpus)
    assert set(counts) == set(family_names())
    for family in FAMILIES:
        assert counts[family.name] / 3000 == pytest.approx(family.probability, abs=0.025)
    for i, name in enumerate(corpus):
        assert re.fullmatch(rf"pretrain-{i:04d}-[a-z]+", name), name


def test_the_corpus_names_itself_and_its_mix_for_the_artifact() -> None:
    assert sum(family.probability for family in FAMILIES) == pytest.approx(1.0)
    assert len(set(family_names())) == len(FAMILIES) == 10
    record = corpus_record(400, 4000, seed=3)
    assert record["corpus"] == CORPUS_VERSION == "streamrnn-pretrain-v3"
    assert record["seed"] == 3 and record["n_series"] == 400 and record["points"] == 4000
    assert record["families"] == {family.name: family.probability for family in FAMILIES}
    assert all(name in CORPUS_DESCRIPTION for name in family_names())


def test_scales_span_many_orders_of_magnitude() -> None:
    corpus = pretrain_corpus(400, 200, seed=4)
    typical = [np.median(np.abs(v[v != 0])) for _, v in corpus.values() if np.any(v != 0)]
    decades = np.log10(typical)
    assert np.max(decades) - np.min(decades) > 8


def test_generating_400_series_of_4000_points_takes_seconds() -> None:
    started = time.perf_counter()
    pretrain_corpus(400, 4000, seed=0)
    assert time.perf_counter() - started < 10.0


# --- sampling ----------------------------------------------------------------------------


def test_sampling_uses_every_nominal_interval_with_jitter_and_long_gaps() -> None:
    samplings = [sample_times(np.random.default_rng(seed), 2000) for seed in range(300)]
    assert {s.interval_s for s in samplings} == set(INTERVAL_MIX_S)
    ratios = [np.diff(s.ts) / s.interval_s for s in samplings]
    assert all(np.all(r > 0) for r in ratios)
    assert share([bool(np.any(r > 2.0)) for r in ratios]) > 0.7  # gaps over 2x the interval
    assert share([bool(np.any(r > 10.0)) for r in ratios]) > 0.3  # and long ones
    assert np.max([np.max(r) for r in ratios]) < 50.0 + 1.0
    jittered = [r for r in ratios if 0.9 < np.median(r) < 1.1]
    assert share([bool(np.std(r[r < 1.5]) > 0) for r in jittered]) == 1.0  # never exact
    assert share([bool(np.median(r) < 0.97) for r in ratios]) > 0.05  # some irregular


def test_the_first_sample_covers_the_typical_interval() -> None:
    ts = np.array([0.0, 10.0, 20.0, 50.0])
    np.testing.assert_array_equal(sample_durations_s(ts), [10.0, 10.0, 10.0, 30.0])


# --- traffic: request rates, holidays, event counts, latencies -----------------------------


def test_request_rates_are_non_negative_with_a_daily_and_a_weekly_cycle() -> None:
    ts = grid(300.0, 8 * 7 * 288)  # eight weeks every 5 minutes
    weekday = np.mod(np.floor(ts / DAY_S) + 3, 7)  # UTC; the service's own zone blurs it
    not_a_week = np.mod(np.floor(ts / DAY_S), 5) >= 3  # a 5-day "week" as a null
    daily, weekly, weekly_null = [], [], []
    for values in draws(request_rate, ts):
        assert np.all(values >= 0)
        log_values = np.log(values)
        # The mean by hour of day varies far more than the mean by hour of a 17 h "day".
        daily.append(fold_range(log_values, ts, DAY_S) / fold_range(log_values, ts, 17 * HOUR_S))
        weekend = weekday >= 5
        weekly.append(abs(np.mean(log_values[weekend]) - np.mean(log_values[~weekend])))
        weekly_null.append(abs(np.mean(log_values[not_a_week]) - np.mean(log_values[~not_a_week])))
    assert min(daily) > 2.0
    assert share([w > 0.05 for w in weekly]) >= 0.9
    assert np.median(weekly) > 3 * np.median(weekly_null)


def test_holidays_are_whole_weekdays_at_the_weekend_level_or_lower() -> None:
    ts = grid(HOUR_S, 365 * 24)
    with_holidays = 0
    for seed in SEEDS:
        load = traffic_load(np.random.default_rng(seed), ts)
        assert np.all(load.relative > 0) and np.mean(load.relative) == pytest.approx(1.0)
        assert not np.any(load.holiday & load.weekend)
        if not np.any(load.holiday):
            continue
        with_holidays += 1
        weekend_level = float(np.min(load.weekly[load.weekend]))
        ordinary = ~load.holiday & ~load.weekend
        assert np.all(load.weekly[load.holiday] <= min(weekend_level, 1.0))
        assert np.all(load.weekly[ordinary] == 1.0)
        # Whole days: hourly samples and a whole-hour zone, so each run is 24k samples
        # (except where the series cuts a holiday short at either end).
        edges = np.flatnonzero(np.diff(np.concatenate([[0], load.holiday.astype(int), [0]])))
        starts, ends = edges[::2], edges[1::2]
        inside = (starts > 0) & (ends < ts.size)
        assert np.all((ends - starts)[inside] % 24 == 0)
    assert with_holidays >= 0.8 * len(SEEDS)


def test_weekdays_are_counted_from_a_thursday_epoch() -> None:
    day, weekday = local_days(np.array([0.0, START_TS]), utc_offset_s=0.0)
    np.testing.assert_array_equal(weekday, [3.0, 6.0])  # Thursday, Sunday
    assert day[1] == np.floor(START_TS / DAY_S)


def test_event_counts_are_non_negative_integers_with_heavy_tails() -> None:
    overdispersed, heavy = [], []
    for values in draws(event_counts, grid(600.0, 4000)):
        assert np.all(values >= 0) and np.all(values == np.floor(values))
        mean = float(np.mean(values))
        overdispersed.append(float(np.var(values)) > 2 * mean)  # Poisson: var == mean
        heavy.append(float(np.max(values)) > mean + 10 * np.sqrt(mean) + 3)
    assert share(overdispersed) >= 0.6
    assert share(heavy) >= 0.5


def test_latencies_are_strictly_positive_with_spikes_beyond_the_log_normal() -> None:
    spiky = []
    for values in draws(latency, grid(600.0, 4000)):
        assert np.all(values > 0)
        log_values = np.log(values)
        centre = np.median(log_values)
        sigma = 1.4826 * np.median(np.abs(log_values - centre))  # robust log-spread
        spiky.append(bool(np.any(log_values > centre + 6 * sigma)))  # ~1e-9 for a log-normal
    assert share(spiky) >= 0.5


# --- resources: utilisation, queues --------------------------------------------------------


def test_cpu_utilisation_stays_within_0_and_100_and_saturates_at_peaks() -> None:
    saturated, daily_peaks = [], []
    for values in draws(cpu_utilisation, grid(600.0, 4000)):  # four weeks
        assert np.all((values >= 0) & (values <= 100))
        full = values == 100.0
        saturated.append(float(np.mean(full)))
        daily_peaks.append(int(np.sum(np.diff(full.astype(int)) == 1)) > 7)  # not one episode
    assert share([s > 0 for s in saturated]) >= 0.3
    assert share(daily_peaks) >= 0.2  # clipped at peak hours, day after day
    assert max(saturated) < 0.6  # saturation is the busy hours, not the whole series


def test_memory_utilisation_is_a_sawtooth_that_drops_on_restarts() -> None:
    drops_and_growth = []
    for values in draws(memory_utilisation, grid(600.0, 4000)):
        assert np.all((values >= 0) & (values <= 100))
        steps = np.diff(values)
        drops = steps < -max(5.0, 10 * float(np.median(np.abs(steps))))
        if np.any(drops):
            drops_and_growth.append(float(np.mean(steps[~drops])) > 0)
    assert len(drops_and_growth) >= 0.3 * len(SEEDS)
    assert all(drops_and_growth)  # between restarts it grows


def test_the_utilisation_family_is_cpu_or_memory_and_bounded() -> None:
    for values in draws(utilisation, grid(60.0, 500)):
        assert np.all((values >= 0) & (values <= 100))


def test_queue_depths_are_integers_that_build_up_and_drain_to_zero() -> None:
    builds_up = []
    for values in draws(queue_depth, grid(300.0, 4000)):
        assert np.all(values >= 0) and np.all(values == np.floor(values))
        first_busy = np.flatnonzero(values > 0)[0]
        assert np.any(values[first_busy:] == 0)  # it drains again
        builds_up.append(float(np.max(values)) >= 10)
    assert share(builds_up) >= 0.8


def test_the_queue_is_the_lindley_recursion() -> None:
    net = np.random.default_rng(0).integers(-5, 6, 500).astype(np.float64)
    expected, depth = [], 0.0
    for change in net:
        depth = max(0.0, depth + change)
        expected.append(depth)
    np.testing.assert_array_equal(lindley(net), expected)


# --- counters ------------------------------------------------------------------------------


def test_counters_are_monotone_between_restarts_and_restart_near_zero() -> None:
    ts = grid(60.0, 4000)
    resets_seen, resets_dropping = 0, 0
    for seed in SEEDS:
        samples = counter_samples(np.random.default_rng(seed), ts)
        counter, reset = samples.counter, samples.reset
        assert np.all(counter >= 0) and np.all(counter == np.floor(counter))
        steps = np.diff(counter)
        assert np.all(steps[~reset[1:]] >= 0)
        resets_seen += int(reset.sum())
        resets_dropping += int(np.sum(steps[reset[1:]] < 0))
    assert resets_seen >= len(SEEDS)  # restarts are common enough to learn from
    assert resets_dropping >= 0.8 * resets_seen  # and most show as a drop


def test_a_reset_counts_the_new_value_as_the_increase() -> None:
    counter = np.array([5.0, 8.0, 2.0, 4.0, 4.0])
    np.testing.assert_array_equal(prometheus_increase(counter), [3.0, 2.0, 2.0, 0.0])


def test_counter_rates_are_the_per_second_rate_of_the_sampled_counter() -> None:
    ts = sample_times(np.random.default_rng(1), 3000).ts
    for seed in SEEDS:
        rates = counter_rate(np.random.default_rng(seed), ts)
        assert np.all(rates >= 0) and rates.shape == ts.shape
        sampled_ts = np.concatenate([[ts[0] - np.median(np.diff(ts))], ts])
        counter = counter_samples(np.random.default_rng(seed), sampled_ts).counter
        increase = np.diff(counter)
        increase[increase < 0] = counter[1:][increase < 0]
        np.testing.assert_allclose(rates, increase / np.diff(sampled_ts))


# --- gauges --------------------------------------------------------------------------------


def test_trending_gauges_move_far_more_than_their_noise() -> None:
    for values in draws(trending_gauge, grid(600.0, 4000)):
        assert np.all(values > 0)
        assert np.ptp(values) > 50 * np.median(np.abs(np.diff(values)))


def test_flat_lines_hold_still_between_at_most_three_steps() -> None:
    stepped = []
    for values in draws(flat_line, grid(600.0, 4000)):
        scale = max(abs(float(np.median(values))), 1.0)
        steps = int(np.sum(np.abs(np.diff(values)) > 1e-3 * scale))
        assert steps <= 3
        stepped.append(steps > 0)
    assert 0.5 <= share(stepped) < 1.0


def test_sensors_follow_a_smooth_daily_cycle() -> None:
    ts = grid(300.0, 28 * 288)
    for values in draws(sensor, ts):
        assert autocorrelation(values, 288) - autocorrelation(values, 144) > 0.4  # 1 d vs 12 h
        assert autocorrelation(values, 1) > 0.8  # smooth: noise is small


def test_scheduled_work_repeats_faster_than_a_day() -> None:
    """Most scheduled-work series (those with a visible cycle) come back: after their
    autocorrelation first turns negative (half a cycle) it rises again, well above the
    level that AR(1) noise alone returns to."""
    ts = grid(60.0, 4 * 1440)
    high = int(PERIOD_RANGE_S[1] / 60)
    peaks = []
    for values in draws(scheduled_work, ts):
        half = values[: len(values) // 2]  # before the regime changes
        half = half - np.polyval(np.polyfit(ts[: len(half)], half, 1), ts[: len(half)])
        acf = np.array([autocorrelation(half, lag) for lag in range(1, min(high, len(half) // 2))])
        below = np.flatnonzero(acf < 0)
        peaks.append(float(acf[below[0] :].max()) if len(below) else 0.0)
    assert np.mean(np.array(peaks) > 0.2) > 0.5
