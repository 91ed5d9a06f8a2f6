"""CatalogService against a real, migrated Postgres database."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from cascade_server.catalog.records import (
    EventKind,
    EventRecord,
    ItemRecord,
    ItemStatus,
    LogResult,
    UpsertResult,
    UserRecord,
)
from cascade_server.catalog.repository import CatalogRepository
from cascade_server.catalog.service import CatalogService
from cascade_server.errors import InvalidArgumentError, StorageUnavailableError
from cascade_server.storage import tables
from cascade_server.storage.database import make_engine

pytestmark = pytest.mark.db

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
INJECTION = "x'); DROP TABLE events; --"


@pytest.fixture
def service(engine: sa.Engine) -> CatalogService:
    return CatalogService(CatalogRepository(engine), clock=lambda: NOW)


def count(engine: sa.Engine, table: type[tables.Base]) -> int:
    with engine.connect() as connection:
        total = connection.scalar(sa.select(sa.func.count()).select_from(table))
    assert total is not None
    return total


def event(event_id: str, **overrides: Any) -> EventRecord:
    values: dict[str, Any] = {
        "event_id": event_id,
        "user_id": "user-1",
        "item_id": "item-1",
        "kind": EventKind.CLICK,
    }
    values.update(overrides)
    return EventRecord(**values)


def walk_items(service: CatalogService, page_size: int, **filters: Any) -> list[str]:
    """Every item id a full listing returns, page by page."""
    seen: list[str] = []
    token = ""
    while True:
        page = service.list_items(page_size, token, **filters)
        assert len(page.records) <= page_size
        seen.extend(record.item_id for record in page.records)
        if not page.next_page_token:
            return seen
        assert len(page.records) == page_size
        token = page.next_page_token


class TestUpserts:
    def test_counts_created_and_updated_and_keeps_created_at(self, service: CatalogService) -> None:
        first = service.upsert_items(
            [
                ItemRecord("a", creator_id="c1", categories=("news", "sport"), title="A"),
                ItemRecord("b", status=ItemStatus.HIDDEN, attributes={"lang": "en", "n": [1, 2]}),
            ]
        )
        assert first == UpsertResult(created=2, updated=0)
        (before,), _ = service.get_items(["a"])
        assert before.categories == ("news", "sport")
        assert before.created_at is not None
        assert before.updated_at is not None

        second = service.upsert_items([ItemRecord("a", title="A2"), ItemRecord("c")])
        assert second == UpsertResult(created=1, updated=1)
        (after,), _ = service.get_items(["a"])
        assert after.title == "A2"
        assert after.created_at == before.created_at
        assert after.updated_at is not None
        assert after.updated_at > before.updated_at
        # An upsert replaces the item: fields left unset go back to their defaults.
        assert (after.creator_id, after.categories, after.status) == ("", (), ItemStatus.ACTIVE)

    def test_explicit_create_time_is_stored_on_create_and_on_update(
        self, service: CatalogService
    ) -> None:
        old = datetime(2020, 5, 17, 8, 30, tzinfo=UTC)
        older = datetime(2019, 1, 1, tzinfo=UTC)
        service.upsert_items([ItemRecord("a"), ItemRecord("b", created_at=old)])
        assert service.upsert_items([ItemRecord("a", created_at=older), ItemRecord("b")]) == (
            UpsertResult(created=0, updated=2)
        )
        items, _ = service.get_items(["a", "b"])
        assert [item.created_at for item in items] == [older, old]
        assert items[1].attributes == {}

    def test_attributes_round_trip(self, service: CatalogService) -> None:
        attributes = {"lang": "en", "nested": {"xs": [1, 2.5, None, True], "é": "ü"}}
        service.upsert_items([ItemRecord("a", attributes=attributes)])
        (item,), _ = service.get_items(["a"])
        assert item.attributes == attributes

    def test_users_count_created_and_updated(
        self, service: CatalogService, engine: sa.Engine
    ) -> None:
        assert service.upsert_users([UserRecord("u1"), UserRecord("u2", {"tier": 1})]) == (
            UpsertResult(created=2, updated=0)
        )
        first = service.list_users().records
        assert service.upsert_users([UserRecord("u2", {"tier": 2}), UserRecord("u3")]) == (
            UpsertResult(created=1, updated=1)
        )
        users = {user.user_id: user for user in service.list_users().records}
        assert users["u2"].attributes == {"tier": 2}
        assert users["u2"].created_at == first[1].created_at
        assert count(engine, tables.User) == 3

    def test_invalid_batch_writes_nothing(self, service: CatalogService, engine: sa.Engine) -> None:
        with pytest.raises(InvalidArgumentError) as caught:
            service.upsert_items([ItemRecord("good"), ItemRecord(""), ItemRecord("good")])
        assert [v.field for v in caught.value.violations] == [
            "items[1].item_id",
            "items[2].item_id",
        ]
        with pytest.raises(InvalidArgumentError):
            service.upsert_users([UserRecord("good"), UserRecord("u" * 129)])
        assert count(engine, tables.Item) == 0
        assert count(engine, tables.User) == 0


class TestGetItems:
    def test_request_order_missing_and_repeats(self, service: CatalogService) -> None:
        service.upsert_items([ItemRecord("a"), ItemRecord("b"), ItemRecord("c")])
        items, missing = service.get_items(["c", "x", "a", "c", "x", "y"])
        assert [item.item_id for item in items] == ["c", "a"]
        assert missing == ["x", "y"]

    def test_invalid_ids_are_rejected(self, service: CatalogService) -> None:
        with pytest.raises(InvalidArgumentError) as caught:
            service.get_items(["a", ""])
        assert [v.field for v in caught.value.violations] == ["item_ids[1]"]
        with pytest.raises(InvalidArgumentError):
            service.get_items([])


class TestListing:
    IDS = ("B", "a", "item-10", "item-9", "item-1", "Z", "é", "ß", "a-b", "ab", "0", "~")

    @pytest.fixture
    def catalog(self, service: CatalogService) -> list[ItemRecord]:
        items = [
            ItemRecord(
                item_id,
                categories=("news",) if index % 2 == 0 else ("sport", "news-ish"),
                status=ItemStatus.HIDDEN if index % 3 == 0 else ItemStatus.ACTIVE,
            )
            for index, item_id in enumerate(self.IDS)
        ]
        service.upsert_items(items)
        return items

    @pytest.mark.parametrize("page_size", [1, 3, 5, 12, 1000])
    def test_walks_every_item_once_in_code_point_order(
        self, service: CatalogService, catalog: list[ItemRecord], page_size: int
    ) -> None:
        assert walk_items(service, page_size) == sorted(self.IDS)

    @pytest.mark.parametrize(
        "filters",
        [
            {"status": ItemStatus.HIDDEN},
            {"category": "news"},
            {"status": ItemStatus.ACTIVE, "category": "sport"},
            {"status": ItemStatus.DELETED},
            {"category": "new"},
        ],
    )
    def test_filters_hold_across_pages(
        self, service: CatalogService, catalog: list[ItemRecord], filters: dict[str, Any]
    ) -> None:
        expected = sorted(
            item.item_id
            for item in catalog
            if filters.get("status", item.status) == item.status
            and (not filters.get("category") or filters["category"] in item.categories)
        )
        assert walk_items(service, 2, **filters) == expected

    def test_token_with_other_filters_is_rejected(
        self, service: CatalogService, catalog: list[ItemRecord]
    ) -> None:
        page = service.list_items(2, "", status=ItemStatus.ACTIVE)
        with pytest.raises(InvalidArgumentError) as caught:
            service.list_items(2, page.next_page_token)
        assert [v.field for v in caught.value.violations] == ["page_token"]
        with pytest.raises(InvalidArgumentError):
            service.list_users(2, page.next_page_token)

    def test_bad_parameters_are_reported_together(self, service: CatalogService) -> None:
        with pytest.raises(InvalidArgumentError) as caught:
            service.list_items(1001, "garbage", category="k" * 129)
        assert [v.field for v in caught.value.violations] == [
            "page_size",
            "category",
            "page_token",
        ]
        with pytest.raises(InvalidArgumentError):
            service.list_users(-1)

    def test_zero_page_size_means_one_hundred(self, service: CatalogService) -> None:
        service.upsert_items([ItemRecord(f"item-{index:03}") for index in range(101)])
        page = service.list_items(0)
        assert len(page.records) == 100
        rest = service.list_items(0, page.next_page_token)
        assert [item.item_id for item in rest.records] == ["item-100"]
        assert rest.next_page_token == ""

    def test_users_page_in_order(self, service: CatalogService) -> None:
        user_ids = ["u", "U", "ü", "u-2", "u10", "u9"]
        service.upsert_users([UserRecord(user_id) for user_id in user_ids])
        seen: list[str] = []
        token = ""
        while True:
            page = service.list_users(4, token)
            seen.extend(user.user_id for user in page.records)
            token = page.next_page_token
            if not token:
                break
        assert seen == sorted(user_ids)

    def test_empty_catalog(self, service: CatalogService) -> None:
        page = service.list_items()
        assert page.records == ()
        assert page.next_page_token == ""


class TestLogEvents:
    @pytest.fixture(autouse=True)
    def items(self, service: CatalogService) -> None:
        service.upsert_items([ItemRecord("item-1"), ItemRecord("item-2")])
        service.upsert_users([UserRecord("user-1")])

    def test_stores_then_counts_a_retry_as_duplicates(
        self, service: CatalogService, engine: sa.Engine
    ) -> None:
        batch = [
            event("e1", occurred_at=NOW - timedelta(hours=1), value=0.5),
            event("e2", item_id="item-2", kind=EventKind.HIDE, surface="home_feed"),
            event("e3", request_id="req-1", experiments=("cap/strict", "rank/deep")),
        ]
        assert service.log_events(batch) == LogResult(stored=3, duplicates=0)
        assert count(engine, tables.Event) == 3
        assert service.log_events(batch) == LogResult(stored=0, duplicates=3)
        assert count(engine, tables.Event) == 3

        with engine.connect() as connection:
            rows = connection.execute(
                sa.select(
                    tables.Event.event_id,
                    tables.Event.kind,
                    tables.Event.occurred_at,
                    tables.Event.experiments,
                ).order_by(tables.Event.event_id)
            ).all()
        assert [tuple(row) for row in rows] == [
            ("e1", "click", NOW - timedelta(hours=1), []),
            ("e2", "hide", NOW, []),  # unset time means the server's clock
            ("e3", "click", NOW, ["cap/strict", "rank/deep"]),
        ]

    def test_repeated_ids_in_one_batch_store_the_first_copy(
        self, service: CatalogService, engine: sa.Engine
    ) -> None:
        batch = [event("e1"), event("e2"), event("e1", kind=EventKind.LIKE), event("e2")]
        assert service.log_events(batch) == LogResult(stored=2, duplicates=2)
        with engine.connect() as connection:
            kinds = connection.execute(
                sa.select(tables.Event.kind).where(tables.Event.event_id == "e1")
            ).scalars()
            assert list(kinds) == ["click"]
        assert service.log_events([event("e1"), event("e3")]) == LogResult(stored=1, duplicates=1)

    def test_unknown_item_rejects_the_batch_and_writes_nothing(
        self, service: CatalogService, engine: sa.Engine
    ) -> None:
        batch = [
            event("e1", user_id="brand-new-user"),
            event("e2", item_id="nope"),
            event("e3"),
            event("e4", item_id="nope", user_id="another-new-user"),
        ]
        with pytest.raises(InvalidArgumentError) as caught:
            service.log_events(batch)
        violations = caught.value.violations
        assert [v.field for v in violations] == ["events[1].item_id", "events[3].item_id"]
        assert violations[0].description == (
            "item 'nope' does not exist; create it with UpsertItems first"
        )
        assert count(engine, tables.Event) == 0
        assert count(engine, tables.User) == 1

    def test_unknown_user_is_created(self, service: CatalogService, engine: sa.Engine) -> None:
        batch = [event("e1", user_id="new-user"), event("e2", user_id="new-user"), event("e3")]
        assert service.log_events(batch) == LogResult(stored=3, duplicates=0)
        users = {user.user_id: user for user in service.list_users().records}
        assert set(users) == {"user-1", "new-user"}
        assert users["new-user"].created_at is not None
        assert users["new-user"].attributes == {}

    def test_invalid_event_writes_nothing(self, service: CatalogService, engine: sa.Engine) -> None:
        batch = [
            event("e1", user_id="new-user"),
            event("e2", kind=None),
            event("e3", occurred_at=NOW + timedelta(minutes=5, seconds=1)),
        ]
        with pytest.raises(InvalidArgumentError) as caught:
            service.log_events(batch)
        assert [v.field for v in caught.value.violations] == [
            "events[1].kind",
            "events[2].event_time",
        ]
        assert count(engine, tables.Event) == 0
        assert count(engine, tables.User) == 1


def test_sql_looking_ids_are_plain_data(service: CatalogService, engine: sa.Engine) -> None:
    quoted = 'it"s \\ % _ $1 :name'
    service.upsert_items(
        [ItemRecord(INJECTION, categories=(INJECTION,), title=INJECTION), ItemRecord(quoted)]
    )
    service.upsert_users([UserRecord(INJECTION, {INJECTION: INJECTION})])
    result = service.log_events(
        [event(INJECTION, user_id=INJECTION, item_id=INJECTION, request_id=INJECTION[:64])]
    )
    assert result == LogResult(stored=1, duplicates=0)

    items, missing = service.get_items([INJECTION, quoted, "x"])
    assert [item.item_id for item in items] == [INJECTION, quoted]
    assert items[0].title == INJECTION
    assert missing == ["x"]
    page = service.list_items(category=INJECTION)
    assert [item.item_id for item in page.records] == [INJECTION]
    assert service.list_users().records[0].attributes == {INJECTION: INJECTION}
    assert count(engine, tables.Event) == 1


class TestStorageUnavailable:
    @pytest.fixture
    def unreachable(self) -> Iterator[CatalogService]:
        engine = make_engine("postgresql://postgres@127.0.0.1:1/x", pool_size=1)
        yield CatalogService(CatalogRepository(engine), clock=lambda: NOW)
        engine.dispose()

    @pytest.mark.parametrize(
        "call",
        [
            lambda s: s.upsert_items([ItemRecord("a")]),
            lambda s: s.upsert_users([UserRecord("u")]),
            lambda s: s.get_items(["a"]),
            lambda s: s.list_items(),
            lambda s: s.list_users(),
            lambda s: s.log_events([event("e1")]),
        ],
    )
    def test_every_call_raises_storage_unavailable(
        self, unreachable: CatalogService, call: Any
    ) -> None:
        with pytest.raises(StorageUnavailableError) as caught:
            call(unreachable)
        assert caught.value.status == "UNAVAILABLE"
        assert "may be retried" in caught.value.message

    def test_validation_still_comes_first(self, unreachable: CatalogService) -> None:
        with pytest.raises(InvalidArgumentError):
            unreachable.log_events([event("")])
