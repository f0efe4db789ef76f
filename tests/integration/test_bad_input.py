"""10,000 malformed messages of every kind, interleaved with good points, through the daemon.

Every bad message must come out on the dead-letter topic exactly once, byte for byte, with
the reason and the position it came from; every good point must get its forecast record;
the daemon must keep running, count the rejections by reason and exit 0 on SIGTERM.
"""

from __future__ import annotations

import random
import re
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
from confluent_kafka.admin import AdminClient

from streamrnn.decode import Rejection
from streamrnn.kafka.clients import create_topics
from streamrnn.kafka.topic_reader import read_topic

from .harness import (
    Daemon,
    Topics,
    produce_positions,
    read_json,
    stopped_line,
    wait_committed,
    write_config,
)

pytestmark = pytest.mark.integration

N_BAD = 10_000
N_SERIES = 12
GOOD_MESSAGES_PER_SERIES = 500
MAX_BYTES = 4096
MAX_AGE_S = 2 * 86_400

#: Reasons no message on the wire can produce, and why (see the module's test below).
UNREACHABLE = {
    # orjson refuses numbers that overflow a double ("number is infinity when parsed as
    # double") and JSON has no NaN/Infinity literals, so decoded values are always finite:
    # `1e999` is rejected as not_json (pinned by tests/unit/test_decode.py,
    # "overflowing-number"), and non_finite_value never reaches the daemon.
    "non_finite_value",
    # A new series beyond series.max_series evicts the least recently seen one to the
    # state store instead (checkpoint.make_room); it is not rejected any more.
    "series_limit",
    # Only a bug can make these: a record that cannot be built, or a message the daemon
    # died on before (tests/integration/test_crash_commits.py makes one on purpose).
    "unencodable_record",
    "poison_pill",
}

BadMaker = Callable[[str, float, float, random.Random], bytes | None]


def _doc(**fields: object) -> bytes:
    return orjson.dumps(fields)


