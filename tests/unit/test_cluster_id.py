"""The local broker's KRaft cluster id must never look like a command-line option."""

from __future__ import annotations

import base64
import uuid
from collections.abc import Iterator

import pytest

from streamrnn import local_broker


def test_an_id_starting_with_a_dash_is_drawn_again(monkeypatch: pytest.MonkeyPatch) -> None:
    dashed = uuid.UUID(bytes=b"\xf8" + bytes(15))  # base64 of 0xF8... starts with "-"
    plain = uuid.UUID(bytes=b"\x10" * 16)
    assert base64.urlsafe_b64encode(dashed.bytes).startswith(b"-")
    draws: Iterator[uuid.UUID] = iter([dashed, plain])
    monkeypatch.setattr(uuid, "uuid4", lambda: next(draws))

    cluster_id = local_broker.new_cluster_id()

    assert cluster_id == base64.urlsafe_b64encode(plain.bytes).decode().rstrip("=")


def test_ids_are_22_url_safe_characters_and_differ() -> None:
    ids = {local_broker.new_cluster_id() for _ in range(2000)}
    assert len(ids) == 2000
    for cluster_id in ids:
        assert len(cluster_id) == 22
        assert not cluster_id.startswith("-")
        assert set(cluster_id) <= set(
            "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
        )
