"""The training buffer: each series' ring of its last points, in time order, across appends
and within one oversized append; grouping of a batch by ``starts``; the group and
``min_points`` filters; the fixed memory bound; the bottom-k (smallest crc32) sample of series
that a flood of new names cannot disturb; and that what it returns are copies."""

from __future__ import annotations

import zlib

import numpy as np
import pytest
from numpy.testing import assert_array_equal

from streamrnn.retrain.buffer import BufferedSeries, TrainingBuffer


def _append(buffer: TrainingBuffer, batch: list[tuple[str, int, list[float]]]) -> None:
    """Append ``(name, group, timestamps)`` per series; each value is ``10 * ts``."""
    names = [name for name, _, _ in batch]
    groups = np.array([group for _, group, _ in batch], dtype=np.int64)
    lengths = [len(ts) for _, _, ts in batch]
    starts = np.cumsum([0, *lengths[:-1]]).astype(np.int64)
    ts = np.array([t for _, _, tss in batch for t in tss], dtype=np.float64)
    buffer.append(names, groups, starts, ts, 10.0 * ts)


def _by_name(series: list[BufferedSeries]) -> dict[str, BufferedSeries]:
    return {s.name: s for s in series}


def _crc(name: str) -> int:
    return zlib.crc32(name.encode())


def test_the_ring_keeps_the_last_points_in_time_order_across_appends() -> None:
    buffer = TrainingBuffer(max_series=3, points_per_series=5)
    _append(buffer, [("a", 0, [0.0, 1.0, 2.0])])
    (a,) = buffer.series()
    assert_array_equal(a.ts, [0.0, 1.0, 2.0])
    _append(buffer, [("a", 0, [3.0, 4.0, 5.0])])
    _append(buffer, [("a", 0, [6.0, 7.0, 8.0])])
    _append(buffer, [("a", 0, [9.0])])
    (a,) = buffer.series()
    assert a.name == "a"
    assert_array_equal(a.ts, [5.0, 6.0, 7.0, 8.0, 9.0])
    assert_array_equal(a.values, [50.0, 60.0, 70.0, 80.0, 90.0])
    assert buffer.points() == 5


@pytest.mark.parametrize("before", [0, 3])
def test_one_append_longer_than_the_ring_keeps_only_its_last_points(before: int) -> None:
    buffer = TrainingBuffer(max_series=2, points_per_series=5)
    if before:  # the ring's head is not at 0 when the long append lands
        _append(buffer, [("a", 0, [-3.0, -2.0, -1.0][:before])])
    _append(buffer, [("a", 0, [float(t) for t in range(12)])])
    (a,) = buffer.series()
    assert_array_equal(a.ts, [7.0, 8.0, 9.0, 10.0, 11.0])
    assert_array_equal(a.values, [70.0, 80.0, 90.0, 100.0, 110.0])
    # The ring still works after wrapping: the next point replaces the oldest.
    _append(buffer, [("a", 0, [12.0])])
    assert_array_equal(buffer.series()[0].ts, [8.0, 9.0, 10.0, 11.0, 12.0])


def test_starts_split_one_append_into_its_series() -> None:
    buffer = TrainingBuffer(max_series=4, points_per_series=4)
    _append(
        buffer,
        [("a", 0, [1.0, 2.0]), ("b", 1, [3.0, 4.0, 5.0, 6.0, 7.0, 8.0]), ("c", 0, [9.0, 10.0])],
    )
    _append(buffer, [("c", 0, [11.0]), ("a", 0, [12.0, 13.0, 14.0])])
    got = _by_name(buffer.series())
    assert sorted(got) == ["a", "b", "c"]
    assert_array_equal(got["a"].ts, [2.0, 12.0, 13.0, 14.0])
    assert_array_equal(got["b"].ts, [5.0, 6.0, 7.0, 8.0])
    assert_array_equal(got["c"].ts, [9.0, 10.0, 11.0])
    assert_array_equal(got["c"].values, [90.0, 100.0, 110.0])
    assert len(buffer) == 3 and "b" in buffer and "z" not in buffer


def test_series_filters_by_group_and_min_points_and_points_counts_per_group() -> None:
    buffer = TrainingBuffer(max_series=5, points_per_series=4)
    _append(
        buffer,
        [
            ("a", 0, [1.0, 2.0, 3.0]),
            ("b", 1, [1.0]),
            ("c", 1, [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]),  # 6 points, the ring keeps 4
            ("d", 2, [1.0, 2.0]),
        ],
    )
    assert sorted(s.name for s in buffer.series()) == ["a", "c", "d"]  # min_points=2
    assert sorted(s.name for s in buffer.series(min_points=1)) == ["a", "b", "c", "d"]
    assert sorted(s.name for s in buffer.series(min_points=3)) == ["a", "c"]
    assert sorted(s.name for s in buffer.series(min_points=4)) == ["c"]
    assert [s.name for s in buffer.series(group=1)] == ["c"]
    assert sorted(s.name for s in buffer.series(group=1, min_points=1)) == ["b", "c"]
    assert buffer.series(group=7, min_points=0) == []
    assert buffer.points() == 3 + 1 + 4 + 2
    assert (buffer.points(0), buffer.points(1), buffer.points(2), buffer.points(3)) == (3, 5, 2, 0)


