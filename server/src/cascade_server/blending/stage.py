"""The blending stage: filter ranked candidates, cap creators, cut one page, explain it all."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field

from cascade_server.blending.filters import (
    DuplicateFilter,
    SeenItemsFilter,
    ServedItemsFilter,
    UnavailableItemFilter,
)
from cascade_server.features.engagement import EngagementSnapshot
from cascade_server.pipeline.components import Filter
from cascade_server.pipeline.types import (
    BlendAction,
    ComponentReport,
    ScoredCandidate,
)


@dataclass(frozen=True)
class BlendedItem:
    """One placed item of a page."""

    candidate: ScoredCandidate
    creator_id: str


@dataclass(frozen=True)
class CandidateOutcome:
    """What blending did with one candidate (for traces)."""

    candidate: ScoredCandidate
    action: BlendAction
    removed_by: str = ""
    reason: str = ""
    position: int = -1


@dataclass(frozen=True)
class BlendResult:
    """A page, whether more candidates remain after it, and what happened to each one."""

    items: list[BlendedItem]
    has_more: bool
    outcomes: list[CandidateOutcome] = field(default_factory=list)
    components: list[ComponentReport] = field(default_factory=list)


class BlendingStage:
    """Applies the filters in order, then places candidates under a per-creator cap.

    Filters: duplicates, unavailable (unknown, hidden or deleted) items, the user's
    engaged or hidden items, and items served on earlier pages. Then candidates are
    placed in ranking order; a creator's items beyond the cap are held back for later
    pages, and candidates after a full page are left for the next one.
    """

    def blend(
        self,
        snapshot: EngagementSnapshot,
        candidates: Sequence[ScoredCandidate],
        *,
        user_id: str,
        page_size: int,
        max_items_per_creator: int,
        served: Collection[int] = frozenset(),
    ) -> BlendResult:
        """One page from ``candidates`` (best first)."""
        filters: list[Filter[ScoredCandidate]] = [
            DuplicateFilter(),
            UnavailableItemFilter(snapshot),
            SeenItemsFilter(snapshot, user_id),
            ServedItemsFilter(served),
        ]
        outcomes: list[CandidateOutcome] = []
        reports: list[ComponentReport] = []
        remaining = list(candidates)
        for component in filters:
            started = time.perf_counter()
            result = component.apply(remaining)
            remaining = result.kept
            outcomes += [
                CandidateOutcome(r.candidate, BlendAction.REMOVED, component.name, r.reason)
                for r in result.removed
            ]
            reports.append(
                ComponentReport(
                    component.name,
                    time.perf_counter() - started,
                    len(result.kept),
                    len(result.removed),
                )
            )

        started = time.perf_counter()
        page: list[BlendedItem] = []
        per_creator: Counter[str] = Counter()
        has_more = False
        for candidate in remaining:
            creator = snapshot.item_creators[snapshot.item_index[candidate.item_id]]
            if len(page) >= page_size:
                has_more = True
                outcomes.append(CandidateOutcome(candidate, BlendAction.BELOW_PAGE))
            elif creator and per_creator[creator] >= max_items_per_creator:
                has_more = True
                outcomes.append(
                    CandidateOutcome(
                        candidate,
                        BlendAction.CAPPED,
                        "creator_cap",
                        f"creator {creator} already has {max_items_per_creator} items on the page",
                    )
                )
            else:
                per_creator[creator] += 1
                outcomes.append(CandidateOutcome(candidate, BlendAction.PLACED, position=len(page)))
                page.append(BlendedItem(candidate, creator))
        reports.append(
            ComponentReport(
                "creator_cap",
                time.perf_counter() - started,
                len(page),
                sum(o.action is BlendAction.CAPPED for o in outcomes),
            )
        )
        return BlendResult(page, has_more, _in_input_order(candidates, outcomes), reports)


def _in_input_order(
    candidates: Sequence[ScoredCandidate], outcomes: list[CandidateOutcome]
) -> list[CandidateOutcome]:
    """Sort outcomes by their candidate's input position.

    Outcomes refer to candidate objects, and one object may be listed more than once:
    its repeats are removed first (by DuplicateFilter) and its own outcome comes last,
    so handing out its input positions last-first gives that outcome the first one.
    """
    positions: dict[int, list[int]] = {}
    for i, candidate in enumerate(candidates):
        positions.setdefault(id(candidate), []).append(i)
    keys = [positions[id(o.candidate)].pop() for o in outcomes]
    return [o for _, o in sorted(zip(keys, outcomes, strict=True), key=lambda pair: pair[0])]
