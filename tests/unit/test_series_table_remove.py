"""Removing rows from the series table keeps every other series' row intact."""

from __future__ import annotations

import numpy as np

from streamrnn.state.series_table import SeriesTable


def test_remove_moves_the_last_rows_into_the_holes() -> None:
    table = SeriesTable(16)
    table.add_column("v")
    names = [f"s{i}" for i in range(6)]
    slots = table.resolve(names, [{"i": str(i)} for i in range(6)])
    table.column("v")[slots] = np.arange(6) * 10.0
    table.remove(np.array([1, 4, 5]))
    assert len(table) == 3
    assert sorted(table.names()) == ["s0", "s2", "s3"]
    for name in ("s0", "s2", "s3"):
        slot = table.slot_of(name)
        assert slot is not None
        assert table.column("v")[slot] == int(name[1:]) * 10.0
        assert table.labels_of(slot) == {"i": name[1:]}
    assert "s4" not in table and table.slot_of("s1") is None
    assert (table.column("v")[3:6] == 0.0).all()  # freed rows are reset to the fill value
    new = table.resolve(["s9"], [None])
    assert new.tolist() == [3]
