"""How long the cyclic garbage collector stopped the consume loop, per generation.

Every collection pauses the interpreter, and with it the loop and the latency of every
point queued meanwhile. :class:`GcPauses` hooks ``gc.callbacks`` and keeps, per
generation, the number of collections, their total seconds and the longest one, so the
daemon's ``progress`` and ``stopped`` lines tell whether a latency spike was a collection.
The cost is two ``perf_counter`` calls per collection (a few hundred a minute).

Pure Python; knows nothing of Kafka or torch.
"""

from __future__ import annotations

import gc
import time
from typing import Any

__all__ = ["GcPauses"]


class GcPauses:
    """Collections, their seconds and the longest, per generation, since :meth:`install`."""

    def __init__(self) -> None:
        self.collections = [0, 0, 0]
        self.seconds = [0.0, 0.0, 0.0]
        self.longest_s = [0.0, 0.0, 0.0]
        self._started: float | None = None

    def install(self) -> None:
        """Start counting (idempotent)."""
        if self._callback not in gc.callbacks:
            gc.callbacks.append(self._callback)

    def uninstall(self) -> None:
        """Stop counting."""
        if self._callback in gc.callbacks:
            gc.callbacks.remove(self._callback)

    def _callback(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        if self._started is None:
            return
        took = time.perf_counter() - self._started
        self._started = None
        generation = int(info.get("generation", 0))
        self.collections[generation] += 1
        self.seconds[generation] += took
        self.longest_s[generation] = max(self.longest_s[generation], took)

    def as_log_fields(self) -> dict[str, object]:
        """``gc``: per generation, collections, total seconds and the longest in ms."""
        return {
            "gc": {
                f"gen{g}": {
                    "n": self.collections[g],
                    "s": round(self.seconds[g], 3),
                    "max_ms": round(1000.0 * self.longest_s[g], 2),
                }
                for g in range(3)
            }
        }
