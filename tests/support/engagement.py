"""Hand-made engagement data small enough to reason about in tests."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from cascade_server.features.engagement import EngagementSnapshot, SignalConfig, build_snapshot
from cascade_server.storage.engagement_reader import EngagementData
from cascade_server.storage.tables import EVENT_KINDS, ITEM_STATUSES

DAY = 86_400.0
T0 = 1_700_000_000.0


def make_data(
    items: Sequence[tuple[str, str, str]],
    users: Sequence[str],
    events: Sequence[tuple[str, str, str, float]],
) -> EngagementData:
    """Items as (id, creator, status); events as (user, item, kind, days after T0)."""
    item_pos = {item[0]: i for i, item in enumerate(items)}
    user_pos = {user: u for u, user in enumerate(users)}
    return EngagementData(
        item_ids=[i[0] for i in items],
        item_creators=[i[1] for i in items],
        item_status=np.array([ITEM_STATUSES.index(i[2]) for i in items], dtype=np.int8),
        user_ids=list(users),
        event_users=np.array([user_pos[e[0]] for e in events], dtype=np.int64),
        event_items=np.array([item_pos[e[1]] for e in events], dtype=np.int64),
        kinds=np.array([EVENT_KINDS.index(e[2]) for e in events], dtype=np.int8),
        timestamps=np.array([T0 + e[3] * DAY for e in events], dtype=np.float64),
        fingerprint=f"{len(events)}/{len(items)}/{len(users)}",
    )


def small_snapshot(**config: float) -> EngagementSnapshot:
    """Five users and eight items with two clear taste clusters.

    Users a, b, c like items 1-3 (cluster one); d, e like 5-7 (cluster two). Item 4 is
    hidden in the catalog, item 8 is deleted. User c hid item 6; user e only saw
    impressions of item 1.
    """
    items = [
        ("i1", "c1", "active"),
        ("i2", "c1", "active"),
        ("i3", "c2", "active"),
        ("i4", "c2", "hidden"),
        ("i5", "c3", "active"),
        ("i6", "c3", "active"),
        ("i7", "c4", "active"),
        ("i8", "c4", "deleted"),
    ]
    events = [
        ("a", "i1", "click", 1), ("a", "i2", "save", 2), ("a", "i3", "click", 3),
        ("b", "i1", "click", 1), ("b", "i2", "click", 2),
        ("c", "i2", "like", 1), ("c", "i3", "click", 4), ("c", "i6", "hide", 5),
        ("d", "i5", "click", 1), ("d", "i6", "click", 2), ("d", "i7", "share", 3),
        ("e", "i5", "click", 2), ("e", "i6", "save", 9), ("e", "i1", "impression", 9),
        ("d", "i4", "click", 2), ("d", "i8", "click", 3),
    ]  # fmt: skip
    return build_snapshot(
        make_data(items, ["a", "b", "c", "d", "e", "f"], events),
        SignalConfig(**config),  # type: ignore[arg-type]
    )


class FixedHolder:
    """A SnapshotHolder stand-in that always serves one prebuilt snapshot."""

    def __init__(self, snapshot: EngagementSnapshot) -> None:
        self.snapshot = snapshot

    def current(self) -> EngagementSnapshot:
        """The snapshot."""
        return self.snapshot
