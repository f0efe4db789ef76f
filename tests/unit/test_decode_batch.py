"""Decoding a whole batch at once (``decode_messages``): always the same results as
decoding each message alone, including batches built to fool a joined decode."""

from __future__ import annotations

import random

import orjson
import pytest

from streamrnn.decode import DecodedMessage, DecodeRules, Rejection, decode_message, decode_messages

TS = 1_700_000_000.0
RULES = DecodeRules(max_bytes=1 << 20, earliest=TS - 86_400, latest=TS + 86_400)


def _point(i: int, **extra: object) -> bytes:
    return orjson.dumps({"series": f"web-{i}.cpu", "ts": TS + i, "value": 0.5 + i, **extra})


def _same_as_one_by_one(raws: list[bytes | None], rules: DecodeRules = RULES) -> None:
    assert decode_messages(raws, rules) == [decode_message(raw, rules) for raw in raws]


def test_plain_points_decode_in_bulk_to_the_same_messages() -> None:
    raws: list[bytes | None] = [_point(i) for i in range(500)]
    raws.append(_point(500, labels={"host": "a", "dc": "eu"}))
    _same_as_one_by_one(raws)
    assert all(isinstance(r, DecodedMessage) for r in decode_messages(raws, RULES))


def test_an_empty_batch_decodes_to_nothing() -> None:
    assert decode_messages([], RULES) == []


def test_string_spanning_two_messages_cannot_turn_three_bad_messages_into_points() -> None:
    # Joined with a bare comma these decode as three valid points: the unterminated string
    # of the first swallows the start of the second, and the third holds two objects.
    raws: list[bytes | None] = [
        b'{"series":"a}',
        b'{", "ts":1700000000,"value":2}',
        b'{"series":"b","ts":1700000000,"value":2},{"series":"c","ts":1700000000,"value":2}',
    ]
    results = decode_messages(raws, RULES)
    assert all(isinstance(r, Rejection) for r in results), results
    _same_as_one_by_one(raws)


@pytest.mark.parametrize(
    "bad",
    [
        b'{"series":"x","ts":1700000000,"value":1},{"series":"y","ts":1700000000,"value":1}',
        b'{"series":"x","ts":1700000000,"value":1,"labels":{"k":"v"}',  # unclosed
        b'{"series":"x","ts":1700000000,',  # cut short
        b'"value":1}',  # the rest of the one above
        b"{}",
        b"{",
        b"}",
        b"[]",
        b"null",
        b"",
        b'{"series":"x","ts":"2023-11-14T22:13:20Z","value":1}',  # valid, slow path
        b'{"series":"x","ts":1700000000,"value":1,"host":"h"}',  # unknown field: accepted
        b'{"series":"x","points":[[1700000000,1]]}',  # a window
        b'{"series":"x","ts":1800000000,"value":1}',  # in the future
        b'{"series":"x","ts":1600000000,"value":1}',  # too old
        b' {"series":"x","ts":1700000000,"value":1}',  # leading space: valid
        b'{"series":"x","ts":1e999,"value":1}',
        b'{"series":"x","ts":1700000000,"value":"1"}',
    ],
)
def test_any_odd_message_in_a_batch_gives_what_it_gives_alone(bad: bytes) -> None:
    raws: list[bytes | None] = [_point(i) for i in range(5)]
    for at in (0, 2, 5):
        batch = [*raws[:at], bad, *raws[at:]]
        _same_as_one_by_one(batch)


def test_tombstones_and_oversized_messages_are_rejected_as_alone() -> None:
    rules = DecodeRules(max_bytes=80, earliest=RULES.earliest, latest=RULES.latest)
    raws: list[bytes | None] = [_point(1), None, _point(2, labels={"k": "v" * 100})]
    _same_as_one_by_one(raws, rules)


