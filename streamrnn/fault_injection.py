"""Test-only: raise at chosen points of the batch path, to prove that a crash never commits
work that was not delivered, and that a message the daemon dies on is set aside.

Off unless the environment variable ``STREAMRNN_FAULT_INJECTION`` is set, to comma-separated
``key=value`` items:

* ``random=<probability>`` (and ``seed=<int>``): each :meth:`FaultInjector.point` of a normal
  batch raises :class:`InjectedFaultError` with that probability. Not while a suspect message is
  handled alone (:mod:`streamrnn.poison`): a random fault there would make an innocent
  message a poison pill.
* ``poison=<text>``: every :meth:`FaultInjector.point` of a batch holding a message whose
  value contains ``text`` raises: a message that kills the daemon wherever it goes.

The integration tests ``tests/integration/test_crash_commits.py`` restart the daemon after
each such death and check the output topics. A daemon never sets it itself; the cost when it
is unset is one ``is not None`` test per point of the batch path.
"""

from __future__ import annotations

import os
import random
from collections.abc import Sequence

from confluent_kafka import Message

__all__ = ["ENV_VAR", "FaultInjector", "InjectedFaultError", "from_environment"]

ENV_VAR = "STREAMRNN_FAULT_INJECTION"


class InjectedFaultError(RuntimeError):
    """Raised on purpose by :class:`FaultInjector` (a test asked for it)."""


class FaultInjector:
    """Raises :class:`InjectedFaultError` at a :meth:`point`; see the module docstring."""

    def __init__(self, probability: float = 0.0, seed: int = 0, poison: bytes | None = None):
        self.probability = probability
        self.poison = poison
        # Each life of the daemon draws its own faults (a restart must not die at the same
        # draw again), reproducibly for a given process id.
        self._rng = random.Random(f"{seed}:{os.getpid()}")

    def point(self, where: str, messages: Sequence[Message], isolated: bool = False) -> None:
        """Maybe raise here, in the handling of ``messages``; ``where`` names the point."""
        if self.poison is not None and any(self.poison in (m.value() or b"") for m in messages):
            raise InjectedFaultError(f"injected fault at {where}: a poison message")
        if not isolated and self.probability and self._rng.random() < self.probability:
            raise InjectedFaultError(f"injected fault at {where}")


def from_environment() -> FaultInjector | None:
    """The injector :data:`ENV_VAR` asks for, or None (the normal case)."""
    spec = os.environ.get(ENV_VAR)
    if not spec:
        return None
    items = dict(item.partition("=")[::2] for item in spec.split(","))
    poison = items.get("poison")
    return FaultInjector(
        float(items.get("random", "0")),
        int(items.get("seed", "0")),
        poison.encode() if poison else None,
    )
