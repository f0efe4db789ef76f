"""Restore speed: series state read back from a changelog topic into the local store.

``python -m tests.benchmarks.restore`` (on a broker of its own, or ``--bootstrap-servers``)
fills a fresh changelog topic (compacted, compaction lag of a day: nothing is compacted
during the run) the way the daemon writes one: ``--partitions`` partitions, ``--series``
series spread over them, and ``--records-per-series`` rounds of one record per series (a
topic not compacted yet holds a record per checkpoint a series was in; two is what the e2e
benchmark's part 4 leaves). Every value is a real state blob: the :class:`RowCodec` of an
engine built from ``--config``, its columns filled with random values (as incompressible as
real hidden states), stamped with the input offset of its round, with the model-version
header. ``--uncommitted`` adds a last round for that fraction of series stamped beyond the
committed offset (a crash between flush and commit): restore must skip them.

Then ``--repeat`` times, each into a new empty store (a fresh instance with no state
directory), with the garbage collector tuned as the daemon's loop tunes it (start-up objects
frozen, a collection every 50,000 allocations), it times:

* **restore**: the real path, :meth:`Checkpointer._restore` for the committed offsets of
  every input partition (what ``on_assign`` runs), with its ``state restored`` log line and
  the number of ``on_progress`` calls; then how long its background write to SQLite took
  (the ``state written`` line) and when the store was settled (closed);
* **read**: the changelog reader alone, drained (fetching; the client builds a Python
  message per record);
* **fold**: :class:`ChangelogFold` alone over the records read (the latest committed record
  per series; the blobs are not decoded: series are loaded lazily, on their next point);
* **store.put**: the distinct series' rows written synchronously, for comparison.

Prints distinct series restored per second and the breakdown; the fresh topic is deleted at
the end. The target is >= 100,000 series/s.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, cast

import numpy as np
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]
from structlog.testing import capture_logs

from streamrnn.checkpoint import PROGRESS_EVERY, Checkpointer
from streamrnn.config import Settings, load_settings
from streamrnn.engine.build import build_engine
from streamrnn.gc_pauses import tune_for_loop
from streamrnn.kafka.changelog import MODEL_HEADER, ChangelogFold, read_changelog
from streamrnn.kafka.clients import client_config, create_new_topics
from streamrnn.local_broker import start_broker, stop_broker
from streamrnn.state.manager import GroupInfo, SeriesStateManager
from streamrnn.state.store import LocalStateStore, StoredState

TARGET_SERIES_S = 100_000.0
#: Input offsets of round k are ``(k + 1) * ROUND_OFFSETS`` (any increasing values do).
ROUND_OFFSETS = 1_000_000


def main() -> None:
    parser = argparse.ArgumentParser(
        description=(__doc__ or "").splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--bootstrap-servers", help="an existing broker (default: start one)")
    parser.add_argument("--config", default="config.yaml", help="engine configuration")
    parser.add_argument("--series", type=int, default=100_000)
    parser.add_argument("--records-per-series", type=int, default=2)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--uncommitted", type=float, default=0.0, help="fraction of series")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--group", help="reuse the changelog of this group's earlier run (with --keep-topic)"
    )
    parser.add_argument("--keep-topic", action="store_true", help="do not delete the topic")
    args = parser.parse_args()
    if args.bootstrap_servers is not None:
        run(args)
        return
    with tempfile.TemporaryDirectory(prefix="streamrnn-restore-") as tmp:
        print("starting a local broker ...", flush=True)
        args.bootstrap_servers = start_broker(Path(tmp) / "broker").bootstrap_servers
        try:
            run(args)
        finally:
            gc.collect()  # let go of our clients before their broker goes
            stop_broker(Path(tmp) / "broker")


def run(args: argparse.Namespace) -> None:
    """Fill a changelog (or reuse ``--group``'s) and time the restores."""
    group = args.group or f"restore-bench-{uuid.uuid4().hex[:8]}"
    settings = load_settings(
        args.config,
        kafka={"bootstrap_servers": args.bootstrap_servers, "group_id": group},
        topics={"input": ["metrics"]},
        state={"directory": None},
    )
    changelog = settings.topics.changelog_of("metrics", group)
    admin = AdminClient(client_config(settings, "admin"))
    if args.group:
        last = args.records_per_series * ROUND_OFFSETS
        committed = {("metrics", p): last for p in range(args.partitions)}
        tune_for_loop()  # as the daemon does: its rebalance callbacks run the restores
        runs = [measure(settings, changelog, committed, args.series) for _ in range(args.repeat)]
        report(runs, args.series)
        return
    create_new_topics(
        admin,
        [
            NewTopic(
                changelog,
                num_partitions=args.partitions,
                replication_factor=1,
                config={"cleanup.policy": "compact", "min.compaction.lag.ms": "86400000"},
            )
        ],
    )
    try:
        committed = fill(settings, changelog, args)
        tune_for_loop()  # as the daemon does: its rebalance callbacks run the restores
        runs = [measure(settings, changelog, committed, args.series) for _ in range(args.repeat)]
        report(runs, args.series)
    finally:
        if args.keep_topic:
            print(f"kept {changelog}: --group {group} reuses it")
        else:
            admin.delete_topics([changelog], operation_timeout=30)


def new_manager(settings: Settings, directory: Path) -> SeriesStateManager:
    """A state manager over a fresh engine and an empty store, as the daemon builds it."""
    engine = build_engine(settings)
    return SeriesStateManager(
        engine.table,
        LocalStateStore(directory / "state.sqlite"),
        [GroupInfo(g.version, f"state.{g.name}", frozenset(g.lineage)) for g in engine.groups],
        route=engine.group_index_of,
    )


def fill(
    settings: Settings, changelog: str, args: argparse.Namespace
) -> dict[tuple[str, int], int]:
    """Produce the changelog records (see the module docstring); returns the committed
    input offset of every input partition."""
    with tempfile.TemporaryDirectory() as tmp:
        manager = new_manager(settings, Path(tmp))
        codec, table = manager.codec, manager.table
        version = manager.groups[0].version.encode()
        names = [f"bench.series.{s:07d}" for s in range(args.series)]
        partition_of = np.arange(args.series) % args.partitions
        rng = np.random.default_rng(0)
        producer = Producer(
            {
                **client_config(settings, "producer"),
                "linger.ms": 50,
                "batch.num.messages": 10_000,
                "queue.buffering.max.messages": 2_000_000,
                "queue.buffering.max.kbytes": 2_097_151,
            }
        )
        rounds = [np.arange(args.series)] * args.records_per_series
        extra = rng.random(args.series) < args.uncommitted
        if extra.any():
            rounds.append(np.flatnonzero(extra))
        started = time.perf_counter()
        produced = 0
        for k, members in enumerate(rounds):
            for at in range(0, len(members), table.max_series):
                chunk = members[at : at + table.max_series]
                slots = table.resolve([names[s] for s in chunk], [None] * len(chunk))
                randomise(manager, slots, rng)
                offsets = np.full(len(chunk), (k + 1) * ROUND_OFFSETS, dtype=np.int64)
                for s, blob in zip(chunk.tolist(), codec.encode(slots, offsets), strict=True):
                    while True:
                        try:
                            producer.produce(
                                changelog,
                                blob,
                                names[s].encode(),
                                partition=int(partition_of[s]),
                                headers=[(MODEL_HEADER, version)],
                            )
                            break
                        except BufferError:
                            producer.poll(0.05)
                    produced += 1
                table.remove(slots)
        left = producer.flush(300)
        if left:
            raise RuntimeError(f"{left} changelog records not delivered")
        manager.store.close()
    seconds = time.perf_counter() - started
    row_bytes = codec.row_bytes
    print(
        f"changelog {changelog}: {produced:,} records of {row_bytes:,} B for {args.series:,}"
        f" series over {args.partitions} partitions, produced in {seconds:.1f} s"
    )
    last = args.records_per_series * ROUND_OFFSETS
    return {("metrics", p): last for p in range(args.partitions)}


def randomise(manager: SeriesStateManager, slots: Any, rng: np.random.Generator) -> None:
    """Random values in every persistent column of ``slots`` (real states do not compress)."""
    table = manager.table
    for name, dtype, shape in manager.codec.layout:
        size = (len(slots), *shape)
        if np.issubdtype(dtype, np.floating):
            values: Any = rng.standard_normal(size).astype(dtype)
        else:
            values = rng.integers(0, 2, size).astype(dtype)
        table.column(name)[slots] = values
    table.column("group")[slots] = 0


def measure(
    settings: Settings, changelog: str, committed: dict[tuple[str, int], int], series: int
) -> dict[str, float]:
    """One restore into an empty store, and its parts timed alone; seconds and counts."""
    reader_conf = client_config(settings, "admin")
    with tempfile.TemporaryDirectory() as tmp:
        manager = new_manager(settings, Path(tmp))
        calls = [0]

        def progressed() -> None:
            calls[0] += 1

        checkpointer = Checkpointer(
            settings,
            cast(Any, None),
            cast(Any, None),
            cast(Any, None),
            manager,
            reader_conf,
            progressed,
        )
        with capture_logs() as logs:
            started = time.perf_counter()
            checkpointer._restore(committed)
            restore_s = time.perf_counter() - started
            stored = manager.store.count()  # the background write may still be running
            manager.store.close()  # waits for it
            settled_s = time.perf_counter() - started
        (line,) = [e for e in logs if e["event"] == "state restored"]
        written = [e for e in logs if e["event"] == "state written"]

    sources = {(changelog, p): ("metrics", p, offset) for (_, p), offset in committed.items()}
    started = time.perf_counter()
    batches = list(read_changelog(reader_conf, [(changelog, p, 0) for _, p in committed], {}))
    read_s = time.perf_counter() - started
    started = time.perf_counter()
    fold = ChangelogFold(sources)
    parts = list(fold.parts(batches))
    fold_s = time.perf_counter() - started
    records = sum(len(b) for b in batches)
    del batches

    with tempfile.TemporaryDirectory() as tmp:
        store = LocalStateStore(Path(tmp) / "state.sqlite")
        rows = [StoredState(*row) for part in parts for row in part.rows.values()]
        started = time.perf_counter()
        store.put(rows, {(changelog, p): 1 for _, p in committed})
        store_s = time.perf_counter() - started
        store.close()
    write_s = float(written[-1]["seconds"]) if written else float("nan")
    print(
        f"  restore {restore_s:.3f} s = {stored / restore_s:,.0f} series/s ({stored:,} stored;"
        f" log line series={line['series']:,} seconds={line['seconds']}"
        f" stored_series={line['stored_series']:,}; {calls[0]} progress calls for"
        f" {records:,} records); its background write {write_s:.3f} s, settled at"
        f" {settled_s:.3f} s. Alone: read {read_s:.3f} s ({records / read_s:,.0f} records/s),"
        f" fold {fold_s:.3f} s, synchronous store.put {store_s:.3f} s"
        f" ({len(rows) / store_s:,.0f} rows/s)",
        flush=True,
    )
    if calls[0] < records // PROGRESS_EVERY:
        print(f"  WARNING: {calls[0]} progress calls for {records:,} records")
    if stored != series:
        print(f"  WARNING: {stored:,} series stored, {series:,} expected")
    return {
        "restore_s": restore_s,
        "settled_s": settled_s,
        "read_s": read_s,
        "fold_s": fold_s,
        "store_s": store_s,
        "stored": stored,
        "records": records,
    }


def report(runs: list[dict[str, float]], series: int) -> None:
    """Median of the runs, against the target."""

    def median(key: str) -> float:
        return statistics.median(r[key] for r in runs)

    per_s = series / median("restore_s")
    print(
        f"median of {len(runs)}: restore {median('restore_s'):.3f} s = {per_s:,.0f} series/s"
        f" (target >= {TARGET_SERIES_S:,.0f}: {'met' if per_s >= TARGET_SERIES_S else 'NOT met'});"
        f" store settled at {median('settled_s'):.3f} s; alone: read {median('read_s'):.3f} s,"
        f" fold {median('fold_s'):.3f} s, synchronous store.put {median('store_s'):.3f} s"
    )


if __name__ == "__main__":
    main()