def _bad_makers(now: float) -> list[tuple[str, BadMaker]]:
    """(expected reason, maker(series, latest good ts of the series, a fresh ts, rng)).

    A maker returns the message value (None: a tombstone). Several variants per reason.
    """
    future, old = now + 10 * 86_400, now - 30 * 86_400

    def pick(*variants: BadMaker) -> BadMaker:
        return lambda s, latest, ts, rng: rng.choice(variants)(s, latest, ts, rng)

    return [
        (
            "not_json",
            pick(
                lambda s, latest, ts, rng: b"this is not json",
                lambda s, latest, ts, rng: (
                    f'{{"series": "{s}", "ts": {ts}, "value": NaN}}'.encode()
                ),
                lambda s, latest, ts, rng: (
                    f'{{"series": "{s}", "ts": {ts}, "value": Infinity}}'.encode()
                ),
                lambda s, latest, ts, rng: (
                    f'{{"series": "{s}", "ts": {ts}, "value": 1e999}}'.encode()
                ),
                lambda s, latest, ts, rng: f'{{"series": "{s}", "ts": {ts},'.encode(),
                lambda s, latest, ts, rng: b"\xff\xfe\x00garbage",
                lambda s, latest, ts, rng: b"",
                lambda s, latest, ts, rng: None,  # a tombstone
            ),
        ),
        (
            "not_object",
            pick(
                lambda s, latest, ts, rng: b"[1, 2, 3]",
                lambda s, latest, ts, rng: b"42",
                lambda s, latest, ts, rng: b'"text"',
                lambda s, latest, ts, rng: b"null",
            ),
        ),
        (
            "missing_field",
            pick(
                lambda s, latest, ts, rng: _doc(ts=ts, value=1.0),
                lambda s, latest, ts, rng: _doc(series=s, value=1.0),
                lambda s, latest, ts, rng: _doc(series=s, ts=ts),
            ),
        ),
        (
            "bad_series",
            pick(
                lambda s, latest, ts, rng: _doc(series=123, ts=ts, value=1.0),
                lambda s, latest, ts, rng: _doc(series="", ts=ts, value=1.0),
                lambda s, latest, ts, rng: _doc(series="x" * 513, ts=ts, value=1.0),
                lambda s, latest, ts, rng: _doc(series=["a"], ts=ts, value=1.0),
            ),
        ),
        (
            "bad_timestamp",
            pick(
                lambda s, latest, ts, rng: _doc(series=s, ts="yesterday", value=1.0),
                lambda s, latest, ts, rng: _doc(series=s, ts=True, value=1.0),
                lambda s, latest, ts, rng: _doc(series=s, ts=None, value=1.0),
                lambda s, latest, ts, rng: _doc(series=s, points=[[ts, 1.0], ["soon", 2.0]]),
                # Valid numbers, but outside 1970..9999 (the year -1199 that crashed ISO time).
                lambda s, latest, ts, rng: _doc(series=s, ts=-1e11, value=1.0),
                lambda s, latest, ts, rng: _doc(series=s, ts=3e11, value=1.0),
                lambda s, latest, ts, rng: _doc(series=s, ts="0001-01-01T00:00:00Z", value=1.0),
            ),
        ),
        (
            "non_numeric_value",
            pick(
                lambda s, latest, ts, rng: _doc(series=s, ts=ts, value="12"),
                lambda s, latest, ts, rng: _doc(series=s, ts=ts, value=None),
                lambda s, latest, ts, rng: _doc(series=s, ts=ts, value=True),
                lambda s, latest, ts, rng: _doc(series=s, points=[[ts, "1.5"]]),
            ),
        ),
        (
            "bad_labels",
            pick(
                lambda s, latest, ts, rng: _doc(series=s, ts=ts, value=1.0, labels="host"),
                lambda s, latest, ts, rng: _doc(series=s, ts=ts, value=1.0, labels={"n": 1}),
                lambda s, latest, ts, rng: _doc(series=s, ts=ts, value=1.0, labels=["a"]),
                # Beyond the bounds: count, key and value length (total size: tests/unit).
                lambda s, latest, ts, rng: _doc(
                    series=s, ts=ts, value=1.0, labels={f"k{i}": "v" for i in range(33)}
                ),
                lambda s, latest, ts, rng: _doc(
                    series=s, ts=ts, value=1.0, labels={"k" * 129: "v"}
                ),
                lambda s, latest, ts, rng: _doc(
                    series=s, ts=ts, value=1.0, labels={"k": "v" * 1025}
                ),
            ),
        ),
        (
            "value_out_of_range",
            pick(
                lambda s, latest, ts, rng: _doc(series=s, ts=ts, value=1e308),
                lambda s, latest, ts, rng: _doc(series=s, ts=ts, value=-2e15),
                lambda s, latest, ts, rng: _doc(series=s, points=[[ts, 1.0], [ts + 0.01, 1e16]]),
            ),
        ),
        (
            "bad_points",
            pick(
                lambda s, latest, ts, rng: _doc(series=s, points=[]),
                lambda s, latest, ts, rng: _doc(series=s, points="[[1, 2]]"),
                lambda s, latest, ts, rng: _doc(series=s, points=[[ts]]),
                lambda s, latest, ts, rng: _doc(series=s, points=[[ts, 1.0, 2.0]]),
            ),
        ),
        (
            "unknown_field",
            pick(
                lambda s, latest, ts, rng: _doc(series=s, ts=ts, value=1.0, unit="ms"),
                lambda s, latest, ts, rng: _doc(series=s, points=[[ts, 1.0]], host="web-1"),
            ),
        ),
        (
            "ts_in_future",
            pick(
                lambda s, latest, ts, rng: _doc(series=s, ts=future, value=1.0),
                lambda s, latest, ts, rng: _doc(series=s, points=[[ts, 1.0], [future, 2.0]]),
            ),
        ),
        (
            "ts_too_old",
            pick(
                lambda s, latest, ts, rng: _doc(series=s, ts=old, value=1.0),
                lambda s, latest, ts, rng: _doc(series=s, ts="2001-09-09T01:46:40Z", value=1.0),
            ),
        ),
        (
            "oversized",
            lambda s, latest, ts, rng: _doc(
                series=s, ts=ts, value=1.0, labels={"pad": "x" * (MAX_BYTES + rng.randrange(500))}
            ),
        ),
        # Well-formed points that do not move their series forward in time.
        ("out_of_order", lambda s, latest, ts, rng: _doc(series=s, ts=latest - 0.25, value=1.0)),
        ("duplicate_timestamp", lambda s, latest, ts, rng: _doc(series=s, ts=latest, value=2.0)),
    ]


def test_rejection_reasons_cover_the_documented_set(tmp_path: Path) -> None:
    """The reasons this module sends are every documented reason but the unreachable ones
    (so a new reason added to decode.py or the engine shows up here)."""
    doc = Rejection.__doc__ or ""
    documented = set(re.findall(r"``([a-z_]+)``", doc.split("so it can be counted")[0]))
    documented.discard("reason")
    sent = {reason for reason, _ in _bad_makers(time.time())}
    assert documented == sent | UNREACHABLE


