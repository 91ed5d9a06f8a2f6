"""Loading checked files into Postgres in one transaction: ``import_files`` and every SQL
statement it runs. Rows are copied into temporary tables; external ids become internal
ids through joins; events go in with ``ON CONFLICT (event_id) DO NOTHING``, or with the
events table's indexes deferred when it is empty and the import is large.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import sqlalchemy as sa
from psycopg.types.json import Jsonb

from cascade_server.offline.importing.formats import ImportFormat
from cascade_server.offline.importing.parsing import import_start, parse_paths
from cascade_server.offline.importing.problems import (
    MAX_LISTED_PROBLEMS,
    DataFileError,
    FileProblem,
    shown,
)
from cascade_server.offline.importing.progress import Bars, progress_bars
from cascade_server.offline.importing.rows import ParsedFiles
from cascade_server.storage.bulk import copy_rows, deferred_indexes
from cascade_server.storage.tables import Event

DEFER_INDEXES_FROM = 10_000
"""Fewest events an import into an empty events table needs to defer its indexes."""

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ImportResult:
    """What one import did: files read, rows created, events stored and skipped."""

    files: int
    users_created: int
    items_created: int
    events_stored: int
    events_duplicate: int
    """Events not stored because their id was stored before or repeats in the import."""
    seconds: float = field(default=0.0, compare=False)


_TEMP_TABLES = (
    """
    CREATE TEMPORARY TABLE import_users (
        external_id text COLLATE "C" NOT NULL,
        attributes jsonb NOT NULL
    ) ON COMMIT DROP
    """,
    """
    CREATE TEMPORARY TABLE import_items (
        external_id text COLLATE "C" NOT NULL,
        creator_id text NOT NULL,
        categories text[] NOT NULL,
        title text NOT NULL,
        status text NOT NULL,
        created_us bigint
    ) ON COMMIT DROP
    """,
    """
    CREATE TEMPORARY TABLE import_events (
        ord bigint NOT NULL,
        event_id text COLLATE "C" NOT NULL,
        user_id text COLLATE "C" NOT NULL,
        item_id text COLLATE "C" NOT NULL,
        kind text NOT NULL,
        occurred_us bigint NOT NULL,
        value double precision NOT NULL
    ) ON COMMIT DROP
    """,
)
_TIME = "(TIMESTAMPTZ 'epoch' + {column} * INTERVAL '1 microsecond')"

_UPSERT_USERS = sa.text(
    """
    WITH written AS (
        INSERT INTO users AS u (external_id, attributes)
        SELECT external_id, attributes FROM import_users ORDER BY external_id
        ON CONFLICT (external_id) DO UPDATE
            SET attributes = u.attributes || excluded.attributes, updated_at = now()
            WHERE NOT u.attributes @> excluded.attributes
        RETURNING xmax = 0 AS created
    )
    SELECT count(*) FILTER (WHERE created) FROM written
    """
)
_UPSERT_MOVIES = sa.text(
    """
    WITH written AS (
        INSERT INTO items AS i (external_id, title, categories)
        SELECT external_id, title, categories FROM import_items ORDER BY external_id
        ON CONFLICT (external_id) DO UPDATE
            SET title = excluded.title, categories = excluded.categories, updated_at = now()
            WHERE (i.title, i.categories) IS DISTINCT FROM (excluded.title, excluded.categories)
        RETURNING xmax = 0 AS created
    )
    SELECT count(*) FILTER (WHERE created) FROM written
    """
)
_UPSERT_ITEMS = sa.text(
    f"""
    WITH written AS (
        INSERT INTO items AS i (external_id, creator_id, categories, title, status, created_at)
        SELECT external_id, creator_id, categories, title, status,
               coalesce({_TIME.format(column="created_us")}, now())
        FROM import_items ORDER BY external_id
        ON CONFLICT (external_id) DO UPDATE
            SET creator_id = excluded.creator_id, categories = excluded.categories,
                title = excluded.title, status = excluded.status, updated_at = now()
            WHERE (i.creator_id, i.categories, i.title, i.status) IS DISTINCT FROM
                  (excluded.creator_id, excluded.categories, excluded.title, excluded.status)
        RETURNING xmax = 0 AS created
    )
    SELECT count(*) FILTER (WHERE created) FROM written
    """
)
_SET_CREATED_AT = sa.text(
    f"""
    UPDATE items AS i SET created_at = {_TIME.format(column="t.created_us")}
    FROM import_items AS t
    WHERE i.external_id = t.external_id AND t.created_us IS NOT NULL
      AND i.created_at IS DISTINCT FROM {_TIME.format(column="t.created_us")}
    """
)
_INSERT_EVENT_USERS = sa.text(
    """
    WITH written AS (
        INSERT INTO users (external_id)
        SELECT DISTINCT e.user_id FROM import_events AS e
        WHERE NOT EXISTS (SELECT FROM users AS u WHERE u.external_id = e.user_id)
        ORDER BY e.user_id
        ON CONFLICT (external_id) DO NOTHING
        RETURNING 1
    )
    SELECT count(*) FROM written
    """
)
_INSERT_EVENT_ITEMS = sa.text(
    """
    WITH written AS (
        INSERT INTO items (external_id)
        SELECT DISTINCT e.item_id FROM import_events AS e
        WHERE NOT EXISTS (SELECT FROM items AS i WHERE i.external_id = e.item_id)
        ORDER BY e.item_id
        ON CONFLICT (external_id) DO NOTHING
        RETURNING 1
    )
    SELECT count(*) FROM written
    """
)
_UNKNOWN_ITEMS = sa.text(
    f"""
    SELECT e.ord, count(*) OVER () FROM import_events AS e
    WHERE NOT EXISTS (SELECT FROM items AS i WHERE i.external_id = e.item_id)
    ORDER BY e.ord LIMIT {MAX_LISTED_PROBLEMS}
    """
)
_INSERT_EVENTS = f"""
    INSERT INTO events (event_id, user_id, item_id, kind, occurred_at, value)
    SELECT e.event_id, u.id, i.id, e.kind, {_TIME.format(column="e.occurred_us")}, e.value
    FROM (SELECT DISTINCT ON (event_id) * FROM import_events ORDER BY event_id, ord) AS e
    JOIN users AS u ON u.external_id = e.user_id
    JOIN items AS i ON i.external_id = e.item_id
    ORDER BY e.ord
