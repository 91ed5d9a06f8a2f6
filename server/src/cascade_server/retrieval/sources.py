"""Candidate sources. Each reads only the in-memory snapshot and returns active items."""

from __future__ import annotations

import numpy as np

from cascade_server.features.engagement import EngagementSnapshot
from cascade_server.pipeline.components import RetrievalQuery, SourceResult
from cascade_server.pipeline.types import SourceKind


class PopularCandidateSource:
    """The most engaged-with active items, engagement decayed by age."""

    kind = SourceKind.POPULAR

    def fetch(
        self, snapshot: EngagementSnapshot, query: RetrievalQuery, limit: int
    ) -> SourceResult:
        """The top ``limit`` items of the popularity list (the same for every user)."""
        items = snapshot.popular_items[:limit]
        return SourceResult(items, snapshot.popularity[items])


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
        active = snapshot.item_active[items] & ~np.isin(items, seeds)
        items, scores = items[active], scores[active]
        order = np.lexsort((items, -scores))[:limit]
        return SourceResult(items[order], scores[order])
