"""Structured logs: JSON lines for machines, readable lines for people.

``configure_logging`` is called once by the CLI. With ``format: auto`` the renderer is
chosen by whether stdout is a terminal: a daemon under systemd or Kubernetes writes one JSON
object per line (``ts``, ``level``, ``event`` and the bound fields), a person at a shell
gets coloured console output. Lines about a point carry ``series``, ``topic`` and
``partition`` as fields, bound by the caller.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, Literal

import orjson
import structlog

__all__ = ["configure_logging", "get_logger"]


def _orjson_dumps(obj: Any, default: Any = None) -> str:
    return orjson.dumps(obj, default=default).decode()


def configure_logging(
    level: str = "INFO", fmt: Literal["auto", "json", "console"] = "auto"
) -> None:
    """Route structlog (and stdlib logging) to stdout with the chosen renderer."""
    use_console = sys.stdout.isatty() if fmt == "auto" else fmt == "console"
    renderer: Any
    if use_console:
        renderer = structlog.dev.ConsoleRenderer(colors=sys.stdout.isatty())
    else:
        renderer = structlog.processors.JSONRenderer(serializer=_orjson_dumps)
    numeric_level = logging.getLevelNamesMapping()[level]
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True, key="ts"),
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric_level),
        logger_factory=structlog.WriteLoggerFactory(file=sys.stdout),
        cache_logger_on_first_use=True,
    )
    logging.basicConfig(level=max(numeric_level, logging.WARNING), stream=sys.stdout)


def get_logger(name: str) -> Any:
    """A structlog logger that names its component in every line."""
    return structlog.get_logger(component=name)
