"""Values of any finite magnitude never leave a series' state non-finite (issue 19, item 5).

The rule (:mod:`streamrnn.stages.features`, :mod:`streamrnn.stages.learning`): values are
clamped to ±``VALUE_LIMIT`` (1e30) before they reach any series state, and a point beyond it
is scored but held out of learning like an anomaly (and never learned by the level novelty or
the seasonal profile). Seeded random series are fed through the engine (its compiled
kernel) with ±1.8e308, ±1e308, 1e-308, denormals, sign flips, long constant runs then a
jump, and extreme values as the first point, during warm-up and later; and through the
training path's feature scan.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest

from streamrnn.config import Settings
from streamrnn.decode import DecodedMessage
from streamrnn.engine.build import build_engine
from streamrnn.engine.engine import Engine, EngineBatchResult
from streamrnn.stages.features import VALUE_LIMIT, FeatureState, scan

T0 = 1_700_000_000.0
STEP = 300.0
POINTS = 360
HUGE = float(np.finfo(np.float64).max)  # 1.797e308
TINY = 1e-308
DENORMAL = 5e-324
CALIBRATIONS = ("likelihood", "tail", "evt")
#: Columns whose "never" value is -inf (no alert yet, nothing learned yet).
NEVER_TS = ("latest_ts", "nov_ts", "rule_last_alert_ts")


def _engine(calibration: str = "likelihood", **scoring: Any) -> Engine:
    # No cooldown in seconds: the probe after an injection must be able to alert.
    sections = {"calibration": calibration, "alert": {"cooldown_s": 0}, **scoring}
    return build_engine(Settings(scoring=sections))


@dataclass
class Scenario:
    """One series: its values, and a probe point after the injections that must alert.

    ``learns_absurd``: the series learns absurd values (in range, or a run beyond the limit
    longer than ``max_skipped_points``): its state stays finite, but its statistics then
    describe those values, so only an absurd probe alerts, and EVT (whose learned peak
    magnitudes are not clipped) is not asked to alert at all.
    """

    name: str
    values: np.ndarray
    probe: int
    injected: list[int] = field(default_factory=list)
    learns_absurd: bool = False


def _base(rng: np.random.Generator, n: int) -> tuple[np.ndarray, float]:
    """An ordinary series (level from 0.01 to 1e6, noise 0.5-5 %, some with a random walk
    or a daily rhythm) and its noise scale."""
    level = 10.0 ** rng.uniform(-2.0, 6.0)
    noise = level * rng.uniform(0.005, 0.05)
    values = level + noise * rng.standard_normal(n)
    kind = rng.integers(3)
    if kind == 1:
        values += 0.3 * noise * np.cumsum(rng.standard_normal(n))
    elif kind == 2:
        values += 3.0 * noise * np.sin(2 * np.pi * STEP * np.arange(n) / 86_400.0)
    return values, noise


def _scenarios(seed: int) -> list[Scenario]:
    rng = np.random.default_rng(seed)
    n = POINTS
    out = []

    def add(name: str, at: dict[int, float], learns_absurd: bool = False) -> None:
        values, noise = _base(rng, n)
        for i, v in at.items():
            values[i] = v
        probe = int(rng.integers(n - 50, n - 20))
        assert probe > max(at) + 30
        # An ordinary spike (far out for the series, in range) where the injections leave
        # the series as it was; else an absurd one (the normaliser has learned absurd values).
        values[probe] = values[probe - 1] + 400.0 * noise if not learns_absurd else 1e300
        out.append(Scenario(name, values, probe, sorted(at), learns_absurd))

    sign = float(rng.choice([-1.0, 1.0]))
    add("first point", {0: sign * HUGE})
    add("tenth point, in warm-up", {9: sign * 1e308})
    add("after warm-up", {int(rng.integers(60, 200)): -sign * HUGE})
    add("first and warm-up and later", {0: 1e308, 5: -1e308, 17: HUGE, 150: -HUGE})
    add("tiny and denormal", {5: TINY, 12: -DENORMAL, 120: DENORMAL, 160: -TINY})
    flips = {12 + k: (-1.0) ** k * 1e308 for k in range(6)}
    flips.update({150 + k: (-1.0) ** (k + 1) * HUGE for k in range(8)})
    add("sign flips", flips)
    randoms = [HUGE, -HUGE, 1e308, -1e308, 1e200, -1e200, 1.01 * VALUE_LIMIT, TINY, DENORMAL]
    picks = rng.choice(POINTS - 100, size=6, replace=False)
    add("random positions", {int(i): float(rng.choice(randoms)) for i in picks})
    # In range but absurd for the series (learned during warm-up), and a run beyond the limit
    # longer than max_skipped_points (then learned, clamped): finite, but the normaliser has
    # learned them, so the probe is absurd too.
    add("limit in warm-up", {3: VALUE_LIMIT, 8: -VALUE_LIMIT, 9: 1e29}, learns_absurd=True)
    add("long run beyond the limit", {100 + k: 1e200 for k in range(30)}, learns_absurd=True)

    # A long constant run, then a jump beyond the limit, back, and an ordinary jump.
    values = np.full(n, 42.0)
    values[:20] += rng.standard_normal(20)
    values[200], values[260] = -HUGE, 1e200
    values[300:] = 50.0
    out.append(Scenario("constant run, then jumps", values, 300, [200, 260]))
    # Tiny and huge in-range series.
    values = 1e-300 * (1.0 + 0.01 * rng.standard_normal(n))
    values[[0, 50]] = HUGE, -1e308
    values[320] = 1e300
    out.append(Scenario("a series of tiny values", values, 320, [0, 50]))
    values = 1e29 * (1.0 + 0.01 * rng.standard_normal(n))
    values[[9, 100]] = -HUGE, 1e308
    values[320] = -1e300
    out.append(Scenario("a series near the limit", values, 320, [9, 100]))
    return out


def _feed(engine: Engine, scenarios: list[Scenario], seed: int) -> dict[str, dict[str, Any]]:
    """Every series in batches of windows of 1-4 points (mixed per series), checking the
    whole table after each batch; returns each series' per-point results."""
    rng = np.random.default_rng(seed)
    ts = T0 + STEP * np.arange(POINTS)
    done = np.zeros(len(scenarios), dtype=np.int64)
    parts: dict[str, list[EngineBatchResult]] = {s.name: [] for s in scenarios}
    index: dict[str, list[np.ndarray]] = {s.name: [] for s in scenarios}
    while (done < POINTS).any():
        batch, owners = [], []
        for k, sc in enumerate(scenarios):
            if done[k] >= POINTS:
                continue
            take = min(int(rng.integers(1, 5)), POINTS - int(done[k]))
            window = slice(int(done[k]), int(done[k]) + take)
            points = ts[window].tolist(), sc.values[window].tolist()
            batch.append(DecodedMessage(sc.name, *points, None))
            owners.append(k)
            done[k] += take
        result = engine.process(batch)
        assert not result.rejections
        for m, k in enumerate(owners):
            rows = np.flatnonzero(result.message_index == m)
            parts[scenarios[k].name].append(result)
            index[scenarios[k].name].append(rows)
        _assert_state_finite(engine)
    out = {}
    for sc in scenarios:
        pieces = list(zip(parts[sc.name], index[sc.name], strict=True))
        out[sc.name] = {
            name: np.concatenate([getattr(r, name)[rows] for r, rows in pieces])
            for name in ("forecast", "spread", "score", "armed_score", "severity", "error_scale")
        }
    return out


