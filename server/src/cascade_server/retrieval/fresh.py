"""Fresh items: what the models of the serving release cannot know yet.

The side index holds the newest active items that the release's item list lacks
(created after it was trained), or, before any release, the newest active items no
one has engaged with yet. It is rebuilt from the live snapshot, which the servers
refresh from Postgres, so an item created in the catalog is recommendable within a
snapshot refresh, long before the next training run. Ranking scores such items last;
the blending policy's fresh slots give them their place.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np

from cascade_server.features.engagement import EngagementSnapshot, IntArray
from cascade_server.pipeline.components import RetrievalQuery, SourceResult
from cascade_server.pipeline.types import SourceKind
from cascade_server.retrieval.models import RetrievalModels


@dataclass(frozen=True)
class FreshItems:
    """The side index for one snapshot and release: fresh items, newest first."""

    key: tuple[str, str]
    items: IntArray


class FreshItemIndex:
    """Builds the side index once per (snapshot, release) and hands it to each request."""

    def __init__(self, max_items: int = 5000) -> None:
        self.max_items = max_items
        self._current: FreshItems | None = None
        self._lock = threading.Lock()

    def items(self, snapshot: EngagementSnapshot, models: RetrievalModels | None) -> IntArray:
        """The fresh items of ``snapshot`` for the release behind ``models`` (None: none)."""
        key = (snapshot.snapshot_id, models.release_id if models else "")
        current = self._current
        if current is not None and current.key == key:
            return current.items
        with self._lock:
            if self._current is None or self._current.key != key:
                self._current = FreshItems(key, self._build(snapshot, models))
            return self._current.items

    def _build(self, snapshot: EngagementSnapshot, models: RetrievalModels | None) -> IntArray:
        if models is not None:
            unknown = models.maps(snapshot).to_release < 0
        else:
            unknown = np.ones(snapshot.item_count, dtype=np.bool_)
            unknown[snapshot.popular_items] = False
        candidates = np.flatnonzero(unknown & snapshot.item_active)
        newest = np.lexsort((candidates, -snapshot.item_created[candidates]))
        return candidates[newest][: self.max_items].astype(np.int64)


class FreshCandidateSource:
    """Fresh items (see the module), those in the user's (or the seeds') categories first,
    each group newest first. The score is the item's creation time (seconds)."""

    kind = SourceKind.FRESH

    def __init__(self, fresh: IntArray) -> None:
        self._fresh = fresh

    def fetch(
        self, snapshot: EngagementSnapshot, query: RetrievalQuery, limit: int
    ) -> SourceResult:
        """Up to ``limit`` fresh items."""
        items = self._fresh
        if query.category >= 0:
            items = items[snapshot.category_members(query.category)[items]]
        anchors = query.seeds if len(query.seeds) else snapshot.history.row(query.user)[0]
        if len(anchors) and len(items):
            liked = snapshot.item_categories.rows(anchors)[0]
            related = snapshot.in_categories(items, liked)
            items = np.concatenate([items[related], items[~related]])
        items = items[:limit]
        return SourceResult(items, snapshot.item_created[items].astype(np.float64))
