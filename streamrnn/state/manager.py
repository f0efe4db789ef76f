"""Which series are in memory, which changed since the last checkpoint, and where the rest are.

:class:`SeriesStateManager` sits beside the engine's :class:`SeriesTable` and keeps the
bookkeeping that checkpoints, eviction and restore need, in columns of that table that are
*not* part of a series' persistent state:

* ``src``: the input partition (an id from :meth:`partition_id`) the series arrives on;
* ``dirty``: changed since the last checkpoint (its changelog record is due);
* ``unsnapped``: changed since the last local snapshot;
* ``touched``: the tick of its last point, for least-recently-seen eviction;
* ``ckpt_offset``: the input offset its last changelog record reflects.

Memory holds at most ``table.max_series`` series: the rest are in the local store (evicted,
or restored from the changelog and not seen since) and are loaded back when their series
sends a point. Pure bookkeeping: knows nothing of Kafka or torch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from streamrnn.arrays import IntArray
from streamrnn.logs import get_logger
from streamrnn.state.codec import RowCodec
from streamrnn.state.series_table import SeriesTable
from streamrnn.state.store import LocalStateStore, PendingRows, StoredState

__all__ = ["GroupInfo", "SeriesStateManager"]

log = get_logger("state")

TRANSIENT_COLUMNS = ("src", "dirty", "unsnapped", "touched", "ckpt_offset")


@dataclass(frozen=True, slots=True)
class GroupInfo:
    """A model group as the state layer sees it: its version and its hidden-state column.

    ``related`` are versions whose hidden states this version may carry on from (its
    ancestors by retraining, and the versions served before it by this process): a stored
    state of such a version is kept, one of an unrelated model is restarted.
    """

    version: str
    state_column: str
    related: frozenset[str] = frozenset()


class SeriesStateManager:
    """See the module docstring."""

    def __init__(
        self,
        table: SeriesTable,
        store: LocalStateStore,
        groups: Sequence[GroupInfo],
        route: Callable[[str], int],
    ) -> None:
        self.table = table
        self.store = store
        self.groups = list(groups)
        self._route = route
        table.add_column("src", dtype=np.int64, fill=-1)
        table.add_column("dirty", dtype=np.bool_, fill=False)
        table.add_column("unsnapped", dtype=np.bool_, fill=False)
        table.add_column("touched", dtype=np.int64, fill=0)
        table.add_column("ckpt_offset", dtype=np.int64, fill=-1)
        self.codec = RowCodec(table, transient=TRANSIENT_COLUMNS)
        self._partitions: list[tuple[str, int]] = []
        self._partition_ids: dict[tuple[str, int], int] = {}
        self._tick = 0
        #: Series whose hidden state restarted because their model changed (since start).
        self.reset_states = 0
        #: Series moved from memory to the store (since start).
        self.evicted_series = 0

    # -- partitions ---------------------------------------------------------------------

    def partition_id(self, topic: str, partition: int) -> int:
        """A small integer for an input partition (stable for the life of the process)."""
        key = (topic, partition)
        pid = self._partition_ids.get(key)
        if pid is None:
            pid = self._partition_ids[key] = len(self._partitions)
            self._partitions.append(key)
        return pid

    def partition_of(self, pid: int) -> tuple[str, int]:
        """The input (topic, partition) of an id from :meth:`partition_id`."""
        return self._partitions[pid]

    # -- the batch path -----------------------------------------------------------------

    def unknown(self, names: Iterable[str]) -> list[str]:
        """The distinct ``names`` not live in memory, in first-seen order."""
        return [n for n in dict.fromkeys(names) if n not in self.table]

    def has_dirty(self) -> bool:
        """Whether some live series changed since the last checkpoint."""
        n = len(self.table)
        return bool(self.table.column("dirty")[:n].any())

    def evict_least_recent(self, count: int) -> int:
        """Move the ``count`` least recently seen *clean* series to the store; returns how
        many were moved (fewer when too few are clean: checkpoint first)."""
        n = len(self.table)
        clean = np.flatnonzero(~self.table.column("dirty")[:n])
        if count <= 0 or len(clean) == 0:
            return 0
        touched = self.table.column("touched")[clean]
        if count < len(clean):
            victims = clean[np.argpartition(touched, count - 1)[:count]]
        else:
            victims = clean
        self._evict(victims)
        return len(victims)

    def load(self, names: Sequence[str]) -> int:
        """Bring the stored state of those ``names`` that have one into memory (room must
        exist); returns how many were loaded."""
        if not names:
            return 0
        stored = self.store.get(names)
        stored = stored[: self.table.max_series - len(self.table)]
        if not stored:
            return 0
        rows, bad = self.codec.decode([s.blob for s in stored])
        if bad:
            log.warning(
                "stored state does not fit this build's layout; series start afresh",
                series=len(bad),
            )
            keep = sorted(set(range(len(stored))) - set(bad))
            stored = [stored[i] for i in keep]
        slots = self.table.resolve([s.name for s in stored], [None] * len(stored))
        for slot, state in zip(slots.tolist(), stored, strict=True):
            if state.labels:
                self.table.set_labels_json(slot, state.labels.encode())
        for name, values in rows.columns.items():
            self.table.column(name)[slots] = values
        self._check_models(slots, [s.model for s in stored])
        tbl = self.table
        tbl.column("src")[slots] = [self.partition_id(s.topic, s.partition) for s in stored]
        tbl.column("ckpt_offset")[slots] = rows.offsets
        tbl.column("dirty")[slots] = False
        tbl.column("unsnapped")[slots] = False
        tbl.column("touched")[slots] = self._tick
        return len(stored)

    def note_processed(self, slots: IntArray, partition_ids: IntArray) -> None:
        """Mark the series in ``slots`` (stepped by a batch, arriving on ``partition_ids``)
        as changed and most recently seen."""
        self._tick += 1
        tbl = self.table
        tbl.column("src")[slots] = partition_ids
        tbl.column("dirty")[slots] = True
        tbl.column("unsnapped")[slots] = True
        tbl.column("touched")[slots] = self._tick

    def model_changed(self, group: int, info: GroupInfo, rewarmed: IntArray) -> None:
        """Group ``group`` now serves ``info.version``; the live series in ``rewarmed`` got
        new hidden states (their changelog records are due). Versions served before stay
        related, so states stored under them are carried on, not restarted."""
        old = self.groups[group]
        self.groups[group] = GroupInfo(
            info.version, info.state_column, info.related | old.related | {old.version}
        )
        tbl = self.table
        tbl.column("dirty")[rewarmed] = True
        tbl.column("unsnapped")[rewarmed] = True

    # -- checkpoints --------------------------------------------------------------------

    def take_dirty(
        self, next_offsets: dict[tuple[str, int], int]
    ) -> list[tuple[tuple[str, int], StoredState]]:
        """Encode every changed series for the changelog, each stamped with the input offset
        its partition is about to commit, and mark them clean.

        Returns ((input topic, partition), state) pairs.
        """
        tbl = self.table
        n = len(tbl)
        slots = np.flatnonzero(tbl.column("dirty")[:n])
        if len(slots) == 0:
            return []
        src = tbl.column("src")[slots]
        offsets = np.array(
            [next_offsets.get(self._partitions[p], -1) for p in src.tolist()], dtype=np.int64
        )
        tbl.column("ckpt_offset")[slots] = offsets
        tbl.column("dirty")[slots] = False
        return [
            (self._partitions[int(p)], s) for p, s in zip(src, self._states(slots), strict=True)
        ]

    def snapshot(self, positions: dict[tuple[str, int], int]) -> int:
        """Write every series changed since the last snapshot to the store, with the
        changelog ``positions`` (per changelog partition) they reflect; returns rows written.

        Call only right after a checkpoint committed: every row is then clean, so the store
        never holds state beyond a committed offset."""
        tbl = self.table
        n = len(tbl)
        slots = np.flatnonzero(tbl.column("unsnapped")[:n] & ~tbl.column("dirty")[:n])
        written = self.store.put(self._states(slots), positions)
        tbl.column("unsnapped")[slots] = False
        return written

    # -- rebalances and restore ---------------------------------------------------------

    def evict_partitions(self, partitions: Iterable[tuple[str, int]]) -> int:
        """Move the live series of ``partitions`` (all clean: checkpoint first) to the store."""
        slots = self._slots_of(partitions)
        self._evict(slots)
        return len(slots)

    def drop_partitions(self, partitions: Iterable[tuple[str, int]] | None) -> int:
        """Forget the live series of ``partitions`` (None: all) without saving them: their
        committed state is in the changelog and the store."""
        slots = np.arange(len(self.table)) if partitions is None else self._slots_of(partitions)
        self.table.remove(slots)
        return len(slots)

    def merge_changelog(
        self,
        parts: Iterable[PendingRows],
        committed: dict[tuple[str, int], int],
        positions: dict[tuple[str, int], int],
    ) -> tuple[int, int]:
        """Fold restored state into the store: ``parts`` are the changes a changelog read
        makes, in log order (see :class:`~streamrnn.kafka.changelog.ChangelogFold`), for
        input partitions whose committed offsets are ``committed``.

        First, stored rows beyond a committed offset go (offsets reset by an operator: those
        points will be read again). Each part is written in the background while the next
        one is read; the last one, with ``positions`` (changelog partition → end offset, so
        the next restore reads only what comes after), is still being written on return,
        and the store answers as if it were (:meth:`LocalStateStore.put_behind`). Returns
        (series restored, series deleted); a series in two parts counts twice.
        """
        for (topic, partition), offset in committed.items():
            self.store.forget_newer(topic, partition, offset)
        restored = deleted = 0
        held: PendingRows | None = None
        for part in parts:
            if held is not None:
                self.store.put_behind(held)
            held = part
            restored += len(part.rows)
            deleted += part.deleted_only()
        self.store.put_behind(held or PendingRows(), positions)
        return restored, deleted

    # -- internals ----------------------------------------------------------------------

    def _slots_of(self, partitions: Iterable[tuple[str, int]]) -> IntArray:
        ids = [self._partition_ids[p] for p in partitions if p in self._partition_ids]
        n = len(self.table)
        return np.flatnonzero(np.isin(self.table.column("src")[:n], ids))

    def _evict(self, slots: IntArray) -> None:
        if len(slots) == 0:
            return
        self.store.put(self._states(slots))
        self.table.remove(slots)
        self.evicted_series += len(slots)

    def _states(self, slots: IntArray) -> list[StoredState]:
        tbl = self.table
        offsets = tbl.column("ckpt_offset")[slots]
        blobs = self.codec.encode(slots, offsets)
        groups = tbl.column("group")[slots]
        out = []
        for i, slot in enumerate(slots.tolist()):
            topic, partition = self._partitions[int(tbl.column("src")[slot])]
            labels = tbl.labels_json_of(slot)
            out.append(
                StoredState(
                    name=tbl.name_of(slot),
                    topic=topic,
                    partition=partition,
                    offset=int(offsets[i]),
                    model=self.groups[int(groups[i])].version,
                    labels=labels.decode() if labels else None,
                    blob=blobs[i],
                )
            )
        return out

    def _check_models(self, slots: IntArray, models: Sequence[str]) -> None:
        """Series now routed to another group, or whose model changed to an unrelated one,
        restart their recurrent state from zero (a hidden state means nothing to another
        model); see :class:`GroupInfo` for related models."""
        group_col = self.table.column("group")
        for slot, model in zip(slots.tolist(), models, strict=True):
            routed = self._route(self.table.name_of(slot))
            info = self.groups[routed]
            if int(group_col[slot]) != routed or (
                model != info.version and model not in info.related
            ):
                group_col[slot] = routed
                self.table.column(self.groups[routed].state_column)[slot] = 0.0
                self.reset_states += 1
