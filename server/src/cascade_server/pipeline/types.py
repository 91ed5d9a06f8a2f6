"""The values that flow through the funnel. Plain frozen dataclasses; no transport types."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from types import MappingProxyType
from typing import NamedTuple

_NO_SCORES: Mapping[str, float] = MappingProxyType({})


def _no_scores() -> Mapping[str, float]:
    """The default score map: one shared read-only map, not a new dict per candidate
    (requests build hundreds of candidates)."""
    return _NO_SCORES


class Surface(StrEnum):
    """Where the results are shown."""

    HOME_FEED = "home_feed"
    RELATED_ITEMS = "related_items"
    CATEGORY_FEED = "category_feed"


class SourceKind(StrEnum):
    """The candidate source that proposed an item."""

    POPULAR = "popular"
    CO_ENGAGEMENT = "co_engagement"
    CALLER = "caller"
    ANN = "ann"
    RANDOM_WALK = "random_walk"
    TRENDING = "trending"
    CATEGORY_POPULAR = "category_popular"
    FRESH = "fresh"


class StageName(StrEnum):
    """A stage of the funnel."""

    RETRIEVAL = "retrieval"
    RANKING = "ranking"
    BLENDING = "blending"


class DegradationKind(StrEnum):
    """Why a stage or component fell back."""

    DEADLINE_EXCEEDED = "deadline_exceeded"
    UNAVAILABLE = "unavailable"
    ERROR = "error"


class BlendAction(StrEnum):
    """What blending did with a candidate."""

    PLACED = "placed"
    REMOVED = "removed"
    CAPPED = "capped"
    BELOW_PAGE = "below_page"
    DEMOTED = "demoted"


@dataclass(frozen=True)
class RequestContext:
    """Who is asking and how; carried to every stage."""

    user_id: str = ""
    surface: Surface | None = None
    locale: str = ""
    experiment_ids: tuple[str, ...] = ()
    debug: bool = False
    request_id: str = ""
    experiments: tuple[str, ...] = ()
    """The experiment variants serving the request, as ``experiment/variant`` labels;
    set by the front door and carried to the stages in call metadata."""


class SourceHit(NamedTuple):
    """One source proposed the item at ``rank`` (0 = the source's best) with ``score``.

    A named tuple, not a dataclass: requests create thousands of them.
    """

    source: SourceKind
    rank: int
    score: float


@dataclass(slots=True)
class Candidate:
    """An item proposed by retrieval, with every source that proposed it."""

    item_id: str
    sources: list[SourceHit] = field(default_factory=list)


@dataclass(slots=True)
class ScoredCandidate:
    """An item with its ranking scores. Read-only by convention: not frozen, because a
    frozen dataclass takes about 2.5 times as long to build, and requests build hundreds."""

    item_id: str
    score: float
    stage_scores: Mapping[str, float] = field(default_factory=_no_scores)
    head_scores: Mapping[str, float] = field(default_factory=_no_scores)
    sources: tuple[SourceHit, ...] = ()


@dataclass(frozen=True)
class Degradation:
    """A stage or component that did not contribute normally, and what replaced it."""

    stage: StageName
    reason: DegradationKind
    message: str
    component: str = ""
    fallback: str = ""


@dataclass(frozen=True)
class ReleaseInfo:
    """What served a stage: release id, scorer, and how fresh its data is."""

    release_id: str
    scorer: str = ""
    data_as_of: datetime | None = None


@dataclass(frozen=True)
class ComponentReport:
    """What one component did: time spent, candidates produced/kept and removed."""

    name: str
    duration_s: float
    output_count: int
    removed_count: int = 0
