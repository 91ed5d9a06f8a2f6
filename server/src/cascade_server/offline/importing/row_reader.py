"""One CSV or JSONL record at a time: ``Row`` holds its values and where each came from, and
``RowReader`` checks every field and adds the record to the events or items read.
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cascade_server.catalog.records import EventKind, EventRecord, ItemRecord, ItemStatus
from cascade_server.catalog.validation import MAX_EVENT_TIME_AHEAD
from cascade_server.offline.importing.batches import PendingEvents, PendingItems, Seen
from cascade_server.offline.importing.problems import Problems, shown
from cascade_server.offline.importing.rows import ParsedFiles
from cascade_server.offline.importing.times import EPOCH, US_PER_SECOND, future_problem, to_datetime
from cascade_server.storage.tables import EVENT_KINDS, ITEM_STATUSES

_MIN_US = (datetime(1, 1, 2, tzinfo=UTC) - EPOCH) // timedelta(microseconds=1)
_MAX_US = (datetime(9999, 12, 31, tzinfo=UTC) - EPOCH) // timedelta(microseconds=1)
_EPOCH_NUMBER = re.compile(r"-?\d+(\.\d+)?")


@dataclass
class Row:
    """One CSV or JSONL record: its values by column name and where each came from."""

    source: str
    line: int
    values: dict[str, object]
    columns: dict[str, int]

    def where(self, name: str) -> int | None:
        return self.columns.get(name)


class RowReader:
    """Turns CSV or JSONL rows into events or items, checking every field."""

    def __init__(
        self,
        parsed: ParsedFiles,
        source_index: int,
        problems: Problems,
        seen: Seen,
        now: datetime,
    ) -> None:
        self._parsed = parsed
        self._source_index = source_index
        self._problems = problems
        self._seen = seen
        self._latest_us = (now + MAX_EVENT_TIME_AHEAD - EPOCH) // timedelta(microseconds=1)
        self._events = PendingEvents(problems, now)
        self._items = PendingItems(problems)

    def finish(self) -> None:
        self._events.flush()
        self._items.flush()

    def _problem(self, row: Row, name: str, description: str) -> None:
        self._problems.add(row.source, row.line, row.where(name), name, description)

    def _text(self, row: Row, name: str, *, id_like: bool = False) -> str | None:
        value = row.values.get(name)
        if value is None:
            return ""
        if isinstance(value, str):
            return value
        if id_like and isinstance(value, int) and not isinstance(value, bool):
            return str(value)
        wanted = "a string or an integer" if id_like else "a string"
        self._problem(row, name, f"must be {wanted} (got {shown(value)})")
        return None

    def _time(self, row: Row, name: str) -> tuple[bool, int | None]:
        """Whether the time is good, and it in microseconds since the epoch (None if empty)."""
        value = row.values.get(name)
        if value is None or value == "":
            return True, None
        seconds: float | int
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            seconds = value
        elif isinstance(value, str) and _EPOCH_NUMBER.fullmatch(value):
            seconds = int(value) if value.lstrip("-").isdecimal() else float(value)
        elif isinstance(value, str):
            try:
                moment: datetime | None = datetime.fromisoformat(value)
            except ValueError:
                moment = None
            if moment is None or moment.utcoffset() is None:
                reason = "is not a time" if moment is None else "has no time zone"
                self._problem(
                    row,
                    name,
                    f"{shown(value)} {reason}; write ISO 8601 with a zone "
                    "(2026-01-31T12:00:00Z) or seconds since 1970-01-01 UTC",
                )
                return False, None
            return True, (moment - EPOCH) // timedelta(microseconds=1)
        else:
            self._problem(row, name, f"must be a time (got {shown(value)})")
            return False, None
        if not math.isfinite(seconds):
            self._problem(row, name, f"must be finite (got {shown(value)})")
            return False, None
        if isinstance(seconds, float):
            microseconds = round(seconds * US_PER_SECOND)
        else:
            microseconds = seconds * US_PER_SECOND
        if not _MIN_US <= microseconds <= _MAX_US:
            self._problem(row, name, f"{shown(value)} is out of range (years 1 to 9999)")
            return False, None
        return True, microseconds

    def event(self, row: Row) -> None:
        user = self._text(row, "user_id", id_like=True)
        item = self._text(row, "item_id", id_like=True)
        event_id = self._text(row, "event_id")
        kind_text = self._text(row, "kind")
        kind: EventKind | None = None
        if kind_text:
            try:
                kind = EventKind(kind_text.lower())
            except ValueError:
                self._problem(
                    row,
                    "kind",
                    f"{shown(kind_text)} is not an event kind ({', '.join(EVENT_KINDS)})",
                )
        elif kind_text is not None:
            self._problem(row, "kind", "is required")
        good_time, occurred = self._time(row, "timestamp")
        if good_time and occurred is None:
            self._problem(row, "timestamp", "is required")
        elif occurred is not None and occurred > self._latest_us:
            self._problem(row, "timestamp", future_problem(occurred, self._latest_us))
            occurred = None
        value = self._value(row)
        if (
            user is None
            or item is None
            or event_id is None
            or kind is None
            or occurred is None
            or value is None
        ):
            return
        if not event_id:
            normalised = f"{user}\t{item}\t{kind.value}\t{occurred}\t{value!r}"
            digest = hashlib.sha1(normalised.encode("utf-8", "surrogatepass")).hexdigest()
            event_id = f"csv:{digest[:16]}"
        columns: dict[str, tuple[int | None, str]] = {
            name: (column, name) for name, column in row.columns.items()
        }
        columns["event_time"] = columns.get("timestamp", (None, "timestamp"))
        record = EventRecord(
            event_id=event_id,
            user_id=user,
            item_id=item,
            kind=kind,
            occurred_at=to_datetime(occurred),
            value=value,
        )
        self._events.add(record, row.source, row.line, columns)
        events = self._parsed.events
        events.event_ids.append(event_id)
        events.user_ids.append(user)
        events.item_ids.append(item)
        events.kinds.append(kind.value)
        events.occurred_us.append(occurred)
        events.values.append(value)
        events.sources.append(self._source_index)
        events.lines.append(row.line)
        events.item_columns.append(row.columns.get("item_id", 0))

    def _value(self, row: Row) -> float | None:
        value = row.values.get("value")
        if value is None or value == "":
            return 0.0
        if isinstance(value, str):
            try:
                return float(value)  # finiteness is checked with the API's rules
            except ValueError:
                pass
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        self._problem(row, "value", f"must be a number (got {shown(value)})")
        return None

    def item(self, row: Row, *, split_categories: bool) -> None:
        item = self._text(row, "item_id", id_like=True)
        creator = self._text(row, "creator_id", id_like=True)
        title = self._text(row, "title")
        categories = self._categories(row, split=split_categories)
        status = self._text(row, "status")
        if status == "":
            status = ItemStatus.ACTIVE.value
        elif status is not None and status not in ITEM_STATUSES:
            self._problem(
                row, "status", f"{shown(status)} is not a status ({', '.join(ITEM_STATUSES)})"
            )
            status = None
        good_time, created = self._time(row, "created_at")
        if (
            item is None
            or creator is None
            or title is None
            or categories is None
            or status is None
            or not good_time
        ):
            return
        column = row.where("item_id")
        if item and not self._seen.first("item", item, row.source, row.line, column, "item_id"):
            return
        columns: dict[str, tuple[int | None, str]] = {
            name: (column, name) for name, column in row.columns.items()
        }
        columns["create_time"] = columns.get("created_at", (None, "created_at"))
        record = ItemRecord(
            item_id=item,
            creator_id=creator,
            categories=tuple(categories),
            title=title,
            status=ItemStatus(status),
        )
        self._items.add(record, row.source, row.line, columns)
        items = self._parsed.items
        items.external_ids.append(item)
        items.creator_ids.append(creator)
        items.categories.append(categories)
        items.titles.append(title)
        items.statuses.append(status)
        items.created_us.append(created)

    def _categories(self, row: Row, *, split: bool) -> list[str] | None:
        value = row.values.get("categories")
        if value is None or value == "":
            return []
        if split and isinstance(value, str):
            return [category.strip() for category in value.split("|")]
        if isinstance(value, list) and all(isinstance(entry, str) for entry in value):
            return list(value)
        wanted = "|-separated text" if split else "a list of strings"
        self._problem(row, "categories", f"must be {wanted} (got {shown(value)})")
        return None
