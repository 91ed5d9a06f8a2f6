"""Clients for RetrievalService, the candidate retrieval stage (default port 50052)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import grpc
import grpc.aio

from cascade.retrieval.v1 import (
    retrieval_service_pb2 as pb,
    retrieval_service_pb2_grpc as pb_grpc,
)
from cascade_client._base import AsyncClient, SyncClient
from cascade_client._call import Metadata, call_unary, call_unary_async, method_path

if TYPE_CHECKING:
    from cascade.retrieval.v1.retrieval_service_pb2_grpc import RetrievalServiceAsyncStub

RETRIEVE_CANDIDATES = method_path(pb.DESCRIPTOR, "RetrievalService", "RetrieveCandidates")


class RetrievalClient(SyncClient):
    """Blocking client for RetrievalService.

    Every method sends ``timeout`` seconds as the call's deadline (default: the
    method's timeout in ``service_config.json``), sends ``metadata`` as call
    metadata, and raises a :class:`~cascade_client.errors.CascadeError` on failure.
    """

    def _bind(self, channel: grpc.Channel) -> None:
        self._stub = pb_grpc.RetrievalServiceStub(channel)

    def retrieve_candidates(
        self,
        request: pb.RetrieveCandidatesRequest,
        *,
        timeout: float | None = None,
        metadata: Metadata = (),
    ) -> pb.RetrieveCandidatesResponse:
        """Return candidate items for a user or seed items."""
        return call_unary(
            self._stub.RetrieveCandidates,
            RETRIEVE_CANDIDATES,
            request,
            timeout=timeout,
            metadata=metadata,
        )


class AsyncRetrievalClient(AsyncClient):
    """Asyncio client for RetrievalService; methods work as in :class:`RetrievalClient`."""

    def _bind(self, channel: grpc.aio.Channel) -> None:
        self._stub: RetrievalServiceAsyncStub = pb_grpc.RetrievalServiceStub(channel)

    async def retrieve_candidates(
        self,
        request: pb.RetrieveCandidatesRequest,
        *,
        timeout: float | None = None,
        metadata: Metadata = (),
    ) -> pb.RetrieveCandidatesResponse:
        """Return candidate items for a user or seed items."""
        return await call_unary_async(
            self._stub.RetrieveCandidates,
            RETRIEVE_CANDIDATES,
            request,
            timeout=timeout,
            metadata=metadata,
        )
