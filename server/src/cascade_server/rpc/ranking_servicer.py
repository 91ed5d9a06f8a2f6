"""RankingService over gRPC: validate, call the ranking stage, convert."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from grpc import aio

from cascade.ranking.v1 import ranking_service_pb2 as pb, ranking_service_pb2_grpc as pb_grpc
from cascade_server.pipeline.deadline import Deadline
from cascade_server.pipeline.types import StageName
from cascade_server.ranking.stage import RankingStage, RankRequest, RankResult
from cascade_server.rpc.convert import (
    MAX_IDS,
    Violations,
    add_scored,
    context_from_proto,
    degradations_to_proto,
    fill_scored_columns,
    stage_trace,
)
from cascade_server.rpc.executor import BlockingRunner

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["RankingService"].full_name
_DEFAULT_DEADLINE_S = 0.5


class RankingServicer(pb_grpc.RankingServiceServicer):
    """Thin edge over ``RankingStage``."""

    def __init__(self, stage: RankingStage, runner: BlockingRunner) -> None:
        self._stage = stage
        self._runner = runner

    async def RankCandidates(
        self, request: pb.RankCandidatesRequest, context: aio.ServicerContext[Any, Any]
    ) -> pb.RankCandidatesResponse:
        """Validate, score off the event loop, convert."""
        query = request_from_proto(request)
        deadline = Deadline.from_remaining(context.time_remaining(), _DEFAULT_DEADLINE_S)
        started = time.perf_counter()
        result = await self._runner.run(
            lambda: self._stage.rank(query, deadline), deadline=deadline
        )
        return response_to_proto(
            result,
            len(query.item_ids),
            query.context.debug,
            time.perf_counter() - started,
            columnar=request.columnar and not query.context.debug,
        )


def request_from_proto(request: pb.RankCandidatesRequest) -> RankRequest:
    """Validate and convert; raises INVALID_ARGUMENT listing every bad field."""
    violations = Violations()
    context = context_from_proto(request.context, violations)
    item_ids = list(request.item_ids)  # each read of the wire list makes new strings
    violations.ids(item_ids, "item_ids", max_count=MAX_IDS, required=True)
    violations.bounded(request.max_results, "max_results", low=0, high=MAX_IDS)
    violations.ids(request.seed_item_ids, "seed_item_ids", max_count=50)
    violations.bounded(request.heavy_top_n, "heavy_top_n", low=0, high=MAX_IDS)
    if request.item_rows and len(request.item_rows) != len(item_ids):
        violations.add(
            "item_rows",
            f"has {len(request.item_rows)} entries for {len(item_ids)} item_ids: send one "
            "row per item id, or none",
        )
    violations.raise_if_any()
    return RankRequest(
        context,
        item_ids,
        request.max_results,
        list(request.seed_item_ids),
        request.heavy_top_n,
        details=not (request.omit_score_details or request.columnar),
        item_rows=np.array(request.item_rows, dtype=np.int64) if request.item_rows else None,
    )


def response_to_proto(
    result: RankResult, input_count: int, debug: bool, duration_s: float, *, columnar: bool = False
) -> pb.RankCandidatesResponse:
    """The wire response (scores in columns when ``columnar``); the trace only when asked
    for."""
    response = pb.RankCandidatesResponse(
        unknown_item_ids=result.unknown_item_ids,
        release_id=result.release.release_id,
        scorer=result.release.scorer,
        degraded=degradations_to_proto(result.degraded),
    )
    if columnar:
        fill_scored_columns(response.columns, result.candidates, result.request_positions)
    else:
        add_scored(response.candidates, result.candidates)
    if debug:
        response.trace.CopyFrom(
            stage_trace(
                StageName.RANKING,
                result.release,
                duration_s,
                input_count,
                len(result.candidates),
                (),
            )
        )
    return response
