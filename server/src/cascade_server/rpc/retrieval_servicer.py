"""RetrievalService over gRPC: validate, call the retrieval stage, convert."""

from __future__ import annotations

import time
from typing import Any

from grpc import aio

from cascade.common.v1 import candidate_pb2
from cascade.retrieval.v1 import retrieval_service_pb2 as pb, retrieval_service_pb2_grpc as pb_grpc
from cascade_server.pipeline.deadline import Deadline
from cascade_server.pipeline.types import SourceKind, StageName
from cascade_server.retrieval.stage import RetrievalRequest, RetrievalResult, RetrievalStage
from cascade_server.rpc.convert import (
    MAX_ID_LENGTH,
    MAX_IDS,
    SOURCES,
    Violations,
    add_candidates,
    context_from_proto,
    degradations_to_proto,
    fill_candidate_columns,
    stage_trace,
)
from cascade_server.rpc.executor import BlockingRunner

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["RetrievalService"].full_name
_DEFAULT_DEADLINE_S = 0.5


class RetrievalServicer(pb_grpc.RetrievalServiceServicer):
    """Thin edge over ``RetrievalStage``."""

    def __init__(self, stage: RetrievalStage, runner: BlockingRunner) -> None:
        self._stage = stage
        self._runner = runner

    async def RetrieveCandidates(
        self, request: pb.RetrieveCandidatesRequest, context: aio.ServicerContext[Any, Any]
    ) -> pb.RetrieveCandidatesResponse:
        """Validate, retrieve off the event loop, convert."""
        query = request_from_proto(request)
        deadline = Deadline.from_remaining(context.time_remaining(), _DEFAULT_DEADLINE_S)
        started = time.perf_counter()
        result = await self._runner.run(
            lambda: self._stage.retrieve(query, deadline), deadline=deadline
        )
        return response_to_proto(
            result, query.context.debug, time.perf_counter() - started, columnar=request.columnar
        )


def request_from_proto(request: pb.RetrieveCandidatesRequest) -> RetrievalRequest:
    """Validate and convert; raises INVALID_ARGUMENT listing every bad field."""
    violations = Violations()
    context = context_from_proto(request.context, violations)
    violations.ids(request.seed_item_ids, "seed_item_ids", max_count=50)
    violations.ids(request.exclude_item_ids, "exclude_item_ids", max_count=5000)
    violations.bounded(request.max_candidates, "max_candidates", low=0, high=MAX_IDS)
    violations.text(request.category_id, "category_id", max_length=MAX_ID_LENGTH)
    limits: dict[SourceKind, int] = {}
    for i, limit in enumerate(request.source_limits):
        field = f"source_limits[{i}]"
        if limit.source not in SOURCES or limit.source == candidate_pb2.CANDIDATE_SOURCE_CALLER:
            violations.add(f"{field}.source", f"not a retrieval source: {limit.source}")
            continue
        if SOURCES[limit.source] in limits:
            violations.add(f"{field}.source", "each source may be limited once")
        violations.bounded(limit.limit, f"{field}.limit", low=0, high=MAX_IDS)
        limits[SOURCES[limit.source]] = limit.limit
    violations.raise_if_any()
    return RetrievalRequest(
        context=context,
        seed_item_ids=list(request.seed_item_ids),
        source_limits=limits,
        max_candidates=request.max_candidates,
        exclude_item_ids=list(request.exclude_item_ids),
        category_id=request.category_id,
    )


def response_to_proto(
    result: RetrievalResult, debug: bool, duration_s: float, *, columnar: bool = False
) -> pb.RetrieveCandidatesResponse:
    """The wire response (candidates in columns when ``columnar``); the trace only when
    asked for."""
    response = pb.RetrieveCandidatesResponse(
        release_id=result.release.release_id,
        degraded=degradations_to_proto(result.degraded),
        unknown_seed_item_ids=result.unknown_seed_item_ids,
    )
    if columnar:
        fill_candidate_columns(response.columns, result.candidates)
    else:
        add_candidates(response.candidates, result.candidates)
    if debug:
        response.trace.CopyFrom(
            stage_trace(
                StageName.RETRIEVAL,
                result.release,
                duration_s,
                0,
                len(result.candidates),
                result.components,
            )
        )
    return response
