"""Run the Alembic migrations in ``migrations/`` against a database URL."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from cascade_server.errors import ConfigurationError
from cascade_server.storage.database import normalize_url


def migrations_dir() -> Path:
    """The ``migrations/`` directory: inside the wheel, or at the repository root when editable."""
    package = Path(__file__).resolve().parent.parent
    for candidate in (package / "_migrations", package.parents[2] / "migrations"):
        if (candidate / "env.py").is_file():
            return candidate
    raise ConfigurationError("cannot find Cascade's migrations directory; reinstall cascade-server")


def alembic_config(url: str) -> Config:
    """An Alembic configuration for ``url``; no alembic.ini is needed."""
    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
    config.set_main_option(
        "file_template",
        "%%(year)d_%%(month).2d_%%(day).2d_%%(hour).2d%%(minute).2d-%%(rev)s_%%(slug)s",
    )
    config.set_main_option("sqlalchemy.url", normalize_url(url).replace("%", "%%"))
    return config


def upgrade(url: str, revision: str = "head") -> None:
    """Apply migrations up to ``revision``."""
    command.upgrade(alembic_config(url), revision)


def downgrade(url: str, revision: str) -> None:
    """Revert migrations down to ``revision`` (``base`` removes every table)."""
    command.downgrade(alembic_config(url), revision)


def head_revision() -> str:
    """The newest revision in ``migrations/versions``."""
    head = ScriptDirectory.from_config(
        alembic_config("postgresql://localhost/x")
    ).get_current_head()
    if head is None:
        raise ConfigurationError("the migrations directory holds no revision")
    return head


def current_revision(engine: sa.Engine) -> str | None:
    """The revision the database is at, or None for an empty database."""
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def require_current(engine: sa.Engine) -> None:
    """Raise with what to do when the database is not migrated to head."""
    current, head = current_revision(engine), head_revision()
    if current != head:
        raise ConfigurationError(
            f"the database is at revision {current or 'none'} but this code needs {head}; "
            "run `cascade db upgrade`"
        )
