"""Keep one message from putting the daemon in a crash loop.

Nothing a message holds should make the loop raise (decoding is total, and the publisher
catches what building a record can throw); this guards against the bugs that remain. When an
exception escapes the handling of a batch, the daemon exits without committing that batch
(see :meth:`streamrnn.checkpoint.Checkpointer.abandon`) and, just before, remembers the
batch's offset range per input partition in the local state store
(:meth:`LocalStateStore.put_in_flight`).

On the next start every message inside a remembered range is *isolated*: handled alone, as
its own batch, with the state of its series copied beforehand. If handling it raises again,
the series' state is put back as it was, the message is dead-lettered with reason
``poison_pill`` (counted in ``streamrnn_poison_pills_total`` and logged at error level) and
the loop goes on: a message the daemon died on is never processed a second time in a batch
that could kill it. A message that passes alone was innocent (the crash was elsewhere, or
transient) and is processed normally. A range is forgotten once the committed offsets pass
it.

The ranges live in ``state.directory``: with a temporary state directory (the default when
none is configured) they do not survive the restart. The shipped systemd unit and Kubernetes
manifests set one. Knows nothing of Kafka's clients or torch: messages are anything with
``topic()``, ``partition()`` and ``offset()``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from streamrnn.logs import get_logger
from streamrnn.state.series_table import SeriesTable
from streamrnn.state.store import LocalStateStore

__all__ = ["PoisonGuard", "RowBackup"]

log = get_logger("poison")

#: Characters of the exception text kept with a range.
_ERROR_CHARS = 500


class _Positioned(Protocol):
    def topic(self) -> str | None: ...
    def partition(self) -> int | None: ...
    def offset(self) -> int | None: ...


def _position(msg: _Positioned) -> tuple[str, int, int]:
    topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
    assert topic is not None and partition is not None and offset is not None
    return topic, partition, offset


class PoisonGuard:
    """The remembered ranges, and which messages of a batch fall in them."""

    def __init__(self, store: LocalStateStore) -> None:
        self._store = store
        #: (topic, partition) -> (first offset, last offset, error)
        self._ranges: dict[tuple[str, int], tuple[int, int, str]] = {}
        for topic, partition, first, last, error in store.in_flight():
            self._ranges[(topic, partition)] = (first, last, error)
        if self._ranges:
            log.warning(
                "the previous run died while handling these offsets; each message in them is"
                " handled alone, and one that fails again is dead-lettered as poison_pill",
                ranges={f"{t}[{p}]": [a, b] for (t, p), (a, b, _e) in self._ranges.items()},
                error=next(iter(self._ranges.values()))[2],
            )

    @property
    def active(self) -> bool:
        """Whether any range is remembered (else :meth:`split` is never needed)."""
        return bool(self._ranges)

    def segments(self, messages: Sequence[Any]) -> list[tuple[bool, list[Any]]]:
        """``messages`` cut into runs, in their order: (False, run) outside every range,
        (True, run) inside one; handling the runs in order keeps each partition's order."""
        out: list[tuple[bool, list[Any]]] = []
        for msg in messages:
            topic, partition, offset = _position(msg)
            found = self._ranges.get((topic, partition))
            suspect = found is not None and found[0] <= offset <= found[1]
            if out and out[-1][0] == suspect:
                out[-1][1].append(msg)
            else:
                out.append((suspect, [msg]))
        return out

    def died_in(self, messages: Sequence[Any], error: BaseException) -> None:
        """Remember the offsets of the batch an exception escaped from (merged with the
        ranges already remembered of the same partitions). Never raises: it runs while the
        daemon is dying of ``error``."""
        text = f"{type(error).__name__}: {error}"[:_ERROR_CHARS]
        spans: dict[tuple[str, int], tuple[int, int]] = {}
        for msg in messages:
            topic, partition, offset = _position(msg)
            first, last = spans.get((topic, partition), (offset, offset))
            spans[(topic, partition)] = (min(first, offset), max(last, offset))
        for key, (first, last) in spans.items():
            old = self._ranges.get(key)
            if old is not None:
                first, last = min(first, old[0]), max(last, old[1])
            self._ranges[key] = (first, last, text)
        try:
            self._store.put_in_flight((t, p, *self._ranges[(t, p)]) for t, p in spans)
        except Exception:
            log.exception("could not remember the offsets the daemon died on")
            return
        log.error(
            "dying while handling a batch; its offsets are remembered for the next start",
            ranges={f"{t}[{p}]": list(span) for (t, p), span in spans.items()},
            error=text,
        )

    def passed(self, committed: Mapping[tuple[str, int], int]) -> None:
        """Forget the ranges that ``committed`` (the offset after the last committed
        message, per partition) has moved past."""
        for key, (_first, last, _error) in list(self._ranges.items()):
            if committed.get(key, -1) > last:
                del self._ranges[key]
                self._store.forget_in_flight(*key)
                log.info("offsets the previous run died on are committed", partition=key)


@dataclass(frozen=True)
class RowBackup:
    """A copy of one series' row (every column, and its labels), taken before a suspect
    message is handled, to put back if handling it raises."""

    name: str
    values: dict[str, Any] | None
    labels: dict[str, str] | None

    @classmethod
    def take(cls, table: SeriesTable, name: str) -> RowBackup:
        """The row of ``name`` as it is now (values None: the series is not in memory)."""
        slot = table.slot_of(name)
        if slot is None:
            return cls(name, None, None)
        values = {c: table.column(c)[slot].copy() for c in table.column_names()}
        return cls(name, values, table.labels_of(slot))

    def restore(self, table: SeriesTable) -> None:
        """Put the row back (remove the series if it was not in memory before)."""
        slot = table.slot_of(self.name)
        if self.values is None:
            if slot is not None:
                table.remove(np.array([slot], dtype=np.int64))
            return
        if slot is None:
            # Evicted meanwhile: the store holds its clean state from before the message.
            return
        for column, value in self.values.items():
            table.column(column)[slot] = value
        if self.labels is not None:
            table.resolve([self.name], [self.labels])  # the labels it had before
