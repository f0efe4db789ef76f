"""systemd service notifications (``Type=notify``), via the sdnotify package.

``READY=1`` once the daemon has joined its group and restored its partitions' state (so
``systemctl start`` returns when the service really serves), ``WATCHDOG=1`` from the consume
loop (at most once a second: with ``WatchdogSec=`` a stuck loop gets the service
restarted), ``STOPPING=1`` at shutdown, and a ``STATUS=`` line ``systemctl status`` shows.
Outside systemd (no ``NOTIFY_SOCKET``) every call does nothing.
"""

from __future__ import annotations

import os
import time

import sdnotify

__all__ = ["ServiceNotifier"]


class ServiceNotifier:
    """See the module docstring."""

    def __init__(self) -> None:
        self.enabled = bool(os.environ.get("NOTIFY_SOCKET"))
        self._notifier = sdnotify.SystemdNotifier() if self.enabled else None
        self._ready = False
        self._last_watchdog = 0.0

    def ready(self, status: str) -> None:
        """The service is up (sent once)."""
        if not self._ready:
            self._ready = True
            self._send(f"READY=1\nSTATUS={status}")

    def watchdog(self) -> None:
        """The loop is alive (rate-limited to once a second)."""
        now = time.monotonic()
        if now - self._last_watchdog >= 1.0:
            self._last_watchdog = now
            self._send("WATCHDOG=1")

    def status(self, text: str) -> None:
        """A one-line status for ``systemctl status``."""
        self._send(f"STATUS={text}")

    def stopping(self) -> None:
        """Shutdown began."""
        self._send("STOPPING=1")

    def _send(self, message: str) -> None:
        if self._notifier is not None:
            self._notifier.notify(message)
