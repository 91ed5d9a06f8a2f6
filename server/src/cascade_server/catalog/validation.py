"""Request validation for the catalog: pure functions returning every violation found.

Each function returns a list of ``FieldViolation`` whose paths follow the protobuf
request (``items[3].item_id``, ``events[0].event_time``, ``item_ids[2]``), so the
servicer can pass them to the client unchanged. An empty list means the input is
valid. Nothing here touches the database; the service validates a whole request
before writing any of it.

Besides the limits the contract states, text is rejected when Postgres could not
store it: a NUL character (text columns and JSONB reject it) or a lone surrogate
(not encodable as UTF-8). Such inputs would otherwise fail deep in the database as
internal errors.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from cascade_server.catalog.records import EventRecord, ItemRecord, UserRecord
from cascade_server.errors import FieldViolation

MAX_BATCH_SIZE = 1000
"""Most items, users, events or item ids in one call."""
MAX_ID_LENGTH = 128
"""Longest item, user, creator or event id, in characters."""
MAX_CATEGORIES = 16
"""Most categories on one item."""
MAX_CATEGORY_LENGTH = 128
"""Longest category, in characters."""
MAX_TITLE_LENGTH = 1000
"""Longest item title, in characters."""
MAX_ATTRIBUTES_BYTES = 16 * 1024
"""Largest ``attributes`` object, in bytes of compact UTF-8 JSON."""
MAX_REQUEST_ID_LENGTH = 64
"""Longest ``request_id`` on an event, in characters."""
MAX_EXPERIMENTS = 16
"""Most experiment labels on one event."""
MAX_EXPERIMENT_LENGTH = 129
"""Longest experiment label (``experiment/variant``, two names of at most 64)."""
MAX_SURFACE_LENGTH = 32
"""Longest stored surface name on an event (the width of ``events.surface``)."""
MAX_EVENT_TIME_AHEAD = timedelta(minutes=5)
"""How far past the server clock an ``event_time`` may be."""
DEFAULT_PAGE_SIZE = 100
"""The page size a ``page_size`` of zero means."""
MAX_PAGE_SIZE = 1000
"""Largest ``page_size``."""

_NAIVE = "must carry a time zone"


def encode_attributes(attributes: Mapping[str, Any]) -> str:
    """Return ``attributes`` as compact JSON, the encoding whose size the limit counts.

    Raises ``TypeError``, ``ValueError`` or ``RecursionError`` when the value is not
    JSON (for example a NaN, a set or a cycle).
    """
    return json.dumps(dict(attributes), ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def validate_items(items: Sequence[ItemRecord]) -> list[FieldViolation]:
    """Every violation in an UpsertItems batch, including item ids repeated in it."""
    violations = _check_batch("items", len(items), "item")
    first_index: dict[str, int] = {}
    for index, item in enumerate(items):
        path = f"items[{index}]"
        _check_text(violations, f"{path}.item_id", item.item_id, MAX_ID_LENGTH, required=True)
        _check_duplicate(violations, first_index, item.item_id, index, "items", "item_id")
        _check_text(violations, f"{path}.creator_id", item.creator_id, MAX_ID_LENGTH)
        if len(item.categories) > MAX_CATEGORIES:
            violations.append(
                FieldViolation(
                    f"{path}.categories",
                    f"at most {MAX_CATEGORIES} categories are allowed (got {len(item.categories)})",
                )
            )
        for position, category in enumerate(item.categories):
            _check_text(
                violations,
                f"{path}.categories[{position}]",
                category,
                MAX_CATEGORY_LENGTH,
                required=True,
            )
        _check_text(violations, f"{path}.title", item.title, MAX_TITLE_LENGTH)
        _check_time_zone(violations, f"{path}.create_time", item.created_at)
        _check_attributes(violations, f"{path}.attributes", item.attributes)
    return violations


def validate_users(users: Sequence[UserRecord]) -> list[FieldViolation]:
    """Every violation in an UpsertUsers batch, including user ids repeated in it."""
    violations = _check_batch("users", len(users), "user")
    first_index: dict[str, int] = {}
    for index, user in enumerate(users):
        path = f"users[{index}]"
        _check_text(violations, f"{path}.user_id", user.user_id, MAX_ID_LENGTH, required=True)
        _check_duplicate(violations, first_index, user.user_id, index, "users", "user_id")
        _check_attributes(violations, f"{path}.attributes", user.attributes)
    return violations


def validate_item_ids(ids: Sequence[str], field: str = "item_ids") -> list[FieldViolation]:
    """Every violation in a list of item ids to look up; repeated ids are allowed."""
    violations = _check_batch(field, len(ids), "item id")
    for index, item_id in enumerate(ids):
        _check_text(violations, f"{field}[{index}]", item_id, MAX_ID_LENGTH, required=True)
    return violations


def validate_events(events: Sequence[EventRecord], now: datetime) -> list[FieldViolation]:
    """Every violation in a LogEvents batch, judged against the server time ``now``.

    Event ids repeated within the batch are not violations: the later copies are
    counted as duplicates when stored. Whether each item exists is checked by the
    repository, not here.
    """
    violations = _check_batch("events", len(events), "event")
    latest = now + MAX_EVENT_TIME_AHEAD
    for index, event in enumerate(events):
        path = f"events[{index}]"
        _check_text(violations, f"{path}.event_id", event.event_id, MAX_ID_LENGTH, required=True)
        _check_text(violations, f"{path}.user_id", event.user_id, MAX_ID_LENGTH, required=True)
        _check_text(violations, f"{path}.item_id", event.item_id, MAX_ID_LENGTH, required=True)
        if event.kind is None:
            violations.append(
                FieldViolation(f"{path}.kind", "is required; EVENT_KIND_UNSPECIFIED is not allowed")
            )
        occurred_at = event.occurred_at
        if occurred_at is None:
            pass
        elif occurred_at.utcoffset() is None:
            violations.append(FieldViolation(f"{path}.event_time", _NAIVE))
        elif occurred_at > latest:
            ahead = (occurred_at - now).total_seconds()
            violations.append(
                FieldViolation(
                    f"{path}.event_time",
                    f"is {ahead:.0f} s in the future; at most "
                    f"{MAX_EVENT_TIME_AHEAD.total_seconds():.0f} s ahead of the server "
                    "clock is allowed",
                )
            )
        _check_text(violations, f"{path}.surface", event.surface, MAX_SURFACE_LENGTH)
        _check_text(violations, f"{path}.request_id", event.request_id, MAX_REQUEST_ID_LENGTH)
        if len(event.experiments) > MAX_EXPERIMENTS:
            violations.append(
                FieldViolation(
                    f"{path}.experiments",
                    f"at most {MAX_EXPERIMENTS} labels are allowed, got {len(event.experiments)}",
                )
            )
        for k, label in enumerate(event.experiments[:MAX_EXPERIMENTS]):
            _check_text(
                violations, f"{path}.experiments[{k}]", label, MAX_EXPERIMENT_LENGTH, required=True
            )
        if not math.isfinite(event.value):
            violations.append(
                FieldViolation(f"{path}.value", f"must be finite (got {event.value!r})")
            )
    return violations


def validate_page_size(page_size: int, field: str = "page_size") -> list[FieldViolation]:
    """The violation, if any, of a list page size (0 to ``MAX_PAGE_SIZE``; 0 means default)."""
    if page_size < 0:
        return [FieldViolation(field, f"must not be negative (got {page_size})")]
    if page_size > MAX_PAGE_SIZE:
        return [FieldViolation(field, f"must be at most {MAX_PAGE_SIZE} (got {page_size})")]
    return []


def validate_category_filter(category: str, field: str = "category") -> list[FieldViolation]:
    """The violations of a ListItems category filter; empty means every category."""
    violations: list[FieldViolation] = []
    _check_text(violations, field, category, MAX_CATEGORY_LENGTH)
    return violations


def _check_batch(field: str, size: int, noun: str) -> list[FieldViolation]:
    if size == 0:
        return [FieldViolation(field, f"at least one {noun} is required")]
    if size > MAX_BATCH_SIZE:
        return [FieldViolation(field, f"at most {MAX_BATCH_SIZE} {noun}s per call (got {size})")]
    return []


def _check_text(
    violations: list[FieldViolation],
    field: str,
    value: str,
    max_length: int,
    *,
    required: bool = False,
) -> None:
    if not value:
        if required:
            violations.append(FieldViolation(field, "is required"))
        return
    if len(value) > max_length:
        violations.append(
            FieldViolation(field, f"must be at most {max_length} characters (got {len(value)})")
        )
    problem = text_problem(value)
    if problem:
        violations.append(FieldViolation(field, problem))


def text_problem(value: str) -> str:
    """Why Postgres could not store ``value`` as text, or an empty string when it can."""
    if "\x00" in value:
        return "must not contain NUL characters"
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return "must be valid Unicode text (it contains a lone surrogate)"
    return ""


def _check_duplicate(
    violations: list[FieldViolation],
    first_index: dict[str, int],
    key: str,
    index: int,
    collection: str,
    name: str,
) -> None:
    if not key:
        return
    first = first_index.setdefault(key, index)
    if first != index:
        violations.append(
            FieldViolation(
                f"{collection}[{index}].{name}",
                f"repeats {collection}[{first}].{name}; ids in one call must be distinct",
            )
        )


def _check_time_zone(violations: list[FieldViolation], field: str, value: datetime | None) -> None:
    if value is not None and value.utcoffset() is None:
        violations.append(FieldViolation(field, _NAIVE))


def _check_attributes(
    violations: list[FieldViolation], field: str, attributes: Mapping[str, Any]
) -> None:
    try:
        encoded = encode_attributes(attributes)
    except (TypeError, ValueError, RecursionError) as error:
        violations.append(FieldViolation(field, f"must be a JSON object ({error})"))
        return
    try:
        size = len(encoded.encode("utf-8"))
    except UnicodeEncodeError:
        violations.append(
            FieldViolation(field, "must be valid Unicode text (it contains a lone surrogate)")
        )
        return
    if size > MAX_ATTRIBUTES_BYTES:
        violations.append(
            FieldViolation(
                field, f"must be at most {MAX_ATTRIBUTES_BYTES} bytes as JSON (got {size})"
            )
        )
    if any("\x00" in text for text in _strings(attributes)):
        violations.append(FieldViolation(field, "must not contain NUL characters"))


def _strings(value: object) -> Iterable[str]:
    """Every string in a decoded JSON value, keys included."""
    stack = [value]
    while stack:
        current = stack.pop()
        if isinstance(current, str):
            yield current
        elif isinstance(current, Mapping):
            for key, child in current.items():
                if isinstance(key, str):
                    yield key
                stack.append(child)
        elif isinstance(current, (list, tuple)):
            stack.extend(current)
