"""The retrieval stage: sources run within a budget, merged by quota with provenance."""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from cascade_server.artifacts.watcher import ReleaseWatcher
from cascade_server.errors import NotFoundError
from cascade_server.features.engagement import EngagementSnapshot, FloatArray, IntArray
from cascade_server.features.refresh import SnapshotSource
from cascade_server.features.scratch import ScratchArray
from cascade_server.logs import get_logger
from cascade_server.pipeline.components import CandidateSource, RetrievalQuery, SourceResult
from cascade_server.pipeline.deadline import Deadline
from cascade_server.pipeline.table import CandidateTable, source_codes
from cascade_server.pipeline.types import (
    Candidate,
    ComponentReport,
    Degradation,
    DegradationKind,
    ReleaseInfo,
    RequestContext,
    SourceKind,
    StageName,
)
from cascade_server.retrieval.fresh import FreshCandidateSource, FreshItemIndex
from cascade_server.retrieval.models import RetrievalModels
from cascade_server.retrieval.source_run import SourceRun
from cascade_server.retrieval.sources import AnnoyCandidateSource

_log = get_logger(__name__)

DEFAULT_MAX_CANDIDATES = 500


@dataclass(frozen=True)
class RetrievalRequest:
    """A validated retrieval request."""

    context: RequestContext
    seed_item_ids: Sequence[str] = ()
    source_limits: Mapping[SourceKind, int] = field(default_factory=dict)
    max_candidates: int = 0
    exclude_item_ids: Sequence[str] = ()
    category_id: str = ""


@dataclass(frozen=True)
class RetrievalResult:
    """Merged candidates with provenance, plus what degraded and what ran."""

    candidates: Sequence[Candidate]
    release: ReleaseInfo
    degraded: list[Degradation] = field(default_factory=list)
    unknown_seed_item_ids: list[str] = field(default_factory=list)
    components: list[ComponentReport] = field(default_factory=list)


_EXCLUDED = ScratchArray(np.bool_, False)
"""Each request thread's mask of the items a request excludes, all False between uses."""


