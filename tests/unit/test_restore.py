"""The restore path without a broker: the changelog fold (latest committed state per series,
tombstones), the store's background write and what it answers meanwhile, and the
checkpointer's restore (progress reports, the ``state restored`` line)."""

from __future__ import annotations

import random
import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np
import pytest
from confluent_kafka import Message
from structlog.testing import capture_logs

import streamrnn.checkpoint as checkpoint
import streamrnn.kafka.changelog as changelog
from streamrnn.checkpoint import PROGRESS_EVERY, Checkpointer
from streamrnn.config import Settings
from streamrnn.kafka.changelog import LABELS_HEADER, MODEL_HEADER, ChangelogFold
from streamrnn.state.manager import GroupInfo, SeriesStateManager
from streamrnn.state.series_table import SeriesTable
from streamrnn.state.store import LocalStateStore, PendingRows, StoredState

#: Changelog partition p holds the state of input partition p of "in", committed up to 100.
SOURCES = {("log", p): ("in", p, 100) for p in range(2)}


def _blob(offset: int, tag: bytes = b"") -> bytes:
    """A state blob reflecting input ``offset`` (header as the codec writes it)."""
    return b"S1" + bytes(8) + offset.to_bytes(8, "little", signed=True) + tag


def _record(
    name: str, blob: bytes | None, partition: int = 0, headers: Any = None, topic: str = "log"
) -> Message:
    return Message(
        topic=topic,
        partition=partition,
        key=name.encode(),
        value=blob,
        headers=[(MODEL_HEADER, b"v1")] if headers is None else headers,
    )


def _store(tmp_path: Path) -> LocalStateStore:
    return LocalStateStore(tmp_path / "s.sqlite")


def _state(name: str, partition: int, offset: int, blob: bytes | None = None) -> StoredState:
    return StoredState(name, "in", partition, offset, "v1", None, blob or _blob(offset))


def _contents(store: LocalStateStore, names: Sequence[str]) -> dict[str, tuple[int, int, bytes]]:
    return {s.name: (s.partition, s.offset, s.blob) for s in store.get(names)}


# -- the fold ----------------------------------------------------------------------------


def test_the_fold_keeps_the_latest_committed_state_of_each_series() -> None:
    fold = ChangelogFold(SOURCES)
    fold.add([_record("a", _blob(5)), _record("b", _blob(5)), _record("a", _blob(8))])
    fold.add([_record("a", _blob(101)), _record("b", _blob(100, b"!"))])  # 101: uncommitted
    (part,) = fold.parts([])
    assert {n: (r[2], r[3], r[6]) for n, r in part.rows.items()} == {
        "a": (0, 8, _blob(8)),
        "b": (0, 100, _blob(100, b"!")),
    }
    assert (fold.records, fold.skipped, part.deleted) == (5, 1, set())
    assert part.rows["a"] == ("a", "in", 0, 8, "v1", None, _blob(8))


def test_the_fold_reads_model_and_labels_from_the_headers() -> None:
    fold = ChangelogFold(SOURCES)
    fold.add(
        [
            _record("a", _blob(1), headers=[(MODEL_HEADER, b"v2"), (LABELS_HEADER, b'{"h":1}')]),
            _record("b", _blob(1), headers=[]),
            _record("c", _blob(1), headers=[(MODEL_HEADER, None), (LABELS_HEADER, b"")]),
        ]
    )
    rows = fold.take().rows
    assert [rows[n][4:6] for n in "abc"] == [("v2", '{"h":1}'), ("", None), ("", None)]


def test_a_tombstone_deletes_the_series_until_a_later_record() -> None:
    fold = ChangelogFold(SOURCES)
    fold.add([_record("a", _blob(5)), _record("b", _blob(5)), _record("a", None)])
    fold.add([_record("b", None), _record("b", _blob(3))])
    part = fold.take()
    assert set(part.rows) == {"b"} and part.deleted == {"a", "b"}
    assert len(part) == 2


def test_within_a_read_the_last_record_wins_even_with_an_older_offset() -> None:
    """After an operator reset an input partition's offsets, the log's later checkpoint is
    the state of the points processed since: it wins, though it reflects an older offset."""
    fold = ChangelogFold(SOURCES)
    fold.add([_record("a", _blob(90)), _record("a", _blob(50)), _record("b", _blob(9), 1)])
    fold.add([_record("b", _blob(7), 0)])  # b moved to another input partition
    rows = fold.take().rows
    assert {n: rows[n][2:4] for n in rows} == {"a": (0, 50), "b": (0, 7)}


