"""Commands that manage data: `db`, `import`, `demo-data`."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from cascade_server.cli.common import console, load_settings, migrated_engine
from cascade_server.cli.serving import load_demo_data
from cascade_server.offline.demo_data import DemoDataConfig, floor_to_hour
from cascade_server.offline.importing import DataFileError, FileKind, ImportFormat, import_files
from cascade_server.storage import migrations
from cascade_server.storage.database import database_url, make_engine

db_app = typer.Typer(help="Manage the database schema (Alembic migrations).", no_args_is_help=True)


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
    settings = load_settings()
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
    with migrated_engine(settings) as engine:
        load_demo_data(engine, config, if_empty=if_empty)


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
    settings = load_settings()
    with migrated_engine(settings) as engine:
        try:
            result = import_files(engine, paths, format_, kind=kind, progress=True)
        except DataFileError as error:
            console.print(f"[bold red]error:[/] {escape(error.message)}")
            raise typer.Exit(2) from None
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
    settings = load_settings()
    with database_url(settings) as url:
        migrations.upgrade(url, revision)
        console.print(f"database at revision {_current(url)}")


@db_app.command("downgrade")
def db_downgrade(
    revision: Annotated[str, typer.Argument(help="Target revision; `base` drops everything.")],
) -> None:
    """Revert migrations down to REVISION."""
    settings = load_settings()
    with database_url(settings) as url:
        migrations.downgrade(url, revision)
        console.print(f"database at revision {_current(url) or 'base (empty)'}")


@db_app.command("current")
def db_current() -> None:
    """Print the database's revision and the newest one this code knows."""
    settings = load_settings()
    with database_url(settings) as url:
        typer.echo(f"current: {_current(url) or 'none (empty database)'}")
        typer.echo(f"head:    {migrations.HEAD_REVISION}")


def _current(url: str) -> str | None:
    engine = make_engine(url, pool_size=1)
    try:
        return migrations.current_revision(engine)
    finally:
        engine.dispose()
