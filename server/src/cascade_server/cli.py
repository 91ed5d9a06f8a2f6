"""The ``cascade`` command line: serve, manage the database, generate demo data.

Every command reads its settings once from ``CASCADE_*`` environment variables (see
``cascade settings``); options given on the command line only choose what to do.
"""

from __future__ import annotations

import asyncio
import os
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import sqlalchemy as sa
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from cascade_server.errors import CascadeError
from cascade_server.logs import configure_logging, get_logger
from cascade_server.offline.demo_data import (
    DemoDataConfig,
    floor_to_hour,
    generate,
    is_empty,
    load,
)
from cascade_server.offline.importer import DataFileError, FileKind, ImportFormat, import_files
from cascade_server.settings import ServiceName, Settings
from cascade_server.storage import migrations
from cascade_server.storage.database import database_url, make_engine

app = typer.Typer(
    help=(
        "Cascade: a multi-stage recommendation backend served over gRPC.\n\n"
        "Quick start: `cascade demo` starts an embedded Postgres, loads demo data and "
        "serves. Settings come from CASCADE_* environment variables (`cascade settings`)."
    ),
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
db_app = typer.Typer(help="Manage the database schema (Alembic migrations).", no_args_is_help=True)
app.add_typer(db_app, name="db")
_console = Console(stderr=True, soft_wrap=True)
_log = get_logger("cascade.cli")


class ServeTarget(StrEnum):
    """What `cascade serve` runs."""

    ALL = "all"
    BLENDING = "blending"
    RETRIEVAL = "retrieval"
    RANKING = "ranking"
    CATALOG = "catalog"


def _settings(service: str = "cli") -> Settings:
    settings = Settings()
    configure_logging(settings, service=service)
    return settings


@app.command()
def serve(
    target: Annotated[
        ServeTarget,
        typer.Argument(help="The server to run, or `all` for the four, each its own process."),
    ],
) -> None:
    """Run gRPC servers until Ctrl-C or SIGTERM (in-flight calls are drained first).

    Ports: blending 50051, retrieval 50052, ranking 50053, catalog 50054
    (CASCADE_<NAME>_PORT). The database must be migrated (`cascade db upgrade`).
    """
    settings = _settings(target.value)
    if target is ServeTarget.ALL:
        raise typer.Exit(_serve_all(settings))
    _serve_one(settings, ServiceName(target.value))


@app.command()
def demo(
    seed: Annotated[int, typer.Option(help="Seed of the demo data generator.")] = 42,
) -> None:
    """Set up and serve a demo: migrate, load demo data if the database is empty, serve all."""
    settings = _settings("demo")
    with database_url(settings) as url:
        migrations.upgrade(url)
        engine = make_engine(url)
        try:
            config = DemoDataConfig(seed=seed, end=floor_to_hour(datetime.now(UTC)))
            _load_demo_data(engine, config, if_empty=True)
        finally:
            engine.dispose()
        raise typer.Exit(_serve_all(settings, url=url))


@app.command("demo-data")
def demo_data(
    users: Annotated[int, typer.Option(min=1, help="Users to generate.")] = 2_000,
    items: Annotated[int, typer.Option(min=1, help="Items to generate.")] = 20_000,
    creators: Annotated[int, typer.Option(min=1, help="Creators to generate.")] = 200,
    categories: Annotated[int, typer.Option(min=1, help="Categories to generate.")] = 30,
    events: Annotated[int, typer.Option(min=1, help="Engagement events to generate.")] = 500_000,
    days: Annotated[int, typer.Option(min=1, help="Days the events span.")] = 90,
    seed: Annotated[int, typer.Option(help="Random seed; the same seed gives the same data.")] = 42,
    if_empty: Annotated[
        bool, typer.Option("--if-empty", help="Do nothing (and succeed) if data exists.")
    ] = False,
) -> None:
    """Generate a synthetic catalog and engagement log and bulk-load it (needs an empty DB).

    Users have latent category tastes; item popularity follows a power law; events
    end at the current hour.
    """
    settings = _settings()
    config = DemoDataConfig(
        users=users,
        items=items,
        creators=creators,
        categories=categories,
        events=events,
        days=days,
        seed=seed,
        end=floor_to_hour(datetime.now(UTC)),
    )
    with database_url(settings) as url:
        migrations.require_current(engine := make_engine(url))
        try:
            _load_demo_data(engine, config, if_empty=if_empty)
        finally:
            engine.dispose()


@app.command("import")
def import_data(
    paths: Annotated[
        list[Path], typer.Argument(help="The files to import (plain or gzip).", show_default=False)
    ],
    format_: Annotated[
        ImportFormat,
        typer.Option("--format", help="The files' format.", show_default=False),
    ],
    kind: Annotated[
        FileKind | None,
        typer.Option(help="What csv/jsonl files hold; default: told by their columns."),
    ] = None,
) -> None:
    """Import data files into the database, all in one transaction (needs a migrated DB).

    ncf: `user<TAB>item[<TAB>rating<TAB>timestamp]` lines; integer ids as written; each
    line is a `rate` event with id `ncf:<user>:<item>[:<timestamp>]`; two-field lines
    happen at the start of the import. movielens: ratings.dat, movies.dat, users.dat
    (MovieLens 1M); ratings get ids `movielens:<user>:<movie>:<timestamp>`. csv, jsonl:
    events (user_id, item_id, kind, timestamp[, value][, event_id]; a missing event_id
    becomes `csv:<16 hex digits of the row's SHA-1>`) or items (item_id[, creator_id]
    [, categories][, title][, status][, created_at]); their items must exist or be
    imported with them. Unknown users (and for ncf/movielens, items) are created.

    Re-running an import stores no event twice. Any bad row aborts the whole import and
    lists the problems as path:line:column (field number).
    """
    settings = _settings()
    with database_url(settings) as url:
        migrations.require_current(engine := make_engine(url))
        try:
            result = import_files(engine, paths, format_, kind=kind, progress=True)
        except DataFileError as error:
            _console.print(f"[bold red]error:[/] {escape(error.message)}")
            raise typer.Exit(2) from None
        finally:
            engine.dispose()
    table = Table("imported", "count")
    table.add_row("files", f"{result.files:,}")
    table.add_row("users created", f"{result.users_created:,}")
    table.add_row("items created", f"{result.items_created:,}")
    table.add_row("events stored", f"{result.events_stored:,}")
    table.add_row("events already stored or repeated", f"{result.events_duplicate:,}")
    table.add_row("seconds", f"{result.seconds:.1f}")
    Console().print(table)


@db_app.command("upgrade")
def db_upgrade(
    revision: Annotated[str, typer.Argument(help="Target revision.")] = "head",
) -> None:
    """Apply migrations up to REVISION (default: the newest)."""
    settings = _settings()
    with database_url(settings) as url:
        migrations.upgrade(url, revision)
        _console.print(f"database at revision {_current(url)}")


@db_app.command("downgrade")
def db_downgrade(
    revision: Annotated[str, typer.Argument(help="Target revision; `base` drops everything.")],
) -> None:
    """Revert migrations down to REVISION."""
    settings = _settings()
    with database_url(settings) as url:
        migrations.downgrade(url, revision)
        _console.print(f"database at revision {_current(url) or 'base (empty)'}")


@db_app.command("current")
def db_current() -> None:
    """Print the database's revision and the newest one this code knows."""
    settings = _settings()
    with database_url(settings) as url:
        typer.echo(f"current: {_current(url) or 'none (empty database)'}")
        typer.echo(f"head:    {migrations.head_revision()}")


@app.command("settings")
def show_settings() -> None:
    """Print every setting: its environment variable, current value and meaning."""
    settings = Settings()
    table = Table("variable", "value", "meaning")
    for name, field in Settings.model_fields.items():
        table.add_row(
            f"CASCADE_{name.upper()}", str(getattr(settings, name)), field.description or ""
        )
    Console().print(table)


def main() -> None:
    """Entry point of the `cascade` script; domain errors become one clear line."""
    try:
        app()
    except CascadeError as error:
        _console.print(f"[bold red]error:[/] {error.message}")
        raise SystemExit(2) from None


def _serve_one(settings: Settings, service: ServiceName) -> None:
    from cascade_server.rpc.app import build_server

    with database_url(settings) as url:
        engine = make_engine(url, pool_size=settings.workers)
        try:
            migrations.require_current(engine)

            async def run() -> None:
                await build_server(settings, service, engine).serve_until_signalled()

            asyncio.run(run())
        finally:
            engine.dispose()


def _serve_all(settings: Settings, *, url: str | None = None) -> int:
    from cascade_server.supervisor import Supervisor

    if url is None:
        with database_url(settings) as embedded_or_external:
            return _serve_all(settings, url=embedded_or_external)
    engine = make_engine(url, pool_size=1)
    try:
        migrations.require_current(engine)
    finally:
        engine.dispose()
    env = {**os.environ, "CASCADE_DATABASE_URL": url}
    _console.print(
        f"serving: blending {settings.host}:{settings.blending_port} (front door), "
        f"retrieval :{settings.retrieval_port}, ranking :{settings.ranking_port}, "
        f"catalog :{settings.catalog_port} — Ctrl-C stops"
    )
    return Supervisor(env=env, grace_s=settings.grace_seconds).run()


def _load_demo_data(engine: sa.Engine, config: DemoDataConfig, *, if_empty: bool) -> None:
    if if_empty and not is_empty(engine):
        _console.print("database already holds data; not loading demo data")
        return
    _console.print(
        f"generating demo data: {config.users:,} users, {config.items:,} items, "
        f"{config.events:,} events (seed {config.seed})"
    )
    result = load(engine, generate(config), progress=True)
    _console.print(f"loaded {result}")


def _current(url: str) -> str | None:
    engine = make_engine(url, pool_size=1)
    try:
        return migrations.current_revision(engine)
    finally:
        engine.dispose()
