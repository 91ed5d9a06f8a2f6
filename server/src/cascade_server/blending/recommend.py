"""Recommend: retrieval → ranking → blending, each hop with its own deadline, failing open.

The stages behind the front door are reached through the ``RetrievalBackend`` and
``RankingBackend`` protocols (implemented over gRPC in ``rpc.downstream``), so this
module knows nothing about the transport. When ranking fails the page follows
retrieval order; when retrieval fails the page is built from the popular items of the
front door's own snapshot. Either way the response lists what degraded.

The front door also decides, once per request, the experiment variants (from the
release's policy file) and the surface's blending policy with the variants' and the
request's overrides; the variants' source quotas and ranker cut-off go to the stages
behind it in their requests, the variant labels in call metadata.
"""

from __future__ import annotations

import dataclasses
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from cascade_server.blending.circuit import (
    BreakerConfig,
    CircuitBreaker,
    StageCallError,
    within,
)
from cascade_server.blending.paging import (
    MAX_SERVED,
    decode_token,
    encode_token,
    item_key,
    request_fingerprint,
)
from cascade_server.blending.policy import Assignment, Treatment
from cascade_server.blending.release import BlendingRelease
from cascade_server.blending.stage import BlendingStage, BlendRequest, BlendResult
from cascade_server.errors import NotFoundError
from cascade_server.features.engagement import EngagementSnapshot
from cascade_server.features.refresh import SnapshotSource
from cascade_server.logs import get_logger, user_hash
from cascade_server.pipeline.deadline import Deadline
from cascade_server.pipeline.table import SOURCE_CODES, CandidateTable, ScoredTable
from cascade_server.pipeline.types import (
    Candidate,
    ComponentReport,
    Degradation,
    ReleaseInfo,
    RequestContext,
    ScoredCandidate,
    SourceKind,
    StageName,
    Surface,
)
from cascade_server.ranking.stage import RankResult
from cascade_server.retrieval.stage import RetrievalResult

_log = get_logger(__name__)

_BLEND_RESERVE_S = 0.010
"""Time kept back from the downstream calls for blending and the response."""


class RetrievalBackend(Protocol):
    """Calls the retrieval stage."""

    async def retrieve(
        self,
        context: RequestContext,
        seed_item_ids: Sequence[str],
        max_candidates: int,
        timeout_s: float,
        *,
        category_id: str = "",
        source_limits: Mapping[SourceKind, int] | None = None,
    ) -> RetrievalResult:
        """Candidates (of ``category_id`` only, when given), or StageCallError."""
        ...


class RankingBackend(Protocol):
    """Calls the ranking stage."""

    async def rank(
        self,
        context: RequestContext,
        candidates: CandidateTable,
        seed_item_ids: Sequence[str],
        timeout_s: float,
        *,
        heavy_top_n: int = 0,
        details: bool = True,
    ) -> RankResult:
        """``candidates`` scored (relative to the seeds, if any), with their source
        hits attached, or StageCallError; without ``details`` they may come without
        stage and head scores."""
        ...


@dataclass(frozen=True)
class RecommendQuery:
    """A validated Recommend request."""

    context: RequestContext
    seed_item_id: str = ""
    category_id: str = ""
    page_size: int = 20
    page_token: str = ""
    policy_overrides: Mapping[str, Any] = field(default_factory=dict)
    """Changes to the surface's policy (``SurfacePolicy`` field names)."""


@dataclass(frozen=True)
class StageReport:
    """What one stage did for the request, as the front door saw it."""

    stage: StageName
    release: ReleaseInfo | None
    duration_s: float
    input_count: int
    output_count: int
    components: list[ComponentReport] = field(default_factory=list)


@dataclass(frozen=True)
class RecommendResult:
    """One page and everything needed to explain it."""

    blend: BlendResult
    next_page_token: str
    release_id: str
    surface: Surface
    request_id: str
    degraded: list[Degradation]
    stages: list[StageReport]
    assignments: tuple[Assignment, ...] = ()
    policy_version: str = ""


@dataclass(frozen=True)
class RecommendLimits:
    """Per-hop time budgets, the page-token lifetime and the funnel's size."""

    retrieval_timeout_s: float
    ranking_timeout_s: float
    page_token_ttl_s: float
    candidates: int = 500
    """How many candidates retrieval proposes and ranking scores for a first page."""


class Recommender:
    """The front door's orchestration of the three stages."""

    def __init__(
        self,
        holder: SnapshotSource,
        retrieval: RetrievalBackend,
        ranking: RankingBackend,
        blending: BlendingStage,
        limits: RecommendLimits,
        release: Callable[[], BlendingRelease],
        breakers: BreakerConfig | None = None,
    ) -> None:
        self._holder = holder
        self._retrieval = retrieval
        self._ranking = ranking
        self._blending = blending
        self._limits = limits
        self._release = release
        config = breakers or BreakerConfig()
        self._retrieval_circuit = CircuitBreaker("retrieval", config)
        self._ranking_circuit = CircuitBreaker("ranking", config)

    def warm(self) -> None:
        """Fill what blending builds once per snapshot and release (the release's
        item-embedding map, the snapshot's creator, category and title arrays) with one
        home-feed page over the popular items, so no request pays for them. Blocking."""
        snapshot = self._holder.current()
        release = self._release()
        popular = snapshot.popular_items[: self._limits.candidates].tolist()
        ranked = [
            ScoredCandidate(snapshot.item_ids[item], float(len(popular) - rank))
            for rank, item in enumerate(popular)
        ]
        request = BlendRequest(
            release.policies.for_surface(Surface.HOME_FEED),
            20,
            user_id=snapshot.user_with_history(),
            explain=False,
        )
        self._blending.blend(snapshot, ranked, request, release.vectors)

    async def recommend(self, query: RecommendQuery, deadline: Deadline) -> RecommendResult:
        """One page for ``query``; raises only for bad input or a server that is not ready."""
        snapshot = self._holder.current()
        release = self._release()
        context = query.context
        surface = context.surface or (
            Surface.CATEGORY_FEED
            if query.category_id
            else Surface.RELATED_ITEMS
            if query.seed_item_id
            else Surface.HOME_FEED
        )
        request_id = context.request_id or uuid.uuid4().hex
        if query.seed_item_id:
            seed = snapshot.item_index.get(query.seed_item_id, -1)
            if seed < 0 or not snapshot.item_active[seed]:
                raise NotFoundError("item", query.seed_item_id)
        if query.category_id and snapshot.category_of(query.category_id) < 0:
            raise NotFoundError("category", query.category_id)
        treatment = release.policies.treatment(context.user_id, context.experiment_ids)
        policy = treatment.policy(release.policies, surface)
        if query.policy_overrides:
            policy = policy.with_overrides(query.policy_overrides, "policy_overrides")
        context = dataclasses.replace(
            context,
            surface=surface,
            request_id=request_id,
            experiments=tuple(a.label for a in treatment.assignments),
        )
        fingerprint = request_fingerprint(
            context.user_id,
            query.seed_item_id,
            surface.value,
            *([query.category_id] if query.category_id else []),
        )
        served = decode_token(query.page_token, fingerprint, self._limits.page_token_ttl_s).served

        degraded: list[Degradation] = []
        stages: list[StageReport] = []
        seeds = [query.seed_item_id] if query.seed_item_id else []
        candidates, retrieval_release = await self._retrieve(
            snapshot,
            context,
            seeds,
            query.category_id,
            treatment,
            len(served),
            deadline,
            degraded,
            stages,
        )
        ranked, ranking_release = await self._rank(
            context,
            candidates,
            seeds,
            treatment,
            bool(policy.head_weights),
            deadline,
            degraded,
            stages,
        )

        started = time.perf_counter()
        blend = self._blending.blend(
            snapshot,
            ranked,
            BlendRequest(
                policy,
                query.page_size,
                user_id=context.user_id,
                served=served,
                random_key=f"{fingerprint}/{len(served)}",
                explain=context.debug,
            ),
            release.vectors,
        )
        stages.append(
            StageReport(
                StageName.BLENDING,
                ReleaseInfo(snapshot.snapshot_id, "", snapshot.data_as_of),
                time.perf_counter() - started,
                len(ranked),
                len(blend.items),
                blend.components,
            )
        )
        next_served = served | {item_key(i.candidate.item_id) for i in blend.items}
        has_next = blend.has_more and len(next_served) + query.page_size <= MAX_SERVED
        served_release = ranking_release or retrieval_release
        release_id = served_release.release_id if served_release else snapshot.snapshot_id
        _log.info(
            "page served",
            user=user_hash(context.user_id),
            release_id=release_id,
            surface=surface.value,
            items=[i.candidate.item_id for i in blend.items],
            slots=[i.slot.value for i in blend.items],
            experiments=list(context.experiments),
            policy_version=release.policies.version,
            degraded=[d.stage.value for d in degraded],
        )
        return RecommendResult(
            blend=blend,
            next_page_token=encode_token(fingerprint, next_served) if has_next else "",
            release_id=release_id,
            surface=surface,
            request_id=request_id,
            degraded=degraded,
            stages=stages,
            assignments=treatment.assignments,
            policy_version=release.policies.version,
        )

    async def _retrieve(
        self,
        snapshot: EngagementSnapshot,
        context: RequestContext,
        seeds: list[str],
        category_id: str,
        treatment: Treatment,
        served_count: int,
        deadline: Deadline,
        degraded: list[Degradation],
        stages: list[StageReport],
    ) -> tuple[Sequence[Candidate], ReleaseInfo | None]:
        started = time.perf_counter()
        budget = deadline.budget(self._limits.retrieval_timeout_s, reserve_s=_BLEND_RESERVE_S)
        try:
            result = await self._retrieval_circuit.call(
                lambda: within(
                    budget,
                    "retrieval",
                    self._retrieval.retrieve(
                        context,
                        seeds,
                        min(2000, self._limits.candidates + served_count),
                        budget,
                        category_id=category_id,
                        source_limits=treatment.source_limits,
                    ),
                )
            )
        except StageCallError as error:
            _log.warning("retrieval failed; serving popular items", reason=error.kind.value)
            failure = Degradation(
                StageName.RETRIEVAL, error.kind, error.message, fallback="popular_cache"
            )
            return self._popular(snapshot, seeds, category_id, failure, started, degraded, stages)
        if not result.candidates and result.degraded:
            # Every source that could have proposed something was skipped (a server still
            # warming up, or one past its capacity): as good as a failure.
            _log.warning("retrieval proposed nothing; serving popular items")
            degraded += result.degraded
            failure = Degradation(
                StageName.RETRIEVAL,
                result.degraded[0].reason,
                f"retrieval proposed no candidates: {len(result.degraded)} of its sources "
                "were skipped",
                fallback="popular_cache",
            )
            return self._popular(snapshot, seeds, category_id, failure, started, degraded, stages)
        degraded += result.degraded
        stages.append(
            StageReport(
                StageName.RETRIEVAL,
                result.release,
                time.perf_counter() - started,
                0,
                len(result.candidates),
                result.components,
            )
        )
        return result.candidates, result.release

    def _popular(
        self,
        snapshot: EngagementSnapshot,
        seeds: list[str],
        category_id: str,
        failure: Degradation,
        started: float,
        degraded: list[Degradation],
        stages: list[StageReport],
    ) -> tuple[Sequence[Candidate], ReleaseInfo | None]:
        """Retrieval's fallback: the popular items of the front door's own snapshot (of
        the category, when there is one), never the seeds."""
        degraded.append(failure)
        popular = (
            snapshot.category_items.row(snapshot.category_of(category_id))[0]
            if category_id
            else snapshot.popular_items
        )
        popular = popular[~np.isin(popular, snapshot.lookup_items(seeds))]
        popular = popular[: self._limits.candidates]
        n = len(popular)
        fallback = CandidateTable(
            snapshot.item_ids_of(popular),
            np.ones(n, np.int64),
            np.full(n, SOURCE_CODES[SourceKind.POPULAR], np.int8),
            np.arange(n),
            snapshot.popularity[popular],
            item_rows=popular,
        )
        stages.append(
            StageReport(StageName.RETRIEVAL, None, time.perf_counter() - started, 0, len(fallback))
        )
        return fallback, None

    async def _rank(
        self,
        context: RequestContext,
        candidates: Sequence[Candidate],
        seeds: list[str],
        treatment: Treatment,
        needs_heads: bool,
        deadline: Deadline,
        degraded: list[Degradation],
        stages: list[StageReport],
    ) -> tuple[Sequence[ScoredCandidate], ReleaseInfo | None]:
        if not candidates:
            return [], None
        started = time.perf_counter()
        budget = deadline.budget(self._limits.ranking_timeout_s, reserve_s=_BLEND_RESERVE_S)
        table = CandidateTable.of(candidates)
        try:
            result = await self._ranking_circuit.call(
                lambda: within(
                    budget,
                    "ranking",
                    self._ranking.rank(
                        context,
                        table,
                        seeds,
                        budget,
                        heavy_top_n=treatment.heavy_top_n,
                        details=context.debug or needs_heads,
                    ),
                )
            )
        except StageCallError as error:
            _log.warning("ranking failed; serving retrieval order", reason=error.kind.value)
            degraded.append(
                Degradation(
                    StageName.RANKING, error.kind, error.message, fallback="retrieval_order"
                )
            )
            n = len(table)
            in_order = ScoredTable(np.arange(n, 0, -1) / n, table)
            stages.append(StageReport(StageName.RANKING, None, time.perf_counter() - started, n, n))
            return in_order, None
        degraded += result.degraded
        ranked = result.candidates
        stages.append(
            StageReport(
                StageName.RANKING,
                result.release,
                time.perf_counter() - started,
                len(candidates),
                len(ranked),
            )
        )
        return ranked, result.release