class RetrievalStage:
    """Runs the configured sources within a time budget; a source that fails or misses
    the budget is skipped and reported, the others still serve. A request's sources run
    one after another on one thread while each is quick, and the rest move to another
    thread when one is slow (``SourceRun``), so a slow source delays only itself.

    Candidates never include the seeds, the request's exclusions, items the user
    already engaged with, hid or was recently shown, or inactive items. Each source is
    asked for what the merge can take from it — its share of ``max_candidates`` in
    proportion to its limit, doubled for overlap, at most its limit — plus the number of
    excluded items, so a user with a long history still gets full lists. Merging gives
    every source a share of ``max_candidates`` in proportion to its limit (its quota):
    items are taken in order of their rank relative to their source's limit, ties in
    source order. An item proposed by several sources appears once, with every source
    listed.

    With a category (a category feed), every source's items are cut to the category;
    the popular, trending and fresh sources use the category's own lists.
    """

    def __init__(
        self,
        holder: SnapshotSource,
        sources: Sequence[CandidateSource],
        default_limits: Mapping[SourceKind, int],
        models: ReleaseWatcher[RetrievalModels | None] | None = None,
        *,
        fresh: FreshItemIndex | None = None,
        source_budget_s: float = 0.1,
        source_handoff_s: float = 0.005,
        workers: int = 8,
    ) -> None:
        self._holder = holder
        self._sources = tuple(sources)
        self._default_limits = dict(default_limits)
        self._models = models
        self._fresh = fresh
        self._source_budget_s = source_budget_s
        self._source_handoff_s = source_handoff_s
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="source")

    def close(self) -> None:
        """Stop the source threads (sources still running finish on their own)."""
        self._pool.shutdown(wait=False, cancel_futures=True)

    def retrieve(self, request: RetrievalRequest, deadline: Deadline) -> RetrievalResult:
        """Candidates for ``request``; sources still running at their budget are cut.

        With a published release, the Annoy source runs too (listed first); without one
        the other sources serve alone. The fresh source (when configured) runs last.
        """
        snapshot = self._holder.current()
        loaded = self._models.current() if self._models else None
        sources = self._sources
        models = None
        release = ReleaseInfo(snapshot.snapshot_id, "baseline", snapshot.data_as_of)
        if loaded is not None and loaded.value is not None and loaded.release_id:
            models = loaded.value
            sources = (AnnoyCandidateSource(models), *sources)
            release = ReleaseInfo(loaded.release_id, "two_tower", snapshot.data_as_of)
        if self._fresh is not None:
            sources = (*sources, FreshCandidateSource(self._fresh.items(snapshot, models)))
        category = snapshot.category_of(request.category_id) if request.category_id else -1
        if request.category_id and category < 0:
            raise NotFoundError("category", request.category_id)
        seeds = snapshot.lookup_items(request.seed_item_ids)
        unknown = [
            item_id
            for item_id, index in zip(request.seed_item_ids, seeds, strict=True)
            if index < 0 or not snapshot.item_active[index]
        ]
        seeds = seeds[seeds >= 0]
        query = RetrievalQuery(
            request.context, snapshot.user_row(request.context.user_id), seeds, category
        )
        members = snapshot.category_members(category) if category >= 0 else None
        excluded = self._exclusions(snapshot, query, request.exclude_item_ids)
        limits = {**self._default_limits, **request.source_limits}
        wanted = [(source, limits.get(source.kind, 0)) for source in sources]
        wanted = [(source, limit) for source, limit in wanted if limit > 0]

        degraded: list[Degradation] = []
        reports: list[ComponentReport] = []
        found: list[tuple[SourceKind, int, IntArray, FloatArray]] = []
        budget = min(self._source_budget_s, deadline.remaining())
        if budget <= 0:
            degraded += [
                _skipped(s.kind, DegradationKind.DEADLINE_EXCEEDED, "no time") for s, _ in wanted
            ]
            wanted = []
        max_candidates = request.max_candidates or DEFAULT_MAX_CANDIDATES
        share = _Shares(wanted, max_candidates, whole=members is not None)
        run = SourceRun(
            [
                functools.partial(
                    _timed_fetch, source, snapshot, query, share.of(limit) + len(excluded)
                )
                for source, limit in wanted
            ],
            self._pool,
            self._source_handoff_s,
        )
        deadline.on_cancel(run.stop)
        outcomes = run.wait(budget)
        if deadline.cancelled:  # the caller is gone: skip the merge
            deadline.check("retrieval")
        # A mask over the catalog, shared by the thread's requests (a fresh one per request
        # cost a megabyte's allocation and writes at a million items).
        is_excluded = _EXCLUDED.get(snapshot.item_count)
        is_excluded[excluded] = True
        try:
            for index, ((source, limit), outcome) in enumerate(zip(wanted, outcomes, strict=True)):
                if outcome is None:
                    message = (
                        f"over its {budget * 1000:.0f} ms budget"
                        if index < run.started
                        else f"not started within the {budget * 1000:.0f} ms budget"
                    )
                    degraded.append(
                        _skipped(source.kind, DegradationKind.DEADLINE_EXCEEDED, message)
                    )
                    continue
                if isinstance(outcome, Exception):
                    _log.error(
                        "candidate source failed",
                        source=source.kind.value,
                        exc_info=(type(outcome), outcome, outcome.__traceback__),
                    )
                    degraded.append(_skipped(source.kind, DegradationKind.ERROR, repr(outcome)))
                    continue
                result, seconds = outcome
                keep = ~is_excluded[result.items]
                if members is not None:
                    keep &= members[result.items]
                size = share.of(limit)
                items, scores = result.items[keep][:size], result.scores[keep][:size]
                found.append((source.kind, limit, items, scores))
                reports.append(ComponentReport(source.kind.value, seconds, len(items)))
        finally:
            is_excluded[excluded] = False
        return RetrievalResult(
            candidates=_merge(snapshot, found, max_candidates),
            release=release,
            degraded=degraded,
            unknown_seed_item_ids=unknown,
            components=reports,
        )

    def warm(self) -> None:
        """Fill the caches built once per snapshot and release (index maps, the walk graph,
        fresh items) with one request for a user with history."""
        snapshot = self._holder.current()
        user_id = snapshot.user_with_history()
        self.retrieve(RetrievalRequest(RequestContext(user_id=user_id)), Deadline.after(5.0))

    @staticmethod
    def _exclusions(
        snapshot: EngagementSnapshot, query: RetrievalQuery, exclude_item_ids: Sequence[str]
    ) -> IntArray:
        explicit = snapshot.lookup_items(exclude_item_ids)
        parts = [query.seeds, explicit[explicit >= 0]]
        if query.user >= 0:
            parts += [
                snapshot.engaged.row(query.user)[0],
                snapshot.hidden.row(query.user)[0],
                snapshot.impressed.row(query.user)[0],
            ]
        return np.unique(np.concatenate(parts))