def _assert_state_finite(engine: Engine) -> None:
    """Every float column of every live series is finite (-inf only as "never")."""
    n = len(engine.table)
    for name in engine.table.column_names():
        column = engine.table.column(name)[:n]
        if column.dtype.kind != "f":
            continue
        ok = np.isfinite(column)
        if name in NEVER_TS:
            ok |= column == -np.inf
        if not ok.all():
            bad = {engine.table.name_of(int(slot)) for slot in np.flatnonzero(~ok) % n}
            raise AssertionError(f"{name} is not finite for {sorted(bad)}")


@pytest.mark.parametrize("calibration", CALIBRATIONS)
def test_extreme_values_never_leave_a_series_non_finite(calibration: str) -> None:
    seed = 19 + CALIBRATIONS.index(calibration)
    scenarios = _scenarios(seed)
    engine = _engine(calibration)
    results = _feed(engine, scenarios, seed)
    warning = engine.rule.warning_threshold
    slot_of = engine.table.slot_of
    for sc in scenarios:
        r = results[sc.name]
        assert np.isfinite(r["score"]).all() and np.isfinite(r["armed_score"]).all(), sc.name
        assert ((r["score"] >= 0) & (r["score"] <= 1)).all(), sc.name
        # A forecast (and its bounds) from the series' second learned point on: a first
        # point beyond the limit is not learned, so the next one is the series' first.
        first = int(np.flatnonzero(np.abs(sc.values) <= VALUE_LIMIT)[0])
        after = slice(first + 1, None)
        for name in ("forecast", "spread", "error_scale"):
            assert np.isfinite(r[name][after]).all(), (sc.name, name)
        assert (r["spread"][after] > 0).all(), sc.name
        # A value beyond the limit (the first of a run) is a hit once the series scores at
        # all (after warm-up; EVT also waits for peaks).
        beyond = np.abs(sc.values) > VALUE_LIMIT
        for i in sc.injected:
            scoring = (r["score"][:i] > 0).any()
            if scoring and beyond[i] and not beyond[i - 1]:
                assert r["score"][i] >= warning, (sc.name, i, r["score"][i])
        # The series can still alert afterwards: the probe raises an alert within two
        # points. EVT alerts less readily (and not at all before it has seen 5 peaks): there
        # the probe's score must not be stuck at 0.
        around = slice(sc.probe, sc.probe + 3)
        if calibration != "evt":
            assert r["score"][sc.probe] >= warning, (sc.name, r["score"][around])
            assert (r["severity"][around] > 0).any(), (sc.name, r["score"][around])
        elif not sc.learns_absurd and engine.table.column("evt_peaks")[slot_of(sc.name)] >= 5:
            assert r["score"][sc.probe] > 0, (sc.name, r["score"][around])


