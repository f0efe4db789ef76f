"""The daemon's HTTP endpoints: ``/healthz``, ``/readyz`` and ``/metrics``.

* ``/healthz`` (liveness): 200 while the consume loop has completed an iteration within
  ``http.liveness_stall_s`` seconds, else 503 — a stuck loop gets the process restarted.
* ``/readyz`` (readiness): 200 once the instance has joined its consumer group with every
  assigned partition's state restored (an instance with no partition, in a group with more
  instances than partitions, is ready too: it is a hot standby) and the broker answers a
  metadata request; else 503 with the reason.
* ``/metrics``: the Prometheus exposition of :class:`streamrnn.metrics.DaemonMetrics`
  (prometheus-client's WSGI app).

Served by the standard library's WSGI server from a background thread, one thread per
request, so a slow scrape never blocks the consume loop. Knows nothing of Kafka or torch:
the broker check is a callable.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import orjson
from prometheus_client import CollectorRegistry, make_wsgi_app

__all__ = ["Health", "HttpEndpoints"]

#: Seconds a broker check's answer is reused (probes may come every few seconds).
BROKER_CHECK_CACHE_S = 5.0


class Health:
    """What the probes report, set by the consume loop (thread-safe)."""

    def __init__(self, stall_s: float, broker_reachable: Callable[[], bool]) -> None:
        self.stall_s = stall_s
        self._broker_reachable = broker_reachable
        self._lock = threading.Lock()
        self._last_progress = time.monotonic()
        self._joined = False
        self._stopping = False
        self._broker_checked = -float("inf")
        self._broker_ok = False

    def progressed(self) -> None:
        """The loop completed an iteration."""
        with self._lock:
            self._last_progress = time.monotonic()

    def joined(self) -> None:
        """The instance joined its group and restored every assigned partition."""
        with self._lock:
            self._joined = True

    def stopping(self) -> None:
        """Shutdown began: not ready any more (still live while it finishes)."""
        with self._lock:
            self._stopping = True

    def liveness(self) -> tuple[bool, str]:
        """(alive, reason)."""
        with self._lock:
            idle = time.monotonic() - self._last_progress
        if idle > self.stall_s:
            return False, f"the consume loop made no progress for {idle:.0f} s"
        return True, "ok"

    def readiness(self) -> tuple[bool, str]:
        """(ready, reason)."""
        with self._lock:
            joined, stopping = self._joined, self._stopping
        if stopping:
            return False, "shutting down"
        if not joined:
            return False, "not yet joined the consumer group with its partitions' state restored"
        if not self._broker_ok_cached():
            return False, "the broker does not answer a metadata request"
        return True, "ok"

    def _broker_ok_cached(self) -> bool:
        now = time.monotonic()
        with self._lock:
            if now - self._broker_checked < BROKER_CHECK_CACHE_S:
                return self._broker_ok
        ok = self._broker_reachable()
        with self._lock:
            self._broker_checked, self._broker_ok = time.monotonic(), ok
        return ok


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Probes and scrapes every few seconds would drown the log: say nothing."""


class HttpEndpoints:
    """The HTTP server; :meth:`start` serves from a background thread."""

    def __init__(self, host: str, port: int, registry: CollectorRegistry, health: Health) -> None:
        self.health = health
        self._metrics_app = make_wsgi_app(registry)
        self._server = make_server(
            host, port, self._app, server_class=_Server, handler_class=_QuietHandler
        )
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="http-endpoints", daemon=True
        )

    @property
    def port(self) -> int:
        """The port served (the chosen one when configured as 0)."""
        return int(self._server.server_address[1])

    def start(self) -> None:
        """Serve in the background."""
        self._thread.start()

    def stop(self) -> None:
        """Stop serving."""
        self._server.shutdown()
        self._server.server_close()

    def _app(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/metrics":
            return self._metrics_app(environ, start_response)  # type: ignore[no-any-return]
        if path in ("/healthz", "/readyz"):
            ok, reason = self.health.liveness() if path == "/healthz" else self.health.readiness()
            body = orjson.dumps({"status": "ok" if ok else "fail", "reason": reason})
            status = "200 OK" if ok else "503 Service Unavailable"
            start_response(status, [("Content-Type", "application/json")])
            return [body]
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found: try /healthz, /readyz or /metrics\n"]
