"""Where the consume loop's time goes: seconds accumulated per named stage.

Each stage is timed once per batch (never per message), so the cost is a few
``perf_counter`` calls per batch. The daemon logs the totals in its ``stopped`` line
(``profile_s``), which ``tests/benchmarks/e2e.py`` prints as a table.

Pure Python; knows nothing of Kafka or torch.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["StageTimer"]


class StageTimer:
    """Accumulates wall-clock seconds per stage name."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Time the ``with`` block as part of stage ``name``."""
        started = time.perf_counter()
        try:
            yield
        finally:
            self.add(name, time.perf_counter() - started)

    def add(self, name: str, seconds: float) -> None:
        """Count ``seconds`` towards stage ``name``."""
        self.seconds[name] = self.seconds.get(name, 0.0) + seconds

    def rounded(self, digits: int = 3) -> dict[str, float]:
        """The totals, rounded, largest first."""
        ordered = sorted(self.seconds.items(), key=lambda kv: -kv[1])
        return {name: round(s, digits) for name, s in ordered}
