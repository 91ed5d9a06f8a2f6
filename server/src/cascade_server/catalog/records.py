"""Domain records the catalog reads and writes, free of protobuf and of SQL.

The gRPC servicer converts request messages into these records and results back into
response messages; the service and repository never see a protobuf type.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class ItemStatus(StrEnum):
    """Whether an item may be recommended; the values are the stored text."""

    ACTIVE = "active"
    HIDDEN = "hidden"
    DELETED = "deleted"


class EventKind(StrEnum):
    """The kind of an engagement event; the values are the stored text."""

    IMPRESSION = "impression"
    CLICK = "click"
    SAVE = "save"
    LIKE = "like"
    SHARE = "share"
    HIDE = "hide"
    RATE = "rate"


@dataclass(frozen=True)
class ItemRecord:
    """One recommendable item, keyed by its external ``item_id``.

    On write, ``created_at`` of ``None`` means "the time of the first upsert" and keeps
    the stored value on later upserts; ``updated_at`` is ignored (the database sets it).
    On read both are always set.
    """

    item_id: str
    creator_id: str = ""
    categories: tuple[str, ...] = ()
    title: str = ""
    status: ItemStatus = ItemStatus.ACTIVE
    attributes: Mapping[str, Any] = field(default_factory=dict, hash=False)
    created_at: datetime | None = None
    updated_at: datetime | None = None

    def __post_init__(self) -> None:
        """Store ``categories`` as a tuple even when given another sequence."""
        object.__setattr__(self, "categories", tuple(self.categories))


@dataclass(frozen=True)
class UserRecord:
    """One user, keyed by the external ``user_id``; ``created_at`` is output only."""

    user_id: str
    attributes: Mapping[str, Any] = field(default_factory=dict, hash=False)
    created_at: datetime | None = None


@dataclass(frozen=True)
class EventRecord:
    """One engagement of a user with an item.

    ``kind`` of ``None`` is the protobuf ``EVENT_KIND_UNSPECIFIED`` and is rejected by
    validation. ``occurred_at`` of ``None`` means the time the server received the event.
    ``surface`` is the surface's stored name (for example ``"home_feed"``), empty when
    unknown.
    """

    event_id: str
    user_id: str
    item_id: str
    kind: EventKind | None
    occurred_at: datetime | None = None
    surface: str = ""
    request_id: str = ""
    value: float = 0.0
    experiments: tuple[str, ...] = ()
    """``experiment/variant`` labels of the response that showed the item."""


@dataclass(frozen=True)
class UpsertResult:
    """How many records an upsert created and how many it replaced."""

    created: int
    updated: int


@dataclass(frozen=True)
class LogResult:
    """How many events a call stored, and how many it skipped as already stored."""

    stored: int
    duplicates: int


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of a listing; an empty ``next_page_token`` marks the last page."""

    records: tuple[T, ...]
    next_page_token: str

    def __post_init__(self) -> None:
        """Store ``records`` as a tuple even when given another sequence."""
        object.__setattr__(self, "records", tuple(self.records))
