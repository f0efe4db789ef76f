"""Checkpoints that do not wait (at_least_once): offsets are committed only for marks the
sink says are acknowledged, oldest first, never for a partition no longer ours, and again
after a failed commit. The broker-facing parts are stand-ins here; the daemon's chaos and
state tests run the same code against the real broker."""

from __future__ import annotations

from typing import Any

from confluent_kafka import KafkaError, TopicPartition

from streamrnn.checkpoint import Checkpointer
from streamrnn.config import Settings

A, B = ("in", 0), ("in", 1)


class _Sink:
    """Epochs acknowledged when the test says so."""

    def __init__(self) -> None:
        self.epoch = 0
        self.acked = -1
        self.failed = False
        self.waited = 0
        self.positions: dict[tuple[str, int], int] = {}

    def mark(self) -> int:
        self.epoch += 1
        return self.epoch - 1

    def acked_through(self, epoch: int) -> bool:
        return not self.failed and epoch <= self.acked

    def has_failed(self) -> bool:
        return self.failed

    def wait_acked(self, _give_up: Any) -> bool:
        self.waited += 1
        self.failed = False
        self.acked = self.epoch
        return True


class _Source:
    def __init__(self) -> None:
        self.commits: list[tuple[dict[tuple[str, int], int], bool]] = []

    def commit(self, offsets: dict[tuple[str, int], int], asynchronous: bool = False) -> None:
        self.commits.append((dict(offsets), asynchronous))


class _Manager:
    def take_dirty(self, _next: Any) -> list[Any]:
        return []

    def has_dirty(self) -> bool:
        return False


def _checkpointer() -> tuple[Checkpointer, _Sink, _Source]:
    settings = Settings(kafka={"group_id": "g"}, topics={"input": ["in"]})
    sink, source = _Sink(), _Source()
    cp = Checkpointer(settings, source, None, sink, _Manager(), {})  # type: ignore[arg-type]
    cp._next.update({A: 0, B: 0})
    cp._committed.update({A: 0, B: 0})
    return cp, sink, source


def _never() -> bool:
    return False


def test_offsets_wait_for_their_records_and_commit_in_order() -> None:
    cp, sink, source = _checkpointer()
    cp._next.update({A: 10, B: 5})
    assert cp.checkpoint(_never, wait=False)
    cp._next[A] = 20
    assert cp.checkpoint(_never, wait=False)
    assert source.commits == [] and sink.waited == 0  # nothing acknowledged yet
    sink.acked = 0  # the first checkpoint's records, not the second's
    cp.settle()
    assert source.commits == [({A: 10, B: 5}, True)]
    sink.acked = 1
    cp.settle()
    assert source.commits[-1] == ({A: 20, B: 5}, True)  # B was not committed when taken
    cp.settle()  # nothing left
    assert len(source.commits) == 2


def test_settled_checkpoints_are_merged_into_one_commit() -> None:
    cp, sink, source = _checkpointer()
    for offset in (3, 6, 9):
        cp._next[A] = offset
        cp.checkpoint(_never, wait=False)
    sink.acked = 2
    cp.settle()
    assert source.commits == [({A: 9}, True)]


def test_a_partition_lost_meanwhile_is_not_committed() -> None:
    cp, sink, source = _checkpointer()
    cp._next.update({A: 10, B: 5})
    cp.checkpoint(_never, wait=False)
    cp._forget([B])
    sink.acked = 0
    cp.settle()
    assert source.commits == [({A: 10}, True)]


def test_a_failed_commit_is_retried_by_the_next_checkpoint() -> None:
    cp, sink, source = _checkpointer()
    cp._next.update({A: 10, B: 5})
    cp.checkpoint(_never, wait=False)
    sink.acked = 0
    cp.settle()
    failed = TopicPartition("in", 0, 10)
    cp.on_commit(KafkaError(KafkaError.REBALANCE_IN_PROGRESS), [failed])
    cp._next[B] = 6
    cp.checkpoint(_never, wait=False)
    sink.acked = 1
    cp.settle()
    assert source.commits[-1] == ({A: 10, B: 6}, True)


def test_a_failed_record_makes_the_checkpoint_wait() -> None:
    cp, sink, source = _checkpointer()
    sink.failed = True
    cp._next[A] = 4
    assert cp.checkpoint(_never, wait=False)
    assert sink.waited == 1
    assert source.commits == [({A: 4}, False)]


def test_a_waiting_checkpoint_covers_the_unsettled_ones() -> None:
    cp, sink, source = _checkpointer()
    cp._next[A] = 4
    cp.checkpoint(_never, wait=False)
    cp._next[B] = 2
    cp.checkpoint(_never)
    assert source.commits == [({A: 4, B: 2}, False)]
    sink.acked = 5
    cp.settle()  # the unsettled checkpoint was committed by the waiting one
    assert len(source.commits) == 1
