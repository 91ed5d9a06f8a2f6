"""BlendingService over gRPC: the front door (Recommend) and pure blending (BlendCandidates)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from grpc import aio

from cascade.blending.v1 import blending_service_pb2 as pb, blending_service_pb2_grpc as pb_grpc
from cascade.common.v1 import context_pb2, trace_pb2
from cascade_server.blending.policy import PolicyError, SurfacePolicy
from cascade_server.blending.recommend import Recommender, RecommendQuery, RecommendResult
from cascade_server.blending.release import BlendingRelease
from cascade_server.blending.stage import (
    BlendingStage,
    BlendRequest,
    BlendResult,
    CandidateOutcome,
)
from cascade_server.features.refresh import SnapshotSource
from cascade_server.metrics import DEGRADED, STAGE_CANDIDATES, STAGE_SECONDS
from cascade_server.pipeline.deadline import Deadline
from cascade_server.pipeline.types import RequestContext, StageName, Surface
from cascade_server.rpc.convert import (
    MAX_ID_LENGTH,
    MAX_IDS,
    SURFACE_TO_PROTO,
    SURFACES,
    Violations,
    add_hits,
    blend_action_to_proto,
    context_from_proto,
    degradations_to_proto,
    scored_from_proto,
    stage_trace,
)
from cascade_server.rpc.executor import BlockingRunner
from cascade_server.rpc.interceptors import current_request_id
from cascade_server.settings import Settings

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["BlendingService"].full_name
DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 100
_MAX_TOKEN_LENGTH = 16_384


class BlendingServicer(pb_grpc.BlendingServiceServicer):
    """Thin edge over ``Recommender`` and ``BlendingStage``."""

    def __init__(
        self,
        recommender: Recommender,
        blending: BlendingStage,
        holder: SnapshotSource,
        release: Callable[[], BlendingRelease],
        runner: BlockingRunner,
        settings: Settings,
    ) -> None:
        self._recommender = recommender
        self._blending = blending
        self._holder = holder
        self._release = release
        self._runner = runner
        self._settings = settings

    async def Recommend(
        self, request: pb.RecommendRequest, context: aio.ServicerContext[Any, Any]
    ) -> pb.RecommendResponse:
        """One page of recommendations, failing open when a stage behind fails."""
        query = recommend_from_proto(request, current_request_id())
        deadline = Deadline.from_remaining(
            context.time_remaining(), self._settings.recommend_deadline_ms / 1000
        )
        result = await self._recommender.recommend(query, deadline)
        for stage in result.stages:
            STAGE_SECONDS.labels(stage.stage.value).observe(stage.duration_s)
            STAGE_CANDIDATES.labels(stage.stage.value).observe(stage.output_count)
        for degradation in result.degraded:
            DEGRADED.labels(
                degradation.stage.value, degradation.reason.value, degradation.fallback
            ).inc()
        return recommend_to_proto(result, debug=request.debug)

    async def BlendCandidates(
        self, request: pb.BlendCandidatesRequest, context: aio.ServicerContext[Any, Any]
    ) -> pb.BlendCandidatesResponse:
        """Filter, cap and cut a page from candidates the caller ranked."""
        violations = Violations()
        request_context = context_from_proto(request.context, violations)
        if not request.candidates:
            violations.add("candidates", "at least one candidate is required")
        violations.bounded(len(request.candidates), "candidates", low=0, high=MAX_IDS)
        for i, candidate in enumerate(request.candidates[:MAX_IDS]):
            violations.text(
                candidate.item_id,
                f"candidates[{i}].item_id",
                max_length=MAX_ID_LENGTH,
                required=True,
            )
            violations.finite(candidate.score, f"candidates[{i}].score")
        violations.bounded(request.page_size, "page_size", low=0, high=MAX_PAGE_SIZE)
        violations.bounded(request.max_items_per_creator, "max_items_per_creator", low=0, high=100)
        overrides = overrides_from_proto(request.policy_overrides, violations)
        violations.raise_if_any()
        if request.max_items_per_creator:
            overrides["max_items_per_creator"] = request.max_items_per_creator
        snapshot = self._holder.current()
        release = self._release()
        policy = release.policies.for_surface(request_context.surface or Surface.HOME_FEED)
        if overrides:
            policy = policy.with_overrides(overrides, "policy_overrides")
        candidates = [scored_from_proto(c) for c in request.candidates]
        blend_request = BlendRequest(
            policy,
            request.page_size or DEFAULT_PAGE_SIZE,
            user_id=request_context.user_id,
            random_key=request_context.user_id,
            explain=request_context.debug,
        )
        started = time.perf_counter()
        blend = await self._runner.run(
            lambda: self._blending.blend(snapshot, candidates, blend_request, release.vectors)
        )
        response = pb.BlendCandidatesResponse(items=_items(blend), release_id=snapshot.snapshot_id)
        if request_context.debug:
            response.trace.stages.append(
                stage_trace(
                    StageName.BLENDING,
                    None,
                    time.perf_counter() - started,
                    len(candidates),
                    len(blend.items),
                    blend.components,
                )
            )
            response.trace.candidates.extend(_outcome(o) for o in blend.outcomes)
            response.trace.policy_version = release.policies.version
        return response


def overrides_from_proto(message: pb.PolicyOverrides, violations: Violations) -> dict[str, Any]:
    """The overrides that are set, as policy field names; the policy checks their bounds."""
    overrides: dict[str, Any] = {
        name: getattr(message, name)
        for name in (
            "max_items_per_creator",
            "diversity_lambda",
            "category_spacing",
            "fresh_share",
            "exploration_share",
        )
        if message.HasField(name)
    }
    for name in ("diversity_lambda", "fresh_share", "exploration_share"):
        if name in overrides:
            violations.finite(overrides[name], f"policy_overrides.{name}")
    if message.exclude_categories:
        violations.bounded(
            len(message.exclude_categories), "policy_overrides.exclude_categories", low=0, high=100
        )
        for i, category in enumerate(message.exclude_categories):
            violations.text(
                category,
                f"policy_overrides.exclude_categories[{i}]",
                max_length=MAX_ID_LENGTH,
                required=True,
            )
        overrides["exclude_categories"] = list(message.exclude_categories)
    if not overrides:
        return overrides
    try:
        SurfacePolicy().with_overrides(overrides, "policy_overrides")
    except PolicyError as error:
        for place, problem in error.problems:
            violations.add(f"policy_overrides.{place}".rstrip("."), problem)
    return overrides


def recommend_from_proto(request: pb.RecommendRequest, call_request_id: str) -> RecommendQuery:
    """Validate and convert; raises INVALID_ARGUMENT listing every bad field.

    The request id is the message's, else the call's (``x-request-id`` or assigned).
    """
    violations = Violations()
    violations.text(request.user_id, "user_id", max_length=MAX_ID_LENGTH)
    violations.text(request.seed_item_id, "seed_item_id", max_length=MAX_ID_LENGTH)
    if not request.user_id and not request.seed_item_id and not request.category_id:
        violations.add("user_id", "one of user_id, seed_item_id or category_id is required")
    violations.enum(request.surface, SURFACES, "surface")
    violations.bounded(request.page_size, "page_size", low=0, high=MAX_PAGE_SIZE)
    violations.text(request.page_token, "page_token", max_length=_MAX_TOKEN_LENGTH)
    violations.text(request.locale, "locale", max_length=35)
    violations.bounded(len(request.experiment_ids), "experiment_ids", low=0, high=16)
    for i, experiment in enumerate(request.experiment_ids):
        violations.text(experiment, f"experiment_ids[{i}]", max_length=64, required=True)
    violations.text(request.request_id, "request_id", max_length=64)
    violations.text(request.category_id, "category_id", max_length=MAX_ID_LENGTH)
    category_feed = request.surface == context_pb2.SURFACE_CATEGORY_FEED
    if category_feed and not request.category_id:
        violations.add("category_id", "a CATEGORY_FEED request needs a category_id")
    if request.category_id and request.surface not in (
        context_pb2.SURFACE_UNSPECIFIED,
        context_pb2.SURFACE_CATEGORY_FEED,
    ):
        violations.add("category_id", "category_id is only for the CATEGORY_FEED surface")
    if request.category_id and request.seed_item_id:
        violations.add("category_id", "give either seed_item_id or category_id, not both")
    overrides = overrides_from_proto(request.policy_overrides, violations)
    violations.raise_if_any()
    return RecommendQuery(
        context=RequestContext(
            user_id=request.user_id,
            surface=SURFACES.get(request.surface),
            locale=request.locale,
            experiment_ids=tuple(request.experiment_ids),
            debug=request.debug,
            request_id=request.request_id or call_request_id,
        ),
        seed_item_id=request.seed_item_id,
        category_id=request.category_id,
        page_size=request.page_size or DEFAULT_PAGE_SIZE,
        page_token=request.page_token,
        policy_overrides=overrides,
    )


def recommend_to_proto(result: RecommendResult, *, debug: bool) -> pb.RecommendResponse:
    """The wire response; the trace only when asked for."""
    response = pb.RecommendResponse(
        items=_items(result.blend),
        next_page_token=result.next_page_token,
        release_id=result.release_id,
        degraded=degradations_to_proto(result.degraded),
        request_id=result.request_id,
        surface=SURFACE_TO_PROTO[result.surface],
        experiments=[
            context_pb2.ExperimentAssignment(
                experiment=a.experiment, variant=a.variant.name, forced=a.forced
            )
            for a in result.assignments
        ],
        policy_version=result.policy_version,
    )
    if debug:
        response.trace.policy_version = result.policy_version
        response.trace.stages.extend(
            stage_trace(
                s.stage, s.release, s.duration_s, s.input_count, s.output_count, s.components
            )
            for s in result.stages
        )
        response.trace.candidates.extend(_outcome(o) for o in result.blend.outcomes)
    return response


def _items(blend: BlendResult) -> list[pb.RecommendedItem]:
    items = []
    for item in blend.items:
        message = pb.RecommendedItem(
            item_id=item.candidate.item_id, score=item.candidate.score, creator_id=item.creator_id
        )
        add_hits(message.sources, item.candidate.sources)
        items.append(message)
    return items


def _outcome(outcome: CandidateOutcome) -> trace_pb2.CandidateTrace:
    candidate = outcome.candidate
    message = trace_pb2.CandidateTrace(
        item_id=candidate.item_id,
        stage_scores=candidate.stage_scores,
        head_scores=candidate.head_scores,
        removed_by=outcome.removed_by,
        removal_reason=outcome.reason,
        blend_action=blend_action_to_proto(outcome.action),
        position=outcome.position,
        slot=outcome.slot.value if outcome.slot else "",
        blend_score=outcome.blend_score or 0.0,
        demoted_by=outcome.demoted_by.value if outcome.demoted_by else "",
    )
    add_hits(message.sources, candidate.sources)
    return message
