"""Postgres access for the catalog: items, users and events, through SQLAlchemy Core.

Every value travels as a bound parameter. Each public method runs in one transaction,
so a batch is written entirely or not at all. Rows of a batch are written in
ascending id order, so concurrent batches that share ids lock them in the same order.

External id columns use the ``"C"`` collation (code point order, the order of Python's
``sorted``), so list order and page tokens do not depend on how the database was
created, and keyset pages are served by the unique indexes.

Failures to reach the database (it is down, the connection dropped, the pool is
exhausted, a statement timed out) raise ``StorageUnavailableError``; anything else,
such as a constraint violation, is a bug and propagates unchanged.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import cast

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert

from cascade_server.catalog.records import (
    EventRecord,
    ItemRecord,
    ItemStatus,
    LogResult,
    UpsertResult,
    UserRecord,
)
from cascade_server.errors import FieldViolation, InvalidArgumentError, StorageUnavailableError
from cascade_server.storage import tables

_log = logging.getLogger(__name__)

_items = cast(sa.Table, tables.Item.__table__)
_users = cast(sa.Table, tables.User.__table__)
_events = cast(sa.Table, tables.Event.__table__)

_item_key = _items.c.external_id
_user_key = _users.c.external_id
# True on rows an INSERT ... ON CONFLICT DO UPDATE inserted, false on rows it updated.
_inserted = sa.literal_column("xmax = 0", sa.Boolean).label("inserted")
_item_columns = (
    _items.c.external_id,
    _items.c.creator_id,
    _items.c.categories,
    _items.c.title,
    _items.c.status,
    _items.c.attributes,
    _items.c.created_at,
    _items.c.updated_at,
)
_user_columns = (_users.c.external_id, _users.c.attributes, _users.c.created_at)

# Writes are prebuilt and run as executemany: SQLAlchemy compiles each once (cached)
# and sends the rows as multi-row VALUES ("insertmanyvalues"), one round trip per
# thousand rows, instead of compiling a fresh statement with thousands of parameters.
_CREATED_AT = "created_at_or_null"
_new_items = pg_insert(_items).values(
    # NULL (the record leaves it unset) means the time of this first upsert.
    created_at=sa.func.coalesce(
        sa.bindparam(_CREATED_AT, type_=sa.DateTime(timezone=True)), sa.func.now()
    )
)
_UPSERT_ITEMS = _new_items.on_conflict_do_update(
    index_elements=[_items.c.external_id],
    set_={
        "creator_id": _new_items.excluded.creator_id,
        "categories": _new_items.excluded.categories,
        "title": _new_items.excluded.title,
        "status": _new_items.excluded.status,
        "attributes": _new_items.excluded.attributes,
        "updated_at": sa.func.now(),
    },
).returning(_items.c.external_id, _inserted)
_new_users = pg_insert(_users)
_UPSERT_USERS = _new_users.on_conflict_do_update(
    index_elements=[_users.c.external_id],
    set_={"attributes": _new_users.excluded.attributes, "updated_at": sa.func.now()},
).returning(_inserted)
_INSERT_MISSING_USERS = _new_users.on_conflict_do_nothing(index_elements=[_users.c.external_id])
_INSERT_EVENTS = (
    pg_insert(_events)
    .on_conflict_do_nothing(index_elements=[_events.c.event_id])
    .returning(_events.c.id)
)


class CatalogRepository:
    """Reads and writes catalog rows; callers validate input first (see ``validation``)."""

    def __init__(self, engine: sa.Engine) -> None:
        """Use ``engine`` (see ``storage.database.make_engine``) for every call."""
        self._engine = engine

    def upsert_items(self, items: Sequence[ItemRecord]) -> UpsertResult:
        """Create or replace items by id, all in one transaction; ids must be distinct.

        A replaced item keeps its ``created_at`` unless the record sets one; every
        written row gets ``updated_at = now()``.
        """
        if not items:
            return UpsertResult(created=0, updated=0)
        ordered = sorted(items, key=lambda item: item.item_id)
        rows = [
            {
                "external_id": item.item_id,
                "creator_id": item.creator_id,
                "categories": list(item.categories),
                "title": item.title,
                "status": item.status.value,
                "attributes": dict(item.attributes),
                _CREATED_AT: item.created_at,
            }
            for item in ordered
        ]
        with self._transaction() as connection:
            inserted = {key: bool(flag) for key, flag in connection.execute(_UPSERT_ITEMS, rows)}
            # Replaced rows keep created_at above; set it where the record asks to.
            explicit = [
                {"key": item.item_id, "created_at": item.created_at}
                for item in ordered
                if item.created_at is not None and not inserted[item.item_id]
            ]
            if explicit:
                connection.execute(
                    sa.update(_items)
                    .where(_items.c.external_id == sa.bindparam("key"))
                    .values(created_at=sa.bindparam("created_at")),
                    explicit,
                )
        result = _count(inserted.values())
        _log.debug("upserted items: %d created, %d updated", result.created, result.updated)
        return result

    def upsert_users(self, users: Sequence[UserRecord]) -> UpsertResult:
        """Create or replace users by id, all in one transaction; ids must be distinct.

        A replaced user keeps its ``created_at``; ``UserRecord.created_at`` is ignored.
        """
        if not users:
            return UpsertResult(created=0, updated=0)
        rows = [
            {"external_id": user.user_id, "attributes": dict(user.attributes)}
            for user in sorted(users, key=lambda user: user.user_id)
        ]
        with self._transaction() as connection:
            flags = connection.execute(_UPSERT_USERS, rows).scalars().all()
        result = _count(flags)
        _log.debug("upserted users: %d created, %d updated", result.created, result.updated)
        return result

    def get_items(self, ids: Sequence[str]) -> list[ItemRecord]:
        """The items with these ids that exist, in ascending id order."""
        if not ids:
            return []
        statement = (
            sa.select(*_item_columns)
            .where(_items.c.external_id.in_(sorted(set(ids))))
            .order_by(_item_key)
        )
        with self._transaction() as connection:
            rows = connection.execute(statement).all()
        return [_item_record(row._mapping) for row in rows]

    def list_items(
        self,
        limit: int,
        after: str | None = None,
        status: ItemStatus | None = None,
        category: str = "",
    ) -> list[ItemRecord]:
        """Up to ``limit`` items with ids after ``after``, in ascending id order.

        ``status`` keeps only items with that status; a non-empty ``category`` keeps
        only items that list it among their categories.
        """
        statement = sa.select(*_item_columns).order_by(_item_key).limit(limit)
        if after is not None:
            statement = statement.where(_item_key > after)
        if status is not None:
            statement = statement.where(_items.c.status == status.value)
        if category:
            statement = statement.where(_items.c.categories.contains([category]))
        with self._transaction() as connection:
            rows = connection.execute(statement).all()
        return [_item_record(row._mapping) for row in rows]

    def list_users(self, limit: int, after: str | None = None) -> list[UserRecord]:
        """Up to ``limit`` users with ids after ``after``, in ascending id order."""
        statement = sa.select(*_user_columns).order_by(_user_key).limit(limit)
        if after is not None:
            statement = statement.where(_user_key > after)
        with self._transaction() as connection:
            rows = connection.execute(statement).all()
        return [
            UserRecord(
                user_id=row.external_id,
                attributes=row.attributes,
                created_at=row.created_at,
            )
            for row in rows
        ]

    def log_events(self, events: Sequence[EventRecord], now: datetime) -> LogResult:
        """Store events in one transaction, skipping event ids stored before.

        Every item must exist, or ``InvalidArgumentError`` names each event with an
        unknown item and nothing is written. Unknown users are created. An event
        without ``occurred_at`` gets ``now``. When an event id appears more than once
        in the batch, the first copy is stored and the others count as duplicates
        (every copy's item must still exist). An event id stored before counts as a
        duplicate even when the new copy's fields differ; the stored row is kept.
        Every event needs a kind (validation guarantees it).
        """
        if not events:
            return LogResult(stored=0, duplicates=0)
        with self._transaction() as connection:
            item_ids = self._resolve_items(connection, events)
            user_ids = self._ensure_users(connection, sorted({event.user_id for event in events}))
            first: dict[str, EventRecord] = {}
            for event in events:
                first.setdefault(event.event_id, event)
            rows = [
                {
                    "event_id": event.event_id,
                    "user_id": user_ids[event.user_id],
                    "item_id": item_ids[event.item_id],
                    "kind": _kind(event),
                    "occurred_at": now if event.occurred_at is None else event.occurred_at,
                    "surface": event.surface,
                    "request_id": event.request_id,
                    "value": event.value,
                    "experiments": list(event.experiments),
                }
                for _, event in sorted(first.items())
            ]
            stored = len(connection.execute(_INSERT_EVENTS, rows).all())
        result = LogResult(stored=stored, duplicates=len(events) - stored)
        _log.debug("logged events: %d stored, %d duplicates", result.stored, result.duplicates)
        return result

    @staticmethod
    def _resolve_items(connection: sa.Connection, events: Sequence[EventRecord]) -> dict[str, int]:
        """Map each event's item id to the internal id; raise when any item is unknown."""
        wanted = sorted({event.item_id for event in events})
        statement = sa.select(_items.c.external_id, _items.c.id).where(
            _items.c.external_id.in_(wanted)
        )
        found = {key: row_id for key, row_id in connection.execute(statement)}
        violations = [
            FieldViolation(
                f"events[{index}].item_id",
                f"item {event.item_id!r} does not exist; create it with UpsertItems first",
            )
            for index, event in enumerate(events)
            if event.item_id not in found
        ]
        if violations:
            raise InvalidArgumentError(violations)
        return found

    @staticmethod
    def _ensure_users(connection: sa.Connection, external_ids: list[str]) -> dict[str, int]:
        """Map external user ids to internal ids, creating the users that do not exist."""
        lookup = sa.select(_users.c.external_id, _users.c.id)
        found = {
            key: row_id
            for key, row_id in connection.execute(
                lookup.where(_users.c.external_id.in_(external_ids))
            )
        }
        missing = [external_id for external_id in external_ids if external_id not in found]
        if missing:
            # DO NOTHING: a concurrent call may create the same user; then read its row.
            connection.execute(
                _INSERT_MISSING_USERS,
                [{"external_id": external_id} for external_id in missing],
            )
            found.update(
                (key, row_id)
                for key, row_id in connection.execute(
                    lookup.where(_users.c.external_id.in_(missing))
                )
            )
            _log.debug("created %d users from events", len(missing))
        return found

    @contextmanager
    def _transaction(self) -> Iterator[sa.Connection]:
        """One transaction, with failures to reach the database as ``StorageUnavailableError``."""
        try:
            with self._engine.begin() as connection:
                yield connection
        except (sa.exc.OperationalError, sa.exc.InterfaceError, sa.exc.TimeoutError) as error:
            raise _unavailable(error) from error
        except sa.exc.DBAPIError as error:
            if error.connection_invalidated:
                raise _unavailable(error) from error
            raise


def _unavailable(error: Exception) -> StorageUnavailableError:
    _log.warning("catalog storage unavailable: %s", error)
    return StorageUnavailableError(
        "the database is unreachable or did not answer in time; the call may be retried"
    )


def _count(inserted_flags: Iterable[object]) -> UpsertResult:
    flags = [bool(flag) for flag in inserted_flags]
    created = sum(flags)
    return UpsertResult(created=created, updated=len(flags) - created)


def _kind(event: EventRecord) -> str:
    if event.kind is None:
        raise ValueError(f"event {event.event_id!r} has no kind; validate events first")
    return event.kind.value


def _item_record(row: sa.RowMapping) -> ItemRecord:
    return ItemRecord(
        item_id=row["external_id"],
        creator_id=row["creator_id"],
        categories=tuple(row["categories"]),
        title=row["title"],
        status=ItemStatus(row["status"]),
        attributes=row["attributes"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )
