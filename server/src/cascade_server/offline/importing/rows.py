"""The rows read from the files of one import, column by column (users, items, events), and
``ParsedFiles``, which holds them all, checked and ready to load.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cascade_server.catalog.records import (
    EventKind,
    EventRecord,
    ItemRecord,
    ItemStatus,
    UserRecord,
)
from cascade_server.offline.importing.formats import ImportFormat
from cascade_server.offline.importing.times import to_datetime


@dataclass(eq=False)
class UserRows:
    """Users with attributes to write, one entry per user in every list."""

    external_ids: list[str] = field(default_factory=list)
    attributes: list[dict[str, Any]] = field(default_factory=list)

    def __len__(self) -> int:
        """The number of users."""
        return len(self.external_ids)

    def records(self) -> list[UserRecord]:
        """The users as catalog records."""
        return [
            UserRecord(user_id=user, attributes=attributes)
            for user, attributes in zip(self.external_ids, self.attributes, strict=True)
        ]


@dataclass(eq=False)
class ItemRows:
    """Items to write, one entry per item in every list; ``created_us`` None means unset."""

    external_ids: list[str] = field(default_factory=list)
    creator_ids: list[str] = field(default_factory=list)
    categories: list[list[str]] = field(default_factory=list)
    titles: list[str] = field(default_factory=list)
    statuses: list[str] = field(default_factory=list)
    created_us: list[int | None] = field(default_factory=list)

    def __len__(self) -> int:
        """The number of items."""
        return len(self.external_ids)

    def records(self) -> list[ItemRecord]:
        """The items as catalog records."""
        return [
            ItemRecord(
                item_id=item,
                creator_id=creator,
                categories=tuple(categories),
                title=title,
                status=ItemStatus(status),
                created_at=None if created is None else to_datetime(created),
            )
            for item, creator, categories, title, status, created in zip(
                self.external_ids,
                self.creator_ids,
                self.categories,
                self.titles,
                self.statuses,
                self.created_us,
                strict=True,
            )
        ]


@dataclass(eq=False)
class EventRows:
    """Events to store, in file order, one entry per event in every column.

    ``occurred_us`` is microseconds since the epoch. ``sources``, ``lines`` and
    ``item_columns`` say where each event's item id was written (an index into
    ``ParsedFiles.paths``, a line, a column); they are kept only for CSV and JSONL,
    whose items must exist, and are empty otherwise.
    """

    event_ids: list[str] = field(default_factory=list)
    user_ids: list[str] = field(default_factory=list)
    item_ids: list[str] = field(default_factory=list)
    kinds: list[str] = field(default_factory=list)
    occurred_us: list[int] = field(default_factory=list)
    values: list[float] = field(default_factory=list)
    sources: list[int] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)
    item_columns: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        """The number of events."""
        return len(self.event_ids)

    def extend(self, other: EventRows) -> None:
        """Append ``other``'s events."""
        for name in self.__dataclass_fields__:
            getattr(self, name).extend(getattr(other, name))

    def records(self) -> list[EventRecord]:
        """The events as catalog records."""
        return [
            EventRecord(
                event_id=event_id,
                user_id=user,
                item_id=item,
                kind=EventKind(kind),
                occurred_at=to_datetime(occurred),
                value=value,
            )
            for event_id, user, item, kind, occurred, value in zip(
                self.event_ids,
                self.user_ids,
                self.item_ids,
                self.kinds,
                self.occurred_us,
                self.values,
                strict=True,
            )
        ]


@dataclass(eq=False)
class ParsedFiles:
    """Everything read from the files of one import, checked and ready to load."""

    format: ImportFormat
    paths: tuple[Path, ...]
    users: UserRows
    items: ItemRows
    events: EventRows

    @property
    def creates_items(self) -> bool:
        """Whether events may name unknown items (created with ids only)."""
        return self.format in (ImportFormat.NCF, ImportFormat.MOVIELENS)
