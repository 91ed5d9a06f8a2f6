"""Blending filters. Each returns what it kept and what it removed, with a reason."""

from __future__ import annotations

from collections.abc import Collection, Sequence

import numpy as np

from cascade_server.blending.paging import item_key
from cascade_server.features.engagement import EngagementSnapshot
from cascade_server.pipeline.components import FilterResult, Removal
from cascade_server.pipeline.types import ScoredCandidate


class DuplicateFilter:
    """Keeps the first occurrence of every item id."""

    name = "duplicates"

    def apply(self, candidates: Sequence[ScoredCandidate]) -> FilterResult[ScoredCandidate]:
        """Remove repeated ids."""
        seen: set[str] = set()
        result: FilterResult[ScoredCandidate] = FilterResult([])
        for candidate in candidates:
            if candidate.item_id in seen:
                result.removed.append(Removal(candidate, "duplicate of a higher-ranked entry"))
            else:
                seen.add(candidate.item_id)
                result.kept.append(candidate)
        return result


class UnavailableItemFilter:
    """Removes unknown items and items that are hidden or deleted in the catalog."""

    name = "unavailable_items"

    def __init__(self, snapshot: EngagementSnapshot) -> None:
        self._snapshot = snapshot

    def apply(self, candidates: Sequence[ScoredCandidate]) -> FilterResult[ScoredCandidate]:
        """Keep only active catalog items."""
        result: FilterResult[ScoredCandidate] = FilterResult([])
        for candidate in candidates:
            index = self._snapshot.item_index.get(candidate.item_id, -1)
            if index < 0:
                result.removed.append(Removal(candidate, "not in the catalog"))
            elif not self._snapshot.item_active[index]:
                result.removed.append(Removal(candidate, "hidden or deleted in the catalog"))
            else:
                result.kept.append(candidate)
        return result


class SeenItemsFilter:
    """Removes items the user already engaged with (click, save, like, share) or hid."""

    name = "seen_items"

    def __init__(self, snapshot: EngagementSnapshot, user_id: str) -> None:
        self._snapshot = snapshot
        row = snapshot.user_row(user_id)
        self._engaged = snapshot.engaged.row(row)[0]
        self._hidden = snapshot.hidden.row(row)[0]

    def apply(self, candidates: Sequence[ScoredCandidate]) -> FilterResult[ScoredCandidate]:
        """Split by the user's engagement history."""
        if len(self._engaged) == 0 and len(self._hidden) == 0:
            return FilterResult(list(candidates))
        indices = self._snapshot.lookup_items([c.item_id for c in candidates])
        hidden = np.isin(indices, self._hidden).tolist()
        engaged = np.isin(indices, self._engaged).tolist()
        result: FilterResult[ScoredCandidate] = FilterResult([])
        for candidate, was_hidden, was_engaged in zip(candidates, hidden, engaged, strict=True):
            if was_hidden:
                result.removed.append(Removal(candidate, "the user hid this item"))
            elif was_engaged:
                result.removed.append(Removal(candidate, "the user already engaged with it"))
            else:
                result.kept.append(candidate)
        return result


class ServedItemsFilter:
    """Removes items already served on earlier pages of the same page-token chain."""

    name = "earlier_pages"

    def __init__(self, served: Collection[int]) -> None:
        self._served = served

    def apply(self, candidates: Sequence[ScoredCandidate]) -> FilterResult[ScoredCandidate]:
        """Split by the page token's served set."""
        result: FilterResult[ScoredCandidate] = FilterResult([])
        for candidate in candidates:
            if item_key(candidate.item_id) in self._served:
                result.removed.append(Removal(candidate, "shown on an earlier page"))
            else:
                result.kept.append(candidate)
        return result
