"""The blending stage's view of retrieval and ranking, over gRPC with the async client.

Each call gets an explicit timeout (the hop's budget, already cut to the caller's
remaining time) and carries the request id and the experiment variants in metadata.
Any failure becomes a ``StageCallError`` that says how the stage failed, so the front
door can fall back. A backend given several clients (one connection each) takes them in
turn: a stage served by several processes on one port gets its calls spread over them.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence

import grpc

from cascade.ranking.v1 import ranking_service_pb2
from cascade.retrieval.v1 import retrieval_service_pb2
from cascade_client import AsyncRankingClient, AsyncRetrievalClient, CascadeError
from cascade_server.blending.circuit import StageCallError
from cascade_server.pipeline.table import CandidateTable
from cascade_server.pipeline.types import (
    Candidate,
    DegradationKind,
    ReleaseInfo,
    RequestContext,
    ScoredCandidate,
    SourceKind,
)
from cascade_server.ranking.stage import RankResult
from cascade_server.retrieval.stage import RetrievalResult
from cascade_server.rpc.convert import (
    SOURCE_TO_PROTO,
    candidates_from_columns,
    context_to_proto,
    degradations_from_proto,
    hits_from_proto,
    scored_from_columns,
    scored_from_proto,
)
from cascade_server.rpc.status import EXPERIMENTS_KEY, REQUEST_ID_KEY

_MIN_TIMEOUT_S = 0.000_01
"""The shortest timeout a hop is given (a budget already spent still makes one try)."""


class GrpcRetrievalBackend:
    """Calls RetrievalService."""

    def __init__(self, clients: Sequence[AsyncRetrievalClient]) -> None:
        self._clients = itertools.cycle(clients)

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
        """Candidates from the retrieval server."""
        request = retrieval_service_pb2.RetrieveCandidatesRequest(
            context=context_to_proto(context),
            seed_item_ids=seed_item_ids,
            max_candidates=max_candidates,
            category_id=category_id,
            columnar=True,
            source_limits=[
                retrieval_service_pb2.SourceLimit(source=SOURCE_TO_PROTO[kind], limit=limit)
                for kind, limit in (source_limits or {}).items()
            ],
        )
        try:
            response = await next(self._clients).retrieve_candidates(
                request, timeout=_timeout(timeout_s), metadata=_metadata(context)
            )
            # A server that predates the column form answers in rows.
            candidates = (
                [
                    Candidate(c.item_id, list(hits_from_proto(c.sources)))
                    for c in response.candidates
                ]
                if response.candidates
                else candidates_from_columns(response.columns)
            )
        except CascadeError as error:
            raise _stage_error("retrieval", error) from error
        except ValueError as error:
            raise _malformed("retrieval", error) from error
        return RetrievalResult(
            candidates=candidates,
            release=ReleaseInfo(response.release_id),
            degraded=degradations_from_proto(response.degraded),
            unknown_seed_item_ids=list(response.unknown_seed_item_ids),
        )


class GrpcRankingBackend:
    """Calls RankingService."""

    def __init__(self, clients: Sequence[AsyncRankingClient]) -> None:
        self._clients = itertools.cycle(clients)

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
        """``candidates`` scored by the ranking server, with their source hits attached
        (and their rows passed on, when known, to spare it the id lookups)."""
        request = ranking_service_pb2.RankCandidatesRequest(
            context=context_to_proto(context),
            item_ids=candidates.item_ids,
            seed_item_ids=seed_item_ids,
            heavy_top_n=heavy_top_n,
            omit_score_details=not details,
            columnar=not details,
            item_rows=[] if candidates.item_rows is None else candidates.item_rows.tolist(),
        )
        try:
            response = await next(self._clients).rank_candidates(
                request, timeout=_timeout(timeout_s), metadata=_metadata(context)
            )
            scored: Sequence[ScoredCandidate]
            if response.candidates:
                hits = dict(zip(candidates.item_ids, candidates.sources(), strict=True))
                scored = [
                    scored_from_proto(c, hits.get(c.item_id, ())) for c in response.candidates
                ]
            else:
                scored = scored_from_columns(response.columns, candidates)
        except CascadeError as error:
            raise _stage_error("ranking", error) from error
        except ValueError as error:
            raise _malformed("ranking", error) from error
        return RankResult(
            candidates=scored,
            unknown_item_ids=list(response.unknown_item_ids),
            release=ReleaseInfo(response.release_id, response.scorer),
            degraded=degradations_from_proto(response.degraded),
        )


def _timeout(seconds: float) -> float:
    return max(seconds, _MIN_TIMEOUT_S)


def _metadata(context: RequestContext) -> tuple[tuple[str, str], ...]:
    metadata = [(REQUEST_ID_KEY, context.request_id)] if context.request_id else []
    if context.experiments:
        metadata.append((EXPERIMENTS_KEY, ",".join(context.experiments)))
    return tuple(metadata)


def _malformed(stage: str, error: ValueError) -> StageCallError:
    return StageCallError(DegradationKind.ERROR, f"{stage} answered malformed columns: {error}")


def _stage_error(stage: str, error: CascadeError) -> StageCallError:
    kind = {
        grpc.StatusCode.DEADLINE_EXCEEDED: DegradationKind.DEADLINE_EXCEEDED,
        grpc.StatusCode.UNAVAILABLE: DegradationKind.UNAVAILABLE,
        # An overloaded stage shed the call: unavailable for now.
        grpc.StatusCode.RESOURCE_EXHAUSTED: DegradationKind.UNAVAILABLE,
    }.get(error.code, DegradationKind.ERROR)
    return StageCallError(kind, f"{stage} failed: {error.code.name}: {error.message}")
