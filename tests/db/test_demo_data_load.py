"""Loading demo data with COPY, and the bulk helpers it uses."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from cascade_server.errors import ConfigurationError
from cascade_server.offline.demo_data import DemoData, DemoDataConfig, generate, is_empty, load
from cascade_server.storage.bulk import PROGRESS_EVERY, copy_rows, deferred_indexes
from cascade_server.storage.tables import Base

pytestmark = pytest.mark.db

SMALL = DemoDataConfig(users=40, items=300, creators=12, categories=8, events=3_000, seed=11)


@pytest.fixture(scope="module")
def data() -> DemoData:
    """One small data set for every test here."""
    return generate(SMALL)


def _counts(engine: sa.Engine) -> tuple[int, int, int]:
    with engine.connect() as connection:
        users, items, events = (
            connection.scalar(sa.text(f"SELECT count(*) FROM {table}"))
            for table in ("users", "items", "events")
        )
    return users, items, events


def _utc(moment: np.datetime64) -> datetime:
    return datetime.fromisoformat(str(moment.astype("datetime64[us]"))).replace(tzinfo=UTC)


def _schema(connection: sa.Connection) -> set[tuple[str, str, str]]:
    """Every constraint and index of the tables, with its definition."""
    constraints = connection.execute(
        sa.text(
            "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) "
            "FROM pg_constraint WHERE connamespace = 'public'::regnamespace"
        )
    )
    indexes = connection.execute(
        sa.text("SELECT tablename, indexname, indexdef FROM pg_indexes WHERE schemaname = 'public'")
    )
    return {(row[0], row[1], row[2]) for row in (*constraints, *indexes)}


def test_load_writes_every_row(engine: sa.Engine, data: DemoData) -> None:
    assert is_empty(engine)
    result = load(engine, data, progress=False)
    assert (result.users, result.items, result.events) == (40, 300, 3_000)
    assert _counts(engine) == (40, 300, 3_000)
    assert not is_empty(engine)


def test_loaded_rows_match_the_data(engine: sa.Engine, data: DemoData) -> None:
    load(engine, data, progress=False)
    events, items, users = data.events, data.items, data.users
    query = sa.text(
        "SELECT u.external_id, i.external_id, e.kind, e.occurred_at, e.value, e.surface, "
        "e.received_at FROM events e JOIN users u ON u.id = e.user_id "
        "JOIN items i ON i.id = e.item_id WHERE e.event_id = :event_id"
    )
    with engine.connect() as connection:
        for index in (0, 1, 1_234, len(events) - 1):
            row = connection.execute(query, {"event_id": events.event_ids[index]}).one()
            occurred = _utc(events.occurred_at[index])
            assert tuple(row) == (
                users.external_ids[events.user[index]],
                items.external_ids[events.item[index]],
                events.kind_names()[index],
                occurred,
                pytest.approx(events.value[index]),
                "home_feed",
                occurred,
            )
        for index in (0, 150, len(items) - 1):
            item = connection.execute(
                sa.text(
                    "SELECT creator_id, categories, title, status, attributes, created_at, "
                    "updated_at FROM items WHERE external_id = :id"
                ),
                {"id": items.external_ids[index]},
            ).one()
            assert tuple(item) == (
                items.creator_ids[index],
                items.categories[index],
                items.titles[index],
                items.statuses[index],
                items.attributes[index],
                _utc(items.created_at[index]),
                _utc(items.updated_at[index]),
            )
        user = connection.execute(
            sa.text("SELECT attributes, created_at FROM users WHERE external_id = :id"),
            {"id": users.external_ids[7]},
        ).one()
        assert tuple(user) == (users.attributes[7], _utc(users.created_at[7]))


def test_load_keeps_the_schema_as_migrated(engine: sa.Engine, data: DemoData) -> None:
    with engine.connect() as connection:
        before = _schema(connection)
    load(engine, data, progress=False)
    with engine.connect() as connection:
        assert _schema(connection) == before
        assert compare_metadata(MigrationContext.configure(connection), Base.metadata) == []


def test_load_into_a_database_with_data_raises_and_writes_nothing(
    engine: sa.Engine, data: DemoData
) -> None:
    load(engine, data, progress=False)
    with pytest.raises(ConfigurationError, match="not empty"):
        load(engine, data, progress=False)
    assert _counts(engine) == (40, 300, 3_000)


def test_load_refuses_a_database_with_only_a_user(engine: sa.Engine, data: DemoData) -> None:
    with engine.begin() as connection:
        connection.execute(sa.text("INSERT INTO users (external_id) VALUES ('someone')"))
    assert not is_empty(engine)
    with pytest.raises(ConfigurationError, match="not empty"):
        load(engine, data, progress=False)
    assert _counts(engine) == (1, 0, 0)


def test_load_shows_progress_on_stderr(
    engine: sa.Engine, data: DemoData, capsys: pytest.CaptureFixture[str]
) -> None:
    load(engine, data, progress=True)
    captured = capsys.readouterr()
    assert "loading events" in captured.err
    assert captured.out == ""


def test_copy_rows_reports_progress_in_the_callers_transaction(engine: sa.Engine) -> None:
    count = 2 * PROGRESS_EVERY + 5
    reports: list[int] = []
    with engine.connect() as connection:
        written = copy_rows(
            connection,
            "users",
            ["external_id"],
            ((f"bulk-{number}",) for number in range(count)),
            on_progress=reports.append,
        )
        inside = connection.scalar(sa.text("SELECT count(*) FROM users"))
        connection.rollback()
    assert written == inside == count
    assert reports == [PROGRESS_EVERY, 2 * PROGRESS_EVERY, count]
    assert _counts(engine) == (0, 0, 0)


def test_copy_rows_rejects_no_columns(engine: sa.Engine) -> None:
    with engine.connect() as connection, pytest.raises(ValueError, match="column"):
        copy_rows(connection, "users", [], [])


def test_deferred_indexes_restores_keys_and_checks_rows(engine: sa.Engine) -> None:
    with engine.connect() as connection:
        before = _schema(connection)
        with deferred_indexes(connection, "users"):  # events has a foreign key to users
            assert _schema(connection) < before
            copy_rows(connection, "users", ["external_id"], [("a",), ("b",)])
        assert _schema(connection) == before
        connection.commit()

        with pytest.raises(sa.exc.IntegrityError), deferred_indexes(connection, "users"):
            copy_rows(connection, "users", ["external_id"], [("c",), ("c",)])
        connection.rollback()
        assert _schema(connection) == before
    assert _counts(engine) == (2, 0, 0)
