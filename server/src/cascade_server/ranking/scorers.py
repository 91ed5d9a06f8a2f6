"""Scorers: turn (user, candidate items) into scores, one batched call per request."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from cascade_server.features.engagement import EngagementSnapshot, FloatArray, IntArray


@dataclass(frozen=True)
class Scores:
    """Final scores aligned with the input items, and each stage's and head's scores.

    A stage or head that did not score an item (the heavy ranker scores only the light
    ranker's top N) has NaN there.
    """

    final: FloatArray
    heads: dict[str, FloatArray]
    stages: dict[str, FloatArray]


class Scorer(Protocol):
    """Scores candidate items for one user."""

    @property
    def name(self) -> str:
        """The scorer's name, reported in responses."""
        ...

    def score(
        self,
        snapshot: EngagementSnapshot,
        user: int,
        seeds: IntArray,
        items: IntArray,
        *,
        heavy_top_n: int = 0,
    ) -> Scores:
        """Scores for ``items`` (snapshot indices) for ``user`` (-1: anonymous), relative
        to ``seeds`` when there are any; ``heavy_top_n`` (0: the scorer's own) bounds how
        many candidates a second, heavier model re-scores, for scorers that have one."""
        ...


class BaselineScorer:
    """The scorer used while no trained model is published.

    ``score = co_engagement + popularity_weight * popularity`` where ``co_engagement``
    is the summed cosine similarity of the item to the seeds, or with no seeds to the
    user's recent items (0 for a user with no history), and ``popularity`` is decayed
    popularity scaled to [0, 1] by log. Co-engagement dominates when there is
    something to relate to; popularity orders the rest and serves users without
    history.
    """

    name = "baseline"

    def __init__(self, popularity_weight: float = 0.1) -> None:
        self.popularity_weight = popularity_weight

    def score(
        self,
        snapshot: EngagementSnapshot,
        user: int,
        seeds: IntArray,
        items: IntArray,
        *,
        heavy_top_n: int = 0,
    ) -> Scores:
        """Both heads and their weighted sum, for every item (one model: no cut-off)."""
        anchors = seeds if len(seeds) else snapshot.history.row(user)[0]
        co_engagement = snapshot.co_engagement(anchors, items)
        popularity = snapshot.popularity_head(items)
        final = co_engagement + self.popularity_weight * popularity
        return Scores(
            final=final,
            heads={"co_engagement": co_engagement, "popularity": popularity},
            stages={self.name: final},
        )
