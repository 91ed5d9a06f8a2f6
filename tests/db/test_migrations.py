"""The Alembic migrations: one head, reversible, and matching the ORM tables."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from cascade_server.storage import migrations
from cascade_server.storage.database import make_engine
from cascade_server.storage.tables import Base

pytestmark = pytest.mark.db


def _tables(engine: sa.Engine) -> set[str]:
    return set(sa.inspect(engine).get_table_names())


def test_there_is_exactly_one_head_and_the_code_knows_it() -> None:
    script = ScriptDirectory.from_config(migrations.alembic_config("postgresql://localhost/x"))
    assert script.get_heads() == [migrations.HEAD_REVISION]


def _alembic_revision(engine: sa.Engine) -> str | None:
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def test_upgrade_downgrade_upgrade(empty_database_url: str) -> None:
    engine = make_engine(empty_database_url, pool_size=1)
    try:
        assert migrations.current_revision(engine) is None
        migrations.upgrade(empty_database_url, "0002")
        assert migrations.current_revision(engine) == "0002" == _alembic_revision(engine)
        migrations.upgrade(empty_database_url)
        assert migrations.current_revision(engine) == migrations.HEAD_REVISION
        assert _tables(engine) == {*Base.metadata.tables, "alembic_version"}

        migrations.downgrade(empty_database_url, "base")
        assert _tables(engine) <= {"alembic_version"}
        assert migrations.current_revision(engine) is None
        assert _alembic_revision(engine) is None
        with engine.connect() as connection:
            assert connection.scalar(sa.text("SELECT count(*) FROM alembic_version")) == 0

        migrations.upgrade(empty_database_url)
        assert migrations.current_revision(engine) == migrations.HEAD_REVISION
        assert _tables(engine) == {*Base.metadata.tables, "alembic_version"}
    finally:
        engine.dispose()


def test_the_models_match_the_migrated_schema(empty_database_url: str) -> None:
    migrations.upgrade(empty_database_url)
    engine = make_engine(empty_database_url, pool_size=1)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection)
            assert compare_metadata(context, Base.metadata) == []
    finally:
        engine.dispose()
