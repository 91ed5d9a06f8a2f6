"""Stage backends for Recommender tests: real stages in-process, and injected faults."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

from cascade_server.blending.circuit import StageCallError
from cascade_server.blending.policy import BlendingPolicies, PolicyFile, SurfacePolicy
from cascade_server.blending.release import BlendingRelease, ItemVectors
from cascade_server.errors import CascadeError, NotFoundError
from cascade_server.features.engagement import EngagementSnapshot
from cascade_server.pipeline.deadline import Deadline
from cascade_server.pipeline.table import CandidateTable
from cascade_server.pipeline.types import DegradationKind, RequestContext, SourceKind
from cascade_server.ranking.scorers import BaselineScorer
from cascade_server.ranking.stage import RankingStage, RankRequest, RankResult
from cascade_server.retrieval.sources import CoEngagementCandidateSource, PopularCandidateSource
from cascade_server.retrieval.stage import RetrievalRequest, RetrievalResult, RetrievalStage
from support.engagement import FixedHolder

DEFAULT_LIMITS: Mapping[SourceKind, int] = {SourceKind.CO_ENGAGEMENT: 300, SourceKind.POPULAR: 200}


class InProcessRetrieval:
    """A RetrievalBackend that calls a real RetrievalStage and records each call."""

    def __init__(
        self, snapshot: EngagementSnapshot, limits: Mapping[SourceKind, int] = DEFAULT_LIMITS
    ) -> None:
        self.stage = RetrievalStage(
            FixedHolder(snapshot),
            [CoEngagementCandidateSource(), PopularCandidateSource()],
            limits,
        )
        self.calls: list[tuple[RequestContext, list[str], int, float]] = []

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
        """Candidates from the stage."""
        self.calls.append((context, list(seed_item_ids), max_candidates, timeout_s))
        request = RetrievalRequest(
            context,
            list(seed_item_ids),
            source_limits=source_limits or {},
            max_candidates=max_candidates,
            category_id=category_id,
        )
        try:
            return self.stage.retrieve(request, Deadline.after(timeout_s))
        except NotFoundError as error:
            raise StageCallError(DegradationKind.ERROR, error.message) from error


class InProcessRanking:
    """A RankingBackend that calls a real RankingStage and records each call."""

    def __init__(self, snapshot: EngagementSnapshot) -> None:
        self.stage = RankingStage(FixedHolder(snapshot), BaselineScorer())
        self.calls: list[tuple[RequestContext, list[str], float]] = []

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
        """Scores from the stage, with the candidates' hits attached; its errors become
        StageCallError as over the network."""
        self.calls.append((context, list(candidates.item_ids), timeout_s))
        try:
            result = self.stage.rank(
                RankRequest(
                    context,
                    list(candidates.item_ids),
                    seed_item_ids=list(seed_item_ids),
                    heavy_top_n=heavy_top_n,
                    details=details,
                    item_rows=candidates.item_rows,
                ),
                Deadline.after(timeout_s),
            )
        except CascadeError as error:
            raise StageCallError(DegradationKind.ERROR, error.message) from error
        provenance = dict(zip(candidates.item_ids, candidates.sources(), strict=True))
        return dataclasses.replace(
            result,
            candidates=[
                dataclasses.replace(c, sources=provenance.get(c.item_id, ()))
                for c in result.candidates
            ],
        )


class FailingStage:
    """Fault injection: a retrieval or ranking server that fails every call with ``kind``."""

    def __init__(self, kind: DegradationKind = DegradationKind.UNAVAILABLE) -> None:
        self.kind = kind
        self.calls = 0

    def _fail(self, stage: str) -> StageCallError:
        self.calls += 1
        return StageCallError(self.kind, f"{stage} failed: {self.kind.name}")

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
        """Always fails."""
        raise self._fail("retrieval")

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
        """Always fails."""
        raise self._fail("ranking")


def policy_release(
    vectors: ItemVectors | None = None, version: str = "test", **fields: object
) -> BlendingRelease:
    """A release whose every surface has the policy ``SurfacePolicy(**fields)``."""
    policy = SurfacePolicy.model_validate(fields)
    surfaces = {name: policy for name in ("home_feed", "related_items", "category_feed")}
    return BlendingRelease(
        BlendingPolicies(PolicyFile.model_validate({"version": version, "surfaces": surfaces})),
        vectors,
    )
