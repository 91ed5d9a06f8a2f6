"""CatalogService on the real server, and the write → recommend loop it feeds."""

import time

import pytest
from google.protobuf import struct_pb2, timestamp_pb2

from cascade.blending.v1 import blending_service_pb2 as blending_pb
from cascade.catalog.v1 import catalog_service_pb2 as catalog_pb
from cascade_client import BlendingClient, CatalogClient, InvalidArgumentError
from cascade_server.settings import ServiceName


def item(item_id, **fields):
    return catalog_pb.Item(item_id=item_id, **fields)


def event(event_id, user_id, item_id, kind=catalog_pb.EVENT_KIND_CLICK):
    return catalog_pb.Event(event_id=event_id, user_id=user_id, item_id=item_id, kind=kind)


@pytest.fixture
def clients(fresh_stack):
    with (
        CatalogClient(fresh_stack.target(ServiceName.CATALOG)) as catalog,
        BlendingClient(fresh_stack.target(ServiceName.BLENDING)) as blending,
    ):
        yield catalog, blending


def test_items_round_trip_through_upsert_get_and_list(clients):
    catalog, _ = clients
    attributes = struct_pb2.Struct()
    attributes.update({"colour": "teal", "size": 3})
    created = timestamp_pb2.Timestamp(seconds=1_700_000_000)
    response = catalog.upsert_items(
        catalog_pb.UpsertItemsRequest(
            items=[
                item(
                    "zz-new",
                    creator_id="c9",
                    categories=["a", "b"],
                    title="New",
                    attributes=attributes,
                    create_time=created,
                ),
                item("i0001", title="renamed"),
            ]
        )
    )
    assert (response.created_count, response.updated_count) == (1, 1)
    got = catalog.get_items(catalog_pb.GetItemsRequest(item_ids=["zz-new", "missing", "zz-new"]))
    [new] = got.items
    assert list(got.missing_item_ids) == ["missing"]
    assert new.title == "New"
    assert list(new.categories) == ["a", "b"]
    assert new.attributes["colour"] == "teal"
    assert new.create_time == created
    assert new.status == catalog_pb.ITEM_STATUS_ACTIVE
    listed = list(catalog.iter_items(catalog_pb.ListItemsRequest(page_size=500)))
    assert len(listed) == 2001
    assert [i.item_id for i in listed] == sorted(i.item_id for i in listed)


def test_bad_items_reject_the_whole_batch(clients):
    catalog, _ = clients
    with pytest.raises(InvalidArgumentError) as raised:
        catalog.upsert_items(
            catalog_pb.UpsertItemsRequest(items=[item("ok-1"), item(""), item("ok-2", status=7)])
        )
    fields = {v.field for v in raised.value.field_violations}
    assert {"items[1].item_id", "items[2].status"} <= fields
    got = catalog.get_items(catalog_pb.GetItemsRequest(item_ids=["ok-1", "ok-2"]))
    assert not got.items


def test_log_events_is_idempotent_and_all_or_nothing(clients):
    catalog, _ = clients
    batch = catalog_pb.LogEventsRequest(
        events=[event("e-1", "u001", "i0001"), event("e-2", "brand-new-user", "i0002")]
    )
    first = catalog.log_events(batch)
    assert (first.stored_count, first.duplicate_count) == (2, 0)
    again = catalog.log_events(batch)
    assert (again.stored_count, again.duplicate_count) == (0, 2)
    users = {u.user_id for u in catalog.iter_users(catalog_pb.ListUsersRequest(page_size=1000))}
    assert "brand-new-user" in users

    bad = catalog_pb.LogEventsRequest(
        events=[event("e-3", "u001", "i0003"), event("e-4", "u001", "no-such-item")]
    )
    with pytest.raises(InvalidArgumentError) as raised:
        catalog.log_events(bad)
    assert [v.field for v in raised.value.field_violations] == ["events[1].item_id"]
    retry = catalog.log_events(catalog_pb.LogEventsRequest(events=[event("e-3", "u001", "i0003")]))
    assert retry.stored_count == 1  # e-3 was not stored by the rejected batch


def test_an_event_without_a_kind_is_rejected(clients):
    catalog, _ = clients
    with pytest.raises(InvalidArgumentError) as raised:
        catalog.log_events(
            catalog_pb.LogEventsRequest(
                events=[event("e-9", "u001", "i0001", kind=catalog_pb.EVENT_KIND_UNSPECIFIED)]
            )
        )
    assert [v.field for v in raised.value.field_violations] == ["events[0].kind"]


def eventually(check, timeout_s=10.0):
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return check()
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def page(blending, user_id):
    response = blending.recommend(blending_pb.RecommendRequest(user_id=user_id, page_size=20))
    return [i.item_id for i in response.items]


def test_a_hidden_item_stops_appearing_for_that_user(clients):
    catalog, blending = clients
    target = page(blending, "u042")[0]
    catalog.log_events(
        catalog_pb.LogEventsRequest(
            events=[event("hide-1", "u042", target, kind=catalog_pb.EVENT_KIND_HIDE)]
        )
    )

    def hidden():
        assert target not in page(blending, "u042")

    eventually(hidden)


def test_an_item_hidden_in_the_catalog_disappears_for_everyone(clients):
    catalog, blending = clients
    target = page(blending, "someone-new")[0]
    [current] = catalog.get_items(catalog_pb.GetItemsRequest(item_ids=[target])).items
    current.status = catalog_pb.ITEM_STATUS_HIDDEN
    current.ClearField("update_time")
    catalog.upsert_items(catalog_pb.UpsertItemsRequest(items=[current]))

    def gone():
        assert target not in page(blending, "someone-new")
        assert target not in page(blending, "u042")

    eventually(gone)


def test_status_changes_apply_within_seconds_between_full_refreshes(incremental_stack):
    with (
        CatalogClient(incremental_stack.target(ServiceName.CATALOG)) as catalog,
        BlendingClient(incremental_stack.target(ServiceName.BLENDING)) as blending,
    ):
        first = page(blending, "u042")
        deleted, hidden = first[0], first[1]
        current = catalog.get_items(catalog_pb.GetItemsRequest(item_ids=[deleted, hidden])).items
        for item, status in zip(
            current, (catalog_pb.ITEM_STATUS_DELETED, catalog_pb.ITEM_STATUS_HIDDEN), strict=True
        ):
            item.status = status
            item.ClearField("update_time")
        started = time.monotonic()
        catalog.upsert_items(catalog_pb.UpsertItemsRequest(items=current))

        def gone():
            shown = page(blending, "u042") + page(blending, "someone-new")
            assert deleted not in shown
            assert hidden not in shown

        eventually(gone, timeout_s=10.0)
        assert time.monotonic() - started < 10.0
        assert len(page(blending, "u042")) == 20
