"""Clients for RankingService, the candidate scoring stage (default port 50053)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import grpc
import grpc.aio

from cascade.ranking.v1 import ranking_service_pb2 as pb, ranking_service_pb2_grpc as pb_grpc
from cascade_client._base import AsyncClient, SyncClient
from cascade_client._call import Metadata, call_unary, call_unary_async, method_path

if TYPE_CHECKING:
    from cascade.ranking.v1.ranking_service_pb2_grpc import RankingServiceAsyncStub

RANK_CANDIDATES = method_path(pb.DESCRIPTOR, "RankingService", "RankCandidates")


class RankingClient(SyncClient):
    """Blocking client for RankingService.

    Every method sends ``timeout`` seconds as the call's deadline (default: the
    method's timeout in ``service_config.json``), sends ``metadata`` as call
    metadata, and raises a :class:`~cascade_client.errors.CascadeError` on failure.
    """

    def _bind(self, channel: grpc.Channel) -> None:
        self._stub = pb_grpc.RankingServiceStub(channel)

    def rank_candidates(
        self,
        request: pb.RankCandidatesRequest,
        *,
        timeout: float | None = None,
        metadata: Metadata = (),
    ) -> pb.RankCandidatesResponse:
        """Score candidate items and sort them best first."""
        return call_unary(
            self._stub.RankCandidates,
            RANK_CANDIDATES,
            request,
            timeout=timeout,
            metadata=metadata,
        )


class AsyncRankingClient(AsyncClient):
    """Asyncio client for RankingService; methods work as in :class:`RankingClient`."""

    def _bind(self, channel: grpc.aio.Channel) -> None:
        self._stub: RankingServiceAsyncStub = pb_grpc.RankingServiceStub(channel)

    async def rank_candidates(
        self,
        request: pb.RankCandidatesRequest,
        *,
        timeout: float | None = None,
        metadata: Metadata = (),
    ) -> pb.RankCandidatesResponse:
        """Score candidate items and sort them best first."""
        return await call_unary_async(
            self._stub.RankCandidates,
            RANK_CANDIDATES,
            request,
            timeout=timeout,
            metadata=metadata,
        )
