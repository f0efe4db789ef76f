"""Give freed heap memory back to the operating system (glibc ``malloc_trim``).

librdkafka's threads, numpy and the JSON codecs allocate through glibc's malloc, which keeps
memory freed by a burst (a checkpoint that flushed 100,000 state records, a restore, a
backlog of fetched messages) in its arenas: it stays resident although nothing uses it, and
the daemon's resident memory then says more about its largest burst than about the series
it holds. ``malloc_trim(0)`` returns the free pages of every arena. It is called after a
checkpoint at most once per ``min_interval_s``; elsewhere than glibc (musl, macOS) it is a
no-op.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import time
from collections.abc import Callable

__all__ = ["HeapTrimmer"]


def _malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    func: Callable[[int], int] = trim
    return func


class HeapTrimmer:
    """Calls ``malloc_trim(0)`` at most once per ``min_interval_s`` seconds."""

    def __init__(self, min_interval_s: float = 10.0) -> None:
        self.min_interval_s = min_interval_s
        self._trim = _malloc_trim()
        self._last = -float("inf")

    def maybe_trim(self) -> bool:
        """Trim if the interval has passed; True if a trim ran."""
        now = time.monotonic()
        if self._trim is None or now - self._last < self.min_interval_s:
            return False
        self._last = now
        self._trim(0)
        return True
