"""Drift detection on a group's forecast error: stationary errors and falls of the error give
no event, a rise by at least ``min_ratio`` does (ADWIN and Page-Hinkley), a significant but
small rise does not; NaN errors are ignored, large errors clipped, each batch is sampled down
to ``sample_points``, groups are independent and ``reset`` forgets a group's history."""

from __future__ import annotations

from typing import Literal

import numpy as np
import pytest

from streamrnn.arrays import FloatArray
from streamrnn.retrain.drift import ERROR_CLIP, DriftEvent, ErrorDriftMonitor

BATCH = 64
#: Mean of |N(0, 1)|, the error level before any change.
BASE = float(np.sqrt(2.0 / np.pi))


def _errors(rng: np.random.Generator, n: int = BATCH, level: float = 1.0) -> FloatArray:
    """Scaled absolute errors of mean ``level * BASE``."""
    return level * np.abs(rng.normal(0.0, 1.0, n))


def _run(
    monitor: ErrorDriftMonitor,
    rng: np.random.Generator,
    batches: int,
    level: float = 1.0,
    group: int = 0,
    n: int = BATCH,
) -> list[DriftEvent]:
    events = []
    for _ in range(batches):
        event = monitor.update(group, _errors(rng, n, level))
        if event is not None:
            events.append(event)
    return events


def test_stationary_errors_give_no_event() -> None:
    for seed in range(3):
        rng = np.random.default_rng(seed)
        monitor = ErrorDriftMonitor(1, "adwin", min_ratio=1.0)
        assert _run(monitor, rng, batches=80) == []  # 5,120 errors


def test_stationary_errors_give_no_event_with_page_hinkley_and_the_default_ratio() -> None:
    # Page-Hinkley runs with a tolerated drift of 0.05 (river's 0.005 fires on noise), and
    # min_ratio (1.25 by default) drops what wobbles remain.
    for seed in range(6):
        rng = np.random.default_rng(seed)
        monitor = ErrorDriftMonitor(1, "page_hinkley", min_ratio=1.25)
        assert _run(monitor, rng, batches=100) == []


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_a_step_rise_of_the_error_is_reported(seed: int) -> None:
    rng = np.random.default_rng(seed)
    monitor = ErrorDriftMonitor(2, "adwin", min_ratio=1.25)
    assert _run(monitor, rng, batches=40, group=1) == []
    events = []
    for batch in range(20):
        event = monitor.update(1, _errors(rng, level=3.0))
        if event is not None:
            events.append((batch, event))
    assert events, "a tripled error was not reported"
    batch, event = events[0]
    assert event.group == 1
    assert event.error_after > event.error_before * 1.25
    assert event.error_before == pytest.approx(BASE, abs=0.06)
    # Counted: every error fed up to the detection, some of them after the change.
    assert 40 * BATCH < event.observations <= (40 + batch + 1) * BATCH


@pytest.mark.parametrize("method", ["adwin", "page_hinkley"])
def test_a_fall_of_the_error_gives_no_event(method: Literal["adwin", "page_hinkley"]) -> None:
    rng = np.random.default_rng(5)
    monitor = ErrorDriftMonitor(1, method, min_ratio=1.0)
    _run(monitor, rng, batches=40, level=3.0)  # (Page-Hinkley may false-alarm at this scale)
    assert _run(monitor, rng, batches=40, level=1.0) == []


def test_the_fall_is_detected_but_filtered_by_the_ratio() -> None:
    # The same data with min_ratio=0 reports the change: ADWIN saw it, the ratio dropped it.
    rng = np.random.default_rng(5)
    monitor = ErrorDriftMonitor(1, "adwin", min_ratio=0.0)
    _run(monitor, rng, batches=40, level=3.0)
    events = _run(monitor, rng, batches=40, level=1.0)
    assert events
    assert events[0].error_after < events[0].error_before


def test_a_significant_rise_below_min_ratio_gives_no_event() -> None:
    def events(min_ratio: float) -> list[DriftEvent]:
        rng = np.random.default_rng(3)
        monitor = ErrorDriftMonitor(1, "adwin", min_ratio=min_ratio)
        before = _run(monitor, rng, batches=100)
        assert before == []
        return _run(monitor, rng, batches=400, level=1.1)

    # 25,600 errors 10% higher: ADWIN detects the change ...
    assert events(1.0)
    # ... but it is not worth a retrain.
    assert events(1.25) == []