def test_an_empty_buffer() -> None:
    buffer = TrainingBuffer(max_series=3, points_per_series=4)
    buffer.append(
        [], np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64), np.zeros(0), np.zeros(0)
    )
    assert len(buffer) == 0
    assert buffer.points() == 0 and buffer.points(0) == 0
    assert buffer.series(min_points=0) == []


def test_memory_is_the_configured_bound_allocated_up_front() -> None:
    buffer = TrainingBuffer(max_series=7, points_per_series=13)
    assert buffer.nbytes == 7 * 13 * 16
    _append(buffer, [(f"s{i}", 0, [float(t) for t in range(40)]) for i in range(30)])
    assert buffer.nbytes == 7 * 13 * 16
    assert len(buffer) == 7


@pytest.mark.parametrize("order", ["shuffled", "hash_descending", "hash_ascending"])
def test_the_series_with_the_smallest_name_hashes_are_kept(order: str) -> None:
    rng = np.random.default_rng(7)
    names = [f"host-{i}.cpu" for i in range(1_000)]
    assert len({_crc(n) for n in names}) == len(names)  # no ties: the expected set is exact
    expected = sorted(names, key=_crc)[:10]
    if order == "shuffled":
        offered = [names[i] for i in rng.permutation(len(names))]
    else:
        offered = sorted(names, key=_crc, reverse=order == "hash_descending")
    index = {name: i for i, name in enumerate(names)}

    def batch(chunk: list[str], t0: float) -> list[tuple[str, int, list[float]]]:
        # Series i is in group i % 3; its timestamps start at 1000 * i (recognisable values).
        return [
            (n, index[n] % 3, [1000.0 * index[n] + t0 + k for k in range(1 + index[n] % 3)])
            for n in chunk
        ]

    buffer = TrainingBuffer(max_series=10, points_per_series=8)
    for chunk in np.array_split(np.array(offered, dtype=object), 7):
        _append(buffer, batch(list(chunk), 0.0))
    assert len(buffer) == 10
    assert sorted(s.name for s in buffer.series(min_points=1)) == sorted(expected)
    assert all(name in buffer for name in expected)

    # Offering the rejected series again, with more points, changes nothing.
    rejected = [n for n in offered if n not in expected]
    _append(buffer, batch(rejected, 10.0))
    assert sorted(s.name for s in buffer.series(min_points=1)) == sorted(expected)

    # Each kept series holds its own points (none of a series it displaced) in its own group.
    for s in buffer.series(min_points=1):
        i = index[s.name]
        assert_array_equal(s.ts, [1000.0 * i + k for k in range(1 + i % 3)])
        assert_array_equal(s.values, 10.0 * s.ts)
    for group in range(3):
        in_group = sorted(s.name for s in buffer.series(group=group, min_points=1))
        assert in_group == sorted(n for n in expected if index[n] % 3 == group)


def test_a_displacing_series_starts_with_an_empty_ring() -> None:
    small, large = sorted(["alpha", "beta", "gamma", "delta"], key=_crc)[:2]
    buffer = TrainingBuffer(max_series=1, points_per_series=5)
    _append(buffer, [(large, 4, [1.0, 2.0, 3.0, 4.0])])
    _append(buffer, [(small, 2, [9.0])])
    assert large not in buffer and small in buffer
    (s,) = buffer.series(min_points=1)
    assert s.name == small
    assert_array_equal(s.ts, [9.0])
    assert buffer.points() == 1 and buffer.points(4) == 0 and buffer.points(2) == 1
    # The displaced series is not re-admitted: its hash is now the larger one.
    _append(buffer, [(large, 4, [5.0, 6.0])])
    assert large not in buffer and buffer.points() == 1


def test_returned_arrays_are_copies() -> None:
    buffer = TrainingBuffer(max_series=2, points_per_series=4)
    _append(buffer, [("a", 0, [1.0, 2.0, 3.0])])
    (a,) = buffer.series()
    a.ts[:] = -1.0
    a.values[:] = -1.0
    (again,) = buffer.series()
    assert_array_equal(again.ts, [1.0, 2.0, 3.0])
    assert_array_equal(again.values, [10.0, 20.0, 30.0])


def test_a_buffer_of_no_series_holds_nothing() -> None:
    buffer = TrainingBuffer(max_series=0, points_per_series=4)
    buffer.append(
        ["a", "b"], np.zeros(2, dtype=np.int64), np.array([0, 2]), np.arange(4.0), np.arange(4.0)
    )
    assert len(buffer) == 0 and buffer.nbytes == 0 and buffer.series() == []