def test_ten_thousand_malformed_messages_among_good_ones(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    topics = Topics.fresh(kafka_bootstrap, partitions=3)
    dead_letter = f"dead-{topics.group}"
    create_topics(AdminClient({"bootstrap.servers": kafka_bootstrap}), [dead_letter], 2)
    rng = random.Random(20260522)
    now = time.time()
    makers = _bad_makers(now)
    series_names = [f"web-{i}.cpu" for i in range(N_SERIES)]

    # One stream per series (its key keeps it on one partition, in order): good points,
    # some as windows of 3, near the wall clock; bad messages of every kind in between.
    t0 = float(int(now) - 3600)
    records: list[tuple[str, bytes | None]] = []
    expected_reason: list[str | None] = []  # per record: None = good
    good_points: list[tuple[str, float]] = []
    latest = {s: t0 for s in series_names}
    step = {s: 0 for s in series_names}
    remaining_good = {s: GOOD_MESSAGES_PER_SERIES for s in series_names}
    remaining_bad = N_BAD
    while remaining_bad or any(remaining_good.values()):
        s = rng.choice(series_names)
        good_left, first = remaining_good[s], latest[s] == t0
        if good_left and (first or not remaining_bad or rng.random() < 0.4):
            n = 3 if rng.random() < 0.2 else 1
            ts = [t0 + 0.5 * (step[s] + k + 1) + 0.125 for k in range(n)]
            values = [round(10 + rng.gauss(0, 1), 4) for _ in ts]
            step[s] += n
            latest[s] = ts[-1]
            if n == 1:
                value = _doc(series=s, ts=ts[0], value=values[0], labels={"host": s[:5]})
            else:
                value = _doc(series=s, points=[list(p) for p in zip(ts, values, strict=True)])
            records.append((s, value))
            expected_reason.append(None)
            good_points += [(s, t) for t in ts]
            remaining_good[s] -= 1
        elif remaining_bad and not first:
            reason, make = rng.choice(makers)
            fresh_ts = t0 + 0.5 * (step[s] + 1) + 0.375  # a valid, later ts for the rest
            records.append((s, make(s, latest[s], fresh_ts, rng)))
            expected_reason.append(reason)
            remaining_bad -= 1
    assert sum(r is not None for r in expected_reason) == N_BAD
    reasons_sent = Counter(r for r in expected_reason if r is not None)
    assert set(reasons_sent) == {reason for reason, _ in makers}

    positions = produce_positions(kafka_bootstrap, topics.input, records)
    partitions_used = {p for p, _ in positions}
    assert len(partitions_used) >= 2, "all series hashed to one partition"
    config = write_config(
        tmp_path / "c.yaml",
        kafka_bootstrap,
        topics,
        topics={"dead_letter": dead_letter},
        consume={
            "batch_max_messages": 1000,
            "max_message_bytes": MAX_BYTES,
            "max_age_s": MAX_AGE_S,
            "reject_unknown_fields": True,
        },
    )
    started = time.monotonic()
    daemon = Daemon(config, tmp_path / "d.log")
    try:
        wait_committed(kafka_bootstrap, topics, daemon, timeout_s=240)
        elapsed = time.monotonic() - started
        # Still running, and still working: one more good point per series is processed.
        extra = [(s, _doc(series=s, ts=latest[s] + 1.0, value=1.0)) for s in series_names]
        produce_positions(kafka_bootstrap, topics.input, extra)
        good_points += [(s, latest[s] + 1.0) for s in series_names]
        wait_committed(kafka_bootstrap, topics, daemon, timeout_s=60)
        assert daemon.alive()
    finally:
        code = daemon.stop()
    assert code == 0, daemon.log_path.read_text()[-3000:]
    print(
        f"\nbad input: {len(records)} messages ({N_BAD} bad, {len(good_points)} good points)"
        f" on {len(partitions_used)} partitions committed in {elapsed:.1f} s"
    )

    # Every bad message is on the dead-letter topic exactly once: original key and bytes,
    # its reason, a detail, and the position it came from.
    bad_at = {
        pos: (records[i], reason)
        for i, (pos, reason) in enumerate(zip(positions, expected_reason, strict=True))
        if reason is not None
    }
    letters = read_topic({"bootstrap.servers": kafka_bootstrap}, dead_letter, timeout_s=120)
    seen: Counter[tuple[int, int]] = Counter()
    for letter in letters:
        headers = {k: (v or b"").decode() for k, v in letter.headers() or []}
        assert headers["streamrnn.source.topic"] == topics.input
        pos = (int(headers["streamrnn.source.partition"]), int(headers["streamrnn.source.offset"]))
        assert pos in bad_at, f"dead letter for a good message at {pos}: {headers}"
        seen[pos] += 1
        (key, value), reason = bad_at[pos]
        assert headers["streamrnn.reason"] == reason, (pos, value, headers)
        assert headers["streamrnn.detail"]
        assert letter.key() == key.encode()
        assert letter.value() == value
        if value is not None and b"1e999" in value:
            assert "infinity" in headers["streamrnn.detail"]
    assert set(seen) == set(bad_at), f"{len(set(bad_at) - set(seen))} bad messages missing"
    assert max(seen.values()) == 1, "a bad message was dead-lettered twice"

    # Every good point got exactly one forecast record, and nothing else did.
    forecasts = read_json(kafka_bootstrap, topics.forecasts)
    got = Counter((f["series"], f["ts"]) for f in forecasts)
    assert got == Counter(good_points)
    assert all(f["_key"] == f["series"] for f in forecasts)
    first_ts = {s: t0 + 0.625 for s in series_names}
    assert all((f["forecast"] is None) == (f["ts"] == first_ts[f["series"]]) for f in forecasts), (
        "a forecast is null where the series had history, or the reverse"
    )

    # The totals at exit: every message, every good point, the rejections by reason.
    stopped = stopped_line(daemon)
    assert stopped["messages"] == len(records) + len(extra)
    assert stopped["points"] == len(good_points)
    assert stopped["rejected"] == dict(reasons_sent)
    warnings = [line for line in daemon.log_lines() if line.get("event") == "message rejected"]
    assert Counter(line["reason"] for line in warnings) == reasons_sent
