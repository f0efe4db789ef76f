"""The state codec, the local SQLite store and the state manager's bookkeeping (no broker)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from confluent_kafka import Message

from streamrnn.kafka.changelog import MODEL_HEADER, ChangelogFold
from streamrnn.state.codec import RowCodec
from streamrnn.state.codec import offset_of as blob_offset
from streamrnn.state.manager import GroupInfo, SeriesStateManager
from streamrnn.state.series_table import SeriesTable
from streamrnn.state.store import LocalStateStore, StoredState, StoreLockedError


def _table(max_series: int = 8) -> SeriesTable:
    table = SeriesTable(max_series)
    table.add_column("level")
    table.add_column("group", dtype=np.int64)
    table.add_column("state.global", shape=(1, 3), dtype=np.float32)
    return table


def _manager(tmp_path: Path, max_series: int = 8) -> SeriesStateManager:
    store = LocalStateStore(tmp_path / "s.sqlite")
    return SeriesStateManager(
        _table(max_series), store, [GroupInfo("v1", "state.global")], route=lambda _n: 0
    )


def _fill(manager: SeriesStateManager, names: list[str], partition: int = 0) -> None:
    table = manager.table
    slots = table.resolve(names, [None] * len(names))
    table.column("level")[slots] = np.arange(len(names)) + 0.5
    table.column("state.global")[slots] = np.arange(3 * len(names)).reshape(-1, 1, 3)
    pid = manager.partition_id("in", partition)
    manager.note_processed(slots, np.full(len(names), pid))


def test_codec_round_trips_every_persistent_column() -> None:
    table = _table()
    slots = table.resolve(["a", "b"], [None, None])
    table.column("level")[slots] = [1.25, -3.0]
    table.column("state.global")[slots] = np.array([[[1, 2, 3]], [[4, 5, 6]]])
    codec = RowCodec(table)
    blobs = codec.encode(slots, np.array([10, 20]))
    assert all(len(b) == codec.row_bytes for b in blobs)
    assert [blob_offset(b) for b in blobs] == [10, 20]
    rows, bad = codec.decode(blobs)
    assert bad == []
    assert rows.offsets.tolist() == [10, 20]
    assert rows.columns["level"].tolist() == [1.25, -3.0]
    assert rows.columns["state.global"].dtype == np.float32
    assert rows.columns["state.global"][1, 0].tolist() == [4, 5, 6]


def test_codec_recognises_blobs_of_another_layout() -> None:
    small, big = _table(), _table()
    big.add_column("extra")
    slots = small.resolve(["a"], [None])
    blob = RowCodec(small).encode(slots, np.array([1]))
    rows, bad = RowCodec(big).decode(blob)
    assert bad == [0] and len(rows) == 0


def test_store_keeps_the_newest_state_of_a_partition(tmp_path: Path) -> None:
    store = LocalStateStore(tmp_path / "s.sqlite")
    store.put([StoredState("a", "in", 0, 5, "v1", None, b"new")])
    store.put([StoredState("a", "in", 0, 3, "v1", None, b"old")])  # older: ignored
    assert store.get(["a"])[0].blob == b"new"
    store.put([StoredState("a", "in", 0, 7, "v1", '{"h":"x"}', b"newer")], {("log", 0): 42})
    (row,) = store.get(["a", "missing"])
    assert (row.blob, row.offset, row.labels) == (b"newer", 7, '{"h":"x"}')
    assert store.changelog_position("log", 0) == 42
    assert store.changelog_position("log", 1) == 0
    assert store.forget_newer("in", 0, 6) == 1
    assert store.get(["a"]) == []


def test_a_second_process_cannot_open_the_same_store(tmp_path: Path) -> None:
    first = LocalStateStore(tmp_path / "s.sqlite")
    with pytest.raises(StoreLockedError, match=r"own state\.directory"):
        LocalStateStore(tmp_path / "s.sqlite")
    first.close()
    LocalStateStore(tmp_path / "s.sqlite").close()


def test_dirty_series_are_encoded_with_their_partitions_commit_offset(tmp_path: Path) -> None:
    manager = _manager(tmp_path)
    _fill(manager, ["a", "b"], partition=0)
    _fill(manager, ["c"], partition=1)
    assert manager.has_dirty()
    records = manager.take_dirty({("in", 0): 100, ("in", 1): 7})
    assert not manager.has_dirty()
    got = {state.name: (where, state.offset) for where, state in records}
    assert got == {"a": (("in", 0), 100), "b": (("in", 0), 100), "c": (("in", 1), 7)}
    assert manager.take_dirty({("in", 0): 101}) == []


def test_evicted_series_come_back_with_their_state(tmp_path: Path) -> None:
    manager = _manager(tmp_path, max_series=4)
    _fill(manager, ["a", "b", "c", "d"])
    manager.take_dirty({("in", 0): 10})
    _fill(manager, ["c", "d"])  # a and b are the least recently seen
    manager.take_dirty({("in", 0): 12})
    state_of_a = manager.table.column("state.global")[manager.table.slot_of("a")].copy()
    assert manager.evict_least_recent(2) == 2
    assert "a" not in manager.table and "b" not in manager.table and "c" in manager.table
    assert manager.load(["a", "zzz"]) == 1
    slot = manager.table.slot_of("a")
    assert slot is not None
    assert np.array_equal(manager.table.column("state.global")[slot], state_of_a)
    assert manager.table.column("level")[slot] == 0.5


def test_dirty_series_are_never_evicted(tmp_path: Path) -> None:
    manager = _manager(tmp_path, max_series=4)
    _fill(manager, ["a", "b"])
    assert manager.evict_least_recent(2) == 0
    assert len(manager.table) == 2


def test_changelog_merge_skips_state_beyond_the_committed_offset(tmp_path: Path) -> None:
    source = _manager(tmp_path / "one")
    _fill(source, ["a"])
    ((_, committed_state),) = source.take_dirty({("in", 0): 10})
    source.table.column("level")[source.table.slot_of("a")] = 99.0
    source.note_processed(np.array([0]), np.array([source.partition_id("in", 0)]))
    ((_, uncommitted_state),) = source.take_dirty({("in", 0): 20})

    target = _manager(tmp_path / "two")
    fold = ChangelogFold({("log", 0): ("in", 0, 10)})
    batch = [
        Message(
            topic="log", partition=0, key=b"a", value=state.blob, headers=[(MODEL_HEADER, b"v1")]
        )
        for state in (committed_state, uncommitted_state)
    ]
    restored, deleted = target.merge_changelog(
        fold.parts([batch]), {("in", 0): 10}, {("log", 0): 2}
    )
    assert (restored, deleted, fold.records, fold.skipped) == (1, 0, 2, 1)
    assert target.store.changelog_position("log", 0) == 2
    target.load(["a"])
    assert target.table.column("level")[target.table.slot_of("a")] == 0.5


def test_a_state_from_another_model_version_restarts_the_hidden_state(tmp_path: Path) -> None:
    manager = _manager(tmp_path / "one")
    _fill(manager, ["a", "b"])
    (_, a), (_, b) = manager.take_dirty({("in", 0): 5})
    other = SeriesStateManager(
        _table(),
        LocalStateStore(tmp_path / "two.sqlite"),
        [GroupInfo("v2", "state.global")],
        route=lambda _n: 0,
    )
    other.store.put([a, b])
    other.load(["a", "b"])
    assert other.reset_states == 2
    assert not other.table.column("state.global")[:2].any()
    assert other.table.column("level")[other.table.slot_of("b")] == 1.5


def test_partitions_are_saved_on_revocation_and_dropped_when_lost(tmp_path: Path) -> None:
    manager = _manager(tmp_path)
    _fill(manager, ["a", "b"], partition=0)
    _fill(manager, ["c"], partition=1)
    manager.take_dirty({("in", 0): 3, ("in", 1): 4})
    assert manager.evict_partitions([("in", 0)]) == 2
    assert manager.table.names() == ["c"]
    assert {s.name for s in manager.store.get(["a", "b", "c"])} == {"a", "b"}
    assert manager.drop_partitions([("in", 1)]) == 1
    assert len(manager.table) == 0 and manager.store.get(["c"]) == []
