"""Candidate sources. Each reads only the in-memory snapshot and returns active items."""

from __future__ import annotations

import zlib

import numpy as np

from cascade_server.features.engagement import (
    Csr,
    EngagementSnapshot,
    IntArray,
)
from cascade_server.features.membership import is_member
from cascade_server.features.snapshot_cache import SnapshotCache
from cascade_server.pipeline.components import RetrievalQuery, SourceResult
from cascade_server.pipeline.types import SourceKind
from cascade_server.retrieval.models import RetrievalModels
from cascade_server.retrieval.top_k import top_positions

_OVERFETCH = 50
"""Extra neighbours asked of the index to make up for inactive or unknown items."""


class PopularCandidateSource:
    """The most engaged-with active items, engagement decayed by age."""

    kind = SourceKind.POPULAR

    def fetch(
        self, snapshot: EngagementSnapshot, query: RetrievalQuery, limit: int
    ) -> SourceResult:
        """The top ``limit`` items of the popularity list (the same for every user), or of
        the requested category's list."""
        popular = (
            snapshot.category_items.row(query.category)[0]
            if query.category >= 0
            else snapshot.popular_items
        )
        items = popular[:limit]
        return SourceResult(items, snapshot.popularity[items])


class TrendingCandidateSource:
    """Items whose recent engagement runs ahead of their usual popularity (the same for
    every user): what is taking off now, which plain popularity ranks late."""

    kind = SourceKind.TRENDING

    def fetch(
        self, snapshot: EngagementSnapshot, query: RetrievalQuery, limit: int
    ) -> SourceResult:
        """The top ``limit`` trending items (of the requested category, if any)."""
        items = snapshot.trending_items
        if query.category >= 0:
            items = items[snapshot.category_members(query.category)[items]]
        items = items[:limit]
        return SourceResult(items, snapshot.trending[items])


class CategoryPopularCandidateSource:
    """The most popular items of the user's main categories.

    The categories are those of the user's recent items (or of the seeds), weighted by
    how many of those items fall in each; the ``max_categories`` heaviest share the
    limit in proportion to their weight, each contributing its most popular active
    items. An item's score is its category's share of the user's items.
    """

    kind = SourceKind.CATEGORY_POPULAR

    def __init__(self, max_categories: int = 3) -> None:
        self.max_categories = max_categories

    def fetch(
        self, snapshot: EngagementSnapshot, query: RetrievalQuery, limit: int
    ) -> SourceResult:
        """Up to ``limit`` items, interleaved across the user's main categories."""
        anchors = query.seeds if len(query.seeds) else snapshot.history.row(query.user)[0]
        n_categories = len(snapshot.categories)
        if len(anchors) == 0 or n_categories == 0 or limit <= 0:
            return SourceResult(np.zeros(0, dtype=np.int64), np.zeros(0))
        cats = snapshot.item_categories.rows(anchors)[0]
        weights = np.bincount(cats, minlength=n_categories).astype(np.float64)
        top = top_positions(weights, self.max_categories)
        top = top[weights[top] > 0]
        if len(top) == 0:
            return SourceResult(np.zeros(0, dtype=np.int64), np.zeros(0))
        share = weights[top] / weights[top].sum()
        # Each category's items keyed by rank / weight: interleaving them in key order
        # (ties by category order) gives each category its share of the list.
        lists = [snapshot.category_items.row(category)[0] for category in top.tolist()]
        lists = [items[: limit + len(anchors)] for items in lists]
        lists = [items[~is_member(items, anchors)][:limit] for items in lists]
        items = np.concatenate(lists)
        order = np.repeat(np.arange(len(lists)), [len(x) for x in lists])
        keys = np.concatenate([np.arange(len(x)) / w for x, w in zip(lists, share, strict=True)])
        ranked = np.lexsort((order, keys))
        items, weights = items[ranked], share[order[ranked]]
        # An item in several categories keeps its first (best) place.
        _, first = np.unique(items, return_index=True)
        first = np.sort(first)[:limit]
        return SourceResult(items[first].astype(np.int64), weights[first])


class CoEngagementCandidateSource:
    """Items engaged with by the users who engaged with the seeds (or the user's recent items).

    The score of an item is the sum of its cosine similarities to the seeds; with no
    seeds, the user's recent history is used, so a user with no history gets nothing
    here and is served by the other sources.
    """

    kind = SourceKind.CO_ENGAGEMENT

    def fetch(
        self, snapshot: EngagementSnapshot, query: RetrievalQuery, limit: int
    ) -> SourceResult:
        """Up to ``limit`` active co-engaged items, most similar first."""
        seeds = query.seeds if len(query.seeds) else snapshot.history.row(query.user)[0]
        items, scores = snapshot.aggregate_neighbours(seeds)
        active = snapshot.item_active[items] & ~is_member(items, seeds)
        items, scores = items[active], scores[active]
        order = top_positions(scores, limit)  # the items are in index order
        return SourceResult(items[order], scores[order])


