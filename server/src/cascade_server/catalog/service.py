"""The catalog's domain façade: validate a whole request, then read or write storage.

The gRPC servicer converts protobuf requests into records, calls one method here and
converts the result back. Every method raises ``InvalidArgumentError`` carrying all
the violations it found before touching the database, and ``StorageUnavailableError``
when the database cannot be reached.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import TypeVar

from cascade_server.catalog.paging import decode_list_token, encode_list_token
from cascade_server.catalog.records import (
    EventRecord,
    ItemRecord,
    ItemStatus,
    LogResult,
    Page,
    UpsertResult,
    UserRecord,
)
from cascade_server.catalog.repository import CatalogRepository
from cascade_server.catalog.validation import (
    DEFAULT_PAGE_SIZE,
    validate_category_filter,
    validate_events,
    validate_item_ids,
    validate_items,
    validate_page_size,
    validate_users,
)
from cascade_server.errors import FieldViolation, InvalidArgumentError

_log = logging.getLogger(__name__)
_T = TypeVar("_T")


def utc_now() -> datetime:
    """The current time in UTC (the default clock)."""
    return datetime.now(UTC)


class CatalogService:
    """Validated catalog operations over a ``CatalogRepository``."""

    def __init__(
        self, repository: CatalogRepository, *, clock: Callable[[], datetime] = utc_now
    ) -> None:
        """Serve from ``repository``; ``clock`` returns the aware current time."""
        self._repository = repository
        self._clock = clock

    def upsert_items(self, items: Sequence[ItemRecord]) -> UpsertResult:
        """Create or replace 1 to 1,000 items with distinct ids, all or nothing."""
        _raise_if_any(validate_items(items))
        return self._repository.upsert_items(items)

    def upsert_users(self, users: Sequence[UserRecord]) -> UpsertResult:
        """Create or replace 1 to 1,000 users with distinct ids, all or nothing."""
        _raise_if_any(validate_users(users))
        return self._repository.upsert_users(users)

    def get_items(self, item_ids: Sequence[str]) -> tuple[list[ItemRecord], list[str]]:
        """The items found and the ids not found, both in request order, each id once."""
        _raise_if_any(validate_item_ids(item_ids))
        found = {item.item_id: item for item in self._repository.get_items(item_ids)}
        items: list[ItemRecord] = []
        missing: list[str] = []
        seen: set[str] = set()
        for item_id in item_ids:
            if item_id in seen:
                continue
            seen.add(item_id)
            if item_id in found:
                items.append(found[item_id])
            else:
                missing.append(item_id)
        return items, missing

    def list_items(
        self,
        page_size: int = 0,
        page_token: str = "",
        status: ItemStatus | None = None,
        category: str = "",
    ) -> Page[ItemRecord]:
        """One page of items in ascending id order, optionally filtered.

        ``page_size`` 0 means 100; ``page_token`` is empty for the first page and must
        come from a page listed with the same ``status`` and ``category``.
        """
        violations = validate_page_size(page_size) + validate_category_filter(category)
        filters = json.dumps(["items", "" if status is None else status.value, category])
        after = _decode_token(page_token, filters, violations)
        _raise_if_any(violations)
        limit = page_size or DEFAULT_PAGE_SIZE
        records = self._repository.list_items(limit + 1, after, status, category)
        return _page(records, limit, [record.item_id for record in records], filters)

    def list_users(self, page_size: int = 0, page_token: str = "") -> Page[UserRecord]:
        """One page of users in ascending id order; ``page_size`` 0 means 100."""
        violations = validate_page_size(page_size)
        filters = json.dumps(["users"])
        after = _decode_token(page_token, filters, violations)
        _raise_if_any(violations)
        limit = page_size or DEFAULT_PAGE_SIZE
        records = self._repository.list_users(limit + 1, after)
        return _page(records, limit, [record.user_id for record in records], filters)

    def log_events(self, events: Sequence[EventRecord]) -> LogResult:
        """Store 1 to 1,000 events all or nothing, counting ids stored before as duplicates.

        Events without a time get the time of this call. Unknown users are created;
        unknown items reject the batch.
        """
        now = self._clock()
        _raise_if_any(validate_events(events, now))
        return self._repository.log_events(events, now)


def _decode_token(token: str, filters: str, violations: list[FieldViolation]) -> str | None:
    """The id a page token starts after (``None`` for no token); problems go to ``violations``."""
    if not token:
        return None
    try:
        return decode_list_token(token, filters)
    except InvalidArgumentError as error:
        violations.extend(error.violations)
        return None


def _page(records: Sequence[_T], limit: int, keys: Sequence[str], filters: str) -> Page[_T]:
    """The first ``limit`` records; a token after the last of them when more were fetched."""
    if len(records) <= limit:
        return Page(records=tuple(records), next_page_token="")
    return Page(
        records=tuple(records[:limit]), next_page_token=encode_list_token(keys[limit - 1], filters)
    )


def _raise_if_any(violations: Sequence[FieldViolation]) -> None:
    if violations:
        _log.debug("rejected a catalog request with %d violations", len(violations))
        raise InvalidArgumentError(violations)
