"""Blending filters. Each names the candidates it removes, with a reason.

Filters see the candidates as item ids and their snapshot rows (resolved once per
request), best first, and work on those arrays: a request filters hundreds of
candidates and removes few of them.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

import numpy as np

from cascade_server.blending.paging import item_key
from cascade_server.features.engagement import EngagementSnapshot, IntArray
from cascade_server.features.membership import is_member


class DuplicateFilter:
    """Keeps the first candidate of every item id and, for each further dedup key (such as
    ``title``), the first of every non-empty value."""

    name = "duplicates"

    def __init__(self, snapshot: EngagementSnapshot, keys: Sequence[str] = ("item_id",)) -> None:
        self._snapshot = snapshot
        # Only ``title`` is a key besides the id (the policy validates the names).
        self._titles = "title" in keys

    def removals(self, item_ids: Sequence[str], rows: IntArray) -> dict[int, str]:
        """Candidates whose id (or title) a higher-ranked candidate has."""
        n = len(item_ids)
        reasons: dict[int, str] = {}
        # Each id's first position: later (lower) positions overwrite higher ones.
        first = dict(zip(reversed(item_ids), range(n - 1, -1, -1), strict=True))
        if len(first) != n:
            at = np.fromiter(map(first.__getitem__, item_ids), np.int64, n)
            repeats = np.flatnonzero(at != np.arange(n)).tolist()
            reasons = dict.fromkeys(repeats, "duplicate of a higher-ranked entry")
        if self._titles:
            # A title's first candidate is never an id's repeat (the id's first entry has
            # the same title and comes before it): first positions over every candidate.
            codes = np.full(n, -1, np.int64)
            known = rows >= 0
            codes[known] = self._snapshot.item_title_codes[rows[known]]
            firsts = np.zeros(n, np.bool_)
            firsts[np.unique(codes, return_index=True)[1]] = True
            for p in np.flatnonzero((codes >= 0) & ~firsts).tolist():
                reasons.setdefault(p, "same title as a higher-ranked item")
        return dict(sorted(reasons.items()))


class CategoryFilter:
    """Removes items in any of the policy's (or request's) excluded categories."""

    name = "excluded_categories"

    def __init__(self, snapshot: EngagementSnapshot, excluded: Collection[str]) -> None:
        self._snapshot = snapshot
        index = snapshot.category_index
        self._excluded = {index[c]: c for c in excluded if c in index}

    def removals(self, item_ids: Sequence[str], rows: IntArray) -> dict[int, str]:
        """Candidates in an excluded category (the first of them is the reason)."""
        if not self._excluded:
            return {}
        known = np.flatnonzero(rows >= 0)
        excluded = np.fromiter(self._excluded, np.int64, len(self._excluded))
        hits = known[self._snapshot.in_categories(rows[known], excluded)]
        removed: dict[int, str] = {}
        for position in hits.tolist():
            members = self._snapshot.item_categories.row(int(rows[position]))[0].tolist()
            hit = next(self._excluded[c] for c in members if c in self._excluded)
            removed[position] = f"category {hit} is excluded"
        return removed


class UnavailableItemFilter:
    """Removes unknown items and items that are hidden or deleted in the catalog."""

    name = "unavailable_items"

    def __init__(self, snapshot: EngagementSnapshot) -> None:
        self._snapshot = snapshot

    def removals(self, item_ids: Sequence[str], rows: IntArray) -> dict[int, str]:
        """Candidates that are not active catalog items."""
        known = rows >= 0
        active = known.copy()
        active[known] = self._snapshot.item_active[rows[known]]
        return {
            position: "hidden or deleted in the catalog"
            if known[position]
            else "not in the catalog"
            for position in np.flatnonzero(~active).tolist()
        }


class SeenItemsFilter:
    """Removes items the user hid (for good), engaged with (click, save, like, share), or
    was recently shown (impressions within the snapshot's seen TTL)."""

    name = "seen_items"

    def __init__(self, snapshot: EngagementSnapshot, user_id: str) -> None:
        row = snapshot.user_row(user_id)
        self._reasons = [
            (items, why)
            for items, why in (
                (snapshot.hidden.row(row)[0], "the user hid this item"),
                (snapshot.engaged.row(row)[0], "the user already engaged with it"),
                (snapshot.impressed.row(row)[0], "the user was shown it recently"),
            )
            if len(items)
        ]

    def removals(self, item_ids: Sequence[str], rows: IntArray) -> dict[int, str]:
        """Candidates in the user's engagement history (the first reason that applies)."""
        removed: dict[int, str] = {}
        for items, why in self._reasons:
            for position in np.flatnonzero(is_member(rows, items)).tolist():
                removed.setdefault(position, why)
        return removed


class ServedItemsFilter:
    """Removes items already served on earlier pages of the same page-token chain."""

    name = "earlier_pages"

    def __init__(self, served: Collection[int]) -> None:
        self._served = served

    def removals(self, item_ids: Sequence[str], rows: IntArray) -> dict[int, str]:
        """Candidates the page token's served set holds."""
        if not self._served:  # a first page
            return {}
        return {
            position: "shown on an earlier page"
            for position, item_id in enumerate(item_ids)
            if item_key(item_id) in self._served
        }
