"""The component protocols stages are configured from."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from cascade_server.features.engagement import EngagementSnapshot, FloatArray, IntArray
from cascade_server.pipeline.types import RequestContext, SourceKind


@dataclass(frozen=True)
class RetrievalQuery:
    """What retrieval is asked for, with ids already resolved against the snapshot."""

    context: RequestContext
    user: int
    """The user's index in the snapshot; -1 for anonymous or unknown users."""
    seeds: IntArray
    """Indices of known seed items."""
    category: int = -1
    """The category the candidates must belong to (a category feed); -1 for any."""


@dataclass(frozen=True)
class SourceResult:
    """Items a source proposes (snapshot indices), best first, with the source's scores."""

    items: IntArray
    scores: FloatArray


class CandidateSource(Protocol):
    """Proposes candidates for a query. Must be fast and must not touch the database."""

    @property
    def kind(self) -> SourceKind:
        """Which source this is (also its name in traces)."""
        ...

    def fetch(
        self, snapshot: EngagementSnapshot, query: RetrievalQuery, limit: int
    ) -> SourceResult:
        """Up to ``limit`` active items, best first."""
        ...


class Filter(Protocol):
    """Removes candidates that must not be shown, saying why for each."""

    @property
    def name(self) -> str:
        """The filter's name in traces."""
        ...

    def removals(self, item_ids: Sequence[str], rows: IntArray) -> dict[int, str]:
        """The positions of the candidates to remove, each with the reason. ``rows`` are
        the items' indices in the snapshot (-1 for unknown ids), aligned with
        ``item_ids``, best candidate first."""
        ...
