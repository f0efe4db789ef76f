"""HeapTrimmer: trims at most once per interval."""

from __future__ import annotations

from streamrnn.heap_trim import HeapTrimmer


def test_trims_at_most_once_per_interval() -> None:
    trimmer = HeapTrimmer(min_interval_s=3600.0)
    first = trimmer.maybe_trim()
    assert trimmer.maybe_trim() is False
    # glibc (this machine, the image): the first call trims; elsewhere it is a no-op.
    assert first is (trimmer._trim is not None)


def test_a_zero_interval_trims_every_time_on_glibc() -> None:
    trimmer = HeapTrimmer(min_interval_s=0.0)
    results = {trimmer.maybe_trim() for _ in range(3)}
    assert results == {trimmer._trim is not None}
