"""Fixtures of the unit tests: no broker, no network, no dependence on the caller's env."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(autouse=True)
def _no_streamrnn_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Drop every ``STREAMRNN_*`` variable so settings come only from what a test sets."""
    for name in list(os.environ):
        if name.startswith("STREAMRNN_"):
            monkeypatch.delenv(name)
    # Unit tests pin the engine's behaviour on seeded untrained weights; the shipped
    # pre-trained model has tests of its own (test_shipped_model.py), which undo this.
    monkeypatch.setenv("STREAMRNN_MODEL__PRETRAINED", "false")
