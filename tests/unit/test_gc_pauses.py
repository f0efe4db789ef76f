"""GcPauses counts the collector's pauses per generation, and only while installed."""

from __future__ import annotations

import gc

from streamrnn.gc_pauses import GcPauses


def test_collections_are_counted_per_generation_while_installed() -> None:
    pauses = GcPauses()
    pauses.install()
    pauses.install()  # idempotent: one callback
    try:
        gc.collect(0)
        gc.collect(2)
        gc.collect(2)
    finally:
        pauses.uninstall()
    gc.collect(2)  # not counted

    assert pauses.collections[0] >= 1
    assert pauses.collections[2] == 2
    assert 0.0 < pauses.longest_s[2] <= pauses.seconds[2]
    fields = pauses.as_log_fields()["gc"]
    assert isinstance(fields, dict)
    assert fields["gen2"]["n"] == 2
    assert fields["gen2"]["max_ms"] == round(1000.0 * pauses.longest_s[2], 2)


def test_an_end_without_a_start_is_ignored() -> None:
    pauses = GcPauses()
    pauses._callback("stop", {"generation": 1})
    assert pauses.collections == [0, 0, 0]
