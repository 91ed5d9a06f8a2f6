"""Run the Alembic migrations in ``migrations/`` against a database URL.

Checking that a database is at head, which every command and server does at start,
needs no Alembic: the head is a constant here (``tests/db/test_migrations.py`` holds it
to Alembic's reading of the directory) and the database's revision is one row of
Alembic's version table. Importing Alembic was a fifth of a short command's start, so
it is imported only to migrate.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import sqlalchemy as sa

from cascade_server.errors import ConfigurationError
from cascade_server.storage.database import normalize_url

if TYPE_CHECKING:
    from alembic.config import Config

HEAD_REVISION = "0005"
"""The newest revision in ``migrations/versions``: bump it with every new migration."""


def migrations_dir() -> Path:
    """The ``migrations/`` directory: inside the wheel, or at the repository root when editable."""
    package = Path(__file__).resolve().parent.parent
    for candidate in (package / "_migrations", package.parents[2] / "migrations"):
        if (candidate / "env.py").is_file():
            return candidate
    raise ConfigurationError("cannot find Cascade's migrations directory; reinstall cascade-server")


def alembic_config(url: str) -> Config:
    """An Alembic configuration for ``url``; no alembic.ini is needed."""
    from alembic.config import Config

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
    from alembic import command

    command.upgrade(alembic_config(url), revision)


def downgrade(url: str, revision: str) -> None:
    """Revert migrations down to ``revision`` (``base`` removes every table)."""
    from alembic import command

    command.downgrade(alembic_config(url), revision)


def current_revision(engine: sa.Engine) -> str | None:
    """The revision the database is at (the row of Alembic's version table), or None
    for an empty database."""
    with engine.connect() as connection:
        if connection.scalar(sa.text("SELECT to_regclass('alembic_version')")) is None:
            return None
        versions = connection.scalars(sa.text("SELECT version_num FROM alembic_version")).all()
    if len(versions) > 1:
        raise ConfigurationError(
            f"the database is at several revisions at once ({', '.join(versions)}); "
            "check its alembic_version table"
        )
    return versions[0] if versions else None


def require_current(engine: sa.Engine) -> None:
    """Raise with what to do when the database is not migrated to head."""
    current = current_revision(engine)
    if current != HEAD_REVISION:
        raise ConfigurationError(
            f"the database is at revision {current or 'none'} but this code needs "
            f"{HEAD_REVISION}; run `cascade db upgrade`"
        )
