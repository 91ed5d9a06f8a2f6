"""Clients for BlendingService, Cascade's front door (default port 50051)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import grpc
import grpc.aio

from cascade.blending.v1 import blending_service_pb2 as pb, blending_service_pb2_grpc as pb_grpc
from cascade_client._base import AsyncClient, SyncClient
from cascade_client._call import Metadata, call_unary, call_unary_async, method_path

if TYPE_CHECKING:
    from cascade.blending.v1.blending_service_pb2_grpc import BlendingServiceAsyncStub

RECOMMEND = method_path(pb.DESCRIPTOR, "BlendingService", "Recommend")
BLEND_CANDIDATES = method_path(pb.DESCRIPTOR, "BlendingService", "BlendCandidates")


class BlendingClient(SyncClient):
    """Blocking client for BlendingService.

    Every method sends ``timeout`` seconds as the call's deadline (default: the
    method's timeout in ``service_config.json``), sends ``metadata`` as call
    metadata, and raises a :class:`~cascade_client.errors.CascadeError` on failure.
    """

    def _bind(self, channel: grpc.Channel) -> None:
        self._stub = pb_grpc.BlendingServiceStub(channel)

    def recommend(
        self,
        request: pb.RecommendRequest,
        *,
        timeout: float | None = None,
        metadata: Metadata = (),
    ) -> pb.RecommendResponse:
        """Return one page of recommendations."""
        return call_unary(
            self._stub.Recommend, RECOMMEND, request, timeout=timeout, metadata=metadata
        )

    def blend_candidates(
        self,
        request: pb.BlendCandidatesRequest,
        *,
        timeout: float | None = None,
        metadata: Metadata = (),
    ) -> pb.BlendCandidatesResponse:
        """Blend already ranked candidates into one page."""
        return call_unary(
            self._stub.BlendCandidates,
            BLEND_CANDIDATES,
            request,
            timeout=timeout,
            metadata=metadata,
        )


class AsyncBlendingClient(AsyncClient):
    """Asyncio client for BlendingService; methods work as in :class:`BlendingClient`."""

    def _bind(self, channel: grpc.aio.Channel) -> None:
        self._stub: BlendingServiceAsyncStub = pb_grpc.BlendingServiceStub(channel)

    async def recommend(
        self,
        request: pb.RecommendRequest,
        *,
        timeout: float | None = None,
        metadata: Metadata = (),
    ) -> pb.RecommendResponse:
        """Return one page of recommendations."""
        return await call_unary_async(
            self._stub.Recommend, RECOMMEND, request, timeout=timeout, metadata=metadata
        )

    async def blend_candidates(
        self,
        request: pb.BlendCandidatesRequest,
        *,
        timeout: float | None = None,
        metadata: Metadata = (),
    ) -> pb.BlendCandidatesResponse:
        """Blend already ranked candidates into one page."""
        return await call_unary_async(
            self._stub.BlendCandidates,
            BLEND_CANDIDATES,
            request,
            timeout=timeout,
            metadata=metadata,
        )
