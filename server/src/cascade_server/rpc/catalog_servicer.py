"""CatalogService over gRPC: convert messages to records, call the catalog, convert back."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from google.protobuf import json_format, struct_pb2, timestamp_pb2
from grpc import aio

from cascade.catalog.v1 import catalog_service_pb2 as pb, catalog_service_pb2_grpc as pb_grpc
from cascade_server.catalog.records import (
    EventKind,
    EventRecord,
    ItemRecord,
    ItemStatus,
    UserRecord,
)
from cascade_server.catalog.service import CatalogService, utc_now
from cascade_server.catalog.validation import validate_events, validate_items
from cascade_server.rpc.convert import SURFACES, Violations, timestamp
from cascade_server.rpc.executor import BlockingRunner

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["CatalogService"].full_name

_STATUSES: dict[pb.ItemStatus.ValueType, ItemStatus | None] = {
    pb.ITEM_STATUS_UNSPECIFIED: None,
    pb.ITEM_STATUS_ACTIVE: ItemStatus.ACTIVE,
    pb.ITEM_STATUS_HIDDEN: ItemStatus.HIDDEN,
    pb.ITEM_STATUS_DELETED: ItemStatus.DELETED,
}
_STATUS_TO_PROTO = {status: number for number, status in _STATUSES.items() if status}
_KINDS: dict[pb.EventKind.ValueType, EventKind | None] = {
    pb.EVENT_KIND_UNSPECIFIED: None,
    pb.EVENT_KIND_IMPRESSION: EventKind.IMPRESSION,
    pb.EVENT_KIND_CLICK: EventKind.CLICK,
    pb.EVENT_KIND_SAVE: EventKind.SAVE,
    pb.EVENT_KIND_LIKE: EventKind.LIKE,
    pb.EVENT_KIND_SHARE: EventKind.SHARE,
    pb.EVENT_KIND_HIDE: EventKind.HIDE,
    pb.EVENT_KIND_RATE: EventKind.RATE,
}


class CatalogServicer(pb_grpc.CatalogServiceServicer):
    """Thin edge over ``CatalogService``; database work runs off the event loop."""

    def __init__(self, catalog: CatalogService, runner: BlockingRunner) -> None:
        self._catalog = catalog
        self._runner = runner

    async def UpsertItems(
        self, request: pb.UpsertItemsRequest, context: aio.ServicerContext[Any, Any]
    ) -> pb.UpsertItemsResponse:
        """Create or replace items, all or nothing."""
        violations = Violations()
        items = [
            _item_from_proto(item, f"items[{i}]", violations)
            for i, item in enumerate(request.items)
        ]
        if violations.found:  # report the catalog's own checks in the same error
            violations.found += validate_items(items)
        violations.raise_if_any()
        result = await self._runner.run(lambda: self._catalog.upsert_items(items))
        return pb.UpsertItemsResponse(created_count=result.created, updated_count=result.updated)

    async def UpsertUsers(
        self, request: pb.UpsertUsersRequest, context: aio.ServicerContext[Any, Any]
    ) -> pb.UpsertUsersResponse:
        """Create or replace users, all or nothing."""
        users = [
            UserRecord(user.user_id, _struct_to_dict(user.attributes)) for user in request.users
        ]
        result = await self._runner.run(lambda: self._catalog.upsert_users(users))
        return pb.UpsertUsersResponse(created_count=result.created, updated_count=result.updated)

    async def GetItems(
        self, request: pb.GetItemsRequest, context: aio.ServicerContext[Any, Any]
    ) -> pb.GetItemsResponse:
        """Items by id, in request order, with the missing ids listed."""
        ids = list(request.item_ids)
        found, missing = await self._runner.run(lambda: self._catalog.get_items(ids))
        return pb.GetItemsResponse(
            items=[_item_to_proto(item) for item in found], missing_item_ids=missing
        )

    async def ListItems(
        self, request: pb.ListItemsRequest, context: aio.ServicerContext[Any, Any]
    ) -> pb.ListItemsResponse:
        """One page of items."""
        violations = Violations()
        violations.enum(request.status, _STATUSES, "status")
        violations.raise_if_any()
        status = _STATUSES[request.status]
        page = await self._runner.run(
            lambda: self._catalog.list_items(
                request.page_size, request.page_token, status, request.category
            )
        )
        return pb.ListItemsResponse(
            items=[_item_to_proto(item) for item in page.records],
            next_page_token=page.next_page_token,
        )

    async def ListUsers(
        self, request: pb.ListUsersRequest, context: aio.ServicerContext[Any, Any]
    ) -> pb.ListUsersResponse:
        """One page of users."""
        page = await self._runner.run(
            lambda: self._catalog.list_users(request.page_size, request.page_token)
        )
        return pb.ListUsersResponse(
            users=[_user_to_proto(user) for user in page.records],
            next_page_token=page.next_page_token,
        )

    async def LogEvents(
        self, request: pb.LogEventsRequest, context: aio.ServicerContext[Any, Any]
    ) -> pb.LogEventsResponse:
        """Store events durably, all or nothing, idempotent by event id."""
        violations = Violations()
        events = [
            _event_from_proto(event, f"events[{i}]", violations)
            for i, event in enumerate(request.events)
        ]
        if violations.found:
            violations.found += validate_events(events, utc_now())
        violations.raise_if_any()
        result = await self._runner.run(lambda: self._catalog.log_events(events))
        return pb.LogEventsResponse(stored_count=result.stored, duplicate_count=result.duplicates)


def _item_from_proto(item: pb.Item, field: str, violations: Violations) -> ItemRecord:
    violations.enum(item.status, _STATUSES, f"{field}.status")
    return ItemRecord(
        item_id=item.item_id,
        creator_id=item.creator_id,
        categories=tuple(item.categories),
        title=item.title,
        status=_STATUSES.get(item.status) or ItemStatus.ACTIVE,
        attributes=_struct_to_dict(item.attributes),
        created_at=_time(item.create_time, f"{field}.create_time", violations)
        if item.HasField("create_time")
        else None,
    )


def _event_from_proto(event: pb.Event, field: str, violations: Violations) -> EventRecord:
    if event.kind != pb.EVENT_KIND_UNSPECIFIED:
        violations.enum(event.kind, _KINDS, f"{field}.kind")
    violations.enum(event.surface, SURFACES, f"{field}.surface")
    surface = SURFACES.get(event.surface)
    return EventRecord(
        event_id=event.event_id,
        user_id=event.user_id,
        item_id=event.item_id,
        kind=_KINDS.get(event.kind),
        occurred_at=_time(event.event_time, f"{field}.event_time", violations)
        if event.HasField("event_time")
        else None,
        surface=surface.value if surface else "",
        request_id=event.request_id,
        value=event.value,
        experiments=tuple(event.experiments),
    )


def _time(value: timestamp_pb2.Timestamp, field: str, violations: Violations) -> datetime | None:
    """The timestamp as a datetime, or a violation when it is none (nanos out of range,
    or seconds beyond the years 1 to 9999)."""
    try:
        return value.ToDatetime(tzinfo=UTC)
    except (ValueError, OverflowError) as error:
        violations.add(field, f"not a valid timestamp ({error})")
        return None


def _item_to_proto(item: ItemRecord) -> pb.Item:
    message = pb.Item(
        item_id=item.item_id,
        creator_id=item.creator_id,
        categories=item.categories,
        title=item.title,
        status=_STATUS_TO_PROTO[item.status],
        attributes=_dict_to_struct(item.attributes),
    )
    if item.created_at is not None:
        message.create_time.CopyFrom(timestamp(item.created_at))
    if item.updated_at is not None:
        message.update_time.CopyFrom(timestamp(item.updated_at))
    return message


def _user_to_proto(user: UserRecord) -> pb.User:
    message = pb.User(user_id=user.user_id, attributes=_dict_to_struct(user.attributes))
    if user.created_at is not None:
        message.create_time.CopyFrom(timestamp(user.created_at))
    return message


def _struct_to_dict(struct: struct_pb2.Struct) -> dict[str, Any]:
    return json_format.MessageToDict(struct)


def _dict_to_struct(values: Any) -> struct_pb2.Struct:
    struct = struct_pb2.Struct()
    struct.update(dict(values))
    return struct
