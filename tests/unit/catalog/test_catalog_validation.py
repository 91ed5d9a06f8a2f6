"""Catalog request validation: every limit at its boundary, paths, and combined reports."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, strategies as st

from cascade_server.catalog.records import EventKind, EventRecord, ItemRecord, UserRecord
from cascade_server.catalog.validation import (
    MAX_ATTRIBUTES_BYTES,
    MAX_BATCH_SIZE,
    MAX_CATEGORIES,
    MAX_CATEGORY_LENGTH,
    MAX_EVENT_TIME_AHEAD,
    MAX_EXPERIMENT_LENGTH,
    MAX_EXPERIMENTS,
    MAX_ID_LENGTH,
    MAX_PAGE_SIZE,
    MAX_REQUEST_ID_LENGTH,
    MAX_SURFACE_LENGTH,
    MAX_TITLE_LENGTH,
    encode_attributes,
    validate_category_filter,
    validate_events,
    validate_item_ids,
    validate_items,
    validate_page_size,
    validate_users,
)
from cascade_server.errors import FieldViolation

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def fields(violations: list[FieldViolation]) -> list[str]:
    return [violation.field for violation in violations]


def attributes_of_size(size: int) -> dict[str, Any]:
    """Attributes whose compact JSON is exactly ``size`` bytes (two-byte characters included)."""
    overhead = len(encode_attributes({"k": ""}).encode())
    body = size - overhead
    text = "é" * (body // 2) + "x" * (body % 2)
    attributes = {"k": text}
    assert len(encode_attributes(attributes).encode()) == size
    return attributes


def item(**overrides: Any) -> ItemRecord:
    values: dict[str, Any] = {"item_id": "item-1"}
    values.update(overrides)
    return ItemRecord(**values)


def event(**overrides: Any) -> EventRecord:
    values: dict[str, Any] = {
        "event_id": "event-1",
        "user_id": "user-1",
        "item_id": "item-1",
        "kind": EventKind.CLICK,
    }
    values.update(overrides)
    return EventRecord(**values)


class TestItems:
    def test_item_at_every_maximum_is_valid(self) -> None:
        record = item(
            item_id="i" * MAX_ID_LENGTH,
            creator_id="c" * MAX_ID_LENGTH,
            categories=tuple("k" * MAX_CATEGORY_LENGTH for _ in range(MAX_CATEGORIES)),
            title="t" * MAX_TITLE_LENGTH,
            attributes=attributes_of_size(MAX_ATTRIBUTES_BYTES),
            created_at=NOW,
        )
        assert validate_items([record]) == []

    @pytest.mark.parametrize(
        ("overrides", "path"),
        [
            ({"item_id": "i" * (MAX_ID_LENGTH + 1)}, "items[0].item_id"),
            ({"creator_id": "c" * (MAX_ID_LENGTH + 1)}, "items[0].creator_id"),
            ({"categories": ("k",) * (MAX_CATEGORIES + 1)}, "items[0].categories"),
            ({"categories": ("k", "k" * (MAX_CATEGORY_LENGTH + 1))}, "items[0].categories[1]"),
            ({"title": "t" * (MAX_TITLE_LENGTH + 1)}, "items[0].title"),
            ({"attributes": attributes_of_size(MAX_ATTRIBUTES_BYTES + 1)}, "items[0].attributes"),
        ],
    )
    def test_one_past_each_maximum_is_a_violation(
        self, overrides: dict[str, Any], path: str
    ) -> None:
        assert fields(validate_items([item(**overrides)])) == [path]

    @pytest.mark.parametrize(
        ("overrides", "path"),
        [
            ({"item_id": ""}, "items[0].item_id"),
            ({"item_id": "a\x00b"}, "items[0].item_id"),
            ({"item_id": "a\ud800b"}, "items[0].item_id"),
            ({"title": "nul \x00"}, "items[0].title"),
            ({"categories": ("",)}, "items[0].categories[0]"),
            ({"created_at": datetime(2026, 1, 1)}, "items[0].create_time"),
            ({"attributes": {"x": math.nan}}, "items[0].attributes"),
            ({"attributes": {"x": {"y": ["\x00"]}}}, "items[0].attributes"),
            ({"attributes": {"nul\x00key": 1}}, "items[0].attributes"),
            ({"attributes": {"x": {1, 2}}}, "items[0].attributes"),
        ],
    )
    def test_text_postgres_cannot_store_is_a_violation(
        self, overrides: dict[str, Any], path: str
    ) -> None:
        assert fields(validate_items([item(**overrides)])) == [path]

    def test_batch_size_limits(self) -> None:
        batch = [item(item_id=f"item-{index}") for index in range(MAX_BATCH_SIZE)]
        assert validate_items(batch) == []
        batch.append(item(item_id="one-too-many"))
        violations = validate_items(batch)
        assert fields(violations) == ["items"]
        assert str(MAX_BATCH_SIZE) in violations[0].description

    def test_empty_batch_is_a_violation(self) -> None:
        violations = validate_items([])
        assert fields(violations) == ["items"]
        assert "at least one item is required" in violations[0].description

    def test_duplicate_ids_point_at_each_later_copy(self) -> None:
        batch = [item(item_id="a"), item(item_id="b"), item(item_id="a"), item(item_id="a")]
        violations = validate_items(batch)
        assert fields(violations) == ["items[2].item_id", "items[3].item_id"]
        assert "items[0].item_id" in violations[0].description

    def test_every_violation_is_reported_together(self) -> None:
        batch = [
            item(item_id="", title="t" * (MAX_TITLE_LENGTH + 1)),
            item(item_id="ok"),
            item(item_id="x", categories=("",), attributes={"n": math.inf}),
        ]
        assert fields(validate_items(batch)) == [
            "items[0].item_id",
            "items[0].title",
            "items[2].categories[0]",
            "items[2].attributes",
        ]

    @given(
        st.lists(
            st.builds(
                ItemRecord,
                item_id=st.text(max_size=140),
                creator_id=st.text(max_size=140),
                categories=st.lists(st.text(max_size=140), max_size=20).map(tuple),
                title=st.text(max_size=20),
            ),
            max_size=5,
        )
    )
    def test_arbitrary_items_never_raise(self, items: list[ItemRecord]) -> None:
        assert isinstance(validate_items(items), list)


class TestUsers:
    def test_user_at_every_maximum_is_valid(self) -> None:
        user = UserRecord("u" * MAX_ID_LENGTH, attributes_of_size(MAX_ATTRIBUTES_BYTES))
        assert validate_users([user]) == []

    def test_limits_and_duplicates(self) -> None:
        batch = [
            UserRecord("u" * (MAX_ID_LENGTH + 1)),
            UserRecord("b", attributes_of_size(MAX_ATTRIBUTES_BYTES + 1)),
            UserRecord(""),
            UserRecord("b"),
        ]
        assert fields(validate_users(batch)) == [
            "users[0].user_id",
            "users[1].attributes",
            "users[2].user_id",
            "users[3].user_id",
        ]

    def test_batch_size_limits(self) -> None:
        assert fields(validate_users([])) == ["users"]
        batch = [UserRecord(f"user-{index}") for index in range(MAX_BATCH_SIZE)]
        assert validate_users(batch) == []
        assert fields(validate_users([*batch, UserRecord("extra")])) == ["users"]


class TestItemIds:
    def test_limits_and_paths(self) -> None:
        assert validate_item_ids(["a" * MAX_ID_LENGTH, "a", "a"]) == []
        assert fields(validate_item_ids(["a", "", "a" * (MAX_ID_LENGTH + 1)])) == [
            "item_ids[1]",
            "item_ids[2]",
        ]

    def test_batch_size_limits_and_field_name(self) -> None:
        assert fields(validate_item_ids([])) == ["item_ids"]
        assert validate_item_ids(["a"] * MAX_BATCH_SIZE) == []
        assert fields(validate_item_ids(["a"] * (MAX_BATCH_SIZE + 1))) == ["item_ids"]
        assert fields(validate_item_ids(["", "x"], field="seed_ids")) == ["seed_ids[0]"]


class TestEvents:
    def test_event_at_every_maximum_is_valid(self) -> None:
        record = event(
            event_id="e" * MAX_ID_LENGTH,
            user_id="u" * MAX_ID_LENGTH,
            item_id="i" * MAX_ID_LENGTH,
            occurred_at=NOW + MAX_EVENT_TIME_AHEAD,
            surface="s" * MAX_SURFACE_LENGTH,
            request_id="r" * MAX_REQUEST_ID_LENGTH,
            value=-1e308,
            experiments=("x" * MAX_EXPERIMENT_LENGTH,) * MAX_EXPERIMENTS,
        )
        assert validate_events([record], NOW) == []

    def test_unset_and_past_times_are_valid(self) -> None:
        past = datetime(1999, 1, 1, tzinfo=UTC)
        assert validate_events([event(), event(event_id="e2", occurred_at=past)], NOW) == []

    @pytest.mark.parametrize(
        ("overrides", "path"),
        [
            ({"event_id": "e" * (MAX_ID_LENGTH + 1)}, "events[0].event_id"),
            ({"user_id": "u" * (MAX_ID_LENGTH + 1)}, "events[0].user_id"),
            ({"item_id": "i" * (MAX_ID_LENGTH + 1)}, "events[0].item_id"),
            ({"event_id": ""}, "events[0].event_id"),
            ({"user_id": ""}, "events[0].user_id"),
            ({"item_id": ""}, "events[0].item_id"),
            ({"kind": None}, "events[0].kind"),
            (
                {"occurred_at": NOW + MAX_EVENT_TIME_AHEAD + timedelta(microseconds=1)},
                "events[0].event_time",
            ),
            ({"occurred_at": datetime(2026, 1, 1)}, "events[0].event_time"),
            ({"surface": "s" * (MAX_SURFACE_LENGTH + 1)}, "events[0].surface"),
            ({"request_id": "r" * (MAX_REQUEST_ID_LENGTH + 1)}, "events[0].request_id"),
            ({"experiments": ("e/v",) * (MAX_EXPERIMENTS + 1)}, "events[0].experiments"),
            ({"experiments": ("e/v", "")}, "events[0].experiments[1]"),
            (
                {"experiments": ("x" * (MAX_EXPERIMENT_LENGTH + 1),)},
                "events[0].experiments[0]",
            ),
            ({"value": math.inf}, "events[0].value"),
            ({"value": -math.inf}, "events[0].value"),
            ({"value": math.nan}, "events[0].value"),
        ],
    )
    def test_each_limit_is_a_violation(self, overrides: dict[str, Any], path: str) -> None:
        assert fields(validate_events([event(**overrides)], NOW)) == [path]

    def test_future_time_is_judged_against_the_given_clock(self) -> None:
        later = NOW + timedelta(minutes=6)
        assert fields(validate_events([event(occurred_at=later)], NOW)) == ["events[0].event_time"]
        assert validate_events([event(occurred_at=later)], NOW + timedelta(minutes=1)) == []

    def test_repeated_event_ids_are_not_violations(self) -> None:
        assert validate_events([event(), event(), event(kind=EventKind.HIDE)], NOW) == []

    def test_batch_size_limits(self) -> None:
        violations = validate_events([], NOW)
        assert fields(violations) == ["events"]
        assert "at least one event is required" in violations[0].description
        batch = [event(event_id=f"e{index}") for index in range(MAX_BATCH_SIZE)]
        assert validate_events(batch, NOW) == []
        assert fields(validate_events([*batch, event()], NOW)) == ["events"]

    def test_every_violation_is_reported_together(self) -> None:
        batch = [event(), event(kind=None, value=math.nan), event(event_id="", item_id="")]
        assert fields(validate_events(batch, NOW)) == [
            "events[1].kind",
            "events[1].value",
            "events[2].event_id",
            "events[2].item_id",
        ]


class TestListParameters:
    @pytest.mark.parametrize("page_size", [0, 1, MAX_PAGE_SIZE])
    def test_page_size_in_range(self, page_size: int) -> None:
        assert validate_page_size(page_size) == []

    @pytest.mark.parametrize("page_size", [-1, MAX_PAGE_SIZE + 1])
    def test_page_size_out_of_range(self, page_size: int) -> None:
        assert fields(validate_page_size(page_size)) == ["page_size"]
        assert fields(validate_page_size(page_size, field="limit")) == ["limit"]

    def test_category_filter(self) -> None:
        assert validate_category_filter("") == []
        assert validate_category_filter("k" * MAX_CATEGORY_LENGTH) == []
        assert fields(validate_category_filter("k" * (MAX_CATEGORY_LENGTH + 1))) == ["category"]
        assert fields(validate_category_filter("a\x00")) == ["category"]