"""
_EVENTS_EXIST = sa.select(sa.exists().select_from(Event))


@dataclass
class _Counts:
    users_created: int = 0
    items_created: int = 0
    events_stored: int = 0


def import_files(
    engine: sa.Engine,
    paths: Sequence[Path],
    format: ImportFormat,  # noqa: A002 - the name of the CLI option
    *,
    kind: str | None = None,
    progress: bool = True,
    now: Callable[[], datetime] | None = None,
) -> ImportResult:
    """Read, check and load ``paths`` in ``format`` in one transaction; see the package doc.

    Raises ``DataFileError`` (nothing imported) when a file is unreadable or any row is
    bad, including CSV or JSONL events whose items neither exist nor are imported with
    them; ``InvalidArgumentError`` for a bad ``kind``. ``now`` (default: the system
    clock) is called once, for the start of the import. ``progress`` shows progress bars
    on stderr.
    """
    began = time.perf_counter()
    started = import_start(None if now is None else now())
    with progress_bars(progress) as bars:
        parsed = parse_paths(paths, ImportFormat(format), kind, started, bars)
        with engine.begin() as connection:
            connection.exec_driver_sql("SET LOCAL statement_timeout = 0")
            connection.exec_driver_sql("SET LOCAL work_mem = '64MB'")
            connection.exec_driver_sql("SET LOCAL maintenance_work_mem = '256MB'")
            counts = _load(connection, parsed, bars)
    with engine.connect() as connection:
        connection.exec_driver_sql("ANALYZE users, items, events")
        connection.commit()
    result = ImportResult(
        files=len(parsed.paths),
        users_created=counts.users_created,
        items_created=counts.items_created,
        events_stored=counts.events_stored,
        events_duplicate=len(parsed.events) - counts.events_stored,
        seconds=time.perf_counter() - began,
    )
    _log.info(
        "imported %d file(s): %d users and %d items created, %d events stored, %d duplicate, "
        "in %.1f s",
        result.files,
        result.users_created,
        result.items_created,
        result.events_stored,
        result.events_duplicate,
        result.seconds,
    )
    return result


def _load(connection: sa.Connection, parsed: ParsedFiles, bars: Bars) -> _Counts:
    counts = _Counts()
    for statement in _TEMP_TABLES:
        connection.exec_driver_sql(statement)
    users, items, events = parsed.users, parsed.items, parsed.events
    if users:
        task = bars.add("writing users", len(users))
        copy_rows(
            connection,
            "import_users",
            ("external_id", "attributes"),
            zip(users.external_ids, map(Jsonb, users.attributes), strict=True),
            on_progress=task.update,
        )
        counts.users_created += connection.execute(_UPSERT_USERS).scalar_one()
        task.done()
    if items:
        task = bars.add("writing items", len(items))
        copy_rows(
            connection,
            "import_items",
            ("external_id", "creator_id", "categories", "title", "status", "created_us"),
            zip(
                items.external_ids,
                items.creator_ids,
                items.categories,
                items.titles,
                items.statuses,
                items.created_us,
                strict=True,
            ),
            on_progress=task.update,
        )
        if parsed.format is ImportFormat.MOVIELENS:
            counts.items_created += connection.execute(_UPSERT_MOVIES).scalar_one()
        else:
            counts.items_created += connection.execute(_UPSERT_ITEMS).scalar_one()
            connection.execute(_SET_CREATED_AT)
        task.done()
    if events:
        _load_events(connection, parsed, counts, bars)
    return counts


def _load_events(
    connection: sa.Connection, parsed: ParsedFiles, counts: _Counts, bars: Bars
) -> None:
    events = parsed.events
    task = bars.add("copying events", len(events))
    copy_rows(
        connection,
        "import_events",
        ("ord", "event_id", "user_id", "item_id", "kind", "occurred_us", "value"),
        zip(
            range(len(events)),
            events.event_ids,
            events.user_ids,
            events.item_ids,
            events.kinds,
            events.occurred_us,
            events.values,
            strict=True,
        ),
        on_progress=task.update,
    )
    connection.exec_driver_sql("ANALYZE import_events")
    task.done()

    task = bars.add("creating users and items")
    if parsed.creates_items:
        counts.items_created += connection.execute(_INSERT_EVENT_ITEMS).scalar_one()
    else:
        _check_items_exist(connection, parsed)
    counts.users_created += connection.execute(_INSERT_EVENT_USERS).scalar_one()
    task.done()

    defer = len(events) >= DEFER_INDEXES_FROM and not connection.scalar(_EVENTS_EXIST)
    if defer:  # lock first, then look again: nobody may add events in between
        connection.exec_driver_sql("LOCK TABLE events IN ACCESS EXCLUSIVE MODE")
        defer = not connection.scalar(_EVENTS_EXIST)
    task = bars.add("storing events")
    if defer:
        with deferred_indexes(connection, "events"):
            counts.events_stored = connection.exec_driver_sql(_INSERT_EVENTS).rowcount
            task.done(counts.events_stored)
            task = bars.add("rebuilding event indexes")
        task.done()
    else:
        statement = _INSERT_EVENTS + " ON CONFLICT (event_id) DO NOTHING"
        counts.events_stored = connection.exec_driver_sql(statement).rowcount
        task.done(counts.events_stored)


def _check_items_exist(connection: sa.Connection, parsed: ParsedFiles) -> None:
    """Raise ``DataFileError`` naming the events whose items neither exist nor were imported."""
    rows = connection.execute(_UNKNOWN_ITEMS).all()
    if not rows:
        return
    events = parsed.events
    problems = [
        FileProblem(
            str(parsed.paths[events.sources[ord_]]),
            events.lines[ord_],
            events.item_columns[ord_] or None,
            "item_id",
            f"item {shown(events.item_ids[ord_])} does not exist; import it first "
            "(or in the same command, from an items file)",
        )
        for ord_, _ in rows
    ]
    raise DataFileError(problems, rows[0][1])
