"""The retrieval stage: run every candidate source, merge with provenance, apply exclusions."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from cascade_server.artifacts.watcher import ReleaseWatcher
from cascade_server.features.engagement import EngagementSnapshot, IntArray
from cascade_server.features.refresh import SnapshotSource
from cascade_server.logs import get_logger
from cascade_server.pipeline.components import CandidateSource, RetrievalQuery
from cascade_server.pipeline.deadline import Deadline
from cascade_server.pipeline.types import (
    Candidate,
    ComponentReport,
    Degradation,
    DegradationKind,
    ReleaseInfo,
    RequestContext,
    SourceHit,
    SourceKind,
    StageName,
)
from cascade_server.retrieval.models import RetrievalModels
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


@dataclass(frozen=True)
class RetrievalResult:
    """Merged candidates with provenance, plus what degraded and what ran."""

    candidates: list[Candidate]
    release: ReleaseInfo
    degraded: list[Degradation] = field(default_factory=list)
    unknown_seed_item_ids: list[str] = field(default_factory=list)
    components: list[ComponentReport] = field(default_factory=list)


class RetrievalStage:
    """Runs the configured sources in order; a failing source is skipped and reported.

    Candidates never include the seeds, the request's exclusions, items the user
    already engaged with, hid or was recently shown, or inactive items. Each source is
    asked for its limit plus the number of excluded items, so a user with a long
    history still gets full lists. An item proposed by several sources appears once,
    at its first position, with every source listed.
    """

    def __init__(
        self,
        holder: SnapshotSource,
        sources: Sequence[CandidateSource],
        default_limits: Mapping[SourceKind, int],
        models: ReleaseWatcher[RetrievalModels | None] | None = None,
    ) -> None:
        self._holder = holder
        self._sources = tuple(sources)
        self._default_limits = dict(default_limits)
        self._models = models

    def retrieve(self, request: RetrievalRequest, deadline: Deadline) -> RetrievalResult:
        """Candidates for ``request``; sources still running at the deadline are cut.

        With a published release, the Annoy source runs first; without one the
        co-engagement and popular sources serve alone.
        """
        snapshot = self._holder.current()
        loaded = self._models.current() if self._models else None
        sources = self._sources
        release = ReleaseInfo(snapshot.snapshot_id, "baseline", snapshot.data_as_of)
        if loaded is not None and loaded.value is not None and loaded.release_id:
            sources = (AnnoyCandidateSource(loaded.value), *sources)
            release = ReleaseInfo(loaded.release_id, "two_tower", snapshot.data_as_of)
        seeds = snapshot.lookup_items(request.seed_item_ids)
        unknown = [
            item_id
            for item_id, index in zip(request.seed_item_ids, seeds, strict=True)
            if index < 0 or not snapshot.item_active[index]
        ]
        seeds = seeds[seeds >= 0]
        query = RetrievalQuery(request.context, snapshot.user_row(request.context.user_id), seeds)
        excluded = self._exclusions(snapshot, query, request.exclude_item_ids)
        limits = {**self._default_limits, **request.source_limits}
        max_candidates = request.max_candidates or DEFAULT_MAX_CANDIDATES

        merged: dict[int, Candidate] = {}
        degraded: list[Degradation] = []
        reports: list[ComponentReport] = []
        for source in sources:
            limit = limits.get(source.kind, 0)
            if limit <= 0:
                continue
            if deadline.remaining() <= 0:
                degraded.append(_skipped(source.kind, DegradationKind.DEADLINE_EXCEEDED, "no time"))
                continue
            started = time.perf_counter()
            try:
                found = source.fetch(snapshot, query, limit + len(excluded))
            except Exception as error:
                _log.exception("candidate source failed", source=source.kind.value)
                degraded.append(_skipped(source.kind, DegradationKind.ERROR, repr(error)))
                continue
            keep = ~np.isin(found.items, excluded)
            items, scores = found.items[keep][:limit], found.scores[keep][:limit]
            for rank, (item, score) in enumerate(zip(items.tolist(), scores.tolist(), strict=True)):
                hit = SourceHit(source.kind, rank, score)
                if item in merged:
                    merged[item].sources.append(hit)
                elif len(merged) < max_candidates:
                    merged[item] = Candidate(snapshot.item_ids[item], [hit])
            reports.append(
                ComponentReport(source.kind.value, time.perf_counter() - started, len(items))
            )
        return RetrievalResult(
            candidates=list(merged.values()),
            release=release,
            degraded=degraded,
            unknown_seed_item_ids=unknown,
            components=reports,
        )

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


def _skipped(kind: SourceKind, reason: DegradationKind, message: str) -> Degradation:
    return Degradation(
        stage=StageName.RETRIEVAL,
        reason=reason,
        message=message,
        component=kind.value,
        fallback="other_sources",
    )