def test_nan_errors_are_ignored() -> None:
    monitor = ErrorDriftMonitor(1, "adwin", min_ratio=1.25, sample_points=1_000)
    with_nan = ErrorDriftMonitor(1, "adwin", min_ratio=1.25, sample_points=1_000)
    rng = np.random.default_rng(11)
    assert with_nan.update(0, np.full(BATCH, np.nan)) is None
    got: list[DriftEvent] = []
    got_with_nan: list[DriftEvent] = []
    for batch in range(60):
        errors = _errors(rng, level=1.0 if batch < 40 else 3.0)
        padded = np.full(2 * BATCH, np.nan)
        padded[::2] = errors
        for m, events, e in ((monitor, got, errors), (with_nan, got_with_nan, padded)):
            event = m.update(0, e)
            if event is not None:
                events.append(event)
    assert got  # a rise was reported ...
    assert got_with_nan == got  # ... identically, counting only the finite errors


def test_errors_are_clipped() -> None:
    rng = np.random.default_rng(2)
    monitor = ErrorDriftMonitor(1, "adwin", min_ratio=1.25)
    _run(monitor, rng, batches=40)
    events = [monitor.update(0, np.full(BATCH, 1e6)) for _ in range(10)]
    event = next(e for e in events if e is not None)
    assert event.error_after <= ERROR_CLIP


def test_at_most_sample_points_errors_per_batch_reach_the_detector() -> None:
    sample_points = 16
    monitor = ErrorDriftMonitor(1, "adwin", sample_points=sample_points, min_ratio=1.25)
    rng = np.random.default_rng(4)
    assert _run(monitor, rng, batches=200, n=5_000) == []
    events = []
    for batch in range(100):
        event = monitor.update(0, _errors(rng, 5_000, level=3.0))
        if event is not None:
            events.append((batch, event))
            break
    assert events
    batch, event = events[0]
    # 300 batches of 5,000 errors, of which exactly 16 each were counted.
    assert 200 * sample_points < event.observations <= (200 + batch + 1) * sample_points


def test_groups_are_independent() -> None:
    rng = np.random.default_rng(9)
    data = [[_errors(rng, level=1.0 if b < 40 else 3.0) for b in range(60)] for _ in range(2)]
    data[0] = [_errors(rng) for _ in range(60)]  # group 0 stays stationary

    alone = ErrorDriftMonitor(1, "adwin", min_ratio=1.25)
    expected = [e for e in (alone.update(0, errors) for errors in data[1]) if e is not None]
    assert expected

    monitor = ErrorDriftMonitor(2, "adwin", min_ratio=1.25)
    got: dict[int, list[DriftEvent]] = {0: [], 1: []}
    for b in range(60):
        for group in (0, 1):
            event = monitor.update(group, data[group][b])
            if event is not None:
                got[event.group].append(event)
    assert got[0] == []
    assert [(e.error_before, e.error_after, e.observations) for e in got[1]] == [
        (e.error_before, e.error_after, e.observations) for e in expected
    ]
    assert all(e.group == 1 for e in got[1])


@pytest.mark.parametrize("min_ratio", [1.25, 0.0])  # 0: any change the detector sees counts
def test_reset_forgets_the_history(min_ratio: float) -> None:
    def run(reset: bool) -> list[DriftEvent]:
        rng = np.random.default_rng(6)
        monitor = ErrorDriftMonitor(1, "adwin", min_ratio=min_ratio)
        _run(monitor, rng, batches=40)
        if reset:
            monitor.reset(0)  # a new model: its higher error is the new normal
        return _run(monitor, rng, batches=40, level=3.0)

    assert run(reset=False)
    assert run(reset=True) == []


def test_the_event_after_a_reset_measures_from_the_reset() -> None:
    rng = np.random.default_rng(0)
    monitor = ErrorDriftMonitor(1, "adwin", min_ratio=1.25)
    _run(monitor, rng, batches=100, level=3.0)  # the old model's error
    monitor.reset(0)
    assert _run(monitor, rng, batches=40) == []
    events = _run(monitor, rng, batches=20, level=3.0)
    assert events
    assert events[0].error_before == pytest.approx(BASE, abs=0.06)  # not the old model's
    assert 40 * BATCH < events[0].observations <= 60 * BATCH


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_page_hinkley_reports_a_rise(seed: int) -> None:
    rng = np.random.default_rng(seed)
    monitor = ErrorDriftMonitor(1, "page_hinkley", min_ratio=1.25)
    assert _run(monitor, rng, batches=60) == []
    events = _run(monitor, rng, batches=20, level=3.0)
    assert events
    event = events[0]
    assert event.group == 0
    assert event.error_after > event.error_before * 1.25
    assert 60 * BATCH < event.observations <= 80 * BATCH


def test_adwin_reports_a_sustained_doubling_with_the_default_min_ratio() -> None:
    missed = []
    for seed in range(10):
        rng = np.random.default_rng(seed)
        monitor = ErrorDriftMonitor(1, "adwin", min_ratio=1.25)  # the configured default
        assert _run(monitor, rng, batches=40) == []
        if not _run(monitor, rng, batches=100, level=2.0):  # 6,400 errors at twice the level
            missed.append(seed)
    assert missed == []
