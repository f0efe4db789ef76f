"""Shared fixtures. The Kafka broker is the real one, started once per test session.

Set ``STREAMRNN_TEST_BOOTSTRAP=host:port`` to run the integration tests against a broker you
started yourself (e.g. ``streamrnn broker start``) instead.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from streamrnn.local_broker import start_broker, stop_broker


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Bootstrap address of a real single-node Apache Kafka broker on 127.0.0.1."""
    external = os.environ.get("STREAMRNN_TEST_BOOTSTRAP")
    if external:
        yield external
        return
    workdir = tmp_path_factory.mktemp("kafka-broker")
    broker = start_broker(workdir)
    try:
        yield broker.bootstrap_servers
    finally:
        stop_broker(workdir)