@pytest.mark.parametrize("at, value", [(0, -HUGE), (9, 1e308), (9, -1e308), (20, HUGE)])
def test_a_value_beyond_the_limit_in_warm_up_is_as_if_it_had_not_arrived(
    at: int, value: float
) -> None:
    """The reported bug: 1e308 at a series' 10th point left every later record with null
    forecast and bounds and score 0. Now the series goes on exactly as without the point,
    and alerts at a later spike."""
    rng = np.random.default_rng(at)
    n = 200
    ts = T0 + STEP * np.arange(n)
    values = 100.0 + rng.standard_normal(n)
    values[150] += 60.0
    values[at] = value
    seen, unseen = _engine(), _engine()
    out_seen, out_unseen = [], []
    for i in range(n):
        point = DecodedMessage("s", [float(ts[i])], [float(values[i])], None)
        result = seen.process([point])
        if i == at:
            assert result.score[0] == 0.0  # warm-up
            continue
        out_seen.append(result)
        out_unseen.append(unseen.process([point]))
    for name in ("forecast", "spread", "score", "severity", "armed_score", "error_scale"):
        a = np.concatenate([getattr(r, name) for r in out_seen])
        b = np.concatenate([getattr(r, name) for r in out_unseen])
        np.testing.assert_array_equal(a, b, err_msg=name)
    for name in seen.table.column_names():
        np.testing.assert_array_equal(
            seen.table.column(name)[:1], unseen.table.column(name)[:1], err_msg=name
        )
    forecast = np.concatenate([r.forecast for r in out_seen])
    assert np.isfinite(forecast[1:]).all()
    severity = np.concatenate([r.severity for r in out_seen])
    assert severity[149] > 0  # the spike at point 150 (one point is missing before it)


def test_a_value_beyond_the_limit_after_warm_up_alerts_once_and_the_next_point_is_forecast() -> (
    None
):
    engine = _engine()
    rng = np.random.default_rng(3)
    values = 100.0 + rng.standard_normal(120)
    values[80] = -HUGE
    results = [
        engine.process([DecodedMessage("s", [T0 + STEP * i], [float(v)], None)])
        for i, v in enumerate(values)
    ]
    severity = np.array([r.severity[0] for r in results])
    assert np.flatnonzero(severity).tolist() == [80]
    forecast = np.array([r.forecast[0] for r in results])
    assert np.isfinite(forecast[1:]).all()
    assert abs(forecast[81] - 100.0) < 10.0


def test_the_feature_scan_stays_finite_for_any_finite_value() -> None:
    """Training and re-warming scan raw history: the clamp is theirs too."""
    rng = np.random.default_rng(7)
    values = 100.0 + rng.standard_normal((3, 80))
    values[0, [0, 9, 40, 41]] = HUGE, -HUGE, 1e308, -1e308
    values[1, ::7] = TINY
    values[1, 3::7] = DENORMAL
    values[2] = 1e300 * np.sign(rng.standard_normal(80))
    ts = np.broadcast_to(T0 + STEP * np.arange(80), values.shape).copy()
    grid, state = scan(FeatureState.empty(3), ts, values, np.ones(values.shape, bool), 0.01)
    for name in ("inputs", "target", "scale", "prev_value", "seen_before"):
        assert np.isfinite(getattr(grid, name)).all(), name
    for name in FeatureState._fields:
        assert np.isfinite(getattr(state, name)).all(), name
    assert (np.abs(grid.prev_value) <= VALUE_LIMIT).all()
