"""Bulk loads with Postgres ``COPY ... FROM STDIN`` through psycopg 3.

``COPY`` is an order of magnitude faster than batched ``INSERT`` for the demo data and
for imports. It runs on the caller's SQLAlchemy connection, so it takes part in the
caller's transaction: nothing is visible to others until the caller commits, and a
rollback undoes it.

For a large load into an empty table, ``deferred_indexes`` drops the table's indexes
and key constraints for the duration and rebuilds them afterwards, which is several
times faster than maintaining them row by row.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg
import sqlalchemy as sa
from psycopg import sql

PROGRESS_EVERY = 10_000
"""How many rows ``copy_rows`` writes between two calls of its ``on_progress`` callback."""

_log = logging.getLogger(__name__)


def copy_rows(
    connection: sa.Connection,
    table: str,
    columns: Sequence[str],
    rows: Iterable[Sequence[object]],
    *,
    on_progress: Callable[[int], None] | None = None,
) -> int:
    """Write ``rows`` into ``columns`` of ``table`` with one ``COPY`` and return how many.

    Each row holds one value per column, in the order of ``columns``; values are adapted
    by psycopg as in a query (``None`` is NULL, a ``list`` an array, a
    ``psycopg.types.json.Jsonb`` a JSON document, an aware ``datetime`` a timestamp; a
    ``str`` is parsed by the column's input function). Table and column names are quoted
    as identifiers; ``table`` may be schema-qualified as ``schema.table``.

    ``on_progress``, when given, is called with the number of rows written so far after
    every ``PROGRESS_EVERY`` rows and once more at the end. The caller owns the
    transaction: this function neither commits nor rolls back.
    """
    if not columns:
        raise ValueError("copy_rows needs at least one column")
    statement = sql.SQL("COPY {table} ({columns}) FROM STDIN").format(
        table=sql.Identifier(*table.split(".")),
        columns=sql.SQL(", ").join(sql.Identifier(column) for column in columns),
    )
    driver = _psycopg_connection(connection)
    written = 0
    with driver.cursor() as cursor, cursor.copy(statement) as copy:
        for row in rows:
            copy.write_row(row)
            written += 1
            if on_progress is not None and written % PROGRESS_EVERY == 0:
                on_progress(written)
    if on_progress is not None:
        on_progress(written)
    _log.debug("copied %d rows into %s", written, table)
    return written


def _psycopg_connection(connection: sa.Connection) -> psycopg.Connection[Any]:
    """The psycopg 3 connection under ``connection``, or a TypeError for another driver."""
    driver = connection.connection.driver_connection
    if not isinstance(driver, psycopg.Connection):
        raise TypeError(
            "copy_rows needs a psycopg 3 connection (postgresql+psycopg://), "
            f"not {type(driver).__name__}"
        )
    return driver


_KEY_CONSTRAINTS = sa.text(
    """
    SELECT conrelid::regclass::text, quote_ident(conname), pg_get_constraintdef(oid), contype
    FROM pg_constraint
    WHERE (conrelid = CAST(:table AS regclass) AND contype IN ('p', 'u', 'x', 'f'))
       OR (confrelid = CAST(:table AS regclass) AND contype = 'f')
    ORDER BY conname, conrelid
    """
)
_PLAIN_INDEXES = sa.text(
    """
    SELECT indexrelid::regclass::text, pg_get_indexdef(indexrelid)
    FROM pg_index
    WHERE indrelid = CAST(:table AS regclass)
      AND NOT EXISTS (SELECT 1 FROM pg_constraint
                      WHERE conindid = indexrelid AND conrelid = CAST(:table AS regclass))
    ORDER BY indexrelid
    """
)


@contextmanager
def deferred_indexes(connection: sa.Connection, table: str) -> Iterator[None]:
    """Drop ``table``'s indexes and key constraints for the block, then rebuild them.

    Primary keys, unique and exclusion constraints, foreign keys (those of ``table`` and
    those of other tables that reference it) and plain indexes are dropped on entry and
    recreated from their catalog definitions, with their names, when the block ends;
    recreating them checks every row. Check and not-null constraints stay. Meant for a
    bulk load into an empty table, inside a transaction that is rolled back if the block
    raises (then nothing is recreated: the rollback restores them). The table is locked
    against all other access until the transaction ends.
    """
    quoted = sql.Identifier(*table.split(".")).as_string(_psycopg_connection(connection))
    constraints = connection.execute(_KEY_CONSTRAINTS, {"table": quoted}).all()
    indexes = connection.execute(_PLAIN_INDEXES, {"table": quoted}).all()
    foreign = [row for row in constraints if row[3] == "f"]
    keys = [row for row in constraints if row[3] != "f"]
    for owner, name, _, _ in (*foreign, *keys):
        _execute(connection, f"ALTER TABLE {owner} DROP CONSTRAINT {name}")
    for name, _ in indexes:
        _execute(connection, f"DROP INDEX {name}")
    _log.debug("dropped %d constraints and %d indexes of %s", len(constraints), len(indexes), table)
    yield
    for owner, name, definition, _ in keys:
        _execute(connection, f"ALTER TABLE {owner} ADD CONSTRAINT {name} {definition}")
    for _, definition in indexes:
        _execute(connection, definition)
    for owner, name, definition, _ in foreign:
        _execute(connection, f"ALTER TABLE {owner} ADD CONSTRAINT {name} {definition}")
    _log.debug("rebuilt the constraints and indexes of %s", table)


def _execute(connection: sa.Connection, statement: str) -> None:
    """Run catalog-made DDL, escaping ``%`` so the driver sees no placeholders."""
    connection.exec_driver_sql(statement.replace("%", "%%"))
