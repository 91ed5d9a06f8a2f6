"""Blending filters. Each returns what it kept and what it removed, with a reason."""

from __future__ import annotations

from collections.abc import Collection, Sequence

import numpy as np

from cascade_server.blending.paging import item_key
from cascade_server.features.engagement import EngagementSnapshot
from cascade_server.pipeline.components import FilterResult, Removal
from cascade_server.pipeline.types import ScoredCandidate


class DuplicateFilter:
    """Keeps the first candidate of every item id and, for each further dedup key (such as
    ``title``), the first of every non-empty value."""

    name = "duplicates"

    def __init__(self, snapshot: EngagementSnapshot, keys: Sequence[str] = ("item_id",)) -> None:
        self._snapshot = snapshot
        # Only ``title`` is a key besides the id (the policy validates the names).
        self._titles = "title" in keys

    def apply(self, candidates: Sequence[ScoredCandidate]) -> FilterResult[ScoredCandidate]:
        """Remove candidates whose id (or title) a higher-ranked candidate has."""
        ids: set[str] = set()
        titles: set[str] = set()
        index, item_titles = self._snapshot.item_index, self._snapshot.item_titles
        result: FilterResult[ScoredCandidate] = FilterResult([])
        for candidate in candidates:
            if candidate.item_id in ids:
                result.removed.append(Removal(candidate, "duplicate of a higher-ranked entry"))
                continue
            row = index.get(candidate.item_id, -1) if self._titles else -1
            title = item_titles[row] if row >= 0 else ""
            if title and title in titles:
                result.removed.append(Removal(candidate, "same title as a higher-ranked item"))
                continue
            ids.add(candidate.item_id)
            if title:
                titles.add(title)
            result.kept.append(candidate)
        return result


class CategoryFilter:
    """Removes items in any of the policy's (or request's) excluded categories."""

    name = "excluded_categories"

    def __init__(self, snapshot: EngagementSnapshot, excluded: Collection[str]) -> None:
        self._snapshot = snapshot
        index = snapshot.category_index
        self._excluded = {index[c]: c for c in excluded if c in index}

    def apply(self, candidates: Sequence[ScoredCandidate]) -> FilterResult[ScoredCandidate]:
        """Split by category membership."""
        if not self._excluded:
            return FilterResult(list(candidates))
        result: FilterResult[ScoredCandidate] = FilterResult([])
        rows = self._snapshot.lookup_items([c.item_id for c in candidates])
        for candidate, row in zip(candidates, rows.tolist(), strict=True):
            members = self._snapshot.item_categories.row(row)[0].tolist() if row >= 0 else []
            hit = next((self._excluded[c] for c in members if c in self._excluded), None)
            if hit is None:
                result.kept.append(candidate)
            else:
                result.removed.append(Removal(candidate, f"category {hit} is excluded"))
        return result


class UnavailableItemFilter:
    """Removes unknown items and items that are hidden or deleted in the catalog."""

    name = "unavailable_items"

    def __init__(self, snapshot: EngagementSnapshot) -> None:
        self._snapshot = snapshot

    def apply(self, candidates: Sequence[ScoredCandidate]) -> FilterResult[ScoredCandidate]:
        """Keep only active catalog items."""
        rows = self._snapshot.lookup_items([c.item_id for c in candidates])
        active = np.zeros(len(rows), dtype=np.bool_)
        active[rows >= 0] = self._snapshot.item_active[rows[rows >= 0]]
        if active.all():
            return FilterResult(list(candidates))
        result: FilterResult[ScoredCandidate] = FilterResult([])
        for candidate, row, ok in zip(candidates, rows.tolist(), active.tolist(), strict=True):
            if ok:
                result.kept.append(candidate)
            elif row < 0:
                result.removed.append(Removal(candidate, "not in the catalog"))
            else:
                result.removed.append(Removal(candidate, "hidden or deleted in the catalog"))
        return result


class SeenItemsFilter:
    """Removes items the user hid (for good), engaged with (click, save, like, share), or
    was recently shown (impressions within the snapshot's seen TTL)."""

    name = "seen_items"

    def __init__(self, snapshot: EngagementSnapshot, user_id: str) -> None:
        self._snapshot = snapshot
        row = snapshot.user_row(user_id)
        self._reasons = (
            (snapshot.hidden.row(row)[0], "the user hid this item"),
            (snapshot.engaged.row(row)[0], "the user already engaged with it"),
            (snapshot.impressed.row(row)[0], "the user was shown it recently"),
        )

    def apply(self, candidates: Sequence[ScoredCandidate]) -> FilterResult[ScoredCandidate]:
        """Split by the user's engagement history."""
        if all(len(items) == 0 for items, _ in self._reasons):
            return FilterResult(list(candidates))
        indices = self._snapshot.lookup_items([c.item_id for c in candidates])
        matches = [(np.isin(indices, items).tolist(), why) for items, why in self._reasons]
        result: FilterResult[ScoredCandidate] = FilterResult([])
        for position, candidate in enumerate(candidates):
            why = next((why for found, why in matches if found[position]), None)
            if why is None:
                result.kept.append(candidate)
            else:
                result.removed.append(Removal(candidate, why))
        return result


class ServedItemsFilter:
    """Removes items already served on earlier pages of the same page-token chain."""

    name = "earlier_pages"

    def __init__(self, served: Collection[int]) -> None:
        self._served = served

    def apply(self, candidates: Sequence[ScoredCandidate]) -> FilterResult[ScoredCandidate]:
        """Split by the page token's served set."""
        if not self._served:  # a first page
            return FilterResult(list(candidates))
        result: FilterResult[ScoredCandidate] = FilterResult([])
        for candidate in candidates:
            if item_key(candidate.item_id) in self._served:
                result.removed.append(Removal(candidate, "shown on an earlier page"))
            else:
                result.kept.append(candidate)
        return result