class AnnoyCandidateSource:
    """Nearest neighbours of the user's two-tower embedding (or the seeds' mean embedding),
    found by the index the release searches with (Annoy, the clustered index, or exact
    search where the build measured that fastest; see ``RetrievalModels.nearest``).

    The user embedding comes from the release's query tower applied to the user's
    live history, so new engagement moves the results before the next training.
    Items the release does not know, or that are no longer active, are skipped.
    """

    kind = SourceKind.ANN

    def __init__(self, models: RetrievalModels) -> None:
        self._models = models

    def fetch(
        self, snapshot: EngagementSnapshot, query: RetrievalQuery, limit: int
    ) -> SourceResult:
        """Up to ``limit`` active items, nearest first."""
        maps = self._models.maps(snapshot)
        if len(query.seeds):
            seeds = maps.to_release[query.seeds]
            seeds = seeds[seeds >= 0]
            if len(seeds) == 0:
                return SourceResult(np.zeros(0, dtype=np.int64), np.zeros(0))
            embedding = self._models.seed_embedding(seeds)
        else:
            history = maps.to_release[snapshot.history.row(query.user)[0][::-1]]
            user_id = query.context.user_id
            embedding = self._models.user_embedding(user_id, history[history >= 0])
        items, scores = self._models.nearest(embedding, limit + len(query.seeds) + _OVERFETCH)
        live = maps.to_live[items]
        keep = live >= 0
        keep[keep] = snapshot.item_active[live[keep]]
        keep &= ~is_member(live, query.seeds)
        return SourceResult(live[keep][:limit], scores[keep][:limit])


class RandomWalkCandidateSource:
    """Items most visited by random walks with restarts on the user-item engagement graph.

    In the manner of Pinterest's Pixie (Eksombatchai et al., WWW 2018): walkers start
    at the seeds (or the user's recent items), hop item → a random user who engaged
    with it → a random item of that user, and after each hop jump back to a start
    item with probability ``restart``. Items are ranked by how often walks reached
    them, so items close to many of the start items come first. The walks are seeded
    from the user id and the start items: the same request gets the same candidates.
    The item → users graph is built once per snapshot.
    """

    kind = SourceKind.RANDOM_WALK

    def __init__(self, steps: int = 20_000, restart: float = 0.5, walkers: int = 2_000) -> None:
        self.steps = steps
        self.restart = restart
        self.walkers = walkers
        self._graph = SnapshotCache[Csr]()

    def fetch(
        self, snapshot: EngagementSnapshot, query: RetrievalQuery, limit: int
    ) -> SourceResult:
        """Up to ``limit`` active items, most visited first (ties by item index)."""
        starts = query.seeds if len(query.seeds) else snapshot.history.row(query.user)[0]
        if len(starts) == 0 or limit <= 0:
            return SourceResult(np.zeros(0, dtype=np.int64), np.zeros(0))
        reached = self._walk(snapshot, starts, self._bits(query.context.user_id, starts))
        # Counted as 32-bit ids: sorting 20,000 of them takes half the time of 64-bit ones.
        items32, visits = np.unique(reached.astype(np.int32), return_counts=True)
        items = items32.astype(np.int64)
        keep = snapshot.item_active[items]
        at = np.searchsorted(items, starts)  # the starts themselves are not candidates
        found = at < len(items)
        at = at[found]
        keep[at[items[at] == starts[found]]] = False
        items, visits = items[keep], visits[keep]
        order = top_positions(visits, limit)  # np.unique sorted the items
        return SourceResult(items[order], visits[order] / self.steps)

    def _walk(
        self, snapshot: EngagementSnapshot, starts: IntArray, bits: np.random.BitGenerator
    ) -> IntArray:
        """Every item a walker stepped on (an item once per visit)."""
        item_users = self._item_users(snapshot)
        user_items = snapshot.engaged
        # Only starts with users lead anywhere; past them every hop has somewhere to go
        # (a user reached through an item engaged with it, and so on).
        starts = starts[item_users.indptr[starts + 1] > item_users.indptr[starts]]
        if len(starts) == 0:
            return np.zeros(0, dtype=np.int64)
        rounds = max(1, self.steps // self.walkers)
        # All random numbers at once, as raw 64-bit words (a third of the cost of drawing
        # floats and bounded integers), each split into two 32-bit halves: per walker
        # and round, one word picks the user and then the item, the other whether to
        # restart (its high half below restart * 2^32) and from which start.
        hops, jumps = bits.random_raw((2, rounds, self.walkers))
        restarting = (jumps >> 32) < round(self.restart * 2**32)
        restarts = starts[_below((jumps & _LOW).view(np.int64), len(starts))]
        first = (bits.random_raw(self.walkers) & _LOW).view(np.int64)
        current = starts[_below(first, len(starts))]
        users_bits = (hops >> 32).view(np.int64)
        items_bits = (hops & _LOW).view(np.int64)
        reached = np.empty((rounds, self.walkers), dtype=np.int64)
        for r in range(rounds):
            users = _random_neighbour(item_users, current, users_bits[r])
            reached[r] = _random_neighbour(user_items, users, items_bits[r])
            current = np.where(restarting[r], restarts[r], reached[r])
        return reached.ravel()

    def _item_users(self, snapshot: EngagementSnapshot) -> Csr:
        """Per item, the users who engaged with it (the transpose of ``engaged``)."""
        return self._graph.get(snapshot, lambda live: live.engaged.transpose(live.item_count))

    @staticmethod
    def _bits(user_id: str, starts: IntArray) -> np.random.BitGenerator:
        key = zlib.crc32(user_id.encode(), zlib.crc32(np.ascontiguousarray(starts).tobytes()))
        return np.random.PCG64(key)


_LOW = np.uint64(0xFFFF_FFFF)


def _random_neighbour(graph: Csr, rows: IntArray, bits: IntArray) -> IntArray:
    """A random neighbour of each row (every row has one), picked by 32-bit ``bits``."""
    start = graph.indptr[rows]
    picked: IntArray = graph.indices[start + _below(bits, graph.indptr[rows + 1] - start)]
    return picked


def _below(bits: IntArray, n: int | IntArray) -> IntArray:
    """Uniform draws in [0, n) from uniform 32-bit ``bits``: floor(n * bits / 2^32), each
    value drawn within one part in 2^32 / n of its share (n below 2^31)."""
    drawn: IntArray = (bits * n) >> 32
    return drawn
