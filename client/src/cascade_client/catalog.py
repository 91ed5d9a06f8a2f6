"""Clients for CatalogService, which stores items, users and events (default port 50054).

Writes (``upsert_items``, ``upsert_users``, ``log_events``) are idempotent (keyed by
item id, user id and event id), so the client retries them on UNAVAILABLE like reads.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING

import grpc
import grpc.aio

from cascade.catalog.v1 import catalog_service_pb2 as pb, catalog_service_pb2_grpc as pb_grpc
from cascade_client._base import AsyncClient, SyncClient
from cascade_client._call import Metadata, call_unary, call_unary_async, method_path

if TYPE_CHECKING:
    from cascade.catalog.v1.catalog_service_pb2_grpc import CatalogServiceAsyncStub

UPSERT_ITEMS = method_path(pb.DESCRIPTOR, "CatalogService", "UpsertItems")
UPSERT_USERS = method_path(pb.DESCRIPTOR, "CatalogService", "UpsertUsers")
GET_ITEMS = method_path(pb.DESCRIPTOR, "CatalogService", "GetItems")
LIST_ITEMS = method_path(pb.DESCRIPTOR, "CatalogService", "ListItems")
LIST_USERS = method_path(pb.DESCRIPTOR, "CatalogService", "ListUsers")
LOG_EVENTS = method_path(pb.DESCRIPTOR, "CatalogService", "LogEvents")


class CatalogClient(SyncClient):
    """Blocking client for CatalogService.

    Every method sends ``timeout`` seconds as the call's deadline (default: the
    method's timeout in ``service_config.json``), sends ``metadata`` as call
    metadata, and raises a :class:`~cascade_client.errors.CascadeError` on failure.
    """

    def _bind(self, channel: grpc.Channel) -> None:
        self._stub = pb_grpc.CatalogServiceStub(channel)

    def upsert_items(
        self,
        request: pb.UpsertItemsRequest,
        *,
        timeout: float | None = None,
        metadata: Metadata = (),
    ) -> pb.UpsertItemsResponse:
        """Create or replace items, all or nothing."""
        return call_unary(
            self._stub.UpsertItems, UPSERT_ITEMS, request, timeout=timeout, metadata=metadata
        )

    def upsert_users(
        self,
        request: pb.UpsertUsersRequest,
        *,
        timeout: float | None = None,
        metadata: Metadata = (),
    ) -> pb.UpsertUsersResponse:
        """Create or replace users, all or nothing."""
        return call_unary(
            self._stub.UpsertUsers, UPSERT_USERS, request, timeout=timeout, metadata=metadata
        )

    def get_items(
        self, request: pb.GetItemsRequest, *, timeout: float | None = None, metadata: Metadata = ()
    ) -> pb.GetItemsResponse:
        """Return items by id; unknown ids are listed in the response."""
        return call_unary(
            self._stub.GetItems, GET_ITEMS, request, timeout=timeout, metadata=metadata
        )

    def list_items(
        self, request: pb.ListItemsRequest, *, timeout: float | None = None, metadata: Metadata = ()
    ) -> pb.ListItemsResponse:
        """Return one page of items in item id order."""
        return call_unary(
            self._stub.ListItems, LIST_ITEMS, request, timeout=timeout, metadata=metadata
        )

    def list_users(
        self, request: pb.ListUsersRequest, *, timeout: float | None = None, metadata: Metadata = ()
    ) -> pb.ListUsersResponse:
        """Return one page of users in user id order."""
        return call_unary(
            self._stub.ListUsers, LIST_USERS, request, timeout=timeout, metadata=metadata
        )

    def log_events(
        self, request: pb.LogEventsRequest, *, timeout: float | None = None, metadata: Metadata = ()
    ) -> pb.LogEventsResponse:
        """Store a batch of engagement events, all or nothing, once per event id."""
        return call_unary(
            self._stub.LogEvents, LOG_EVENTS, request, timeout=timeout, metadata=metadata
        )

    def iter_items(
        self, request: pb.ListItemsRequest, *, timeout: float | None = None, metadata: Metadata = ()
    ) -> Iterator[pb.Item]:
        """Yield every item that ``request`` selects, fetching the pages as needed.

        Paging starts at ``request.page_token`` and follows ``next_page_token``;
        ``request`` itself is not modified. ``timeout`` applies to each page.
        """
        page = pb.ListItemsRequest()
        page.CopyFrom(request)
        while True:
            response = self.list_items(page, timeout=timeout, metadata=metadata)
            yield from response.items
            if not response.next_page_token:
                return
            page.page_token = response.next_page_token

    def iter_users(
        self, request: pb.ListUsersRequest, *, timeout: float | None = None, metadata: Metadata = ()
    ) -> Iterator[pb.User]:
        """Yield every user from ``request.page_token`` on, fetching the pages as needed.

        ``request`` itself is not modified. ``timeout`` applies to each page.
        """
        page = pb.ListUsersRequest()
        page.CopyFrom(request)
        while True:
            response = self.list_users(page, timeout=timeout, metadata=metadata)
            yield from response.users
            if not response.next_page_token:
                return
            page.page_token = response.next_page_token


class AsyncCatalogClient(AsyncClient):
    """Asyncio client for CatalogService; methods work as in :class:`CatalogClient`."""

    def _bind(self, channel: grpc.aio.Channel) -> None:
        self._stub: CatalogServiceAsyncStub = pb_grpc.CatalogServiceStub(channel)

    async def upsert_items(
        self,
        request: pb.UpsertItemsRequest,
        *,
        timeout: float | None = None,
        metadata: Metadata = (),
    ) -> pb.UpsertItemsResponse:
        """Create or replace items, all or nothing."""
        return await call_unary_async(
            self._stub.UpsertItems, UPSERT_ITEMS, request, timeout=timeout, metadata=metadata
        )

    async def upsert_users(
        self,
        request: pb.UpsertUsersRequest,
        *,
        timeout: float | None = None,
        metadata: Metadata = (),
    ) -> pb.UpsertUsersResponse:
        """Create or replace users, all or nothing."""
        return await call_unary_async(
            self._stub.UpsertUsers, UPSERT_USERS, request, timeout=timeout, metadata=metadata
        )

    async def get_items(
        self, request: pb.GetItemsRequest, *, timeout: float | None = None, metadata: Metadata = ()
    ) -> pb.GetItemsResponse:
        """Return items by id; unknown ids are listed in the response."""
        return await call_unary_async(
            self._stub.GetItems, GET_ITEMS, request, timeout=timeout, metadata=metadata
        )

    async def list_items(
        self, request: pb.ListItemsRequest, *, timeout: float | None = None, metadata: Metadata = ()
    ) -> pb.ListItemsResponse:
        """Return one page of items in item id order."""
        return await call_unary_async(
            self._stub.ListItems, LIST_ITEMS, request, timeout=timeout, metadata=metadata
        )

    async def list_users(
        self, request: pb.ListUsersRequest, *, timeout: float | None = None, metadata: Metadata = ()
    ) -> pb.ListUsersResponse:
        """Return one page of users in user id order."""
        return await call_unary_async(
            self._stub.ListUsers, LIST_USERS, request, timeout=timeout, metadata=metadata
        )

    async def log_events(
        self, request: pb.LogEventsRequest, *, timeout: float | None = None, metadata: Metadata = ()
    ) -> pb.LogEventsResponse:
        """Store a batch of engagement events, all or nothing, once per event id."""
        return await call_unary_async(
            self._stub.LogEvents, LOG_EVENTS, request, timeout=timeout, metadata=metadata
        )

    async def iter_items(
        self, request: pb.ListItemsRequest, *, timeout: float | None = None, metadata: Metadata = ()
    ) -> AsyncIterator[pb.Item]:
        """Yield every item that ``request`` selects, as :meth:`CatalogClient.iter_items` does."""
        page = pb.ListItemsRequest()
        page.CopyFrom(request)
        while True:
            response = await self.list_items(page, timeout=timeout, metadata=metadata)
            for item in response.items:
                yield item
            if not response.next_page_token:
                return
            page.page_token = response.next_page_token

    async def iter_users(
        self, request: pb.ListUsersRequest, *, timeout: float | None = None, metadata: Metadata = ()
    ) -> AsyncIterator[pb.User]:
        """Yield every user from ``request.page_token`` on, as :meth:`CatalogClient.iter_users`."""
        page = pb.ListUsersRequest()
        page.CopyFrom(request)
        while True:
            response = await self.list_users(page, timeout=timeout, metadata=metadata)
            for user in response.users:
                yield user
            if not response.next_page_token:
                return
            page.page_token = response.next_page_token
