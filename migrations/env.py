"""Alembic environment: the target metadata is Cascade's ORM; the URL comes from the caller.

Run migrations with ``cascade db upgrade`` (it passes the configured database URL).
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine, pool

from cascade_server.storage.tables import Base

config = context.config
target_metadata = Base.metadata


def run_migrations_offline() -> None:
    """Emit SQL for the migrations without a database connection."""
    context.configure(
        url=config.get_main_option("sqlalchemy.url"),
        target_metadata=target_metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    """Apply the migrations over one connection, in one transaction, with a lock timeout."""
    url = config.get_main_option("sqlalchemy.url")
    if not url:
        raise SystemExit("no database URL: run migrations with `cascade db upgrade`")
    engine = create_engine(url, poolclass=pool.NullPool)
    with engine.connect() as connection:
        connection.exec_driver_sql("SET lock_timeout = '10s'")
        connection.commit()
        context.configure(connection=connection, target_metadata=target_metadata)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