@pytest.mark.parametrize("seed", range(5))
def test_fold_then_write_equals_writing_every_record_in_log_order(
    tmp_path: Path, seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Random logs over two input partitions (series moving between them, offsets
    non-decreasing per partition), a store holding older state, and a small budget so the
    fold hands on several parts."""
    monkeypatch.setattr(changelog, "FOLD_BUDGET_BYTES", 10 * len(_blob(0, b"x")))
    rng = random.Random(seed)
    names = [f"s{i}" for i in range(12)]
    before = [_state(n, rng.randrange(2), rng.randrange(30)) for n in names[::2]]
    offsets = [30, 30]
    log = []
    for i in range(200):
        partition = rng.randrange(2)
        offsets[partition] += rng.randrange(3)
        blob = _blob(offsets[partition], bytes([i % 256]))
        log.append(_record(rng.choice(names), None if i % 37 == 0 else blob, partition))
    sequential, folded = _store(tmp_path / "one"), _store(tmp_path / "two")
    for store in (sequential, folded):
        store.put(before)
    for msg in log:  # the reference: every committed record, one at a time
        name, partition = cast(bytes, msg.key()).decode(), cast(int, msg.partition())
        value = msg.value()
        offset = int.from_bytes(value[10:18], "little", signed=True) if value else 0
        if value is None:
            sequential.put_behind(PendingRows(deleted={name}))
        elif offset <= 100:
            sequential.put([StoredState(name, "in", partition, offset, "v1", None, value)])
    fold = ChangelogFold(SOURCES)
    parts = list(fold.parts([log[i : i + 7] for i in range(0, len(log), 7)]))
    assert len(parts) > 2 and fold.skipped > 0
    for part in parts:
        folded.put_behind(part)
    assert _contents(folded, names) == _contents(sequential, names)
    folded.close()
    assert _contents(_store(tmp_path / "two"), names) == _contents(sequential, names)


# -- the store's background write ----------------------------------------------------------


def test_a_background_write_is_seen_before_it_is_written(tmp_path: Path) -> None:
    store = _store(tmp_path)
    store.put([_state("old", 0, 50), _state("newer", 0, 90), _state("gone", 1, 5)])
    pending = PendingRows(
        {
            "new": ("new", "in", 0, 10, "v1", None, _blob(10)),
            "old": ("old", "in", 0, 60, "v1", None, _blob(60)),  # newer: replaces
            "newer": ("newer", "in", 0, 80, "v1", None, _blob(80)),  # older: does not
        },
        {"gone"},
    )
    blocker = sqlite3.connect(store.path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # the writer waits for this lock
    store.put_behind(pending, {("log", 0): 7})
    want = {"new": (0, 10, _blob(10)), "old": (0, 60, _blob(60)), "newer": (0, 90, _blob(90))}
    assert _contents(store, ["new", "old", "newer", "gone", "none"]) == want
    assert store.count() == 3
    blocker.execute("COMMIT")
    assert store.changelog_position("log", 0) == 7  # waits for the write
    assert _contents(store, ["new", "old", "newer", "gone"]) == want
    assert store.count() == 3
    store.close()


def test_count_while_writing_into_an_empty_store(tmp_path: Path) -> None:
    store = _store(tmp_path)
    rows = {n: (n, "in", 0, 1, "v1", None, _blob(1)) for n in ("a", "b")}
    store.put_behind(PendingRows(rows, {"c"}))
    assert store.count() == 2
    store.close()


def test_a_failed_background_write_fails_the_next_call(tmp_path: Path) -> None:
    store = _store(tmp_path)
    bad: Any = ("a", "in", 0, 1, "v1", None, object())  # not a type SQLite can store
    store.put_behind(PendingRows({"a": bad}))
    with pytest.raises(RuntimeError, match="background write"):
        store.put([_state("b", 0, 1)])
    store.put([_state("b", 0, 1)])  # the store is usable again
    assert [s.name for s in store.get(["a", "b"])] == ["b"]
    store.close()


# -- merge and restore -------------------------------------------------------------------


def _manager(tmp_path: Path) -> SeriesStateManager:
    table = SeriesTable(8)
    table.add_column("level")
    table.add_column("group", dtype=np.int64)
    table.add_column("state.global", shape=(1, 3), dtype=np.float32)
    return SeriesStateManager(
        table, _store(tmp_path), [GroupInfo("v1", "state.global")], route=lambda _n: 0
    )


def test_merge_forgets_state_beyond_the_committed_offset_and_writes_the_positions(
    tmp_path: Path,
) -> None:
    manager = _manager(tmp_path)
    manager.store.put([_state("reset", 0, 150), _state("kept", 0, 40)])
    fold = ChangelogFold(SOURCES)
    parts = fold.parts([[_record("a", _blob(1)), _record("kept", None)]])
    restored, deleted = manager.merge_changelog(parts, {("in", 0): 100}, {("log", 0): 2})
    assert (restored, deleted) == (1, 1)
    assert manager.store.count() == 1
    assert manager.store.changelog_position("log", 0) == 2
    assert [s.name for s in manager.store.get(["a", "kept", "reset"])] == ["a"]


def test_restore_reports_progress_and_counts_distinct_series(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    series, rounds, topic = 12_500, 2, "g-in-state"  # the changelog of "in" in group "g"
    records = [
        _record(f"s{i}", _blob(10 * k + 1), i % 2, topic=topic)
        for k in range(rounds)
        for i in range(series)
    ]

    def fake_reader(
        _conf: object, starts: Sequence[tuple[str, int, int]], ends: dict[tuple[str, int], int]
    ) -> Iterator[list[Message]]:
        assert sorted(starts) == [(topic, 0, 0), (topic, 1, 0)]
        step = changelog.BATCH_RECORDS
        for at in range(0, len(records), step):
            yield records[at : at + step]
        ends.update({(topic, 0): 12_500, (topic, 1): 12_500})

    monkeypatch.setattr(checkpoint, "read_changelog", fake_reader)
    manager = _manager(tmp_path)
    calls: list[int] = []
    settings = Settings(kafka={"group_id": "g"}, topics={"input": ["in"]})
    none: Any = None  # source, producer and sink: a restore needs none of them
    restorer = Checkpointer(settings, none, none, none, manager, {}, lambda: calls.append(1))
    with capture_logs() as logs:
        restorer._restore({("in", 0): 100, ("in", 1): 100})
    (line,) = [e for e in logs if e["event"] == "state restored"]
    assert len(calls) >= len(records) // PROGRESS_EVERY
    assert (line["series"], line["records"], line["stored_series"]) == (series, 25_000, series)
    assert restorer.restored_series == series
    manager.store.close()
