"""Candidate sources. Each reads only the in-memory snapshot and returns active items."""

from __future__ import annotations

import numpy as np

from cascade_server.features.engagement import EngagementSnapshot
from cascade_server.pipeline.components import RetrievalQuery, SourceResult
from cascade_server.pipeline.types import SourceKind
from cascade_server.retrieval.models import RetrievalModels

_OVERFETCH = 50
"""Extra neighbours asked of the index to make up for inactive or unknown items."""


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


class AnnoyCandidateSource:
    """Nearest neighbours of the user's two-tower embedding (or the seeds' mean embedding).

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
        keep &= ~np.isin(live, query.seeds)
        return SourceResult(live[keep][:limit], scores[keep][:limit])