def test_random_splits_and_merges_of_valid_messages_agree_with_one_by_one() -> None:
    """Batches of valid points, some of them split at a random place, merged with a
    neighbour (glued directly, or with a comma) or cut short: whatever the joined decode
    makes of them, the results equal decoding each message alone."""
    rng = random.Random(7)
    bulk = 0
    for _batch in range(400):
        pieces = [_point(i, labels={"k": f"v{i}"}) if i % 3 else _point(i) for i in range(8)]
        for _ in range(rng.choice([0, 0, 1, 2, 3])):
            i = rng.randrange(len(pieces))
            action = rng.choice(["split", "merge", "merge_comma", "cut"])
            if action == "split" and len(pieces[i]) > 1:
                at = rng.randrange(1, len(pieces[i]))
                pieces[i : i + 1] = [pieces[i][:at], pieces[i][at:]]
            elif action.startswith("merge") and i + 1 < len(pieces):
                glue = b"," if action == "merge_comma" else b""
                pieces[i : i + 2] = [pieces[i] + glue + pieces[i + 1]]
            elif action == "cut":
                pieces[i] = pieces[i][: rng.randrange(len(pieces[i]))]
        raws: list[bytes | None] = [*pieces]
        _same_as_one_by_one(raws)
        bulk += all(isinstance(r, DecodedMessage) for r in decode_messages(raws, RULES))
    assert 100 < bulk < 400, bulk  # both the joined decode and the fallback were exercised


# --- the bounds of issue 19 in a batch ------------------------------------------------------


def test_plain_points_and_points_with_labels_take_the_bulk_path() -> None:
    from streamrnn.decode import _decode_points

    plain: list[bytes | None] = [_point(i) for i in range(100)]
    assert _decode_points(plain, RULES) is not None
    labelled: list[bytes | None] = [_point(i, labels={"host": f"h{i}"}) for i in range(100)]
    assert _decode_points(labelled, RULES) is not None


@pytest.mark.parametrize(
    "bad",
    [
        _point(1, labels={f"k{j}": "v" for j in range(33)}),  # one label too many
        _point(1, labels={"k" * 129: "v"}),
        _point(1, labels={"k": "v" * 1025}),
        _point(1, labels={f"k{j}": "v" * 1000 for j in range(5)}),  # over 4,096 bytes
        orjson.dumps({"series": "x", "ts": TS, "value": 1e16}),
        orjson.dumps({"series": "x", "ts": -1e11, "value": 1}),
        orjson.dumps({"series": "x", "ts": 1e12, "value": 1}),
    ],
)
def test_a_message_over_a_bound_in_a_batch_gives_what_it_gives_alone(bad: bytes) -> None:
    raws: list[bytes | None] = [_point(i) for i in range(5)]
    batch = [*raws[:2], bad, *raws[2:]]
    _same_as_one_by_one(batch)
    assert isinstance(decode_messages(batch, RULES)[2], Rejection)


def test_labels_are_sized_in_bulk_only_where_a_message_could_hold_too_many_bytes() -> None:
    """A batch whose longest message is over max_labels_bytes is still decoded in one
    call; only its long messages with labels are checked one by one."""
    from streamrnn.decode import _decode_points

    rules = DecodeRules(max_bytes=1 << 20, max_labels_bytes=64)
    fits = _point(1, labels={"k": "v" * 40})  # 48 bytes of labels, a longer message
    over = _point(2, labels={"k": "v" * 60})
    long_plain = orjson.dumps({"series": "x" * 100, "ts": TS, "value": 1})  # nothing to size
    raws: list[bytes | None] = [_point(0), fits, over, long_plain]
    assert all(len(r or b"") > 64 for r in raws[1:])
    results = _decode_points(raws, rules)
    assert results is not None
    assert results == [decode_message(raw, rules) for raw in raws]
    assert [type(r) for r in results] == [DecodedMessage, DecodedMessage, Rejection, DecodedMessage]
    rejection = results[2]
    assert isinstance(rejection, Rejection) and "consume.max_labels_bytes" in rejection.detail