_SHARE_MARGIN = 2.0
"""How much more than its share of the merged list a source is asked for: sources
propose some of the same items, and a merged item takes a place once."""


class _Shares:
    """How many items each source is asked for: its share of ``max_candidates`` (in
    proportion to its limit, as the merge takes them) with a margin, at most its limit.
    With ``whole`` (a category feed, whose items are cut to the category after the
    sources ran) every source is asked for its whole limit."""

    def __init__(
        self, wanted: Sequence[tuple[CandidateSource, int]], max_candidates: int, *, whole: bool
    ) -> None:
        total = sum(limit for _, limit in wanted)
        self._fraction = 1.0 if whole or total <= max_candidates else max_candidates / total

    def of(self, limit: int) -> int:
        """The number of items to ask a source with ``limit`` for."""
        if self._fraction >= 1.0:
            return limit
        return min(limit, math.ceil(_SHARE_MARGIN * self._fraction * limit) + 10)


def _timed_fetch(
    source: CandidateSource, snapshot: EngagementSnapshot, query: RetrievalQuery, limit: int
) -> tuple[SourceResult, float]:
    started = time.perf_counter()
    result = source.fetch(snapshot, query, limit)
    return result, time.perf_counter() - started


def _merge(
    snapshot: EngagementSnapshot,
    found: Sequence[tuple[SourceKind, int, IntArray, FloatArray]],
    max_candidates: int,
) -> CandidateTable:
    """Take items by rank relative to their source's limit (ties: source order) until
    ``max_candidates`` distinct items; every source that proposed an item is kept."""
    found = [f for f in found if len(f[2])]
    if not found:
        return CandidateTable.of([])
    items = np.concatenate([f[2] for f in found])
    scores = np.concatenate([f[3] for f in found])
    source = np.concatenate([np.full(len(f[2]), k) for k, f in enumerate(found)])
    rank = np.concatenate([np.arange(len(f[2])) for f in found])
    limit = np.concatenate([np.full(len(f[2]), f[1], dtype=np.float64) for f in found])
    # Entries are in (source, rank) order already, so a stable sort on the relative
    # rank alone breaks its ties by source, then rank.
    taken = np.argsort(rank / limit, kind="stable")
    _, first = np.unique(items[taken], return_index=True)
    chosen = items[taken[np.sort(first)[:max_candidates]]]
    # Every entry of a chosen item, grouped by candidate and in source order.
    by_item = np.argsort(chosen)
    at = np.minimum(np.searchsorted(chosen[by_item], items), len(chosen) - 1)
    entries = np.flatnonzero(chosen[by_item][at] == items)
    owner = by_item[at[entries]]
    grouped = np.argsort(owner, kind="stable")  # the entries are in source order already
    entries, owner = entries[grouped], owner[grouped]
    codes = source_codes(f[0] for f in found)
    return CandidateTable(
        snapshot.item_ids_of(chosen),
        np.bincount(owner, minlength=len(chosen)),
        codes[source[entries]],
        rank[entries],
        scores[entries].astype(np.float64),
        item_rows=chosen,
    )


def _skipped(kind: SourceKind, reason: DegradationKind, message: str) -> Degradation:
    return Degradation(
        stage=StageName.RETRIEVAL,
        reason=reason,
        message=message,
        component=kind.value,
        fallback="other_sources",
    )
